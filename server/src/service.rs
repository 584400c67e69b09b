//! `latchkey.v1.DeviceService`: every RPC but `Enroll` demands a client certificate issued by
//! the enrollment CA (verified by rustls) whose common name is an enrolled device.
use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Request, Response, Status, Streaming};

use latchkey_proto::convert;
use latchkey_proto::v1::{self, device_service_server::DeviceService};

use crate::ca::{common_name, Authority};
use crate::db::{Db, DbError, NewDevice};
use crate::hub::Hub;
use crate::now_ms;

/// The service's shared state.
pub struct Service {
    /// Database.
    pub db: Arc<Db>,
    /// CA.
    pub authority: Arc<Authority>,
    /// Live streams.
    pub hub: Arc<Hub>,
    /// Heartbeat interval on push streams.
    pub heartbeat: Duration,
    /// Process shutdown.
    pub shutdown: CancellationToken,
}

fn internal(e: DbError) -> Status {
    match e {
        DbError::TokenUnknown | DbError::TokenUsed | DbError::TokenExpired => Status::permission_denied(e.to_string()),
        DbError::UnknownDevice(_) | DbError::UnknownCommand(_) => Status::not_found(e.to_string()),
        DbError::WrongDevice(_) => Status::permission_denied(e.to_string()),
        DbError::Sql(_) | DbError::Corrupt(_) => {
            tracing::error!(error = %e, "database failure");
            Status::internal("server storage failure")
        }
    }
}

impl Service {
    /// The enrolled device behind this request's client certificate.
    fn device_of<T>(&self, request: &Request<T>) -> Result<String, Status> {
        let certs = request
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|info| info.peer_certs())
            .ok_or_else(|| Status::unauthenticated("a client certificate issued at enrollment is required"))?;
        let leaf = certs.first().ok_or_else(|| Status::unauthenticated("empty client certificate chain"))?;
        let device_id =
            common_name(leaf).ok_or_else(|| Status::unauthenticated("client certificate has no common name"))?;
        if !self.db.device_exists(&device_id).map_err(internal)? {
            return Err(Status::permission_denied("certificate is for a device that is not enrolled"));
        }
        Ok(device_id)
    }
}

/// Which token an escrow call stores.
#[derive(Clone, Copy)]
enum Escrowed {
    Unlock,
    Reset,
}

impl Service {
    fn escrow(&self, device_id: &str, which: Escrowed, token: Vec<u8>) -> Result<Response<v1::EscrowAck>, Status> {
        let token = latchkey_platform::SecretBytes::new(token);
        let (name, min_len) = match which {
            Escrowed::Unlock => ("unlock", 16),
            Escrowed::Reset => ("reset", 32),
        };
        if token.expose().len() < min_len {
            return Err(Status::invalid_argument(format!("{name} token must be at least {min_len} bytes")));
        }
        let hex = token.to_hex();
        match which {
            Escrowed::Unlock => self.db.set_unlock_token(device_id, hex.expose()),
            Escrowed::Reset => self.db.set_reset_token(device_id, hex.expose()),
        }
        .map_err(internal)?;
        tracing::info!(device_id = %device_id, token = name, "token escrowed");
        Ok(Response::new(v1::EscrowAck {}))
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<v1::ServerEvent, Status>> + Send>>;

#[tonic::async_trait]
impl DeviceService for Service {
    async fn enroll(&self, request: Request<v1::EnrollRequest>) -> Result<Response<v1::EnrollResponse>, Status> {
        let req = request.into_inner();
        if req.enrollment_token.is_empty() {
            return Err(Status::invalid_argument("enrollment_token is required"));
        }
        let facts_wire = req.device_facts.ok_or_else(|| Status::invalid_argument("device_facts is required"))?;
        let facts = convert::facts_from_wire(&facts_wire)
            .map_err(|e| Status::invalid_argument(format!("device_facts: {e}")))?;
        // Token first (read-only), so only a token holder makes the server sign anything; it is
        // consumed below, atomically with recording the device.
        self.db.check_token(&req.enrollment_token, now_ms()).map_err(internal)?;
        let device_id = uuid::Uuid::new_v4().to_string();
        let cert_pem = self.authority.sign_device_csr(&req.csr_der, &device_id).map_err(Status::invalid_argument)?;
        let row = NewDevice::from_facts(device_id.clone(), &facts, &facts_wire.hostname);
        let facts_json = serde_json::to_string(&facts).map_err(|e| Status::internal(e.to_string()))?;
        self.db.enroll(&req.enrollment_token, now_ms(), &row, &facts_json).map_err(internal)?;
        tracing::info!(device_id = %device_id, platform = %row.platform, mode = %row.mode, "device enrolled");
        Ok(Response::new(v1::EnrollResponse {
            device_id,
            cert_chain_pem: cert_pem,
            server_ca_pem: self.authority.ca_pem.clone(),
        }))
    }

    async fn check_in(&self, request: Request<v1::DeviceState>) -> Result<Response<v1::CheckInAck>, Status> {
        let device_id = self.device_of(&request)?;
        let state = request.into_inner();
        let facts_json = match &state.facts {
            Some(f) => {
                let facts = convert::facts_from_wire(f).map_err(|e| Status::invalid_argument(format!("facts: {e}")))?;
                Some(serde_json::to_string(&facts).map_err(|e| Status::internal(e.to_string()))?)
            }
            None => None,
        };
        let device_policy = match &state.device_policy {
            Some(p) => {
                convert::policy_from_wire(p).map_err(|e| Status::invalid_argument(format!("device_policy: {e}")))?
            }
            None => None,
        };
        let wp_policy = match &state.work_profile_policy {
            Some(p) => convert::policy_from_wire(p)
                .map_err(|e| Status::invalid_argument(format!("work_profile_policy: {e}")))?,
            None => None,
        };
        let token = convert::reset_token_from_wire(state.reset_token_state);
        let state_json = serde_json::json!({
            "passcode_present": state.passcode_present,
            "work_profile_passcode_present": state.work_profile_passcode_present,
            "device_policy": device_policy,
            "work_profile_policy": wp_policy,
            "reset_token": token,
            "locked": state.locked,
            "agent_version": state.agent_version,
        });
        self.db
            .check_in(&device_id, now_ms(), facts_json.as_deref(), &state_json.to_string(), token.as_str())
            .map_err(internal)?;
        tracing::debug!(device_id = %device_id, reset_token = token.as_str(), "check-in");
        Ok(Response::new(v1::CheckInAck { server_time_unix_ms: now_ms() }))
    }

    async fn escrow_unlock_token(&self, request: Request<v1::UnlockToken>) -> Result<Response<v1::EscrowAck>, Status> {
        let device_id = self.device_of(&request)?;
        self.escrow(&device_id, Escrowed::Unlock, request.into_inner().token)
    }

    async fn escrow_reset_token(&self, request: Request<v1::ResetToken>) -> Result<Response<v1::EscrowAck>, Status> {
        let device_id = self.device_of(&request)?;
        self.escrow(&device_id, Escrowed::Reset, request.into_inner().token)
    }

    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        request: Request<Streaming<v1::AgentEvent>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let device_id = self.device_of(&request)?;
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel::<Result<v1::ServerEvent, Status>>(32);
        let registration = self.hub.register(&device_id);
        let (db, hub, heartbeat, shutdown) = (self.db.clone(), self.hub.clone(), self.heartbeat, self.shutdown.clone());
        tracing::info!(device_id = %device_id, "push stream opened");
        tokio::spawn(async move {
            let mut delivered = HashSet::new();
            let mut ticker = tokio::time::interval(heartbeat);
            let mut last_seen = tokio::time::Instant::now();
            loop {
                if push_unanswered(&db, &registration.device_id, &tx, &mut delivered).await.is_err() {
                    break;
                }
                tokio::select! {
                    _ = registration.notify.notified() => {}
                    _ = ticker.tick() => {
                        if last_seen.elapsed() > heartbeat * 3 {
                            tracing::info!(device_id = %registration.device_id, "push stream silent for three heartbeats; closing");
                            break;
                        }
                        let beat = v1::ServerEvent { event: Some(v1::server_event::Event::Heartbeat(v1::Heartbeat { sent_at_unix_ms: now_ms() })) };
                        if tx.send(Ok(beat)).await.is_err() { break; }
                    }
                    message = inbound.message() => match message {
                        Ok(Some(_)) => last_seen = tokio::time::Instant::now(),
                        Ok(None) | Err(_) => break,
                    },
                    _ = shutdown.cancelled() => break,
                }
            }
            hub.unregister(&registration);
            tracing::info!(device_id = %registration.device_id, "push stream closed");
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn poll(&self, request: Request<v1::PollRequest>) -> Result<Response<v1::PollResponse>, Status> {
        let device_id = self.device_of(&request)?;
        let commands = self.db.unanswered(&device_id).map_err(internal)?;
        let ids: Vec<String> = commands.iter().map(|c| c.command_id.clone()).collect();
        self.db.mark_sent(&ids, now_ms()).map_err(internal)?;
        tracing::debug!(device_id = %device_id, n_commands = ids.len(), "poll");
        Ok(Response::new(v1::PollResponse { commands }))
    }

    async fn report(&self, request: Request<v1::CommandResult>) -> Result<Response<v1::ReportAck>, Status> {
        let device_id = self.device_of(&request)?;
        let result = request.into_inner();
        if result.command_id.is_empty() {
            return Err(Status::invalid_argument("command_id is required"));
        }
        if matches!(v1::CommandStatus::try_from(result.status), Err(_) | Ok(v1::CommandStatus::Unspecified)) {
            return Err(Status::invalid_argument("status is missing or unknown"));
        }
        let duplicate = self.db.record_result(&device_id, &result, now_ms()).map_err(internal)?;
        tracing::info!(device_id = %device_id, command_id = %result.command_id, status = result.status, error_code = %result.error_code, duplicate, "result reported");
        Ok(Response::new(v1::ReportAck { duplicate }))
    }

    async fn renew_identity(&self, request: Request<v1::RenewRequest>) -> Result<Response<v1::RenewResponse>, Status> {
        let device_id = self.device_of(&request)?;
        let cert = self
            .authority
            .sign_device_csr(&request.into_inner().csr_der, &device_id)
            .map_err(Status::invalid_argument)?;
        tracing::info!(device_id = %device_id, "identity renewed");
        Ok(Response::new(v1::RenewResponse { cert_chain_pem: cert }))
    }
}

/// Sends every unanswered command not yet sent on this stream; marks them delivered.
async fn push_unanswered(
    db: &Db,
    device_id: &str,
    tx: &mpsc::Sender<Result<v1::ServerEvent, Status>>,
    delivered: &mut HashSet<String>,
) -> Result<(), ()> {
    let commands = match db.unanswered(device_id) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "reading the command queue");
            return Ok(());
        }
    };
    let mut sent = Vec::new();
    for command in commands {
        if delivered.contains(&command.command_id) {
            continue;
        }
        let id = command.command_id.clone();
        let event = v1::ServerEvent { event: Some(v1::server_event::Event::Command(command)) };
        tx.send(Ok(event)).await.map_err(|_| ())?;
        delivered.insert(id.clone());
        sent.push(id);
    }
    if !sent.is_empty() {
        let _ = db.mark_sent(&sent, now_ms());
        tracing::info!(device_id = %device_id, n_commands = sent.len(), "commands pushed");
    }
    Ok(())
}
