//! The link's policy as a pure state machine: given where the link is and what happened, what to
//! do next. No I/O and no clock of its own — the driver passes `now` — so every rule is tested
//! as a table.
//!
//! The rules worth knowing:
//! - A session opens with a check-in, a flush of unreported results and a poll; then the push
//!   stream when there is one, polling otherwise.
//! - The stream is dead when nothing was heard for three heartbeat periods — the longer of ours
//!   and the one the server announced in its first event.
//! - Reconnects wait a random delay (full jitter) in a window that doubles with each failure up
//!   to `backoff_max`. After a lost stream (a server restart drops every device at once) the
//!   first window is the heartbeat period, not half a second, so a fleet comes back spread over
//!   a heartbeat instead of all at once; the window is never clamped to a fixed value that
//!   would line retries up again.
//! - A refused renewal is not a link failure: results keep flowing while renewal is retried
//!   (its window doubling from the heartbeat, up to an hour). A renewed identity reconnects at
//!   once, so the new certificate is used (and the old one retired at the server).
//! - A device the server no longer manages stops the agent.
use std::time::Duration;

use tokio::time::Instant;

/// First reconnect window after a failed connection (not after a lost stream).
pub const BASE: Duration = Duration::from_millis(500);
/// Longest wait between renewal attempts.
pub const MAX_RENEWAL_RETRY: Duration = Duration::from_secs(3600);

/// The periods the machine works with.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Our heartbeat period.
    pub heartbeat: Duration,
    /// Ceiling of the reconnect window.
    pub backoff_max: Duration,
    /// Use the push stream when the dialect has one.
    pub push: bool,
}

/// Where the link is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Waiting to reconnect.
    #[default]
    Disconnected,
    /// Opening a connection.
    Connecting,
    /// Connected: check-in, flush, poll, then the stream.
    Opening,
    /// On the push stream.
    #[serde(rename = "stream")]
    Streaming,
    /// Polling.
    #[serde(rename = "poll")]
    Polling,
    /// Stopped.
    Stopped,
}

/// How a call failed, for the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Network, timeout, server error: try again.
    Transient,
    /// The server refused this device's certificate: try again (it may be a server problem),
    /// and say so.
    Identity,
    /// The server no longer manages this device.
    Unmanaged,
}

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The agent started.
    Start,
    /// The reconnect delay passed.
    ReconnectDue,
    /// A connection is open.
    Connected,
    /// The opening sequence (check-in, flush, poll) completed.
    Opened,
    /// The push stream is open.
    StreamOpened,
    /// The dialect has no push stream.
    NoPush,
    /// Something arrived on the stream (with the server's heartbeat when it was the first).
    Heard(Option<Duration>),
    /// The stream ended or failed.
    StreamLost,
    /// Heartbeat cadence.
    Tick,
    /// Poll cadence.
    PollDue,
    /// Slow check-in cadence.
    CheckinDue,
    /// New results are in the journal.
    ResultsReady,
    /// The device changed (a command ran).
    DeviceChanged,
    /// The certificate is due for renewal.
    RenewalDue,
    /// A new identity is stored.
    Renewed,
    /// Renewal failed.
    RenewalFailed,
    /// A call failed.
    Failed(Failure),
    /// Stop.
    Shutdown,
}

/// What to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Open a connection.
    Connect,
    /// Check in, flush results, poll.
    Open,
    /// Open the push stream.
    Subscribe,
    /// Send a heartbeat.
    Beat,
    /// Check in if the device changed on its own.
    CheckInIfChanged,
    /// Poll.
    Poll,
    /// Check in.
    CheckIn,
    /// Report unreported results.
    Flush,
    /// Renew the certificate.
    Renew,
    /// Drop the connection and reconnect after this long.
    Reconnect(Duration),
    /// Try renewal again after this long.
    RetryRenewal(Duration),
    /// The device is not managed any more: stop the agent.
    Exit,
    /// Stop (shutdown).
    Stop,
}

/// The link's state.
pub struct Machine {
    timing: Timing,
    phase: Phase,
    failures: u32,
    lost_streams: u32,
    renewal_failures: u32,
    last_heard: Option<Instant>,
    server_heartbeat: Duration,
    pending: Pending,
    last_failure: Option<Failure>,
    jitter: Box<dyn FnMut() -> f64 + Send>,
}

/// Work that arrived while the link was not up; done once it is.
#[derive(Default)]
struct Pending {
    flush: bool,
    check_in: bool,
    renew: bool,
}

/// A uniform delay in `[0, window]`.
fn jittered(window: Duration, unit: f64) -> Duration {
    window.mul_f64(unit.clamp(0.0, 1.0))
}

/// `first` doubled `n - 1` times, at most `ceiling`.
fn window(first: Duration, n: u32, ceiling: Duration) -> Duration {
    first.saturating_mul(1u32 << n.saturating_sub(1).min(20)).min(ceiling)
}

impl Phase {
    /// Stable text form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disconnected => "disconnected",
            Self::Connecting => "connecting",
            Self::Opening => "opening",
            Self::Streaming => "stream",
            Self::Polling => "poll",
            Self::Stopped => "stopped",
        }
    }
}

impl Machine {
    /// A machine; `jitter` returns uniform numbers in `[0, 1)`.
    pub fn new(timing: Timing, jitter: impl FnMut() -> f64 + Send + 'static) -> Self {
        Self {
            timing,
            phase: Phase::Disconnected,
            failures: 0,
            lost_streams: 0,
            renewal_failures: 0,
            last_heard: None,
            server_heartbeat: timing.heartbeat,
            pending: Pending::default(),
            last_failure: None,
            jitter: Box::new(jitter),
        }
    }

    /// Where the link is.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The last failure since the link was last up.
    pub fn last_failure(&self) -> Option<Failure> {
        self.last_failure
    }

    /// How long the stream may stay silent.
    pub fn silence_limit(&self) -> Duration {
        self.timing.heartbeat.max(self.server_heartbeat) * 3
    }

    fn up(&self) -> bool {
        matches!(self.phase, Phase::Streaming | Phase::Polling)
    }

    /// Work deferred while the link was down.
    fn drain_pending(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        if std::mem::take(&mut self.pending.flush) {
            actions.push(Action::Flush);
        }
        if std::mem::take(&mut self.pending.check_in) {
            actions.push(Action::CheckIn);
        }
        if std::mem::take(&mut self.pending.renew) {
            actions.push(Action::Renew);
        }
        actions
    }

    fn reconnect(&mut self, first: Duration, n: u32) -> Vec<Action> {
        self.phase = Phase::Disconnected;
        self.last_heard = None;
        let delay = jittered(window(first, n, self.timing.backoff_max), (self.jitter)());
        vec![Action::Reconnect(delay)]
    }

    /// The actions for `event` at `now`.
    pub fn next(&mut self, event: Event, now: Instant) -> Vec<Action> {
        use Event as E;
        if self.phase == Phase::Stopped {
            return Vec::new();
        }
        match event {
            E::Shutdown => {
                self.phase = Phase::Stopped;
                vec![Action::Stop]
            }
            E::Failed(Failure::Unmanaged) => {
                self.phase = Phase::Stopped;
                self.last_failure = Some(Failure::Unmanaged);
                vec![Action::Exit]
            }
            E::Start | E::ReconnectDue if matches!(self.phase, Phase::Disconnected) => {
                self.phase = Phase::Connecting;
                vec![Action::Connect]
            }
            E::Connected if self.phase == Phase::Connecting => {
                self.phase = Phase::Opening;
                // The opening sequence includes a flush and a check-in.
                self.pending.flush = false;
                self.pending.check_in = false;
                vec![Action::Open]
            }
            E::Opened if self.phase == Phase::Opening => {
                self.failures = 0;
                self.lost_streams = 0;
                self.last_failure = None;
                if self.timing.push {
                    vec![Action::Subscribe]
                } else {
                    self.phase = Phase::Polling;
                    self.drain_pending()
                }
            }
            E::StreamOpened if self.phase == Phase::Opening => {
                self.phase = Phase::Streaming;
                self.last_heard = Some(now);
                self.drain_pending()
            }
            E::NoPush if self.phase == Phase::Opening => {
                self.phase = Phase::Polling;
                self.drain_pending()
            }
            E::Heard(hello) if self.phase == Phase::Streaming => {
                self.last_heard = Some(now);
                if let Some(period) = hello {
                    self.server_heartbeat = period;
                }
                Vec::new()
            }
            E::Tick if self.phase == Phase::Streaming => {
                let silent = self.last_heard.is_none_or(|t| now.duration_since(t) > self.silence_limit());
                if silent {
                    self.lost_streams += 1;
                    return self.reconnect(self.timing.heartbeat, self.lost_streams);
                }
                vec![Action::Beat, Action::CheckInIfChanged]
            }
            E::Tick if self.phase == Phase::Polling => vec![Action::CheckInIfChanged],
            E::StreamLost if self.phase == Phase::Streaming => {
                self.lost_streams += 1;
                self.reconnect(self.timing.heartbeat, self.lost_streams)
            }
            E::PollDue if self.phase == Phase::Polling => vec![Action::Poll],
            E::CheckinDue | E::DeviceChanged if self.up() => vec![Action::CheckIn],
            E::CheckinDue | E::DeviceChanged => {
                self.pending.check_in = true;
                Vec::new()
            }
            E::ResultsReady if self.up() => vec![Action::Flush],
            E::ResultsReady => {
                self.pending.flush = true;
                Vec::new()
            }
            E::RenewalDue if self.up() => vec![Action::Renew],
            E::RenewalDue => {
                self.pending.renew = true;
                Vec::new()
            }
            E::Renewed => {
                self.renewal_failures = 0;
                self.phase = Phase::Disconnected;
                vec![Action::Reconnect(Duration::ZERO)]
            }
            E::RenewalFailed => {
                self.renewal_failures += 1;
                let wait = window(self.timing.heartbeat, self.renewal_failures, MAX_RENEWAL_RETRY);
                vec![Action::RetryRenewal(wait)]
            }
            E::Failed(kind)
                if matches!(self.phase, Phase::Connecting | Phase::Opening | Phase::Streaming | Phase::Polling) =>
            {
                self.failures += 1;
                self.last_failure = Some(kind);
                let first = if self.lost_streams > 0 { self.timing.heartbeat } else { BASE };
                self.reconnect(first, self.failures)
            }
            // Anything else is stale (a timer from a previous session) and ignored.
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HB: Duration = Duration::from_secs(20);

    fn machine(push: bool) -> Machine {
        Machine::new(Timing { heartbeat: HB, backoff_max: Duration::from_secs(300), push }, || 1.0)
    }

    fn opened(m: &mut Machine, now: Instant) {
        assert_eq!(m.next(Event::Start, now), [Action::Connect]);
        assert_eq!(m.next(Event::Connected, now), [Action::Open]);
        m.next(Event::Opened, now);
        m.next(Event::StreamOpened, now);
    }

    #[test]
    fn a_session_opens_then_streams_or_polls() {
        let now = Instant::now();
        let mut m = machine(true);
        assert_eq!(m.next(Event::Start, now), [Action::Connect]);
        assert_eq!(m.next(Event::Connected, now), [Action::Open]);
        assert_eq!(m.next(Event::Opened, now), [Action::Subscribe]);
        assert_eq!(m.next(Event::NoPush, now), []);
        assert_eq!(m.phase(), Phase::Polling, "a dialect without push polls");
        assert_eq!(m.next(Event::PollDue, now), [Action::Poll]);
        let mut m = machine(false);
        m.next(Event::Start, now);
        m.next(Event::Connected, now);
        assert_eq!(m.next(Event::Opened, now), []);
        assert_eq!(m.phase(), Phase::Polling);
    }

    #[test]
    fn three_silent_heartbeats_end_the_stream_and_the_server_period_counts() {
        let t0 = Instant::now();
        let mut m = machine(true);
        opened(&mut m, t0);
        assert_eq!(m.next(Event::Tick, t0 + HB), [Action::Beat, Action::CheckInIfChanged]);
        assert_eq!(m.next(Event::Tick, t0 + HB * 3), [Action::Beat, Action::CheckInIfChanged]);
        assert!(matches!(m.next(Event::Tick, t0 + HB * 3 + Duration::from_millis(1))[..], [Action::Reconnect(_)]));
        // A server that beats every 60 s is not cut after 60 s of quiet.
        let mut m = machine(true);
        opened(&mut m, t0);
        m.next(Event::Heard(Some(Duration::from_secs(60))), t0);
        assert_eq!(m.next(Event::Tick, t0 + Duration::from_secs(170)), [Action::Beat, Action::CheckInIfChanged]);
        assert!(matches!(m.next(Event::Tick, t0 + Duration::from_secs(181))[..], [Action::Reconnect(_)]));
    }

    #[test]
    fn a_lost_stream_reconnects_within_a_heartbeat_window_that_doubles() {
        let t0 = Instant::now();
        let mut m = machine(true);
        opened(&mut m, t0);
        assert_eq!(m.next(Event::StreamLost, t0), [Action::Reconnect(HB)], "first window: one heartbeat");
        assert_eq!(m.next(Event::ReconnectDue, t0), [Action::Connect]);
        // The server is still down: the window keeps growing from the heartbeat, not from 500 ms.
        assert_eq!(m.next(Event::Failed(Failure::Transient), t0), [Action::Reconnect(HB)]);
        m.next(Event::ReconnectDue, t0);
        assert_eq!(m.next(Event::Failed(Failure::Transient), t0), [Action::Reconnect(HB * 2)]);
        for _ in 0..10 {
            m.next(Event::ReconnectDue, t0);
            m.next(Event::Failed(Failure::Transient), t0);
        }
        m.next(Event::ReconnectDue, t0);
        assert_eq!(m.next(Event::Failed(Failure::Transient), t0), [Action::Reconnect(Duration::from_secs(300))]);
    }

    #[test]
    fn reconnect_delays_are_spread_over_the_window_not_clamped() {
        let t0 = Instant::now();
        let mut draws = [0.0, 0.25, 0.999].into_iter();
        let timing = Timing { heartbeat: HB, backoff_max: Duration::from_secs(300), push: true };
        let mut m = Machine::new(timing, move || draws.next().unwrap_or(0.5));
        let mut delays = Vec::new();
        for _ in 0..3 {
            assert_eq!(m.next(Event::ReconnectDue, t0), [Action::Connect]);
            m.next(Event::Connected, t0);
            m.next(Event::Opened, t0);
            m.next(Event::StreamOpened, t0);
            if let [Action::Reconnect(d)] = m.next(Event::StreamLost, t0)[..] {
                delays.push(d);
            }
        }
        assert_eq!(delays, [Duration::ZERO, HB / 4, HB.mul_f64(0.999)]);
    }

    #[test]
    fn work_while_down_waits_for_the_link() {
        let t0 = Instant::now();
        let mut m = machine(true);
        assert_eq!(m.next(Event::ResultsReady, t0), []);
        assert_eq!(m.next(Event::RenewalDue, t0), []);
        m.next(Event::Start, t0);
        m.next(Event::Connected, t0);
        m.next(Event::Opened, t0);
        assert_eq!(m.next(Event::StreamOpened, t0), [Action::Renew], "the opening flush covered the results");
        assert_eq!(m.next(Event::ResultsReady, t0), [Action::Flush]);
    }

    #[test]
    fn a_refused_renewal_is_retried_without_touching_the_link() {
        let t0 = Instant::now();
        let mut m = machine(true);
        opened(&mut m, t0);
        assert_eq!(m.next(Event::RenewalDue, t0), [Action::Renew]);
        assert_eq!(m.next(Event::RenewalFailed, t0), [Action::RetryRenewal(HB)]);
        assert_eq!(m.next(Event::RenewalFailed, t0), [Action::RetryRenewal(HB * 2)]);
        assert_eq!(m.phase(), Phase::Streaming, "the link stays up");
        assert_eq!(m.next(Event::ResultsReady, t0), [Action::Flush]);
        assert_eq!(m.next(Event::Renewed, t0), [Action::Reconnect(Duration::ZERO)]);
    }

    #[test]
    fn an_unmanaged_device_stops_and_shutdown_is_final() {
        let t0 = Instant::now();
        let mut m = machine(true);
        opened(&mut m, t0);
        assert_eq!(m.next(Event::Failed(Failure::Unmanaged), t0), [Action::Exit]);
        assert_eq!(m.next(Event::ReconnectDue, t0), []);
        let mut m = machine(true);
        opened(&mut m, t0);
        assert_eq!(m.next(Event::Shutdown, t0), [Action::Stop]);
        assert_eq!(m.next(Event::ResultsReady, t0), []);
    }
}
