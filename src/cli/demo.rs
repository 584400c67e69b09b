//! `latchkey demo`: the reference server and one simulated device per row of the platform
//! matrix, all on loopback with real certificates, real mTLS and real SQLite files; every row's
//! action goes admin → server → push stream → agent → platform adapter → result, and the
//! device-actions table at the end says whether each outcome is the one SPEC §3 expects.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;

use latchkey_platform::sim::profile::{self, InitOptions};
use latchkey_platform::sim::SimState;
use latchkey_platform::{Scope, SecretBytes};
use latchkey_server::admin::{self, ActionSpec, Waker};
use latchkey_server::db::Db;
use latchkey_server::serve::{self, ServeConfig};

use crate::config::Config;

/// What a row expects.
struct Expect {
    state: &'static str,
    code: &'static str,
}

/// One device of the demo and what is done to it.
struct Row {
    label: &'static str,
    profile: &'static str,
    options: InitOptions,
    steps: Vec<Step>,
}

/// One admin action with its expected outcome, plus what the user does first.
struct Step {
    before: Before,
    action: ActionSpec,
    expect: Expect,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Before {
    Nothing,
    UserConfirmsCredential,
    WrongUnlockTokenEscrowed,
}

fn step(action: ActionSpec, state: &'static str, code: &'static str) -> Step {
    Step { before: Before::Nothing, action, expect: Expect { state, code } }
}

fn reset() -> ActionSpec {
    ActionSpec::ResetPasscode { work_profile: false }
}
fn reset_wp() -> ActionSpec {
    ActionSpec::ResetPasscode { work_profile: true }
}
fn lock() -> ActionSpec {
    ActionSpec::Lock { message: "Returned to IT: call the help desk".into(), phone: "+1 555 0100".into() }
}

fn rows() -> Vec<Row> {
    let row = |label, profile, steps| Row { label, profile, options: InitOptions::default(), steps };
    let no_policy = InitOptions { no_passcode_policy: true, ..InitOptions::default() };
    let pin_off = InitOptions { pin_recovery_disabled: true, ..InitOptions::default() };
    vec![
        row("Android 6 device admin", "android6-da", vec![step(reset(), "succeeded", "")]),
        row("Android 7 device admin", "android7-da", vec![step(reset(), "not_supported", "API_LEVEL")]),
        row(
            "Android Enterprise device owner",
            "android-do",
            vec![step(reset(), "succeeded", ""), step(lock(), "succeeded", "")],
        ),
        row(
            "Android work profile (personal)",
            "android-wp-byod",
            vec![
                step(reset(), "not_supported", "MANAGEMENT_MODE"),
                step(reset_wp(), "failed", "RESET_TOKEN_NOT_ACTIVE"),
                Step { before: Before::UserConfirmsCredential, ..step(reset_wp(), "succeeded", "") },
            ],
        ),
        row(
            "Android work profile (corporate)",
            "android-wp-cope",
            vec![Step { before: Before::UserConfirmsCredential, ..step(reset_wp(), "succeeded", "") }],
        ),
        Row {
            label: "Android work profile, no WP policy",
            profile: "android-wp-byod",
            options: no_policy.clone(),
            steps: vec![step(reset_wp(), "failed", "NO_PASSCODE_POLICY")],
        },
        row("Android 7 work profile", "android7-wp", vec![step(reset_wp(), "not_supported", "API_LEVEL")]),
        row("AOSP user-associated", "aosp-user", vec![step(reset(), "succeeded", ""), step(lock(), "succeeded", "")]),
        row(
            "AOSP userless, no passcode policy",
            "aosp-userless",
            vec![step(reset(), "succeeded", ""), step(lock(), "failed", "NO_PASSCODE_POLICY")],
        ),
        row(
            "iOS/iPadOS",
            "ios",
            vec![
                step(reset(), "not_supported", "PLATFORM_UNSUPPORTED"),
                step(ActionSpec::RemovePasscode, "succeeded", ""),
            ],
        ),
        row(
            "iOS, wrong token escrowed",
            "ios",
            vec![Step {
                before: Before::WrongUnlockTokenEscrowed,
                ..step(ActionSpec::RemovePasscode, "failed", "UNLOCK_TOKEN_MISMATCH")
            }],
        ),
        row(
            "iOS User Enrollment",
            "ios-user-enrollment",
            vec![
                step(reset(), "not_supported", "USER_ENROLLMENT"),
                step(ActionSpec::RemovePasscode, "not_supported", "USER_ENROLLMENT"),
            ],
        ),
        row(
            "macOS",
            "macos",
            vec![step(reset(), "not_supported", "PLATFORM_UNSUPPORTED"), step(lock(), "succeeded", "")],
        ),
        row("Windows desktop", "windows", vec![step(reset(), "not_supported", "PLATFORM_UNSUPPORTED")]),
        row("Windows 10 Mobile", "windows10-mobile", vec![step(ActionSpec::ResetPin, "succeeded", "")]),
        Row {
            label: "Windows 10 Mobile, recovery off",
            profile: "windows10-mobile",
            options: pin_off,
            steps: vec![step(ActionSpec::ResetPin, "failed", "PIN_RECOVERY_DISABLED")],
        },
    ]
}

struct Device {
    row: Row,
    device_id: String,
    sim: PathBuf,
}

/// Waits for `condition`, checking every 50 ms, up to `deadline`.
async fn wait_for(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) -> Result<()> {
    let until = tokio::time::Instant::now() + deadline;
    while !condition() {
        if tokio::time::Instant::now() > until {
            anyhow::bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn agent_config(dir: &Path, server: &str, ca: &Path, sim: &Path) -> Result<Config> {
    let text = format!(
        "[server]\nurl = \"https://{server}\"\nca = \"{}\"\n[state]\ndir = \"{}\"\n[platform]\nport = \"sim\"\nsim_state = \"{}\"\n[connect]\nheartbeat = \"2s\"\npoll_interval = \"5s\"\n[control]\nsocket = \"{}\"\n",
        ca.display(),
        dir.join("state").display(),
        sim.display(),
        dir.join("control.sock").display()
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text)?;
    Ok(Config::load(&path)?)
}

fn terminal(state: &str) -> bool {
    !matches!(state, "pending" | "sent")
}

fn truncate(text: &str, n: usize) -> String {
    if text.chars().count() <= n {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(n - 1).collect::<String>())
    }
}

/// Runs the demo; true when every outcome matched.
pub async fn run(keep: Option<PathBuf>) -> Result<bool> {
    let tmp = tempfile::Builder::new().prefix("latchkey-demo-").tempdir()?;
    let root = keep.unwrap_or_else(|| tmp.path().to_owned());
    std::fs::create_dir_all(&root)?;
    let shutdown = CancellationToken::new();
    let server = serve::start(
        ServeConfig {
            data: root.join("server"),
            listen: "127.0.0.1:0".parse()?,
            heartbeat: Duration::from_secs(2),
            server_names: vec![],
        },
        shutdown.clone(),
    )
    .await?;
    let db: Arc<Db> = server.db.clone();
    let waker = Waker::InProcess(server.hub.clone());
    let ca = root.join("server").join("ca.pem");
    println!("latchkey demo: server on {} (TLS 1.3, mTLS), files in {}", server.addr, root.display());

    let mut devices = Vec::new();
    let mut agents = Vec::new();
    for (i, row) in rows().into_iter().enumerate() {
        let dir = root.join(format!("device-{i:02}-{}", row.profile));
        std::fs::create_dir_all(&dir)?;
        let sim = dir.join("sim.json");
        profile::build(row.profile, &row.options)?.save(&sim).map_err(anyhow::Error::msg)?;
        let config = agent_config(&dir, &server.addr.to_string(), &ca, &sim)?;
        let token = admin::create_token(&db, Duration::from_secs(600))?;
        let device_id =
            crate::enroll::enroll(&config, &token).await.with_context(|| format!("enrolling {}", row.label))?;
        let agent_shutdown = shutdown.child_token();
        agents.push(tokio::spawn(crate::agent::run(config, crate::agent::RunOptions::default(), agent_shutdown)));
        devices.push(Device { row, device_id, sim });
    }
    println!("enrolled {} simulated devices; waiting for their first check-in", devices.len());
    wait_for("every device to check in", Duration::from_secs(60), || {
        db.devices().map(|d| d.iter().filter(|r| r.last_checkin > 0).count() == devices.len()).unwrap_or(false)
    })
    .await?;

    // Each device's steps run in order (the next step may depend on the previous one);
    // devices proceed in parallel, one step at a time.
    let max_steps = devices.iter().map(|d| d.row.steps.len()).max().unwrap_or(0);
    let mut issued: Vec<(usize, usize, String, Option<String>)> = Vec::new();
    for step_idx in 0..max_steps {
        let mut this_round = Vec::new();
        for (device_idx, device) in devices.iter().enumerate() {
            let Some(step) = device.row.steps.get(step_idx) else {
                continue;
            };
            match step.before {
                Before::Nothing => {}
                Before::UserConfirmsCredential => {
                    let mut sim = SimState::load(&device.sim).map_err(anyhow::Error::msg)?;
                    sim.user_confirm_credential();
                    sim.save(&device.sim).map_err(anyhow::Error::msg)?;
                }
                Before::WrongUnlockTokenEscrowed => {
                    wait_for("the unlock token escrow", Duration::from_secs(30), || {
                        db.unlock_token(&device.device_id).ok().flatten().is_some()
                    })
                    .await?;
                    admin::import_unlock_token(&db, &device.device_id, &SecretBytes::random(32))?;
                }
            }
            let queued = admin::queue_action(&db, &waker, &device.device_id, &step.action, admin::DEFAULT_COMMAND_TTL)?;
            let passcode = queued.temporary_passcode.as_ref().map(|p| p.expose().to_owned());
            this_round.push(queued.command_id.clone());
            issued.push((device_idx, step_idx, queued.command_id, passcode));
        }
        wait_for("results from every device", Duration::from_secs(60), || {
            db.actions(None)
                .map(|rows| rows.iter().filter(|r| this_round.contains(&r.command_id)).all(|r| terminal(&r.state)))
                .unwrap_or(false)
        })
        .await?;
    }

    let actions = db.actions(None)?;
    issued.sort_by_key(|(device_idx, step_idx, _, _)| (*device_idx, *step_idx));
    println!();
    println!(
        "{:<36} {:<14} {:<28} {:<14} {:<24} {:<3} MESSAGE",
        "DEVICE", "PLATFORM", "ACTION", "STATE", "ERROR CODE", "OK"
    );
    let mut all_ok = true;
    for (device_idx, step_idx, command_id, passcode) in &issued {
        let device = &devices[*device_idx];
        let step = &device.row.steps[*step_idx];
        let Some(row) = actions.iter().find(|a| &a.command_id == command_id) else {
            continue;
        };
        let mut ok = row.state == step.expect.state && row.error_code == step.expect.code;
        // A success must be visible on the device itself, not only in the report.
        if ok && row.state == "succeeded" {
            let sim = SimState::load(&device.sim).map_err(anyhow::Error::msg)?;
            ok = sim.effects.iter().filter(|e| &e.command_id == command_id).count() == 1;
            if let (Some(p), ActionSpec::ResetPasscode { work_profile }) = (passcode, &step.action) {
                let scope = if *work_profile { Scope::WorkProfile } else { Scope::Device };
                ok &= sim.passcode_is(scope, &latchkey_platform::Secret::new(p.clone()));
            }
            if matches!(step.action, ActionSpec::Lock { .. }) {
                ok &= sim.locked;
            }
        }
        if row.error_code == "NO_PASSCODE_POLICY" && matches!(step.action, ActionSpec::Lock { .. }) {
            let sim = SimState::load(&device.sim).map_err(anyhow::Error::msg)?;
            ok &= !sim.locked;
        }
        all_ok &= ok;
        println!(
            "{:<36} {:<14} {:<28} {:<14} {:<24} {:<3} {}",
            device.row.label,
            row.platform,
            row.action,
            row.state,
            if row.error_code.is_empty() { "-" } else { &row.error_code },
            if ok { "yes" } else { "NO" },
            truncate(&row.message, 110)
        );
    }
    println!();
    shutdown.cancel();
    for agent in agents {
        if let Ok(Err(e)) = agent.await {
            eprintln!("agent error: {e:#}");
            all_ok = false;
        }
    }
    let _ = server.task.await;
    println!(
        "{} of {} outcomes as expected{}",
        issued.len() - usize::from(!all_ok).min(issued.len()),
        issued.len(),
        if all_ok { "" } else { " — see rows marked NO" }
    );
    Ok(all_ok)
}
