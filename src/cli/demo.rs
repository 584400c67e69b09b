//! `latchkey demo`: the reference server and one simulated device per row of the platform
//! matrix ([`latchkey_platform::matrix`]), as real processes on loopback — the `latchkey-server`
//! binary, one `latchkey run` per device — with real certificates, mTLS and SQLite files. Every
//! action goes admin CLI → server → push stream → agent → platform adapter → result, and the
//! device-actions table at the end says whether each outcome is the one the table expects *and*
//! visible on the device itself.
//!
//! The agent binary does not contain the server: the demo runs `latchkey-server` from beside
//! this executable, from `LATCHKEY_SERVER_BIN`, from `PATH`, or — in a source checkout — builds it
//! first with the same cargo.
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use latchkey_platform::matrix::{self, Before, Device};
use latchkey_platform::request::{self, CommandKind};
use latchkey_platform::sim::SimState;
use latchkey_platform::{Scope, Secret, SecretBytes, Status};

/// Finds (or, in a source checkout, builds) the `latchkey-server` binary.
fn server_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("LATCHKEY_SERVER_BIN") {
        return Ok(PathBuf::from(path));
    }
    let me = std::env::current_exe().context("locating this executable")?;
    let beside = me.with_file_name("latchkey-server");
    if beside.exists() {
        return Ok(beside);
    }
    if let Some(found) = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("latchkey-server"))
        .find(|p| p.exists())
    {
        return Ok(found);
    }
    // A source checkout (`cargo run -- demo`): build the server with the cargo that built us.
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    if manifest.exists() {
        eprintln!("latchkey demo: building latchkey-server (first run only)…");
        let release = me.components().any(|c| c.as_os_str() == "release");
        let mut build = latchkey_common::nested_cargo::build(env!("CARGO"), "latchkey-server", release);
        build.arg("--manifest-path").arg(&manifest);
        let status = build.status().context("running cargo")?;
        if status.success() && beside.exists() {
            return Ok(beside);
        }
    }
    bail!("latchkey-server not found beside {}, in LATCHKEY_SERVER_BIN or on PATH", me.display())
}

/// Polls `condition` every 50 ms until it holds or `limit` passes.
fn wait_for(what: &str, limit: Duration, mut condition: impl FnMut() -> Result<bool>) -> Result<()> {
    let until = Instant::now() + limit;
    while !condition()? {
        if Instant::now() > until {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

struct Server {
    bin: PathBuf,
    data: PathBuf,
    addr: String,
    child: Child,
}

impl Server {
    fn start(bin: PathBuf, root: &Path) -> Result<Self> {
        let data = root.join("server");
        let log = std::fs::File::create(root.join("server.log"))?;
        let mut child = Command::new(&bin)
            .arg("--data")
            .arg(&data)
            .args(["serve", "--listen", "127.0.0.1:0", "--heartbeat", "1s", "--sweep-interval", "500ms"])
            .env("LATCHKEY_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("server stdout")?).read_line(&mut line)?;
        let addr = line.trim().strip_prefix("listening on ").context("the server did not start")?.to_owned();
        Ok(Self { bin, data, addr, child })
    }

    fn admin(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let mut command = Command::new(&self.bin);
        command.arg("--data").arg(&self.data).args(args).env("LATCHKEY_LOG", "warn");
        let out = output(&mut command, stdin)?;
        if !out.status.success() {
            bail!("latchkey-server {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    fn json(&self, args: &[&str]) -> Result<Value> {
        Ok(serde_json::from_str(&self.admin(args, None)?)?)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

fn output(command: &mut Command, stdin: Option<&str>) -> Result<std::process::Output> {
    let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())?;
    }
    Ok(child.wait_with_output()?)
}

/// SIGTERM, then wait: agents finish what they are doing and exit.
fn terminate(child: &mut Child) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(0));
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let _ = child.wait();
}

struct Agent {
    device: &'static Device,
    sim: PathBuf,
    id: String,
    child: Child,
}

impl Drop for Agent {
    /// Every agent stops with the demo, however it ends.
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

fn enroll(me: &Path, server: &Server, root: &Path, n: usize, device: &'static Device) -> Result<Agent> {
    let dir = root.join(format!("device-{n:02}-{}", device.profile));
    std::fs::create_dir_all(&dir)?;
    let sim = dir.join("sim.json");
    let state = latchkey_platform::sim::profile::build(device.profile, &device.init.options())?;
    state.save(&sim).map_err(anyhow::Error::msg)?;
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nurl = \"https://{}\"\nca = \"{}\"\n[state]\ndir = \"{}\"\n[platform]\nport = \"sim\"\nsim_state = \"{}\"\n\
             [connect]\nheartbeat = \"1s\"\npoll_interval = \"300ms\"\nbackoff_max = \"2s\"\n[control]\nsocket = \"{}\"\n",
            server.addr,
            server.data.join("ca.pem").display(),
            dir.join("state").display(),
            sim.display(),
            dir.join("control.sock").display()
        ),
    )?;
    let token = server.admin(&["token", "create", "--ttl", "10m"], None)?;
    let out = output(
        Command::new(me).args(["enroll", "--token-file", "-", "--config"]).arg(&config).env("LATCHKEY_LOG", "warn"),
        Some(token.trim()),
    )?;
    if !out.status.success() {
        bail!("enrolling {}: {}", device.label, String::from_utf8_lossy(&out.stderr).trim());
    }
    let id = String::from_utf8(out.stdout)?.trim().strip_prefix("enrolled as ").context("enroll output")?.to_owned();
    let log = std::fs::File::create(dir.join("agent.log"))?;
    let child = Command::new(me)
        .args(["run", "--config"])
        .arg(&config)
        .env("LATCHKEY_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    Ok(Agent { device, sim, id, child })
}

/// One action the demo issued and what came of it.
struct Issued {
    agent: usize,
    step: usize,
    command_id: String,
    secret: Option<String>,
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

/// Checks the outcome on the device itself; `Err` says what does not hold.
fn verify_on_device(server: &Server, agent: &Agent, issued: &Issued, row: &Value) -> Result<(), String> {
    let sim = SimState::load(&agent.sim)?;
    let id = issued.command_id.as_str();
    let effects = sim.effects.iter().filter(|e| e.command_id == id).count();
    if row["state"] != Status::Succeeded.as_str() {
        return if effects == 0 {
            Ok(())
        } else {
            Err(format!("{effects} effect(s) on the device for a refused action"))
        };
    }
    let plan = request::plan(&sim.facts, &agent.device.steps[issued.step].ask.request());
    match plan.kind {
        CommandKind::ResetPasscode(scope) => {
            let passcode = issued.secret.as_deref().ok_or("no temporary passcode was shown")?;
            if !sim.passcode_is(scope, &Secret::from(passcode)) {
                return Err("the device does not hold the temporary passcode".into());
            }
        }
        CommandKind::RemovePasscode => {
            if sim.device_passcode.is_some() {
                return Err("the passcode is still set".into());
            }
        }
        CommandKind::RemoteLock => {
            if !sim.locked || sim.effects_of(id, "remote_lock") != 1 {
                return Err("the device is not locked exactly once".into());
            }
            let lock = sim.effects.iter().find(|e| e.command_id == id && e.kind == "remote_lock");
            let carried = |key: &str| lock.and_then(|e| e.details.get(key)).map(String::as_str);
            if carried("message") != Some(matrix::LOCK_MESSAGE) || carried("phone_number") != Some(matrix::LOCK_PHONE) {
                return Err("the lock-screen message or phone number did not reach the device".into());
            }
        }
        CommandKind::ResetPin => {
            let listed = server.json(&["passcodes", "--device", &agent.id, "--json"]).map_err(|e| e.to_string())?;
            let pin = listed
                .as_array()
                .and_then(|rows| rows.iter().find(|r| r["command_id"] == id))
                .and_then(|r| r["passcode"].as_str())
                .ok_or("the device-generated PIN is not listed for the admin")?;
            if !sim.passcode_is(Scope::Device, &Secret::from(pin)) || !sim.locked {
                return Err("the device does not hold the reported PIN, or is not locked".into());
            }
        }
    }
    if effects == 0 {
        return Err("no effect recorded on the device".into());
    }
    Ok(())
}

/// Runs the demo; true when every outcome matched.
pub fn run(keep: Option<PathBuf>, json: bool) -> Result<bool> {
    let me = std::env::current_exe()?;
    let bin = server_binary()?;
    let tmp = tempfile::Builder::new().prefix("latchkey-demo-").tempdir()?;
    let root = keep.unwrap_or_else(|| tmp.path().to_owned());
    std::fs::create_dir_all(&root)?;
    let server = Server::start(bin, &root)?;
    if !json {
        println!("latchkey demo: server on {} (TLS 1.3, mTLS), files in {}", server.addr, root.display());
    }
    let mut agents = Vec::new();
    for (n, device) in matrix::DEVICES.iter().enumerate() {
        agents.push(enroll(&me, &server, &root, n, device)?);
    }
    wait_for("every device to check in", Duration::from_secs(60), || {
        let devices = server.json(&["devices", "--json"])?;
        let ready = devices.as_array().map(|d| d.iter().filter(|r| r["last_checkin"].as_i64() > Some(0)).count());
        Ok(ready == Some(agents.len()))
    })?;
    if !json {
        println!("{} simulated devices enrolled and checked in", agents.len());
    }

    // Devices proceed in parallel, each through its steps in order (a step may depend on the
    // one before). The demo forces every action past the server's prediction, so each outcome
    // is the device's own answer.
    let max_steps = matrix::DEVICES.iter().map(|d| d.steps.len()).max().unwrap_or(0);
    let mut issued: Vec<Issued> = Vec::new();
    for step in 0..max_steps {
        let mut round = Vec::new();
        for (a, agent) in agents.iter().enumerate() {
            let Some(s) = agent.device.steps.get(step) else { continue };
            match s.before {
                Before::Nothing => {}
                Before::UserConfirmsCredential => {
                    let mut sim = SimState::load(&agent.sim).map_err(anyhow::Error::msg)?;
                    sim.user_confirm_credential();
                    sim.save(&agent.sim).map_err(anyhow::Error::msg)?;
                    // As an admin would: wait until the device reports the token active.
                    wait_for("the device to report its active reset token", Duration::from_secs(30), || {
                        let devices = server.json(&["devices", "--json"])?;
                        Ok(devices.as_array().is_some_and(|d| {
                            d.iter().any(|r| r["device_id"] == agent.id && r["reset_token_state"] == "active")
                        }))
                    })?;
                }
                Before::WrongUnlockTokenEscrowed => {
                    wait_for("the unlock token escrow", Duration::from_secs(30), || {
                        let devices = server.json(&["devices", "--json"])?;
                        Ok(devices.as_array().is_some_and(|d| {
                            d.iter().any(|r| r["device_id"] == agent.id && r["unlock_token_escrowed"] == true)
                        }))
                    })?;
                    let wrong = SecretBytes::random(32).to_hex();
                    server.admin(
                        &["escrow", "import-unlock-token", "--device", &agent.id, "--token-file", "-"],
                        Some(wrong.expose()),
                    )?;
                }
                Before::UserUnlocksWithLockPin => {
                    // The admin reads the PIN of the device's last lock to the user.
                    let listed = server.json(&["passcodes", "--device", &agent.id, "--json"])?;
                    let pin = issued
                        .iter()
                        .rev()
                        .filter(|i| i.agent == a)
                        .find_map(|i| {
                            listed.as_array()?.iter().find(|r| {
                                r["command_id"] == i.command_id.as_str()
                                    && r["kind"] == "lock_pin"
                                    && r["state"] == Status::Succeeded.as_str()
                            })
                        })
                        .and_then(|r| r["passcode"].as_str())
                        .context("no lock PIN listed for the device")?;
                    let mut sim = SimState::load(&agent.sim).map_err(anyhow::Error::msg)?;
                    if !sim.user_unlock(&Secret::from(pin)) {
                        bail!("{}: the lock PIN the server shows does not unlock the device", agent.device.label);
                    }
                    sim.save(&agent.sim).map_err(anyhow::Error::msg)?;
                }
            }
            let mut args = vec!["action"];
            args.extend_from_slice(s.ask.cli());
            args.extend_from_slice(&["--device", &agent.id, "--force", "--json"]);
            let queued: Value = serde_json::from_str(&server.admin(&args, None)?)?;
            let command_id = queued["command_id"].as_str().context("command id")?.to_owned();
            let secret = queued["temporary_passcode"].as_str().map(str::to_owned);
            round.push(command_id.clone());
            issued.push(Issued { agent: a, step, command_id, secret });
        }
        wait_for("results from every device", Duration::from_secs(60), || {
            let rows = server.json(&["actions", "--json"])?;
            Ok(rows.as_array().is_some_and(|rows| {
                rows.iter()
                    .filter(|r| round.iter().any(|id| r["command_id"] == id.as_str()))
                    .all(|r| r["state"].as_str().is_some_and(terminal))
            }))
        })?;
    }

    let actions = server.json(&["actions", "--json"])?;
    let rows = actions.as_array().cloned().unwrap_or_default();
    issued.sort_by_key(|i| (i.agent, i.step));
    if !json {
        println!();
        println!(
            "{:<36} {:<14} {:<36} {:<14} {:<22} {:<3} MESSAGE",
            "DEVICE", "PLATFORM", "ACTION", "STATE", "ERROR CODE", "OK"
        );
    }
    let mut all_ok = true;
    for i in &issued {
        let agent = &agents[i.agent];
        let step = &agent.device.steps[i.step];
        let Some(row) = rows.iter().find(|r| r["command_id"] == i.command_id.as_str()) else {
            bail!("no row for {}", i.command_id);
        };
        let state = row["state"].as_str().unwrap_or_default();
        let code = row["error_code"].as_str().unwrap_or_default();
        let mut problems = Vec::new();
        if state != step.status.as_str() || code != step.code.map(|c| c.as_str()).unwrap_or_default() {
            problems.push(format!("expected {} {}", step.status.as_str(), step.code.map(|c| c.as_str()).unwrap_or("")));
        }
        for (key, value) in step.outputs {
            if row["outputs"][key] != *value {
                problems.push(format!("output {key} should be {value}"));
            }
        }
        if let Err(e) = verify_on_device(&server, agent, i, row) {
            problems.push(e);
        }
        let ok = problems.is_empty();
        all_ok &= ok;
        let action = match (row["action"].as_str(), row["requested"].as_str()) {
            (Some(a), Some(r)) if a != r => format!("{a} ({r})"),
            (Some(a), _) => a.to_owned(),
            _ => String::new(),
        };
        if json {
            let line = serde_json::json!({
                "device": agent.device.label, "profile": agent.device.profile, "step": i.step,
                "device_id": agent.id, "command_id": i.command_id, "action": action, "state": state,
                "error_code": code, "ok": ok, "problems": problems, "message": row["message"],
                "source": step.source, "sim_state": agent.sim,
            });
            println!("{line}");
        } else {
            println!(
                "{:<36} {:<14} {:<36} {:<14} {:<22} {:<3} {}",
                agent.device.label,
                row["platform"].as_str().unwrap_or_default(),
                action,
                state,
                if code.is_empty() { "-" } else { code },
                if ok { "yes" } else { "NO" },
                if ok { truncate(row["message"].as_str().unwrap_or_default(), 100) } else { problems.join("; ") }
            );
        }
    }
    drop(agents);
    drop(server);
    if !json {
        let n_ok = if all_ok { issued.len() } else { 0 };
        println!();
        println!(
            "{} outcomes checked against the platform matrix and on the devices: {}",
            issued.len(),
            if all_ok { format!("all {n_ok} as expected") } else { "see rows marked NO".to_owned() }
        );
    }
    Ok(all_ok)
}
