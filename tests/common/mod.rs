//! Test helpers that read like prose: a real `latchkey-server` process, real `latchkey` agents,
//! simulated devices, and a TCP proxy we can cut. Every test gets its own temp dir and port 0.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod apple;

/// The agent binary built for this test run.
pub fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_latchkey"))
}

/// The server binary, built beside the agent. `cargo test` of this package alone does not
/// rebuild another package's binary, so the first call in each test process brings it up to
/// date (a no-op when it is).
pub fn server_bin() -> PathBuf {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let release = agent_bin().parent().and_then(Path::file_name).is_some_and(|p| p == "release");
        let mut build = latchkey_common::nested_cargo::build(env!("CARGO"), "latchkey-server", release);
        let status = build.status().expect("cargo build latchkey-server");
        assert!(status.success(), "building latchkey-server failed");
    });
    agent_bin().with_file_name("latchkey-server")
}

/// Polls `condition` every 50 ms until it holds or `timeout` passes.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs a command with `stdin` piped in.
pub fn run_with_stdin(cmd: &mut Command, stdin: &str) -> Output {
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    // A command that fails on its arguments exits without reading stdin: a broken pipe is fine.
    if let Err(e) = child.stdin.take().expect("stdin").write_all(stdin.as_bytes()) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "writing stdin: {e}");
    }
    child.wait_with_output().expect("wait")
}

/// A running reference server.
pub struct Server {
    pub dir: PathBuf,
    pub addr: String,
    /// The metrics address, when started with `--metrics-listen`.
    pub metrics: Option<String>,
    child: Child,
    pub log: PathBuf,
}

impl Server {
    pub fn start(root: &Path) -> Self {
        Self::start_with(root, &[])
    }

    /// Starts `serve` with extra arguments (`--metrics-listen 127.0.0.1:0`, `--sweep-interval …`).
    pub fn start_with(root: &Path, extra: &[&str]) -> Self {
        let dir = root.join("server");
        let log = root.join("server.log");
        let mut child = Command::new(server_bin())
            .args(["--data", dir.to_str().expect("utf8"), "serve", "--listen", "127.0.0.1:0", "--heartbeat", "1s"])
            .args(extra)
            .env("LATCHKEY_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("log"))
            .spawn()
            .expect("start latchkey-server");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read address");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        let metrics = extra.contains(&"--metrics-listen").then(|| {
            let mut line = String::new();
            stdout.read_line(&mut line).expect("read metrics address");
            line.trim()
                .strip_prefix("metrics on http://")
                .and_then(|rest| rest.strip_suffix("/metrics"))
                .unwrap_or_else(|| panic!("unexpected second line {line:?}"))
                .to_owned()
        });
        Server { dir, addr, metrics, child, log }
    }

    /// Fetches `/metrics` over plain HTTP/1.1.
    pub fn scrape(&self) -> String {
        let addr = self.metrics.as_ref().expect("started with --metrics-listen");
        let mut stream = TcpStream::connect(addr).expect("connect to metrics");
        stream
            .write_all(format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
            .expect("request");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("response");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        response
    }

    /// One metric's value (the sum over its label sets), 0 when absent.
    pub fn metric(&self, name: &str) -> f64 {
        self.scrape()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.split(['{', ' ']).next() == Some(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Stops the server (SIGTERM) and waits for it.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        self.child.wait().expect("wait")
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    pub fn admin(&self, args: &[&str]) -> Output {
        Command::new(server_bin()).arg("--data").arg(&self.dir).args(args).output().expect("admin command")
    }

    pub fn admin_ok(&self, args: &[&str]) -> String {
        let out = self.admin(args);
        assert!(out.status.success(), "latchkey-server {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf8")
    }

    pub fn token(&self) -> String {
        self.admin_ok(&["token", "create"]).trim().to_owned()
    }

    /// Queues an action; returns (command id, temporary passcode if any).
    pub fn action(&self, kind: &str, device: &str, extra: &[&str]) -> (String, Option<String>) {
        let v = self.action_json(kind, device, extra);
        (v["command_id"].as_str().expect("id").to_owned(), v["temporary_passcode"].as_str().map(str::to_owned))
    }

    /// Queues an action the server predicts the device will refuse (`--force`): the device
    /// answers for itself.
    pub fn action_forced(&self, kind: &str, device: &str, extra: &[&str]) -> String {
        let mut args = vec!["--force"];
        args.extend_from_slice(extra);
        self.action_json(kind, device, &args)["command_id"].as_str().expect("id").to_owned()
    }

    /// Queues an action; returns the whole `--json` answer.
    pub fn action_json(&self, kind: &str, device: &str, extra: &[&str]) -> Value {
        let mut args = vec!["action", kind, "--device", device, "--json"];
        args.extend_from_slice(extra);
        serde_json::from_str(&self.admin_ok(&args)).expect("action json")
    }

    pub fn actions(&self) -> Vec<Value> {
        serde_json::from_str(&self.admin_ok(&["actions", "--json"])).expect("actions json")
    }

    pub fn action_row(&self, command_id: &str) -> Option<Value> {
        self.actions().into_iter().find(|a| a["command_id"] == command_id)
    }

    /// Waits until the action has a result, and returns its row.
    pub fn wait_result(&self, command_id: &str, timeout: Duration) -> Value {
        wait_until(&format!("a result for {command_id}"), timeout, || {
            self.action_row(command_id).is_some_and(|r| !matches!(r["state"].as_str(), Some("pending" | "sent")))
        });
        self.action_row(command_id).expect("row")
    }

    pub fn devices(&self) -> Vec<Value> {
        serde_json::from_str(&self.admin_ok(&["devices", "--json"])).expect("devices json")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A simulated device with its own agent state, config and log.
pub struct Device {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub sim: PathBuf,
    pub id: String,
    pub log: PathBuf,
    agent: Option<Child>,
    started_at: i64,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// How to set a device up.
pub struct DeviceSpec<'a> {
    pub profile: &'a str,
    pub sim_args: &'a [&'a str],
    /// Extra `[connect]` lines, e.g. `mode = "poll"`.
    pub connect: &'a str,
    /// Server URL override (a proxy).
    pub url: Option<String>,
    /// Extra top-level sections appended to the config.
    pub extra: &'a str,
    /// Replaces the `[platform]` section (no simulator is created then).
    pub platform: Option<String>,
}

impl<'a> DeviceSpec<'a> {
    pub fn new(profile: &'a str) -> Self {
        Self { profile, sim_args: &[], connect: "", url: None, platform: None, extra: "" }
    }
}

impl Device {
    /// Creates the simulated device, writes its config and enrolls it with a fresh token.
    pub fn enroll(root: &Path, name: &str, server: &Server, spec: DeviceSpec<'_>) -> Device {
        let mut device = Self::prepare(root, name, server, spec);
        let out = device.enroll_with(&server.token());
        assert!(out.status.success(), "enroll: {}", String::from_utf8_lossy(&out.stderr));
        device.id =
            String::from_utf8_lossy(&out.stdout).trim().strip_prefix("enrolled as ").expect("enrolled line").to_owned();
        device
    }

    /// Runs `latchkey enroll` with `token` on stdin.
    pub fn enroll_with(&self, token: &str) -> Output {
        run_with_stdin(
            Command::new(agent_bin()).args([
                "enroll",
                "--config",
                self.config.to_str().expect("utf8"),
                "--token-file",
                "-",
            ]),
            token,
        )
    }

    /// Creates the simulated device and its config, not enrolled yet.
    pub fn prepare(root: &Path, name: &str, server: &Server, spec: DeviceSpec<'_>) -> Device {
        let url = spec.url.clone().unwrap_or_else(|| server.url());
        let server_section = format!("url = \"{url}\"\nca = \"{}\"\n", server.ca().display());
        Self::prepare_for(root, name, &server_section, spec)
    }

    /// Creates the simulated device and a config whose `[server]` section holds
    /// `server_section`.
    pub fn prepare_for(root: &Path, name: &str, server_section: &str, spec: DeviceSpec<'_>) -> Device {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("device dir");
        let sim = dir.join("sim.json");
        if spec.platform.is_none() {
            let mut init = Command::new(agent_bin());
            init.args(["sim", "init", "--state", sim.to_str().expect("utf8"), "--profile", spec.profile])
                .args(spec.sim_args);
            let out = init.output().expect("sim init");
            assert!(out.status.success(), "sim init: {}", String::from_utf8_lossy(&out.stderr));
        }
        let platform = spec
            .platform
            .clone()
            .unwrap_or_else(|| format!("[platform]\nport = \"sim\"\nsim_state = \"{}\"\n", sim.display()));
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\n{server_section}[state]\ndir = \"{}\"\n{platform}[connect]\nheartbeat = \"500ms\"\npoll_interval = \"300ms\"\nbackoff_max = \"1s\"\n{}\n[control]\nsocket = \"{}\"\n{}\n",
                dir.join("state").display(),
                spec.connect,
                dir.join("control.sock").display(),
                spec.extra
            ),
        )
        .expect("config");
        Device { log: dir.join("agent.log"), dir, config, sim, id: String::new(), agent: None, started_at: 0 }
    }

    /// Starts `latchkey run`, appending to the device's log.
    pub fn start(&mut self) {
        self.start_with_env(&[]);
    }

    pub fn start_with_env(&mut self, env: &[(&str, &str)]) {
        self.started_at = now_ms();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("log");
        let child = Command::new(agent_bin())
            .args(["run", "--config", self.config.to_str().expect("utf8")])
            .env("LATCHKEY_LOG", "debug")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start agent");
        self.agent = Some(child);
    }

    /// Waits for the agent process to exit by itself; returns its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let child = self.agent.as_mut().expect("agent running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.agent = None;
                return status;
            }
            assert!(Instant::now() < deadline, "agent did not exit within {timeout:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends a signal to the running agent.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = self.agent.as_ref().expect("agent running").id();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).expect("signal");
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.wait_exit(Duration::from_secs(20))
    }

    /// The running agent's status (`latchkey status --json`), if it answers.
    pub fn status(&self) -> Option<Value> {
        let out = Command::new(agent_bin())
            .args(["status", "--json", "--config", self.config.to_str().expect("utf8")])
            .output()
            .ok()?;
        out.status.success().then(|| serde_json::from_slice(&out.stdout).ok()).flatten()
    }

    /// Waits until the running agent itself has checked in since `since_ms` and its link is up
    /// (asked over its control socket: a log line from an earlier run would prove nothing).
    pub fn wait_checked_in_since(&self, since_ms: i64, timeout: Duration) {
        wait_until("the agent's check-in", timeout, || {
            self.status().is_some_and(|s| {
                s["link"]["last_checkin_unix_ms"].as_i64().unwrap_or(0) >= since_ms
                    && matches!(s["link"]["phase"].as_str(), Some("stream" | "poll"))
            })
        });
    }

    /// Waits until the agent started last has checked in.
    pub fn wait_checked_in(&self, timeout: Duration) {
        self.wait_checked_in_since(self.started_at, timeout);
    }

    pub fn sim_show(&self) -> Value {
        let out = Command::new(agent_bin())
            .args(["sim", "show", "--json", "--state", self.sim.to_str().expect("utf8")])
            .output()
            .expect("sim show");
        assert!(out.status.success());
        serde_json::from_slice(&out.stdout).expect("sim json")
    }

    /// Runs `latchkey sim user …` with optional stdin; returns the exit code.
    pub fn user(&self, args: &[&str], stdin: &str) -> i32 {
        let mut cmd = Command::new(agent_bin());
        cmd.args(["sim", "user", "--state", self.sim.to_str().expect("utf8")]).args(args);
        run_with_stdin(&mut cmd, stdin).status.code().unwrap_or(-1)
    }

    pub fn effects_for(&self, command_id: &str) -> usize {
        self.sim_show()["effects"]
            .as_array()
            .map(|e| e.iter().filter(|x| x["command_id"] == command_id).count())
            .unwrap_or(0)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        if let Some(mut child) = self.agent.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A TCP proxy on 127.0.0.1:0 that forwards to `target` and can cut every connection, or
/// turn the live ones into black holes (bytes silently dropped, nothing closed — a dead NAT
/// binding or a pulled cable on the far side).
pub struct Proxy {
    pub addr: String,
    cut: Arc<AtomicBool>,
    live: Arc<Mutex<Vec<Connection>>>,
}

/// One proxied connection: both sockets and whether its bytes still flow.
struct Connection {
    sockets: [TcpStream; 2],
    dead: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(target: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("addr").to_string();
        let cut = Arc::new(AtomicBool::new(false));
        let live: Arc<Mutex<Vec<Connection>>> = Arc::default();
        let (target, cut2, live2) = (target.to_owned(), cut.clone(), live.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if cut2.load(Ordering::SeqCst) {
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                let Ok(upstream) = TcpStream::connect(&target) else {
                    continue;
                };
                let dead = Arc::new(AtomicBool::new(false));
                live2.lock().expect("lock").push(Connection {
                    sockets: [client.try_clone().expect("clone"), upstream.try_clone().expect("clone")],
                    dead: dead.clone(),
                });
                pump(client.try_clone().expect("clone"), upstream.try_clone().expect("clone"), dead.clone());
                pump(upstream, client, dead);
            }
        });
        Proxy { addr, cut, live }
    }

    /// Drops every live connection and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for c in self.live.lock().expect("lock").drain(..) {
            for s in &c.sockets {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    /// Every live connection stays open but carries nothing more, either way; new connections
    /// work normally.
    pub fn blackhole(&self) {
        for c in self.live.lock().expect("lock").drain(..) {
            c.dead.store(true, Ordering::SeqCst);
        }
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, dead: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                // A black hole reads and drops, and never closes the other side.
                Ok(_) if dead.load(Ordering::SeqCst) => continue,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        if !dead.load(Ordering::SeqCst) {
            let _ = to.shutdown(std::net::Shutdown::Both);
        }
    });
}

/// A throw-away filesystem root for the linux port: `etc/shadow` (0640) with `root` and the
/// given `kiosk` line, `os-release`, and yescrypt in `login.defs`.
pub fn linux_root(root: &Path, kiosk_line: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let fake = root.join("rootfs");
    std::fs::create_dir_all(fake.join("etc")).expect("etc");
    let shadow = fake.join("etc/shadow");
    std::fs::write(&shadow, format!("root:*:19000:0:99999:7:::\n{kiosk_line}\n")).expect("shadow");
    std::fs::set_permissions(&shadow, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    std::fs::write(fake.join("etc/os-release"), "ID=debian\nVERSION_ID=\"12\"\n").expect("os-release");
    std::fs::write(fake.join("etc/login.defs"), "ENCRYPT_METHOD YESCRYPT\n").expect("login.defs");
    fake
}
