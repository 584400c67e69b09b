//! The native dialect: `latchkey.v1.DeviceService` over gRPC and mutual TLS 1.3.
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tonic::transport::Channel;
use tonic::Code;

use latchkey_proto::convert;
use latchkey_proto::v1::{self, device_service_client::DeviceServiceClient};

use crate::identity::Identity;
use crate::link::{CheckIn, Connector, Escrow, LinkError, PushStream, Pushed, ReportReply, ServerLink};

/// The gRPC client type.
type Client = DeviceServiceClient<Channel>;

/// The metadata key the server uses to say a device is no longer managed.
pub const DEVICE_STATUS_HEADER: &str = "latchkey-device-status";

/// A transport error (connection refused, handshake failed) in words, with its causes.
pub fn transport_error(e: &(dyn std::error::Error + 'static)) -> String {
    latchkey_common::exit::render(e)
}

/// Maps a gRPC status to what the agent must care about.
pub fn link_error(status: &tonic::Status) -> LinkError {
    let message = status.message().to_owned();
    match status.code() {
        Code::Unauthenticated => LinkError::IdentityRefused(message),
        Code::PermissionDenied if status.metadata().get(DEVICE_STATUS_HEADER).is_some() => {
            LinkError::Unmanaged(message)
        }
        Code::PermissionDenied
        | Code::NotFound
        | Code::InvalidArgument
        | Code::FailedPrecondition
        | Code::AlreadyExists => LinkError::Refused(message),
        Code::Unavailable if message.contains("transport") || message.contains("connect") => {
            LinkError::Unreachable(match std::error::Error::source(status) {
                Some(source) => transport_error(source),
                None => message,
            })
        }
        Code::Cancelled => LinkError::Closed,
        _ => LinkError::Server(format!("{:?}: {message}", status.code())),
    }
}

/// Opens gRPC links with the device's current identity.
pub struct GrpcConnector {
    /// `https://host:port`.
    pub url: String,
    /// The server CA, PEM.
    pub ca_pem: String,
    /// The identity, replaced on renewal.
    pub identity: Arc<RwLock<Identity>>,
    /// Connection deadline.
    pub connect_timeout: Duration,
}

impl GrpcConnector {
    fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, LinkError> {
        let identity = self.identity.read().unwrap_or_else(|p| p.into_inner());
        super::tls::client_config(&self.ca_pem, Some((&identity.cert_pem, &identity.key_pem)), super::tls::H2)
            .map_err(LinkError::IdentityRefused)
    }

    /// A link, typed (for callers that need the gRPC dialect itself).
    pub async fn open(&self) -> Result<GrpcLink, LinkError> {
        let config = self.client_config()?;
        let channel = super::channel(&self.url, config, self.connect_timeout).await.map_err(LinkError::Unreachable)?;
        Ok(GrpcLink { client: DeviceServiceClient::new(channel).max_decoding_message_size(4 << 20) })
    }
}

#[async_trait::async_trait]
impl Connector for GrpcConnector {
    async fn connect(&self) -> Result<Box<dyn ServerLink>, LinkError> {
        Ok(Box::new(self.open().await?))
    }
}

/// One gRPC connection.
pub struct GrpcLink {
    client: Client,
}

/// Enrolls over TLS verified against `ca_pem`, without a client certificate.
pub async fn enroll(
    url: &str,
    ca_pem: &str,
    request: v1::EnrollRequest,
    timeout: Duration,
) -> Result<v1::EnrollResponse, LinkError> {
    let config = super::tls::client_config(ca_pem, None, super::tls::H2).map_err(LinkError::Refused)?;
    let channel = super::channel(url, config, timeout).await.map_err(LinkError::Unreachable)?;
    let mut client = DeviceServiceClient::new(channel);
    let call = client.enroll(request);
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(link_error(&status)),
        Err(_) => Err(LinkError::Timeout(timeout)),
    }
}

#[async_trait::async_trait]
impl ServerLink for GrpcLink {
    async fn check_in(&mut self, report: &CheckIn) -> Result<Option<i64>, LinkError> {
        let facts = convert::facts_to_wire(&report.facts, &report.hostname);
        let message = convert::state_to_wire(facts, &report.state, &report.agent_version, report.unlock_token_escrowed);
        let ack = self.client.check_in(message).await.map_err(|s| link_error(&s))?.into_inner();
        Ok(Some(ack.server_time_unix_ms))
    }

    async fn escrow(&mut self, token: Escrow<'_>) -> Result<(), LinkError> {
        let result = match token {
            Escrow::Unlock(t) => self.client.escrow_unlock_token(v1::UnlockToken { token: t.expose().to_vec() }).await,
            Escrow::Reset(t) => self.client.escrow_reset_token(v1::ResetToken { token: t.expose().to_vec() }).await,
        };
        result.map(|_| ()).map_err(|s| link_error(&s))
    }

    async fn poll(&mut self) -> Result<Vec<v1::Command>, LinkError> {
        Ok(self.client.poll(v1::PollRequest {}).await.map_err(|s| link_error(&s))?.into_inner().commands)
    }

    async fn report(&mut self, result: &v1::CommandResult) -> Result<ReportReply, LinkError> {
        let ack = self.client.report(result.clone()).await.map_err(|s| link_error(&s))?.into_inner();
        Ok(ReportReply { duplicate: ack.duplicate, next: Vec::new() })
    }

    async fn renew(&mut self, csr_der: &[u8]) -> Result<Option<String>, LinkError> {
        let response = self
            .client
            .renew_identity(v1::RenewRequest { csr_der: csr_der.to_vec() })
            .await
            .map_err(|s| link_error(&s))?;
        Ok(Some(response.into_inner().cert_chain_pem))
    }

    async fn subscribe(&mut self, heartbeat: Duration) -> Result<Option<Box<dyn PushStream>>, LinkError> {
        let (out, out_rx) = tokio::sync::mpsc::channel::<v1::AgentEvent>(4);
        let hello = v1::AgentEvent {
            event: Some(v1::agent_event::Event::Hello(v1::Hello {
                heartbeat_ms: i64::try_from(heartbeat.as_millis()).unwrap_or(i64::MAX),
            })),
        };
        out.send(hello).await.map_err(|_| LinkError::Closed)?;
        let inbound = self
            .client
            .subscribe(tokio_stream::wrappers::ReceiverStream::new(out_rx))
            .await
            .map_err(|s| link_error(&s))?
            .into_inner();
        Ok(Some(Box::new(GrpcStream { inbound, out })))
    }

    async fn unenroll(&mut self) -> Result<(), LinkError> {
        self.client
            .unenroll(v1::UnenrollRequest { reason: "latchkey unenroll".into() })
            .await
            .map(|_| ())
            .map_err(|s| link_error(&s))
    }
}

/// The `Subscribe` stream.
struct GrpcStream {
    inbound: tonic::Streaming<v1::ServerEvent>,
    out: tokio::sync::mpsc::Sender<v1::AgentEvent>,
}

#[async_trait::async_trait]
impl PushStream for GrpcStream {
    async fn next(&mut self) -> Result<Option<Pushed>, LinkError> {
        loop {
            let event = match self.inbound.message().await {
                Ok(Some(event)) => event,
                Ok(None) => return Ok(None),
                Err(status) => return Err(link_error(&status)),
            };
            return Ok(Some(match event.event {
                Some(v1::server_event::Event::Command(c)) => Pushed::Command(Box::new(c)),
                Some(v1::server_event::Event::Heartbeat(_)) => Pushed::Heartbeat,
                Some(v1::server_event::Event::Hello(h)) => {
                    Pushed::Hello(Duration::from_millis(u64::try_from(h.heartbeat_ms).unwrap_or(0)))
                }
                // An event this agent does not know (a newer server): ignore it, keep reading.
                None => continue,
            }));
        }
    }

    async fn heartbeat(&mut self) -> Result<(), LinkError> {
        let beat = v1::AgentEvent {
            event: Some(v1::agent_event::Event::Heartbeat(v1::Heartbeat {
                sent_at_unix_ms: latchkey_common::time::now_ms(),
            })),
        };
        self.out.send(beat).await.map_err(|_| LinkError::Closed)
    }
}
