//! The real binaries as separate processes: `latchkey-server` (its own memory and CPU) and
//! `latchkey run` agents, plus in-process admin access to the server's data directory.
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use latchkey_platform::request::Request;
use latchkey_server::admin::{ActionOptions, Admin, Waker};
use latchkey_server::admin_socket::AdminSocket;
use latchkey_server::datadir::DataDir;
use latchkey_server::records::ActionRecord;
use latchkey_server::store::sqlite::SqliteStore;
use latchkey_server::vault::Vault;

/// The binaries under test.
#[derive(Clone, Debug)]
pub struct Bins {
    /// `latchkey` (the device build when there is one).
    pub agent: PathBuf,
    /// `latchkey-server`.
    pub server: PathBuf,
}

impl Bins {
    /// Explicit paths, or: the server beside this executable; the agent from the `device`
    /// profile's directory when it was built, else beside this executable.
    pub fn find(agent: Option<PathBuf>, server: Option<PathBuf>) -> Result<Self> {
        let me = std::env::current_exe()?;
        let dir = me.parent().context("executable directory")?.to_owned();
        let device = dir.parent().map(|t| t.join("device/latchkey")).filter(|p| p.exists());
        let bins = Self {
            agent: agent.or(device).unwrap_or_else(|| dir.join("latchkey")),
            server: server.unwrap_or_else(|| dir.join("latchkey-server")),
        };
        for path in [&bins.agent, &bins.server] {
            if !path.exists() {
                bail!("{} not found: build it (bash .ci/bench builds everything) or pass its path", path.display());
            }
        }
        Ok(bins)
    }
}

/// A running `latchkey-server serve`.
pub struct ServerProc {
    bin: PathBuf,
    /// Data directory.
    pub data: PathBuf,
    /// host:port of the device API.
    pub addr: String,
    /// host:port of /metrics.
    pub metrics: String,
    heartbeat: String,
    child: Child,
}

impl ServerProc {
    /// Starts a server on a free port.
    pub fn start(bin: &Path, data: &Path, heartbeat: &str) -> Result<Self> {
        Self::spawn(bin, data, "127.0.0.1:0", heartbeat)
    }

    fn spawn(bin: &Path, data: &Path, listen: &str, heartbeat: &str) -> Result<Self> {
        let mut child = Command::new(bin)
            .arg("--data")
            .arg(data)
            .args(["serve", "--listen", listen, "--heartbeat", heartbeat, "--metrics-listen", "127.0.0.1:0"])
            .args(["--sweep-interval", "1s"])
            .env("LATCHKEY_LOG", child_log_level())
            .stdout(Stdio::piped())
            .stderr(std::fs::OpenOptions::new().create(true).append(true).open(data.with_extension("log"))?)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut out = BufReader::new(child.stdout.take().context("server stdout")?);
        let mut line = String::new();
        out.read_line(&mut line)?;
        let addr = line.trim().strip_prefix("listening on ").context("the server did not start")?.to_owned();
        line.clear();
        out.read_line(&mut line)?;
        let metrics = line
            .trim()
            .strip_prefix("metrics on http://")
            .and_then(|m| m.strip_suffix("/metrics"))
            .context("no metrics address")?
            .to_owned();
        Ok(Self { bin: bin.to_owned(), data: data.to_owned(), addr, metrics, heartbeat: heartbeat.to_owned(), child })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops it (SIGTERM) and waits.
    pub fn stop(&mut self) -> Result<()> {
        signal(self.child.id(), nix::sys::signal::Signal::SIGTERM);
        self.child.wait()?;
        Ok(())
    }

    /// Stops it and starts it again on the same port.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        let again = Self::spawn(&self.bin, &self.data, &self.addr, &self.heartbeat)?;
        *self = again;
        Ok(())
    }

    /// Admin access in this process, as the admin CLI has it.
    pub fn admin(&self) -> Result<Admin> {
        let dir = DataDir::existing(&self.data)?;
        Ok(Admin {
            store: Arc::new(SqliteStore::open(&dir.db())?),
            vault: Arc::new(Vault::load(&dir.secrets_key(), false)?),
            waker: Waker::Socket(AdminSocket::new(dir.admin_socket())),
        })
    }

    /// The CA agents trust.
    pub fn ca(&self) -> PathBuf {
        self.data.join("ca.pem")
    }

    /// One metric (summed over its label sets) from /metrics.
    pub fn metric(&self, name: &str) -> Result<f64> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&self.metrics)?;
        stream.write_all(
            format!("GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", self.metrics).as_bytes(),
        )?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        Ok(text
            .lines()
            .filter(|l| !l.starts_with('#') && l.split(['{', ' ']).next() == Some(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (woken by the server, not polling) until the command's result is stored; a command still
/// open after 30 s is an error.
pub async fn wait_result(admin: &Admin, command_id: &str) -> Result<ActionRecord> {
    match admin.wait_result(command_id, Duration::from_secs(30)).await? {
        Some(row) if row.state.is_final() => Ok(row),
        _ => bail!("no result for {command_id} within 30 s"),
    }
}

/// The log level of the processes under test: `warn`, or `LATCHKEY_BENCH_CHILD_LOG` when
/// diagnosing a run (their logs are `server.log` and `agent/agent.log` in the run directory,
/// kept when `LATCHKEY_BENCH_KEEP` is set).
fn child_log_level() -> String {
    std::env::var("LATCHKEY_BENCH_CHILD_LOG").unwrap_or_else(|_| "warn".into())
}

/// A run directory, kept afterwards when `LATCHKEY_BENCH_KEEP` is set.
pub fn run_dir(prefix: &str) -> Result<tempfile::TempDir> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix);
    if std::env::var_os("LATCHKEY_BENCH_KEEP").is_some() {
        builder.disable_cleanup(true);
    }
    Ok(builder.tempdir()?)
}

/// Sends a signal, ignoring a process that is already gone.
pub fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
    }
}

/// The configuration of one simulated agent in `dir` (AOSP device, passcode set).
pub fn agent_config(dir: &Path, server: &ServerProc, heartbeat: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let sim = dir.join("sim.json");
    latchkey_platform::sim::profile::build("aosp-user", &Default::default())?.save(&sim).map_err(anyhow::Error::msg)?;
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nurl = \"https://{}\"\nca = \"{}\"\n[state]\ndir = \"{}\"\n[platform]\nport = \"sim\"\nsim_state = \"{}\"\n\
             [connect]\nheartbeat = \"{heartbeat}\"\nbackoff_max = \"30s\"\n[control]\nsocket = \"{}\"\n",
            server.addr,
            server.ca().display(),
            dir.join("state").display(),
            sim.display(),
            dir.join("control.sock").display()
        ),
    )?;
    Ok(config)
}

/// A running `latchkey run`.
pub struct AgentProc {
    bin: PathBuf,
    /// Its configuration.
    pub config: PathBuf,
    /// Its device id.
    pub device_id: String,
    child: Child,
    /// When it was started.
    pub started: Instant,
}

impl AgentProc {
    /// Enrolls the agent of `config` with a fresh token and starts it.
    pub async fn enroll_and_start(bin: &Path, config: &Path, admin: &Admin) -> Result<Self> {
        let token = admin.create_token(Duration::from_secs(600)).await?;
        let mut enroll = Command::new(bin)
            .args(["enroll", "--token-file", "-", "--config"])
            .arg(config)
            .env("LATCHKEY_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        std::io::Write::write_all(enroll.stdin.as_mut().context("stdin")?, token.expose().as_bytes())?;
        let out = enroll.wait_with_output()?;
        if !out.status.success() {
            bail!("enrollment failed");
        }
        let device_id =
            String::from_utf8(out.stdout)?.trim().strip_prefix("enrolled as ").context("enroll output")?.to_owned();
        let log = std::fs::File::create(config.with_file_name("agent.log"))?;
        let started = Instant::now();
        let child = Command::new(bin)
            .args(["run", "--config"])
            .arg(config)
            .env("LATCHKEY_LOG", child_log_level())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        Ok(Self { bin: bin.to_owned(), config: config.to_owned(), device_id, child, started })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Queues a lock for this agent; returns the command id.
    pub async fn queue_lock(&self, admin: &Admin) -> Result<String> {
        let lock = Request::Lock { message: String::new(), phone: String::new() };
        let options = ActionOptions { ttl: Duration::from_secs(600), force: false };
        Ok(admin.queue_action(&self.device_id, &lock, options).await?.command_id)
    }

    /// The link phase from `latchkey status --json` ("stream", "poll", …), if it answers.
    pub fn phase(&self) -> Option<String> {
        let out = Command::new(&self.bin).args(["status", "--json", "--config"]).arg(&self.config).output().ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v["link"]["phase"].as_str().map(str::to_owned)
    }

    /// Waits until the push stream is open; returns the time since start.
    pub fn wait_stream(&self, limit: Duration) -> Result<Duration> {
        let until = Instant::now() + limit;
        loop {
            if self.phase().as_deref() == Some("stream") {
                return Ok(self.started.elapsed());
            }
            if Instant::now() > until {
                bail!("the agent did not open its push stream within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        signal(self.child.id(), nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}
