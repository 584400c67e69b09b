//! What /proc says about a process: resident and proportional memory, threads, and context
//! switches summed over its threads (each one is a wake-up).
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
    /// Voluntary plus involuntary context switches of every thread.
    pub switches: u64,
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
        let mut switches = 0;
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))?.flatten() {
            let text = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            switches += field(&text, "voluntary_ctxt_switches:").unwrap_or(0)
                + field(&text, "nonvoluntary_ctxt_switches:").unwrap_or(0);
        }
        Ok(Self {
            rss_kib: field(&status, "VmRSS:").unwrap_or(0),
            pss_kib: field(&rollup, "Pss:").unwrap_or(0),
            threads: field(&status, "Threads:").unwrap_or(0),
            switches,
        })
    }
}

/// Raises this process's open-file limit to its hard limit; returns the limit now in force.
pub fn raise_nofile() -> Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    Ok(hard)
}
