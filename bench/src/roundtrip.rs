//! `roundtrip`: one agent (the device build, its own process) and the server (its own
//! process); commands issued one after another through the admin API — stored, pushed,
//! journaled, applied on the simulated device, reported — each timed from the admin call to
//! the stored result.
//!
//! The floor, measured in the same run on the same disk and the same mTLS channel: one bare
//! unary RPC (gRPC health check, which touches no storage) plus the fsyncs a durable command
//! truly needs: (1) the server stores the command, (2) the agent journals it before acting,
//! (3) the device records its own change, (4) the agent journals the result, (5) the server
//! stores the result. Anything above that is ours.
//!
//! Each floor sample is taken between two commands (after a result, before the next issue),
//! so it meets the disk and the CPUs as a command does: at the commands' cadence, after the
//! same idle moment. Back to back, the same write + fdatasync costs about half as much on
//! this machine's ext4 (measured: 0.075 against 0.21 ms with a 2 ms pause before each):
//! writes less than a clock tick apart share one mtime, so fdatasync writes the inode block
//! only now and then (8 of 300 back to back, 175 of 300 with the pause), and the thread and
//! its CPU do not start from idle. That back-to-back floor is printed too
//! (`floor_back_to_back_p50`), for comparison; it is not the baseline.
use std::io::{Seek, Write};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use latchkey_server::records::CommandState;

use crate::procs::{agent_config, wait_result, AgentProc, Bins, ServerProc};
use crate::procstat::{cpu_seconds, SwitchCounter};
use crate::report::{emit, note, Samples};

const BENCH: &str = "roundtrip";
/// The durable writes a command needs (see the module doc).
pub const NEEDED_FSYNCS: f64 = 5.0;

/// What to run.
pub struct Options {
    /// Commands timed.
    pub commands: usize,
    /// Samples for each floor component.
    pub floor_samples: usize,
}

/// The floor's two parts, one sample at a time: 512 bytes written and fdatasync'd in the
/// agent's state directory, and a bare unary RPC over an mTLS channel with the agent's own
/// identity.
struct FloorProbe {
    file: std::fs::File,
    path: std::path::PathBuf,
    client: tonic_health::pb::health_client::HealthClient<tonic::transport::Channel>,
}

impl FloorProbe {
    async fn open(server: &ServerProc, agent: &AgentProc) -> Result<Self> {
        let state = agent.config.with_file_name("state");
        let path = state.join("fsync-probe");
        let file = std::fs::OpenOptions::new().create(true).truncate(true).write(true).open(&path)?;
        let identity: serde_json::Value = serde_json::from_slice(&std::fs::read(state.join("identity.json"))?)?;
        let cert = identity["certificate_pem"].as_str().context("certificate")?;
        let key = identity["private_key_pem"].as_str().context("key")?;
        let ca = std::fs::read_to_string(server.ca())?;
        let tls = latchkey::transport::tls::client_config(&ca, Some((cert, key)), latchkey::transport::tls::H2)
            .map_err(anyhow::Error::msg)?;
        let channel = latchkey::transport::channel(&format!("https://{}", server.addr), tls, Duration::from_secs(10))
            .await
            .map_err(anyhow::Error::msg)?;
        let mut probe = Self { file, path, client: tonic_health::pb::health_client::HealthClient::new(channel) };
        for _ in 0..20 {
            probe.unary().await?;
            probe.fsync()?;
        }
        Ok(probe)
    }

    /// One write + fdatasync; seconds.
    fn fsync(&mut self) -> Result<f64> {
        let t = Instant::now();
        self.file.rewind()?;
        self.file.write_all(&[0x5au8; 512])?;
        self.file.sync_data()?;
        Ok(t.elapsed().as_secs_f64())
    }

    /// One health check (it touches no storage); seconds.
    async fn unary(&mut self) -> Result<f64> {
        let t = Instant::now();
        self.client.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await?;
        Ok(t.elapsed().as_secs_f64())
    }

    /// `n` of each, back to back; seconds each.
    async fn back_to_back(&mut self, n: usize) -> Result<(Samples, Samples)> {
        let mut fsync = Vec::with_capacity(n);
        for _ in 0..n {
            fsync.push(self.fsync()?);
        }
        let mut unary = Vec::with_capacity(n);
        for _ in 0..n {
            unary.push(self.unary().await?);
        }
        Ok((Samples::new(fsync), Samples::new(unary)))
    }
}

impl Drop for FloorProbe {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Now on the wall clock, in (fractional) Unix milliseconds: the clock the server stamps.
fn wall_ms() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0)
}

/// Where one command's time went, in ms, from the bench's own times and the times the server
/// stored (`issued_at` before the admin's durable enqueue, `sent_at` when pushed, `reported_at`
/// when the result arrived, before its durable write). The server's times are whole
/// milliseconds, so only means over many commands say anything.
#[derive(Clone, Copy)]
struct Stretches {
    /// The admin before the enqueue: the device's last report read, the command built and its
    /// outcome predicted.
    admin_prepare: f64,
    /// The enqueue (one fsync), the wake-up and the push.
    issued_to_sent: f64,
    /// The agent (journal, device, journal: three fsyncs) and the report on its way.
    sent_to_reported: f64,
    /// The server's result write (one fsync) and the answer to the admin's `wait`.
    reported_to_observed: f64,
}

impl Stretches {
    fn of(row: &latchkey_server::records::ActionRecord, called: f64, observed: f64) -> Self {
        // A stored time is truncated to its millisecond: on average half a millisecond early.
        let exact = |ms: i64| ms as f64 + 0.5;
        Self {
            admin_prepare: exact(row.issued_at) - called,
            issued_to_sent: (row.sent_at - row.issued_at) as f64,
            sent_to_reported: (row.reported_at - row.sent_at) as f64,
            reported_to_observed: observed - exact(row.reported_at),
        }
    }

    fn means(all: &[Self]) -> [(&'static str, f64); 4] {
        let n = all.len().max(1) as f64;
        let mean = |f: fn(&Self) -> f64| all.iter().map(f).sum::<f64>() / n;
        [
            ("admin_prepare", mean(|s| s.admin_prepare)),
            ("issued_to_sent", mean(|s| s.issued_to_sent)),
            ("sent_to_reported", mean(|s| s.sent_to_reported)),
            ("reported_to_observed", mean(|s| s.reported_to_observed)),
        ]
    }
}

/// Runs the benchmark.
pub fn run(bins: &Bins, options: &Options) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let dir = crate::procs::run_dir("latchkey-roundtrip-")?;
    let server = ServerProc::start(&bins.server, &dir.path().join("server"), "20s")?;
    let admin = server.admin()?;
    let config = agent_config(&dir.path().join("agent"), &server, "20s")?;
    let agent = rt.block_on(AgentProc::enroll_and_start(&bins.agent, &config, &admin))?;
    agent.wait_stream(Duration::from_secs(30))?;
    note(
        BENCH,
        "setup",
        &format!(
            "server {} and agent {} as separate processes, release builds, disk {}",
            bins.server.display(),
            bins.agent.display(),
            dir.path().display()
        ),
    );

    let queue = || rt.block_on(agent.queue_lock(&admin));
    // Woken by the server once the result is stored (`wait` on its admin socket): no polling
    // competes with the processes under test for the two cores.
    let wait = |command_id: &str| rt.block_on(wait_result(&admin, command_id));

    for _ in 0..20 {
        let command_id = queue()?;
        wait(&command_id)?;
    }
    let mut issuing = Vec::with_capacity(options.commands);
    let mut observed = Vec::with_capacity(options.commands);
    let mut stretches = Vec::with_capacity(options.commands);
    // Where a command's time goes when it is not the disk: the CPU each process spends on it and
    // the agent's wake-ups (each hand-off between threads is two context switches).
    let cpu = |pid| cpu_seconds(pid).unwrap_or(f64::NAN);
    let mut probe = rt.block_on(FloorProbe::open(&server, &agent))?;
    let cpu_before = [cpu(server.pid()), cpu(agent.pid()), cpu(std::process::id())];
    let (mut floor_fsync, mut floor_unary) =
        (Vec::with_capacity(options.commands), Vec::with_capacity(options.commands));
    let mut agent_switches = SwitchCounter::start(agent.pid())?;
    let (mut probing, mut probe_cpu) = (Duration::ZERO, [0.0; 3]);
    let started = Instant::now();
    for i in 0..options.commands {
        if i % 200 == 0 {
            agent_switches.sample()?;
        }
        let (t, called) = (Instant::now(), wall_ms());
        let command_id = queue()?;
        issuing.push(t.elapsed().as_secs_f64() * 1000.0);
        let row = wait(&command_id)?;
        observed.push(t.elapsed().as_secs_f64() * 1000.0);
        if row.state != CommandState::Done(latchkey_platform::Status::Succeeded) {
            bail!("command {} ended {}", row.command_id, row.state.as_str());
        }
        stretches.push(Stretches::of(&row, called, wall_ms()));
        // The floor's samples, between this command and the next (see the module doc); their
        // time and CPU are taken out of the commands' figures.
        let (t, before) = (Instant::now(), [cpu(server.pid()), cpu(std::process::id())]);
        floor_fsync.push(probe.fsync()?);
        floor_unary.push(rt.block_on(probe.unary())?);
        probing += t.elapsed();
        probe_cpu[0] += cpu(server.pid()) - before[0];
        probe_cpu[2] += cpu(std::process::id()) - before[1];
    }
    let elapsed = (started.elapsed() - probing).as_secs_f64();
    agent_switches.sample()?;
    let cpu_after = [cpu(server.pid()), cpu(agent.pid()), cpu(std::process::id())];

    let floor_of = |fsync: &Samples, unary: &Samples| unary.p(50.0) * 1000.0 + NEEDED_FSYNCS * fsync.p(50.0) * 1000.0;
    let (fsync, unary) = (Samples::new(floor_fsync), Samples::new(floor_unary));
    let floor = floor_of(&fsync, &unary);
    emit(BENCH, "floor_unary_mtls_p50", unary.p(50.0) * 1000.0, "ms", None);
    emit(BENCH, "floor_fsync_512b_p50", fsync.p(50.0) * 1000.0, "ms", None);
    emit(BENCH, "floor_p50", floor, "ms", None);
    let (b2b_fsync, b2b_unary) = rt.block_on(probe.back_to_back(options.floor_samples))?;
    emit(BENCH, "floor_back_to_back_fsync_512b_p50", b2b_fsync.p(50.0) * 1000.0, "ms", None);
    emit(BENCH, "floor_back_to_back_unary_mtls_p50", b2b_unary.p(50.0) * 1000.0, "ms", None);
    emit(BENCH, "floor_back_to_back_p50", floor_of(&b2b_fsync, &b2b_unary), "ms", None);

    let observed = Samples::new(observed);
    // Issue to report as the server recorded it: the two stretches between its own stamps.
    let recorded = Samples::new(stretches.iter().map(|s| s.issued_to_sent + s.sent_to_reported).collect());
    emit(BENCH, "commands", observed.len() as f64, "count", None);
    for p in [50.0, 90.0, 99.0] {
        emit(BENCH, &format!("latency_p{p}"), observed.p(p), "ms", Some(floor));
    }
    emit(BENCH, "latency_max", observed.p(100.0), "ms", Some(floor));
    // The admin's part: store the command (one fsync), tell the serving process.
    emit(BENCH, "issue_p50", Samples::new(issuing).p(50.0), "ms", None);
    emit(BENCH, "server_recorded_p50", recorded.p(50.0), "ms", None);
    emit(BENCH, "server_recorded_p99", recorded.p(99.0), "ms", None);
    for (name, mean) in Stretches::means(&stretches) {
        emit(BENCH, &format!("stretch_{name}_mean"), mean, "ms", None);
    }
    emit(BENCH, "throughput", options.commands as f64 / elapsed, "commands/s", None);
    let n = options.commands as f64;
    for (i, who) in ["server", "agent", "bench"].iter().enumerate() {
        let ms = (cpu_after[i] - cpu_before[i] - probe_cpu[i]) * 1000.0 / n;
        emit(BENCH, &format!("cpu_per_command_{who}"), ms, "ms", None);
    }
    emit(BENCH, "agent_context_switches_per_command", agent_switches.total as f64 / n, "count", None);
    drop(agent);
    Ok(())
}
