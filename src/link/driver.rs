//! The loop that runs the link [`Machine`] against the world: it turns timers, pushed events,
//! finished commands and call outcomes into machine events, and carries out the machine's
//! actions through a [`ServerLink`] and the device side ([`DeviceSide`]).
//!
//! Every call on a link has a deadline tied to the heartbeat ([`Deadlined`]), so a connection
//! that silently drops packets costs one deadline, not the minutes TCP or HTTP/2 keepalive take
//! to notice. An action in progress runs to its end (bounded by those deadlines) before shutdown
//! is seen. While the loop waits — for an event or for a call — it pings the service manager's
//! watchdog, and only while the command worker is not stuck: a hung worker or a stopped process
//! stops the pings and the service manager restarts the agent.
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use latchkey_proto::v1;

use super::machine::{Action, Event, Failure, Machine, Phase, Timing};
use super::{CheckIn, Connector, Escrow, LinkError, PushStream, Pushed, ReportReply, ServerLink};
use crate::status::LinkStatus;
use crate::watchdog::Watchdog;

/// How a renewal went.
#[derive(Debug)]
pub enum Renewal {
    /// A new identity is stored.
    Renewed,
    /// The dialect renews identities some other way.
    NotSupported,
}

/// What the driver needs from the rest of the agent.
#[async_trait::async_trait]
pub trait DeviceSide: Send + Sync {
    /// Brings the token lifecycles up to date, escrows what changed and checks in. With
    /// `only_if_changed`, does nothing unless the device changed since the last check-in.
    async fn check_in(&self, link: &mut dyn ServerLink, only_if_changed: bool) -> Result<(), LinkError>;
    /// Results not yet acknowledged, oldest first.
    async fn unreported(&self) -> Vec<v1::CommandResult>;
    /// The server acknowledged (or will never accept) a result.
    async fn acknowledged(&self, command_id: &str);
    /// Hands a command to the worker.
    fn deliver(&self, command: v1::Command);
    /// Renews the device certificate through the link.
    async fn renew(&self, link: &mut dyn ServerLink) -> Result<Renewal, LinkError>;
    /// When the certificate is due for renewal.
    fn renew_at(&self) -> Option<SystemTime>;
}

/// The driver's settings.
#[derive(Clone, Copy, Debug)]
pub struct DriverConfig {
    /// Machine timing.
    pub timing: Timing,
    /// Poll period.
    pub poll_interval: Duration,
    /// Slow check-in period.
    pub checkin_interval: Duration,
    /// Deadline of every call on the link.
    pub rpc_deadline: Duration,
}

impl DriverConfig {
    /// The deadline for a heartbeat period: two periods, within 1 s..60 s.
    pub fn rpc_deadline_for(heartbeat: Duration) -> Duration {
        (heartbeat * 2).clamp(Duration::from_secs(1), Duration::from_secs(60))
    }
}

/// How long after a change on the device the check-in that reports it is made.
pub const CHANGE_SETTLE: Duration = Duration::from_millis(250);

/// Why the driver stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Shutdown was asked for.
    Shutdown,
    /// The server no longer manages this device.
    Unmanaged(String),
}

/// A link whose every call has a deadline.
pub struct Deadlined {
    inner: Box<dyn ServerLink>,
    deadline: Duration,
}

impl Deadlined {
    /// Wraps `inner`.
    pub fn new(inner: Box<dyn ServerLink>, deadline: Duration) -> Self {
        Self { inner, deadline }
    }
}

async fn within<T>(
    deadline: Duration,
    call: impl std::future::Future<Output = Result<T, LinkError>>,
) -> Result<T, LinkError> {
    tokio::time::timeout(deadline, call).await.unwrap_or(Err(LinkError::Timeout(deadline)))
}

#[async_trait::async_trait]
impl ServerLink for Deadlined {
    async fn check_in(&mut self, report: &CheckIn) -> Result<Option<i64>, LinkError> {
        within(self.deadline, self.inner.check_in(report)).await
    }
    async fn escrow(&mut self, token: Escrow<'_>) -> Result<(), LinkError> {
        within(self.deadline, self.inner.escrow(token)).await
    }
    async fn poll(&mut self) -> Result<Vec<v1::Command>, LinkError> {
        within(self.deadline, self.inner.poll()).await
    }
    async fn report(&mut self, result: &v1::CommandResult) -> Result<ReportReply, LinkError> {
        within(self.deadline, self.inner.report(result)).await
    }
    async fn renew(&mut self, csr_der: &[u8]) -> Result<Option<String>, LinkError> {
        within(self.deadline, self.inner.renew(csr_der)).await
    }
    async fn subscribe(&mut self, heartbeat: Duration) -> Result<Option<Box<dyn PushStream>>, LinkError> {
        let deadline = self.deadline;
        let stream = within(deadline, self.inner.subscribe(heartbeat)).await?;
        Ok(stream.map(|inner| Box::new(DeadlinedStream { inner, deadline }) as Box<dyn PushStream>))
    }
    async fn unenroll(&mut self) -> Result<(), LinkError> {
        within(self.deadline, self.inner.unenroll()).await
    }
}

/// A push stream whose heartbeats have a deadline (waiting for the next event has none: silence
/// is the machine's business).
struct DeadlinedStream {
    inner: Box<dyn PushStream>,
    deadline: Duration,
}

#[async_trait::async_trait]
impl PushStream for DeadlinedStream {
    async fn next(&mut self) -> Result<Option<Pushed>, LinkError> {
        self.inner.next().await
    }
    async fn heartbeat(&mut self) -> Result<(), LinkError> {
        within(self.deadline, self.inner.heartbeat()).await
    }
}

fn classify(e: &LinkError) -> Failure {
    match e {
        LinkError::Unmanaged(_) => Failure::Unmanaged,
        LinkError::IdentityRefused(_) => Failure::Identity,
        _ => Failure::Transient,
    }
}

/// The link loop.
pub struct Driver {
    /// Settings.
    pub config: DriverConfig,
    /// Opens links.
    pub connector: Arc<dyn Connector>,
    /// The device side.
    pub device: Arc<dyn DeviceSide>,
    /// Fires when results are journaled.
    pub results_ready: Arc<Notify>,
    /// Fires when a command changed the device.
    pub device_changed: Arc<Notify>,
    /// What `latchkey status` shows about the link.
    pub status: Arc<Mutex<LinkStatus>>,
    /// The service manager's watchdog.
    pub watchdog: Watchdog,
}

/// The current connection.
#[derive(Default)]
struct Session {
    link: Option<Box<dyn ServerLink>>,
    stream: Option<Box<dyn PushStream>>,
}

impl Driver {
    fn record(&self, f: impl FnOnce(&mut LinkStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn renew_deadline(&self) -> Option<Instant> {
        let at = self.device.renew_at()?;
        let wait = at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO);
        Some(Instant::now() + wait)
    }

    /// Runs until shutdown (or until the server stops managing the device).
    pub async fn run(self, jitter: impl FnMut() -> f64 + Send + 'static, shutdown: CancellationToken) -> Stopped {
        let mut machine = Machine::new(self.config.timing, jitter);
        let mut session = Session::default();
        let mut reconnect_at: Option<Instant> = None;
        let mut renew_at = self.renew_deadline();
        let mut heartbeat = tokio::time::interval(self.config.timing.heartbeat);
        let mut poll = tokio::time::interval(self.config.poll_interval);
        let mut checkin = tokio::time::interval(self.config.checkin_interval);
        for timer in [&mut heartbeat, &mut poll, &mut checkin] {
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            timer.reset();
        }
        let mut watchdog_tick = self.watchdog.interval().map(tokio::time::interval);
        // A change on the device is reported once things settle: a burst of commands makes one
        // check-in, and a check-in never holds up a command pushed right behind the last one.
        let mut change_due: Option<Instant> = None;
        let mut queue: std::collections::VecDeque<Action> = machine.next(Event::Start, Instant::now()).into();
        loop {
            while let Some(action) = queue.pop_front() {
                let events = match action {
                    Action::Reconnect(after) => {
                        session = Session::default();
                        reconnect_at = Some(Instant::now() + after);
                        Vec::new()
                    }
                    Action::RetryRenewal(after) => {
                        renew_at = Some(Instant::now() + after);
                        Vec::new()
                    }
                    Action::Exit => {
                        let why =
                            self.status.lock().map(|s| s.last_error.clone().unwrap_or_default()).unwrap_or_default();
                        self.record(|s| s.set_phase(Phase::Stopped));
                        return Stopped::Unmanaged(why);
                    }
                    Action::Stop => {
                        self.record(|s| s.set_phase(Phase::Stopped));
                        return Stopped::Shutdown;
                    }
                    io => {
                        // The action runs to its end (each call has a deadline); meanwhile the
                        // watchdog keeps being served.
                        let work = self.perform(io, &mut session);
                        tokio::pin!(work);
                        loop {
                            tokio::select! {
                                events = &mut work => break events,
                                _ = tick(&mut watchdog_tick) => self.watchdog.ping(),
                            }
                        }
                    }
                };
                for event in events {
                    if event == Event::Renewed {
                        renew_at = self.renew_deadline();
                    }
                    let actions = machine.next(event, Instant::now());
                    queue.extend(actions);
                }
                let phase = machine.phase();
                self.record(|s| s.set_phase(phase));
            }
            let event = tokio::select! {
                _ = shutdown.cancelled() => Event::Shutdown,
                _ = until(reconnect_at) => { reconnect_at = None; Event::ReconnectDue }
                _ = until(renew_at) => { renew_at = None; Event::RenewalDue }
                _ = until(change_due) => { change_due = None; Event::DeviceChanged }
                pushed = next_pushed(&mut session.stream) => match pushed {
                    Ok(Some(Pushed::Command(command))) => {
                        tracing::info!(command_id = %command.command_id, "command pushed");
                        self.device.deliver(*command);
                        Event::Heard(None)
                    }
                    Ok(Some(Pushed::Heartbeat)) => Event::Heard(None),
                    Ok(Some(Pushed::Hello(period))) => Event::Heard(Some(period)),
                    Ok(None) => { tracing::info!("push stream ended by the server"); Event::StreamLost }
                    Err(e) => { tracing::info!(error = %e, "push stream failed"); Event::StreamLost }
                },
                _ = heartbeat.tick() => Event::Tick,
                _ = poll.tick() => Event::PollDue,
                _ = checkin.tick() => Event::CheckinDue,
                _ = self.results_ready.notified() => Event::ResultsReady,
                _ = self.device_changed.notified() => {
                    change_due.get_or_insert_with(|| Instant::now() + CHANGE_SETTLE);
                    continue;
                }
                _ = tick(&mut watchdog_tick) => { self.watchdog.ping(); continue; }
            };
            if event == Event::StreamLost {
                session.stream = None;
            }
            queue.extend(machine.next(event, Instant::now()));
        }
    }

    fn failed(&self, what: &str, e: &LinkError) -> Vec<Event> {
        tracing::warn!(error = %e, "{what} failed");
        let text = format!("{what}: {e}");
        let identity = matches!(e, LinkError::IdentityRefused(_));
        self.record(|s| {
            s.last_error = Some(text);
            s.identity_refused = identity;
        });
        vec![Event::Failed(classify(e))]
    }

    /// Carries out one I/O action; returns what came of it.
    async fn perform(&self, action: Action, session: &mut Session) -> Vec<Event> {
        if action == Action::Connect {
            return match self.connector.connect().await {
                Ok(link) => {
                    session.link = Some(Box::new(Deadlined::new(link, self.config.rpc_deadline)));
                    vec![Event::Connected]
                }
                Err(e) => self.failed("connecting", &e),
            };
        }
        let Some(link) = session.link.as_deref_mut() else {
            return Vec::new();
        };
        match action {
            Action::Open => {
                if let Err(e) = self.device.check_in(link, false).await {
                    return self.failed("check-in", &e);
                }
                self.record(|s| s.last_checkin_unix_ms = latchkey_common::time::now_ms());
                if let Some(failed) = self.flush(link).await {
                    return failed;
                }
                match link.poll().await {
                    Ok(commands) => self.deliver_all(commands, "polled"),
                    Err(e) => return self.failed("poll", &e),
                }
                self.record(|s| {
                    s.last_error = None;
                    s.identity_refused = false;
                });
                vec![Event::Opened]
            }
            Action::Subscribe => match link.subscribe(self.config.timing.heartbeat).await {
                Ok(Some(stream)) => {
                    tracing::info!("push stream open");
                    session.stream = Some(stream);
                    vec![Event::StreamOpened]
                }
                Ok(None) => vec![Event::NoPush],
                Err(e) => self.failed("opening the push stream", &e),
            },
            Action::Beat => match session.stream.as_deref_mut() {
                Some(stream) => match stream.heartbeat().await {
                    Ok(()) => Vec::new(),
                    Err(e) => {
                        tracing::info!(error = %e, "heartbeat failed");
                        session.stream = None;
                        vec![Event::StreamLost]
                    }
                },
                None => Vec::new(),
            },
            Action::CheckIn | Action::CheckInIfChanged => {
                match self.device.check_in(link, action == Action::CheckInIfChanged).await {
                    Ok(()) => {
                        self.record(|s| s.last_checkin_unix_ms = latchkey_common::time::now_ms());
                        Vec::new()
                    }
                    Err(e) => self.failed("check-in", &e),
                }
            }
            Action::Poll => match link.poll().await {
                Ok(commands) => {
                    self.deliver_all(commands, "polled");
                    Vec::new()
                }
                Err(e) => self.failed("poll", &e),
            },
            Action::Flush => self.flush(link).await.unwrap_or_default(),
            Action::Renew => match self.device.renew(link).await {
                Ok(Renewal::Renewed) => {
                    tracing::info!("device certificate renewed; reconnecting with it");
                    self.record(|s| s.renewal_error = None);
                    vec![Event::Renewed]
                }
                Ok(Renewal::NotSupported) => Vec::new(),
                Err(LinkError::Unmanaged(why)) => self.failed("renewal", &LinkError::Unmanaged(why)),
                Err(e) => {
                    // Not a link failure: results keep flowing until the certificate expires.
                    tracing::warn!(error = %e, "certificate renewal failed; retrying later");
                    let text = e.to_string();
                    self.record(|s| s.renewal_error = Some(text));
                    vec![Event::RenewalFailed]
                }
            },
            Action::Connect | Action::Reconnect(_) | Action::RetryRenewal(_) | Action::Exit | Action::Stop => {
                Vec::new()
            }
        }
    }

    fn deliver_all(&self, commands: Vec<v1::Command>, how: &str) {
        for command in commands {
            tracing::info!(command_id = %command.command_id, how, "command received");
            self.device.deliver(command);
        }
    }

    /// Reports every unreported result; `Some(events)` when the link failed.
    async fn flush(&self, link: &mut dyn ServerLink) -> Option<Vec<Event>> {
        flush(link, self.device.as_ref()).await.err().map(|e| self.failed("reporting a result", &e))
    }
}

/// Reports every unreported result through `link`, handing any commands the server sends back
/// to the worker.
pub async fn flush(link: &mut dyn ServerLink, device: &dyn DeviceSide) -> Result<(), LinkError> {
    for result in device.unreported().await {
        let id = result.command_id.clone();
        tracing::debug!(command_id = %id, "reporting result");
        match link.report(&result).await {
            Ok(reply) => {
                device.acknowledged(&id).await;
                tracing::info!(command_id = %id, duplicate = reply.duplicate, "result acknowledged");
                for command in reply.next {
                    tracing::info!(command_id = %command.command_id, "command handed back with the acknowledgement");
                    device.deliver(command);
                }
            }
            Err(LinkError::Refused(why)) => {
                // The server will never take this result: keep it in the journal, stop sending it.
                tracing::warn!(command_id = %id, reason = %why, "the server refused the result permanently");
                device.acknowledged(&id).await;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn until(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn next_pushed(stream: &mut Option<Box<dyn PushStream>>) -> Result<Option<Pushed>, LinkError> {
    match stream {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
