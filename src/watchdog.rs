//! The service manager's watchdog, fed by the loops that do the work: the link driver pings from
//! its own loop (so a stuck link loop stops the pings) and only while the command worker is not
//! stuck on one command for longer than the watchdog period. A frozen or stopped process pings
//! nothing, and systemd restarts it (`WatchdogSec=`).
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The watchdog as the agent sees it.
#[derive(Clone)]
pub struct Watchdog {
    period: Option<Duration>,
    worker_busy_since_ms: Arc<AtomicI64>,
    warned: Arc<AtomicBool>,
}

/// The worker's side: marks when it starts and ends a command.
#[derive(Clone)]
pub struct WorkerBeat(Arc<AtomicI64>);

impl WorkerBeat {
    /// A command started.
    pub fn busy(&self) {
        self.0.store(latchkey_common::time::now_ms(), Ordering::Relaxed);
    }

    /// The command finished.
    pub fn idle(&self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

impl Watchdog {
    /// The watchdog systemd asked for (`WATCHDOG_USEC`), if any.
    pub fn from_env() -> Self {
        Self::with_period(crate::systemd::watchdog_period())
    }

    /// A watchdog with this period (`None`: none).
    pub fn with_period(period: Option<Duration>) -> Self {
        Self { period, worker_busy_since_ms: Arc::default(), warned: Arc::default() }
    }

    /// How often to ping: half the period, as systemd recommends.
    pub fn interval(&self) -> Option<Duration> {
        self.period.map(|p| p / 2)
    }

    /// The worker's handle.
    pub fn worker(&self) -> WorkerBeat {
        WorkerBeat(self.worker_busy_since_ms.clone())
    }

    /// True unless the worker has been on one command for a whole period.
    pub fn healthy(&self) -> bool {
        let Some(period) = self.period else { return true };
        let since = self.worker_busy_since_ms.load(Ordering::Relaxed);
        since == 0 || latchkey_common::time::now_ms() - since < i64::try_from(period.as_millis()).unwrap_or(i64::MAX)
    }

    /// Pings systemd when everything that does work is making progress.
    pub fn ping(&self) {
        if self.healthy() {
            self.warned.store(false, Ordering::Relaxed);
            crate::systemd::notify("WATCHDOG=1");
        } else if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::error!(
                "the command worker is stuck; no longer pinging the watchdog so the service manager restarts the agent"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_stuck_for_a_whole_period_is_unhealthy() {
        let w = Watchdog::with_period(Some(Duration::from_secs(60)));
        assert!(w.healthy());
        w.worker().busy();
        assert!(w.healthy(), "just started");
        w.worker_busy_since_ms.store(latchkey_common::time::now_ms() - 61_000, Ordering::Relaxed);
        assert!(!w.healthy());
        w.worker().idle();
        assert!(w.healthy());
        assert_eq!(w.interval(), Some(Duration::from_secs(30)));
    }
}
