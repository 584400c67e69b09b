//! `footprint`: the device build of the agent, enrolled, on its push stream and idle: binary
//! size, memory (PSS, RSS), threads, wake-ups (context switches over every thread) in a window,
//! and the time from start to an open push stream (as the server sees it). Then a burst of
//! commands, and the memory the agent keeps after it (its caches are bounded; the idle figure
//! is the baseline).
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::procs::{agent_config, wait_result, AgentProc, Bins, ServerProc};
use crate::procstat::{ProcStat, SwitchCounter};
use crate::report::{emit, note};

const BENCH: &str = "footprint";
/// The agent's heartbeat in this run (the shipped default).
const HEARTBEAT: Duration = Duration::from_secs(20);
/// Commands in the burst after the idle window: enough to fill a default-sized SQLite cache
/// several times over if it were unbounded.
const BURST: usize = 2_000;

/// Runs the benchmark with an idle window of `window`.
pub fn run(bins: &Bins, window: Duration) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let dir = crate::procs::run_dir("latchkey-footprint-")?;
    let server = ServerProc::start(&bins.server, &dir.path().join("server"), "20s")?;
    let admin = server.admin()?;
    let config = agent_config(&dir.path().join("agent"), &server, "20s")?;
    let agent = rt.block_on(AgentProc::enroll_and_start(&bins.agent, &config, &admin))?;
    // Watched from the server, so the agent is not disturbed by status requests.
    let until = Instant::now() + Duration::from_secs(30);
    while server.metric("latchkey_streams_connected")? < 1.0 {
        if Instant::now() > until {
            bail!("the agent did not open its push stream");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let to_stream = agent.started.elapsed();
    note(BENCH, "binary", &bins.agent.display().to_string());
    emit(BENCH, "stripped_size", std::fs::metadata(&bins.agent)?.len() as f64, "bytes", None);
    emit(BENCH, "start_to_stream_open", to_stream.as_secs_f64() * 1000.0, "ms", None);

    // Let start-up settle, then watch an idle window.
    std::thread::sleep(Duration::from_secs(2));
    let mut switches = SwitchCounter::start(agent.pid())?;
    let end = Instant::now() + window;
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
        switches.sample()?;
    }
    let after = ProcStat::of(agent.pid())?;
    let heartbeats = window.as_secs_f64() / HEARTBEAT.as_secs_f64();
    emit(BENCH, "pss", after.pss_kib as f64, "KiB", None);
    emit(BENCH, "rss", after.rss_kib as f64, "KiB", None);
    emit(BENCH, "threads", after.threads as f64, "count", None);
    emit(BENCH, "idle_window", window.as_secs_f64(), "s", None);
    // Baseline: the heartbeats due in the window; the ratio is wake-ups per heartbeat.
    emit(BENCH, "wakeups", switches.total as f64, "count", Some(heartbeats));

    for _ in 0..BURST {
        let command_id = rt.block_on(agent.queue_lock(&admin))?;
        rt.block_on(wait_result(&admin, &command_id))?;
    }
    let busy = ProcStat::of(agent.pid())?;
    emit(BENCH, "commands_in_burst", BURST as f64, "count", None);
    emit(BENCH, "pss_after_burst", busy.pss_kib as f64, "KiB", Some(after.pss_kib as f64));
    drop(agent);
    Ok(())
}
