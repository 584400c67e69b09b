//! What /proc says about a process: resident and proportional memory, threads, and context
//! switches counted over its threads (each one is a wake-up).
use anyhow::{Context, Result};

/// One reading.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcStat {
    /// Resident set, KiB.
    pub rss_kib: u64,
    /// Proportional set (shared pages divided among their users), KiB.
    pub pss_kib: u64,
    /// Threads.
    pub threads: u64,
}

fn field(text: &str, name: &str) -> Option<u64> {
    text.lines().find(|l| l.starts_with(name)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
}

impl ProcStat {
    /// Reads /proc/PID.
    pub fn of(pid: u32) -> Result<Self> {
        let status =
            std::fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("process {pid}"))?;
        let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        Ok(Self {
            rss_kib: field(&status, "VmRSS:").unwrap_or(0),
            pss_kib: field(&rollup, "Pss:").unwrap_or(0),
            threads: field(&status, "Threads:").unwrap_or(0),
        })
    }
}

/// CPU time a process has used so far (user + system, all its threads, live and exited), seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("process {pid}"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("/proc/PID/stat without a command name")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of proc(5); `rest` starts at field 3.
    let ticks = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<u64>().ok()).context("/proc/PID/stat field");
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.context("CLK_TCK")?;
    Ok((ticks(14)? + ticks(15)?) as f64 / per_second as f64)
}

/// Context switches of a process over a window, counted per thread: threads come and go (the
/// agent's blocking pool lets idle ones exit), and a sum over the threads alive at two instants
/// would lose the switches of those that left and can even go backwards. Sampled often enough
/// that a thread's switches are seen before it exits (the pool keeps idle threads 10 s).
pub struct SwitchCounter {
    pid: u32,
    last: std::collections::HashMap<u32, u64>,
    /// Switches since the counter started.
    pub total: u64,
}

impl SwitchCounter {
    /// Starts counting from the switches each thread has now.
    pub fn start(pid: u32) -> Result<Self> {
        let mut counter = Self { pid, last: Default::default(), total: 0 };
        counter.sample()?;
        counter.total = 0;
        Ok(counter)
    }

    /// Adds what every thread did since the last sample (a new thread's whole count is new).
    pub fn sample(&mut self) -> Result<()> {
        let mut now = std::collections::HashMap::new();
        for task in std::fs::read_dir(format!("/proc/{}/task", self.pid))?.flatten() {
            let Some(tid) = task.file_name().to_str().and_then(|t| t.parse::<u32>().ok()) else { continue };
            let text = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            let switches = field(&text, "voluntary_ctxt_switches:").unwrap_or(0)
                + field(&text, "nonvoluntary_ctxt_switches:").unwrap_or(0);
            self.total += switches.saturating_sub(self.last.get(&tid).copied().unwrap_or(0));
            now.insert(tid, switches);
        }
        self.last = now;
        Ok(())
    }
}

/// Raises this process's open-file limit to its hard limit; returns the limit now in force.
pub fn raise_nofile() -> Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    Ok(hard)
}
