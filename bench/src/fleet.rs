//! `fleet` and `storm`: N agents, each with its own identity, journal and TLS connection,
//! against one `latchkey-server` in its own process.
//!
//! The agents run in-process in a few `latchkey-bench agents-host` processes (the per-process
//! descriptor limit allows about 2,000 agents each: journal, WAL, shared memory, instance lock,
//! control socket and connection), with their state on tmpfs (/dev/shm): the agents' own fsyncs
//! are not what this measures; the server's are, on the real disk.
//!
//! `fleet`: one command to each device at once; time until 50 %, 99 % and 100 % of results are
//! stored; the server's resident memory per idle connection. `storm`: the server restarts on
//! the same port; connection attempts per 100 ms at the server and the time until every device
//! is back on its stream.
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::StreamExt;

use latchkey_platform::request::Request;
use latchkey_server::admin::ActionOptions;
use latchkey_server::records::DeviceStatus;

use crate::procs::{signal, Bins, ServerProc};
use crate::procstat::{cpu_seconds, raise_nofile, ProcStat};
use crate::report::{emit, note};

/// Descriptors one in-process agent holds, with headroom.
const FDS_PER_AGENT: u64 = 8;
/// The agents' heartbeat (the shipped default).
const HEARTBEAT: &str = "20s";
/// Threads for the blocking work of all the agents in one host process.
const HOST_BLOCKING_THREADS: usize = 8;

/// What to run.
pub struct Options {
    /// Devices.
    pub devices: usize,
    /// Agents per host process (0: as many as the descriptor limit allows, at most 2,000).
    pub per_host: usize,
}

/// A running fleet.
pub struct Fleet {
    /// The server.
    pub server: ServerProc,
    hosts: Vec<Child>,
    /// Devices.
    pub devices: usize,
    /// Server RSS before any agent connected, KiB.
    pub server_rss_empty: u64,
    _disk: tempfile::TempDir,
    _shm: tempfile::TempDir,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for host in &mut self.hosts {
            signal(host.id(), nix::sys::signal::Signal::SIGTERM);
        }
        for host in &mut self.hosts {
            let _ = host.wait();
        }
    }
}

fn wait(what: &str, limit: Duration, mut done: impl FnMut() -> Result<bool>) -> Result<Duration> {
    let started = Instant::now();
    while !done()? {
        if started.elapsed() > limit {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(started.elapsed())
}

impl Fleet {
    /// Starts the server and `devices` enrolled agents on their push streams.
    pub fn start(bench: &str, bins: &Bins, options: &Options, rt: &tokio::runtime::Runtime) -> Result<Self> {
        let limit = raise_nofile()?;
        let per_host = match options.per_host {
            0 => ((limit.saturating_sub(256)) / FDS_PER_AGENT).min(2_000) as usize,
            n => n,
        };
        if per_host == 0 {
            bail!("the open-file limit ({limit}) leaves no room for agents: raise `ulimit -Hn`");
        }
        if limit < options.devices as u64 + 256 {
            bail!("the server needs a descriptor per device: the hard open-file limit {limit} is below {} — raise `ulimit -Hn`", options.devices + 256);
        }
        let disk = tempfile::Builder::new().prefix("latchkey-fleet-").tempdir()?;
        let shm_root = Path::new("/dev/shm");
        let shm = if shm_root.is_dir() {
            tempfile::Builder::new().prefix("latchkey-fleet-").tempdir_in(shm_root)?
        } else {
            tempfile::Builder::new().prefix("latchkey-fleet-agents-").tempdir()?
        };
        let server = ServerProc::start(&bins.server, &disk.path().join("server"), HEARTBEAT)?;
        let admin = server.admin()?;
        std::thread::sleep(Duration::from_secs(1));
        let server_rss_empty = ProcStat::of(server.pid())?.rss_kib;
        let hosts_needed = options.devices.div_ceil(per_host);
        note(bench, "setup", &format!(
            "{} agents in {hosts_needed} agents-host processes (≤ {per_host} each, open-file limit {limit}), state on {} (tmpfs: agent fsyncs not measured); server in its own process, data on {}",
            options.devices, shm.path().display(), disk.path().display()
        ));

        // One token per device, made through the admin API (the writer batches them).
        let tokens: Vec<String> = rt.block_on(async {
            futures::stream::iter(0..options.devices)
                .map(|_| admin.create_token(Duration::from_secs(3600)))
                .buffer_unordered(64)
                .map(|t| t.map(|t| t.expose().to_owned()))
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<Result<Vec<_>, _>>()
        })?;
        let me = std::env::current_exe()?;
        let started = Instant::now();
        let mut hosts = Vec::new();
        for (i, chunk) in tokens.chunks(per_host).enumerate() {
            let dir = shm.path().join(format!("host-{i}"));
            std::fs::create_dir_all(&dir)?;
            let token_file = dir.join("tokens");
            {
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .write(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&token_file)?;
                for t in chunk {
                    writeln!(f, "{t}")?;
                }
            }
            let child = Command::new(&me)
                .args(["agents-host", "--dir"])
                .arg(&dir)
                .args(["--server", &server.addr, "--ca"])
                .arg(server.ca())
                .arg("--tokens")
                .arg(&token_file)
                .args(["--heartbeat", HEARTBEAT])
                .args(["--parent", &std::process::id().to_string()])
                .stdout(Stdio::piped())
                .stderr(std::fs::File::create(dir.join("host.log"))?)
                .spawn()?;
            hosts.push(child);
        }
        for host in &mut hosts {
            let mut line = String::new();
            BufReader::new(host.stdout.as_mut().context("host stdout")?).read_line(&mut line)?;
            if !line.starts_with("ready") {
                bail!("an agents-host failed: {line:?} (see its host.log)");
            }
        }
        let n = options.devices as f64;
        let limit = Duration::from_secs(120 + options.devices as u64 / 50);
        wait("every device on its push stream", limit, || Ok(server.metric("latchkey_streams_connected")? >= n))?;
        emit(bench, "enroll_and_connect", started.elapsed().as_secs_f64(), "s", None);
        Ok(Self { server, hosts, devices: options.devices, server_rss_empty, _disk: disk, _shm: shm })
    }

    /// Host processes that have exited (an agent that gave up takes nothing down, but a host
    /// that died means its agents did).
    pub fn hosts_gone(&mut self) -> usize {
        self.hosts.iter_mut().map(|h| h.try_wait()).filter(|w| matches!(w, Ok(Some(_)))).count()
    }

    /// CPU seconds used so far by the server, the agents-host processes together, and this
    /// process (the admin issuing the commands and the observer counting the results).
    fn cpu_seconds(&self) -> Result<[f64; 3]> {
        let hosts = self.hosts.iter().map(|h| cpu_seconds(h.id())).sum::<Result<f64>>()?;
        Ok([cpu_seconds(self.server.pid())?, hosts, cpu_seconds(std::process::id())?])
    }
}

/// `fleet`.
pub fn run(bins: &Bins, options: &Options) -> Result<()> {
    const BENCH: &str = "fleet";
    let rt = tokio::runtime::Runtime::new()?;
    let mut fleet = Fleet::start(BENCH, bins, options, &rt)?;
    let admin = fleet.server.admin()?;
    let n = fleet.devices;

    std::thread::sleep(Duration::from_secs(5));
    let idle = ProcStat::of(fleet.server.pid())?.rss_kib;
    let per_conn = idle.saturating_sub(fleet.server_rss_empty) as f64 / n as f64;
    emit(BENCH, "server_rss_idle", idle as f64, "KiB", Some(fleet.server_rss_empty as f64));
    emit(BENCH, "server_rss_per_idle_connection", per_conn, "KiB", None);

    let devices: Vec<String> = rt
        .block_on(admin.store.devices())?
        .into_iter()
        .filter(|d| d.status == DeviceStatus::Active)
        .map(|d| d.device_id)
        .collect();
    if devices.len() != n {
        bail!("{} enrolled devices, expected {n}", devices.len());
    }
    // Issued the way an admin tool would: through the admin API, many at once (the writer
    // commits them in groups). Results are counted while the commands are still being issued.
    let admin = std::sync::Arc::new(admin);
    let issued = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let cpu_before = fleet.cpu_seconds()?;
    let started = Instant::now();
    let issuer = {
        let (admin, issued) = (admin.clone(), issued.clone());
        rt.spawn(async move {
            let lock = Request::Lock { message: String::new(), phone: String::new() };
            let options = ActionOptions { ttl: Duration::from_secs(600), force: false };
            let outcomes = futures::stream::iter(devices)
                .map(|d| {
                    let (admin, lock, issued) = (admin.clone(), lock.clone(), issued.clone());
                    async move {
                        let queued = admin.queue_action(&d, &lock, options).await.map(|_| ());
                        if queued.is_ok() {
                            issued.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        queued
                    }
                })
                .buffer_unordered(256)
                .collect::<Vec<_>>()
                .await;
            (outcomes.iter().filter(|q| q.is_err()).count(), started.elapsed().as_secs_f64())
        })
    };
    // While the run lasts, results are counted as the commands issued so far less those still
    // open: one read of the open commands' index. Reading every command and device (`stats`,
    // below) took 42 ms a time on average here, and at one read every 20 ms the observer was a
    // large part of the load it measured. A command stored but not yet counted as issued makes
    // the count low, never high.
    let finished_so_far = |rt: &tokio::runtime::Runtime| -> Result<u64> {
        let issued = issued.load(std::sync::atomic::Ordering::Relaxed);
        let open = rt.block_on(admin.store.open_commands(latchkey_server::now_ms()))?;
        Ok(issued.saturating_sub(open))
    };
    let done = |rt: &tokio::runtime::Runtime| -> Result<(u64, u64)> {
        let stats = rt.block_on(admin.store.stats(latchkey_server::now_ms()))?;
        let mut finished = 0;
        let mut succeeded = 0;
        for ((action, state), count) in stats.by_action_state {
            if action == "remote_lock" && state != "pending" && state != "sent" {
                finished += count;
                if state == "succeeded" {
                    succeeded += count;
                }
            }
        }
        Ok((finished, succeeded))
    };
    let mut marks: Vec<(f64, Option<f64>)> = vec![(0.5, None), (0.99, None), (1.0, None)];
    let limit = Duration::from_secs(120);
    let (mut polling, mut polls) = (Duration::ZERO, 0u32);
    loop {
        let poll = Instant::now();
        let finished = finished_so_far(&rt)?;
        polling += poll.elapsed();
        polls += 1;
        let t = started.elapsed().as_secs_f64();
        for (share, at) in &mut marks {
            if at.is_none() && finished as f64 >= *share * n as f64 {
                *at = Some(t);
            }
        }
        if marks.iter().all(|(_, at)| at.is_some()) || started.elapsed() > limit {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Up to the last result: the check-ins that follow the commands are not in it.
    let cpu_after = fleet.cpu_seconds()?;
    for (share, at) in &marks {
        let name = format!("results_{}pct", (share * 100.0) as u32);
        emit(BENCH, &name, at.unwrap_or(f64::NAN), "s", None);
    }
    let (issue_errors, issued) = rt.block_on(issuer)?;
    emit(BENCH, "issue_all", issued, "s", None);
    emit(BENCH, "results_poll_mean", polling.as_secs_f64() * 1000.0 / f64::from(polls.max(1)), "ms", None);
    emit(BENCH, "results_polls", f64::from(polls), "count", None);
    let (finished, succeeded) = done(&rt)?;
    emit(BENCH, "results_per_second", finished as f64 / marks[2].1.unwrap_or(limit.as_secs_f64()), "results/s", None);
    for (i, who) in ["server", "agents_hosts", "bench"].iter().enumerate() {
        let ms = (cpu_after[i] - cpu_before[i]) * 1000.0 / n as f64;
        emit(BENCH, &format!("cpu_per_command_{who}"), ms, "ms", None);
    }
    let errors = issue_errors as u64 + (n as u64 - succeeded) + fleet.hosts_gone() as u64;
    emit(BENCH, "errors", errors as f64, "count", None);
    if errors > 0 {
        bail!(
            "{issue_errors} issue errors, {} of {n} results not succeeded ({finished} finished)",
            n as u64 - succeeded
        );
    }
    Ok(())
}

/// `storm`.
pub fn storm(bins: &Bins, options: &Options) -> Result<()> {
    const BENCH: &str = "storm";
    let rt = tokio::runtime::Runtime::new()?;
    let mut fleet = Fleet::start(BENCH, bins, options, &rt)?;
    let n = fleet.devices as f64;
    fleet.server.restart()?;
    let started = Instant::now();
    let mut last = 0.0;
    let mut busiest = 0.0f64;
    let limit = Duration::from_secs(300);
    let mut back = None;
    while started.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(100));
        let accepted = fleet.server.metric("latchkey_connections_accepted_total")?;
        busiest = busiest.max(accepted - last);
        last = accepted;
        if fleet.server.metric("latchkey_streams_connected")? >= n {
            back = Some(started.elapsed().as_secs_f64());
            break;
        }
    }
    // Baseline: every device at once, the stampede a fixed reconnect delay would cause.
    emit(BENCH, "connections_busiest_100ms", busiest, "connections", Some(n));
    emit(BENCH, "connections_total", last, "connections", Some(n));
    emit(BENCH, "all_back", back.unwrap_or(f64::NAN), "s", None);
    let gone = fleet.hosts_gone();
    emit(BENCH, "gave_up", if back.is_some() { gone as f64 } else { n }, "count", None);
    if back.is_none() || gone > 0 {
        bail!("not every device came back within {limit:?}");
    }
    Ok(())
}

/// `agents-host` (run by `fleet` and `storm`): enrolls one agent per token in `tokens`, runs
/// them all in this process, prints `ready N`, and stops them on SIGTERM.
pub fn host(dir: &Path, server: &str, ca: &Path, tokens: &Path, heartbeat: &str, parent: u32) -> Result<()> {
    // A bench killed by hand must not leave thousands of agents behind, reconnecting for ever
    // and loading the next run. The signal comes when the thread that spawned this host ends:
    // the bench spawns its hosts from its main thread. Its check after the request closes the
    // race with a bench that died first.
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)?;
    if u32::try_from(nix::unistd::getppid().as_raw()).ok() != Some(parent) {
        bail!("the bench that started this agents-host (process {parent}) has gone");
    }
    raise_nofile()?;
    // A device runs one agent; a host runs thousands, and with tokio's default pool (up to 512
    // threads) each agent's journal and device work got a thread of its own: about 350 threads
    // per host under the command burst, whose switching was load of the bench's own making.
    let rt =
        tokio::runtime::Builder::new_multi_thread().enable_all().max_blocking_threads(HOST_BLOCKING_THREADS).build()?;
    rt.block_on(async {
        let text = std::fs::read_to_string(tokens)?;
        let tokens: Vec<String> = text.lines().map(str::to_owned).collect();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let configs = futures::stream::iter(tokens.into_iter().enumerate())
            .map(|(i, token)| {
                let dir = dir.join(format!("a{i}"));
                async move { enroll_one(&dir, server, ca, &token, heartbeat).await }
            })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await;
        let mut tasks = Vec::new();
        for config in configs {
            let config = config?;
            let stop = shutdown.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = latchkey::agent::run(config, latchkey::agent::RunOptions::default(), stop).await {
                    eprintln!("agent stopped: {e}");
                }
            }));
        }
        println!("ready {}", tasks.len());
        std::io::stdout().flush()?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        term.recv().await;
        shutdown.cancel();
        for task in tasks {
            let _ = task.await;
        }
        Ok::<_, anyhow::Error>(())
    })
}

async fn enroll_one(
    dir: &Path,
    server: &str,
    ca: &Path,
    token: &str,
    heartbeat: &str,
) -> Result<latchkey::config::Config> {
    std::fs::create_dir_all(dir)?;
    let sim: PathBuf = dir.join("sim.json");
    latchkey_platform::sim::profile::build("aosp-user", &Default::default())?.save(&sim).map_err(anyhow::Error::msg)?;
    let text = format!(
        "[server]\nurl = \"https://{server}\"\nca = \"{}\"\n[state]\ndir = \"{}\"\n[platform]\nport = \"sim\"\nsim_state = \"{}\"\n\
         [connect]\nheartbeat = \"{heartbeat}\"\nbackoff_max = \"30s\"\n[control]\nsocket = \"{}\"\n",
        ca.display(),
        dir.join("state").display(),
        sim.display(),
        dir.join("control.sock").display()
    );
    std::fs::write(dir.join("config.toml"), text)?;
    let config = latchkey::config::Config::load(&dir.join("config.toml"))?;
    latchkey::enroll::enroll(&config, &latchkey_platform::Secret::new(token.to_owned()))
        .await
        .map_err(|e| anyhow::anyhow!("enrolling {}: {}", dir.display(), e.message))?;
    Ok(config)
}
