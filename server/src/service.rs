//! `latchkey.v1.DeviceService`. Every RPC but `Enroll` demands a client certificate issued by
//! the enrollment CA (verified by rustls) that is the device's current one: the server looks
//! the certificate up by its SHA-256, so a certificate replaced by a renewal, or one of a
//! retired device, is refused although it still chains to the CA and has not expired.
use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use latchkey_proto::convert;
use latchkey_proto::v1::{self, device_service_server::DeviceService};

use crate::ca::Authority;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::peer::PeerCert;
use crate::records::{DeviceStatus, EscrowKind, NewDevice, ReportOutcome, Reported};
use crate::store::{NewResult, RetryPolicy, Store, StoreError};
use crate::vault::Vault;
use crate::{limits, now_ms};

/// The service's shared state.
pub struct Service {
    /// Storage.
    pub store: Arc<dyn Store>,
    /// CA.
    pub authority: Arc<Authority>,
    /// Sealing key for secrets at rest.
    pub vault: Arc<Vault>,
    /// Live streams.
    pub hub: Arc<Hub>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Heartbeat interval on push streams.
    pub heartbeat: Duration,
    /// How `not_now` answers are retried.
    pub retry: RetryPolicy,
    /// Process shutdown.
    pub shutdown: CancellationToken,
}

/// The metadata key that says a refused device is no longer managed (`retired`, `unenrolled`).
pub const DEVICE_STATUS_HEADER: &str = "latchkey-device-status";

/// SHA-256 of an enrollment token: the database never holds a usable token.
pub fn token_hash(token: &str) -> String {
    latchkey_common::hex::encode_public(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref())
}

/// Where an escrowed token is sealed to.
pub fn escrow_context(device_id: &str, kind: EscrowKind) -> String {
    format!("escrow:{}:{device_id}", kind.as_str())
}

/// Where a passcode or PIN is sealed to.
pub fn passcode_context(command_id: &str) -> String {
    format!("passcode:{command_id}")
}

impl Service {
    /// Maps a storage error to a gRPC status without leaking internals.
    fn status(&self, e: StoreError) -> Status {
        match e {
            StoreError::TokenUnknown | StoreError::TokenUsed | StoreError::TokenExpired => {
                Status::permission_denied(e.to_string())
            }
            StoreError::UnknownDevice(_) | StoreError::UnknownCommand(_) => Status::not_found(e.to_string()),
            StoreError::WrongDevice(_) | StoreError::NotActive(..) => Status::permission_denied(e.to_string()),
            StoreError::Busy => {
                self.metrics.storage_errors.inc();
                tracing::warn!(error = %e, "storage busy");
                Status::unavailable("server storage is busy; retry")
            }
            StoreError::Failure(_) | StoreError::Corrupt(_) => {
                self.metrics.storage_errors.inc();
                tracing::error!(error = %e, "storage failure");
                Status::internal("server storage failure")
            }
        }
    }

    /// The enrolled device behind this request's client certificate.
    async fn device_of<T>(&self, request: &Request<T>) -> Result<String, Status> {
        let known = match request.extensions().get::<PeerCert>() {
            Some(PeerCert::Leaf(digest)) => *digest,
            Some(PeerCert::Unreadable) => return Err(Status::unauthenticated("client certificate does not parse")),
            Some(PeerCert::Absent) | None => {
                return Err(Status::unauthenticated("a client certificate issued at enrollment is required"))
            }
        };
        if let Some(device_id) = self.hub.certs.device(&known) {
            self.hub.saw(&device_id, now_ms());
            return Ok(device_id);
        }
        let sha256 = latchkey_common::hex::encode_public(&known);
        let found = self.store.device_by_cert(&sha256).await.map_err(|e| self.status(e))?;
        let Some(found) = found else {
            return Err(Status::unauthenticated(
                "this certificate is not the device's current one (it was replaced by a renewal, or the device is unknown); re-enroll the device",
            ));
        };
        let unmanaged = |status: DeviceStatus, message: &str| {
            let mut refusal = Status::permission_denied(message);
            refusal
                .metadata_mut()
                .insert(DEVICE_STATUS_HEADER, tonic::metadata::MetadataValue::from_static(status.as_str()));
            refusal
        };
        match found.status {
            DeviceStatus::Active | DeviceStatus::Enrolling => {}
            DeviceStatus::Retired => {
                return Err(unmanaged(
                    DeviceStatus::Retired,
                    "this device was retired by an administrator; it is no longer managed",
                ))
            }
            DeviceStatus::Unenrolled => {
                return Err(unmanaged(DeviceStatus::Unenrolled, "this device unenrolled; it is no longer managed"))
            }
        }
        if found.renewed {
            // First use of a renewed certificate: from now on it is the only one accepted.
            self.store.promote_renewed_cert(&found.device_id, &sha256).await.map_err(|e| self.status(e))?;
            self.hub.certs.forget(&found.device_id);
            tracing::info!(device_id = %found.device_id, "renewed certificate in use; the previous one is refused from now on");
        }
        if found.status == DeviceStatus::Active {
            self.hub.certs.remember(known, &found.device_id);
        }
        self.hub.saw(&found.device_id, now_ms());
        Ok(found.device_id)
    }

    async fn escrow(
        &self,
        device_id: &str,
        kind: EscrowKind,
        token: Vec<u8>,
    ) -> Result<Response<v1::EscrowAck>, Status> {
        let token = latchkey_platform::SecretBytes::new(token);
        let len = token.expose().len();
        if len < kind.min_len() || len > limits::TOKEN {
            return Err(Status::invalid_argument(format!(
                "{} token must be {}..={} bytes",
                kind.as_str(),
                kind.min_len(),
                limits::TOKEN
            )));
        }
        let sealed = self.vault.seal(token.expose(), &escrow_context(device_id, kind));
        self.store.set_escrow(device_id, kind, sealed, now_ms()).await.map_err(|e| self.status(e))?;
        tracing::info!(device_id = %device_id, token = kind.as_str(), "token escrowed");
        Ok(Response::new(v1::EscrowAck {}))
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<v1::ServerEvent, Status>> + Send>>;

/// The longest heartbeat period a device may announce (longer ones are clamped).
const MAX_HEARTBEAT: Duration = Duration::from_secs(3600);

#[tonic::async_trait]
impl DeviceService for Service {
    async fn enroll(&self, request: Request<v1::EnrollRequest>) -> Result<Response<v1::EnrollResponse>, Status> {
        let req = request.into_inner();
        if req.enrollment_token.is_empty() || req.enrollment_token.len() > limits::IDENT * 2 {
            return Err(Status::invalid_argument("enrollment_token is missing or malformed"));
        }
        let facts_wire = req.device_facts.ok_or_else(|| Status::invalid_argument("device_facts is required"))?;
        limits::facts(&facts_wire).map_err(|e| Status::invalid_argument(format!("device_facts: {e}")))?;
        let facts = convert::facts_from_wire(&facts_wire)
            .map_err(|e| Status::invalid_argument(format!("device_facts: {e}")))?;
        let hash = token_hash(&req.enrollment_token);
        // Token first (read-only), so only a token holder makes the server sign anything; it is
        // reserved below and spent on the device's first authenticated call.
        self.store.check_token(&hash, now_ms()).await.map_err(|e| self.status(e))?;
        let device_id = uuid::Uuid::new_v4().to_string();
        let cert = self.authority.sign_device_csr(&req.csr_der, &device_id).map_err(Status::invalid_argument)?;
        let device =
            NewDevice { device_id: device_id.clone(), facts, hostname: facts_wire.hostname.clone(), cert: cert.info };
        self.store.enroll(&hash, now_ms(), device).await.map_err(|e| self.status(e))?;
        self.metrics.enrollments.inc();
        tracing::info!(device_id = %device_id, platform = facts_wire.platform().as_str_name(), "device enrolled");
        Ok(Response::new(v1::EnrollResponse {
            device_id,
            cert_chain_pem: cert.pem,
            server_ca_pem: self.authority.ca_pem.clone(),
        }))
    }

    async fn check_in(&self, request: Request<v1::DeviceState>) -> Result<Response<v1::CheckInAck>, Status> {
        let device_id = self.device_of(&request).await?;
        let state = request.into_inner();
        let facts_wire = state.facts.as_ref().ok_or_else(|| Status::invalid_argument("facts is required"))?;
        limits::facts(facts_wire).map_err(|e| Status::invalid_argument(format!("facts: {e}")))?;
        if state.agent_version.len() > limits::SHORT_TEXT {
            return Err(Status::invalid_argument("agent_version is too long"));
        }
        let facts =
            convert::facts_from_wire(facts_wire).map_err(|e| Status::invalid_argument(format!("facts: {e}")))?;
        let policy = |p: Option<&v1::PasscodePolicy>, name: &str| match p {
            Some(p) => convert::policy_from_wire(p).map_err(|e| Status::invalid_argument(format!("{name}: {e}"))),
            None => Ok(None),
        };
        let reported = Reported {
            facts,
            state: latchkey_platform::DeviceState {
                passcode_present: state.passcode_present,
                work_profile_passcode_present: state.work_profile_passcode_present,
                device_policy: policy(state.device_policy.as_ref(), "device_policy")?,
                work_profile_policy: policy(state.work_profile_policy.as_ref(), "work_profile_policy")?,
                reset_token: convert::reset_token_from_wire(state.reset_token_state)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?,
                locked: state.locked,
            },
            hostname: facts_wire.hostname.clone(),
            agent_version: state.agent_version.clone(),
        };
        let token = reported.state.reset_token;
        self.store.check_in(&device_id, now_ms(), reported).await.map_err(|e| self.status(e))?;
        tracing::debug!(device_id = %device_id, reset_token = token.as_str(), "check-in");
        Ok(Response::new(v1::CheckInAck { server_time_unix_ms: now_ms() }))
    }

    async fn escrow_unlock_token(&self, request: Request<v1::UnlockToken>) -> Result<Response<v1::EscrowAck>, Status> {
        let device_id = self.device_of(&request).await?;
        self.escrow(&device_id, EscrowKind::Unlock, request.into_inner().token).await
    }

    async fn escrow_reset_token(&self, request: Request<v1::ResetToken>) -> Result<Response<v1::EscrowAck>, Status> {
        let device_id = self.device_of(&request).await?;
        self.escrow(&device_id, EscrowKind::Reset, request.into_inner().token).await
    }

    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        request: Request<Streaming<v1::AgentEvent>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let device_id = self.device_of(&request).await?;
        let inbound = request.into_inner();
        let stream = PushStream::register(
            &device_id,
            self.store.clone(),
            self.hub.clone(),
            self.metrics.clone(),
            self.heartbeat,
            self.shutdown.clone(),
        );
        if let Err(e) = self.store.set_online(&device_id, true, now_ms()).await {
            tracing::warn!(device_id = %device_id, error = %e, "recording the stream");
        }
        tracing::info!(device_id = %device_id, "push stream opened");
        Ok(Response::new(stream.events(inbound)))
    }

    async fn poll(&self, request: Request<v1::PollRequest>) -> Result<Response<v1::PollResponse>, Status> {
        let device_id = self.device_of(&request).await?;
        let now = now_ms();
        let commands = self.store.deliverable(&device_id, now).await.map_err(|e| self.status(e))?;
        let ids: Vec<String> = commands.iter().map(|c| c.command_id.clone()).collect();
        let n_commands = ids.len();
        self.store.mark_sent(ids, now).await.map_err(|e| self.status(e))?;
        tracing::debug!(device_id = %device_id, n_commands, "poll");
        Ok(Response::new(v1::PollResponse { commands }))
    }

    async fn report(&self, request: Request<v1::CommandResult>) -> Result<Response<v1::ReportAck>, Status> {
        let device_id = self.device_of(&request).await?;
        let mut result = request.into_inner();
        tracing::debug!(device_id = %device_id, command_id = %result.command_id, "result received");
        if result.command_id.is_empty() {
            return Err(Status::invalid_argument("command_id is required"));
        }
        limits::result(&result).map_err(Status::invalid_argument)?;
        let status = convert::status_from_wire(result.status).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let generated_pin = (!result.generated_pin.is_empty())
            .then(|| self.vault.seal(result.generated_pin.as_bytes(), &passcode_context(&result.command_id)));
        zeroize::Zeroize::zeroize(&mut result.generated_pin);
        let error_code = result.error_code.clone();
        let new = NewResult {
            command_id: result.command_id.clone(),
            status,
            error_code: result.error_code,
            message: result.message,
            outputs: result.outputs.into_iter().collect(),
            finished_at: result.finished_at_unix_ms,
            generated_pin,
        };
        let now = now_ms();
        let outcome = self.store.record_result(&device_id, new, now, self.retry).await.map_err(|e| self.status(e))?;
        let duplicate = outcome == ReportOutcome::Duplicate;
        let record = match outcome {
            ReportOutcome::Recorded(record) => {
                self.metrics.report_latency.observe((now - record.issued_at).max(0) as f64 / 1000.0);
                tracing::info!(device_id = %device_id, command_id = %result.command_id, status = status.as_str(), error_code = %error_code, "result reported");
                Some(Arc::from(record))
            }
            ReportOutcome::Requeued(after) => {
                tracing::info!(device_id = %device_id, command_id = %result.command_id, retry_at = after, "device answered not_now; delivering it again later");
                None
            }
            ReportOutcome::Duplicate => {
                tracing::debug!(device_id = %device_id, command_id = %result.command_id, "result re-sent; already recorded");
                None
            }
        };
        // A waiting admin gets the final record with the wake-up (only a recorded result is final).
        self.hub.result_stored(&result.command_id, record);
        Ok(Response::new(v1::ReportAck { duplicate }))
    }

    async fn renew_identity(&self, request: Request<v1::RenewRequest>) -> Result<Response<v1::RenewResponse>, Status> {
        let device_id = self.device_of(&request).await?;
        let cert = self
            .authority
            .sign_device_csr(&request.into_inner().csr_der, &device_id)
            .map_err(Status::invalid_argument)?;
        self.store.set_renewed_cert(&device_id, cert.info).await.map_err(|e| self.status(e))?;
        tracing::info!(device_id = %device_id, "identity renewed; the current certificate stays valid until the new one is used");
        Ok(Response::new(v1::RenewResponse { cert_chain_pem: cert.pem }))
    }

    async fn unenroll(&self, request: Request<v1::UnenrollRequest>) -> Result<Response<v1::UnenrollAck>, Status> {
        let device_id = self.device_of(&request).await?;
        let cancelled = self
            .store
            .end_management(&device_id, DeviceStatus::Unenrolled, now_ms())
            .await
            .map_err(|e| self.status(e))?;
        self.hub.certs.forget(&device_id);
        self.hub.wake(&device_id);
        self.hub.results_changed();
        tracing::info!(device_id = %device_id, cancelled, "device unenrolled");
        Ok(Response::new(v1::UnenrollAck {}))
    }
}

/// One device's push stream: announce the heartbeat, push what is deliverable, beat, and notice
/// a silent device. It is the response body itself, polled by the connection's stream task:
/// no task or channel of its own (a spawned task feeding the body through a channel held
/// 0.7–1.1 KiB more per idle connection at the server with 10,000 devices, two runs of each).
/// However the stream ends — closed by either side, its connection lost, the server stopping —
/// dropping it unregisters it and records the device offline.
struct PushStream {
    /// Taken only by `Drop`.
    registration: Option<crate::hub::Registration>,
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    heartbeat: Duration,
    shutdown: CancellationToken,
}

impl Drop for PushStream {
    fn drop(&mut self) {
        let Some(registration) = self.registration.take() else { return };
        self.metrics.streams.dec();
        tracing::info!(device_id = %registration.device_id, "push stream closed");
        let (hub, store) = (self.hub.clone(), self.store.clone());
        // Unregistering and queuing the write in one step of one task, as a reconnect registers
        // and queues its own: the writer then sees them in the order the hub decided them, and
        // a device that is already back is not recorded offline.
        let forget = async move {
            if hub.unregister(&registration) {
                if let Err(e) = store.set_online(&registration.device_id, false, now_ms()).await {
                    tracing::warn!(device_id = %registration.device_id, error = %e, "recording the stream's end");
                }
            }
        };
        // Outside a runtime (the process is ending) storage is not written; the next start marks
        // every device offline.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(forget);
        }
    }
}

impl PushStream {
    /// Registers a device's new stream in the hub (ending an older one).
    fn register(
        device_id: &str,
        store: Arc<dyn Store>,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
        heartbeat: Duration,
        shutdown: CancellationToken,
    ) -> Self {
        let registration = Some(hub.register(device_id));
        metrics.streams.inc();
        Self { registration, store, hub, metrics, heartbeat, shutdown }
    }

    fn events(self, mut inbound: Streaming<v1::AgentEvent>) -> EventStream {
        // One of these per connected device, idle nearly all the time, and a future is as large
        // as its largest state: events are boxed and reading the queue is a future of its own,
        // so the idle state holds neither.
        let events = async_stream::stream! {
            let Some(registration) = self.registration.as_ref() else { return };
            let device_id = registration.device_id.as_str();
            yield Box::new(v1::ServerEvent {
                event: Some(v1::server_event::Event::Hello(v1::Hello {
                    heartbeat_ms: i64::try_from(self.heartbeat.as_millis()).unwrap_or(i64::MAX),
                })),
            });
            let mut delivered = HashSet::new();
            let mut ticker = tokio::time::interval(self.heartbeat);
            ticker.reset();
            let mut last_seen = tokio::time::Instant::now();
            // Until the device says otherwise, it beats as often as we do.
            let mut silence = self.heartbeat * 3;
            loop {
                let commands = Box::pin(self.deliverable(device_id, &mut delivered)).await;
                if !commands.is_empty() {
                    let now = now_ms();
                    let mut sent = Vec::with_capacity(commands.len());
                    for command in commands {
                        let id = command.command_id.clone();
                        yield Box::new(v1::ServerEvent { event: Some(v1::server_event::Event::Command(command)) });
                        tracing::debug!(device_id = %device_id, command_id = %id, "command sent");
                        delivered.insert(id.clone());
                        sent.push(id);
                    }
                    Box::pin(self.record_sent(device_id, sent, now)).await;
                }
                tokio::select! {
                    _ = registration.notify.notified() => {}
                    _ = ticker.tick() => {
                        if last_seen.elapsed() > silence {
                            tracing::info!(device_id = %device_id, "push stream silent for three heartbeats; closing");
                            break;
                        }
                        yield Box::new(v1::ServerEvent { event: Some(v1::server_event::Event::Heartbeat(v1::Heartbeat { sent_at_unix_ms: now_ms() })) });
                    }
                    message = inbound.message() => match message {
                        Ok(Some(event)) => {
                            last_seen = tokio::time::Instant::now();
                            self.hub.saw(device_id, now_ms());
                            if let Some(v1::agent_event::Event::Hello(h)) = event.event {
                                let theirs = Duration::from_millis(u64::try_from(h.heartbeat_ms).unwrap_or(0)).min(MAX_HEARTBEAT);
                                silence = self.heartbeat.max(theirs) * 3;
                            }
                        }
                        Ok(None) | Err(_) => break,
                    },
                    _ = registration.closed.cancelled() => break,
                    _ = self.shutdown.cancelled() => break,
                }
            }
        };
        Box::pin(tokio_stream::StreamExt::map(events, |event| Ok(*event)))
    }
    /// The deliverable commands not yet sent on this stream. Commands the admin handed over
    /// with the wake-up are taken as they are, without reading storage; anything else
    /// deliverable (a `not_now` retry that came due) is read at the latest on the next
    /// heartbeat, which always reads.
    async fn deliverable(&self, device_id: &str, delivered: &mut HashSet<String>) -> Vec<v1::Command> {
        let mut commands = self.hub.take_handed(device_id);
        if commands.is_empty() {
            commands = match self.store.deliverable(device_id, now_ms()).await {
                Ok(c) => c,
                Err(e) => {
                    self.metrics.storage_errors.inc();
                    tracing::error!(device_id = %device_id, error = %e, "reading the command queue");
                    return Vec::new();
                }
            };
            // A command re-queued after `not_now` leaves the deliverable set for a while; when
            // it comes back it is pushed again.
            delivered.retain(|id| commands.iter().any(|c| &c.command_id == id));
        }
        commands.retain(|c| !delivered.contains(&c.command_id));
        commands
    }

    /// Records that commands went out on the stream.
    async fn record_sent(&self, device_id: &str, sent: Vec<String>, now: i64) {
        let n_commands = sent.len();
        if let Err(e) = self.store.mark_sent(sent, now).await {
            self.metrics.storage_errors.inc();
            tracing::warn!(device_id = %device_id, error = %e, "recording a delivery");
        }
        tracing::info!(device_id = %device_id, n_commands, "commands pushed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::tests::one_device;

    /// Waits until every task spawned on this (current-thread) runtime has finished.
    async fn spawned_done() {
        while tokio::runtime::Handle::current().metrics().num_alive_tasks() > 0 {
            tokio::task::yield_now().await;
        }
    }

    #[test]
    fn only_the_current_stream_records_its_device_offline() {
        let (_dir, rt, store) = one_device("d");
        rt.block_on(async {
            let (hub, metrics) = (Arc::new(Hub::default()), Metrics::new());
            let online = || async { store.device("d").await.expect("device").online };
            let register = || {
                let (heartbeat, shutdown) = (Duration::from_secs(20), CancellationToken::new());
                PushStream::register("d", store.clone(), hub.clone(), metrics.clone(), heartbeat, shutdown)
            };

            let first = register();
            store.set_online("d", true, 1).await.expect("online");
            // The device reconnects before its first stream has noticed the loss.
            let second = register();
            store.set_online("d", true, 2).await.expect("online");
            assert!(
                first.registration.as_ref().is_some_and(|r| r.closed.is_cancelled()),
                "the first stream is told to end"
            );
            drop(first);
            spawned_done().await;
            assert!(online().await, "the end of a replaced stream must not record a connected device offline");
            assert_eq!(metrics.streams.get(), 1);

            drop(second);
            spawned_done().await;
            assert!(!online().await, "the end of the current stream records the device offline");
            assert_eq!(metrics.streams.get(), 0);
            assert!(!hub.wake("d"), "no stream is left registered");
        });
    }
}
