//! `latchkey sim …`: create a simulated device, act as the person holding it, show its state,
//! or serve it over the platform bridge.
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;

use latchkey_common::exit::Code;
use latchkey_platform::sim::profile::{self, InitOptions};
use latchkey_platform::sim::{SimPort, SimState};
use latchkey_platform::{Scope, Secret};

/// `latchkey sim` subcommands.
#[derive(Subcommand, Debug)]
pub enum SimCommand {
    /// Create a simulated device from a profile.
    Init {
        /// State file to create.
        #[arg(long)]
        state: PathBuf,
        /// Device profile (android6-da, android-do, aosp-userless, ios, windows10-mobile, …).
        #[arg(long)]
        profile: String,
        /// Assign this passcode policy document (plist, DPM JSON, PINComplexity lines).
        #[arg(long)]
        passcode_policy: Option<PathBuf>,
        /// Assign no device passcode policy.
        #[arg(long, conflicts_with = "passcode_policy")]
        no_passcode_policy: bool,
        /// Windows: the tenant's EnablePinRecovery policy is off.
        #[arg(long)]
        pin_recovery_disabled: bool,
        /// The user has set no passcode yet.
        #[arg(long)]
        no_passcode: bool,
        /// Replace an existing state file (the device it describes is lost).
        #[arg(long)]
        force: bool,
    },
    /// Act as the person holding the device.
    User {
        /// State file.
        #[arg(long)]
        state: PathBuf,
        #[command(subcommand)]
        action: UserAction,
    },
    /// Show the device's state, including every applied side effect.
    Show {
        /// State file.
        #[arg(long)]
        state: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Deliver a new passcode policy to the device (as the MDM's policy channel would).
    SetPolicy {
        /// State file.
        #[arg(long)]
        state: PathBuf,
        /// Policy document (plist, DPM JSON, PINComplexity lines).
        #[arg(long, required_unless_present = "none")]
        passcode_policy: Option<PathBuf>,
        /// Remove the device passcode policy.
        #[arg(long, conflicts_with = "passcode_policy")]
        none: bool,
        /// Apply to the work profile instead of the device.
        #[arg(long)]
        work_profile: bool,
    },
    /// Serve the simulated device over the platform bridge socket.
    Bridge {
        /// State file.
        #[arg(long)]
        state: PathBuf,
        /// Socket path.
        #[arg(long)]
        socket: PathBuf,
    },
}

/// What the user does.
#[derive(Subcommand, Debug)]
pub enum UserAction {
    /// Confirm the current credential (activates a pending reset token).
    ConfirmCredential,
    /// Set a passcode (read from stdin).
    SetPasscode {
        /// The work-profile passcode instead of the device's.
        #[arg(long)]
        work_profile: bool,
    },
    /// Exit 0 when the passcode on stdin unlocks the device (or work profile), 1 otherwise.
    CheckPasscode {
        /// The work-profile passcode instead of the device's.
        #[arg(long)]
        work_profile: bool,
    },
    /// Unlock the device with the passcode on stdin (a locked Mac: its six-digit Find My PIN);
    /// exit 1 when it does not unlock.
    Unlock,
}

fn read_stdin_secret() -> Result<Secret> {
    let raw = latchkey_common::secret_input::read_stdin_line().context("reading the passcode from stdin")?;
    Ok(Secret::new(raw.as_str().to_owned()))
}

fn read_policy(path: &std::path::Path) -> Result<latchkey_platform::policy::PasscodePolicy> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    latchkey_platform::policy::profile::parse(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn load(path: &std::path::Path) -> Result<SimState> {
    SimState::load(path).map_err(anyhow::Error::msg)
}

/// Runs a sim subcommand; returns the exit code.
pub fn run(command: SimCommand) -> Result<Code> {
    match command {
        SimCommand::Init {
            state,
            profile: name,
            passcode_policy,
            no_passcode_policy,
            pin_recovery_disabled,
            no_passcode,
            force,
        } => {
            if state.exists() && !force {
                anyhow::bail!(
                    "{} already holds a simulated device; pass --force to replace it (the device it describes is lost)",
                    state.display()
                );
            }
            let device_policy = match passcode_policy {
                Some(path) => {
                    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                    Some(
                        latchkey_platform::policy::profile::parse(&bytes)
                            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
                    )
                }
                None => None,
            };
            let options = InitOptions { device_policy, no_passcode_policy, pin_recovery_disabled, no_passcode };
            let sim = profile::build(&name, &options)?;
            if let Some(parent) = state.parent() {
                std::fs::create_dir_all(parent).ok();
            }
            sim.save(&state).map_err(anyhow::Error::msg)?;
            println!("simulated {name} device created at {}", state.display());
            Ok(Code::Ok)
        }
        SimCommand::User { state, action } => {
            let mut sim = load(&state)?;
            let code = match action {
                UserAction::ConfirmCredential => {
                    sim.user_confirm_credential();
                    println!("credential confirmed");
                    Code::Ok
                }
                UserAction::SetPasscode { work_profile } => {
                    let scope = if work_profile { Scope::WorkProfile } else { Scope::Device };
                    sim.user_set_passcode(scope, &read_stdin_secret()?)?;
                    println!("passcode set");
                    Code::Ok
                }
                UserAction::CheckPasscode { work_profile } => {
                    let scope = if work_profile { Scope::WorkProfile } else { Scope::Device };
                    let ok = sim.passcode_is(scope, &read_stdin_secret()?);
                    println!("{}", if ok { "passcode matches" } else { "passcode does not match" });
                    return Ok(if ok { Code::Ok } else { Code::Failure });
                }
                UserAction::Unlock => {
                    if sim.user_unlock(&read_stdin_secret()?) {
                        println!("unlocked");
                        Code::Ok
                    } else {
                        println!("still locked: wrong passcode or PIN");
                        Code::Failure
                    }
                }
            };
            sim.save(&state).map_err(anyhow::Error::msg)?;
            Ok(code)
        }
        SimCommand::Show { state, json } => {
            let sim = load(&state)?;
            let view = serde_json::json!({
                "profile": sim.profile,
                "facts": sim.facts,
                "passcode_present": sim.device_passcode.is_some(),
                "work_profile_passcode_present": sim.work_profile_passcode.is_some(),
                "device_policy": sim.device_policy,
                "enforced_device_policy": sim.enforced_device_policy(),
                "work_profile_policy": sim.work_profile_policy,
                "reset_token": sim.reset_token_state(),
                "unlock_token_present": sim.unlock_token.is_some(),
                "locked": sim.locked,
                "lock_message": sim.lock_message,
                "lock_phone_number": sim.lock_phone_number,
                "lock_pin_set": sim.lock_pin.is_some(),
                "new_passcode_prompt": sim.new_passcode_prompt,
                "notifications": sim.notifications,
                "effects": sim.effects,
            });
            if json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                println!("profile:        {}", sim.profile);
                println!(
                    "platform:       {} {} (API {}) {}",
                    sim.facts.platform.as_str(),
                    sim.facts.os_version,
                    sim.facts.api_level,
                    sim.facts.mode.as_str()
                );
                println!("passcode:       {}", if sim.device_passcode.is_some() { "set" } else { "none" });
                println!("reset token:    {}", sim.reset_token_state().as_str());
                println!("locked:         {}", sim.locked);
                println!("notifications:  {}", sim.notifications.len());
                for e in &sim.effects {
                    println!("effect:         {} {} at {}", e.command_id, e.kind, e.at_unix_ms);
                }
            }
            Ok(Code::Ok)
        }
        SimCommand::SetPolicy { state, passcode_policy, none: _, work_profile } => {
            let mut sim = load(&state)?;
            let policy = passcode_policy.as_deref().map(read_policy).transpose()?;
            if work_profile {
                sim.work_profile_policy = policy;
            } else {
                sim.device_policy = policy;
            }
            sim.save(&state).map_err(anyhow::Error::msg)?;
            println!("policy updated");
            Ok(Code::Ok)
        }
        SimCommand::Bridge { state, socket } => {
            let port = SimPort::open(&state)?;
            eprintln!("serving the simulated device on {}", socket.display());
            latchkey::bridge::serve(&socket, Box::new(port), &|| false)?;
            Ok(Code::Ok)
        }
    }
}
