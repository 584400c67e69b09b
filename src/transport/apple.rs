//! The Apple MDM dialect as a [`ServerLink`]: plist messages ([`crate::apple::messages`]) over
//! HTTP/1.1 and mutual TLS 1.3 ([`super::https`]).
//!
//! - `check_in`: Apple devices report nothing on their own (the server asks with its own
//!   commands), so this is a no-op; the unlock token travels in `TokenUpdate` (`escrow`).
//! - `poll`: `Idle`; `report`: the command's result, answered with the next command.
//! - `renew` and `subscribe`: `None`. Identities are renewed by a new profile; the device
//!   polls every `connect.poll_interval`, because waking it through APNs needs Apple's push
//!   service (a real deployment lets the server push to the topic, and the agent would poll on
//!   each push — out of scope here).
//!
//! HTTP answers: 200 is success; 401 means the server no longer knows this enrollment (Apple
//! devices remove their MDM profile on it — here: the agent stops, as for an unenrolled device);
//! nginx's 400 about the client certificate is a refused identity; other 4xx are refusals of
//! this request; 5xx and connection failures are transient.
use std::sync::{Arc, RwLock};
use std::time::Duration;

use latchkey_platform::{DeviceFacts, SecretBytes};
use latchkey_proto::v1;
use zeroize::Zeroizing;

use super::https::{Client, HttpError, HttpsUrl, Response};
use crate::apple::{messages, Enrollment};
use crate::identity::Identity;
use crate::link::{CheckIn, Connector, Escrow, LinkError, PushStream, ReportReply, ServerLink};

/// Opens Apple MDM links with the device's identity.
pub struct AppleConnector {
    /// The enrollment (URLs as configured, else as the profile said).
    pub enrollment: Enrollment,
    /// The server CA, PEM.
    pub ca_pem: String,
    /// The identity.
    pub identity: Arc<RwLock<Identity>>,
    /// Connection deadline.
    pub connect_timeout: Duration,
}

impl AppleConnector {
    /// A link, typed (enrollment needs `authenticate` and `token_update`).
    pub async fn open(&self) -> Result<AppleLink, LinkError> {
        let (tls, device_id) = {
            let identity = self.identity.read().unwrap_or_else(|p| p.into_inner());
            let tls = super::tls::client_config(
                &self.ca_pem,
                Some((&identity.cert_pem, &identity.key_pem)),
                super::tls::HTTP1,
            )
            .map_err(LinkError::IdentityRefused)?;
            (tls, identity.device_id.clone())
        };
        let server =
            HttpsUrl::parse(&self.enrollment.server_url).map_err(|e| LinkError::Refused(format!("ServerURL {e}")))?;
        let checkin =
            HttpsUrl::parse(&self.enrollment.checkin_url).map_err(|e| LinkError::Refused(format!("CheckInURL {e}")))?;
        let mut client = Client::new(tls, self.connect_timeout);
        client.connect(&server).await.map_err(http_error)?;
        Ok(AppleLink { client, enrollment: self.enrollment.clone(), device_id, server, checkin })
    }
}

#[async_trait::async_trait]
impl Connector for AppleConnector {
    async fn connect(&self) -> Result<Box<dyn ServerLink>, LinkError> {
        Ok(Box::new(self.open().await?))
    }
}

/// One connection to an Apple MDM server.
pub struct AppleLink {
    client: Client,
    enrollment: Enrollment,
    device_id: String,
    server: HttpsUrl,
    checkin: HttpsUrl,
}

fn http_error(e: HttpError) -> LinkError {
    match e {
        HttpError::Connect(why) => LinkError::Unreachable(why),
        HttpError::Timeout(after) => LinkError::Timeout(after),
        HttpError::Body(why) => LinkError::Server(format!("the answer could not be read: {why}")),
    }
}

/// Maps a non-200 answer.
fn status_error(response: &Response) -> LinkError {
    let text = String::from_utf8_lossy(&response.body);
    // An HTML error page (nginx's) says it in its title; anything else in its first line.
    let said = match (text.find("<title>"), text.find("</title>")) {
        (Some(start), Some(end)) if start + 7 <= end => text[start + 7..end].trim().to_owned(),
        _ => text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or_default().to_owned(),
    };
    let said: String = said.chars().take(200).collect();
    let what = format!("HTTP {}{}", response.status, if said.is_empty() { String::new() } else { format!(": {said}") });
    match response.status {
        401 => LinkError::Unmanaged(what),
        400 if text.contains("certificate") => LinkError::IdentityRefused(what),
        403 => LinkError::IdentityRefused(what),
        400..=499 => LinkError::Refused(what),
        _ => LinkError::Server(what),
    }
}

impl AppleLink {
    async fn put(&mut self, checkin: bool, body: Zeroizing<Vec<u8>>) -> Result<Zeroizing<Vec<u8>>, LinkError> {
        let (url, content_type) = if checkin {
            (&self.checkin, messages::CHECKIN_CONTENT_TYPE)
        } else {
            (&self.server, messages::COMMAND_CONTENT_TYPE)
        };
        let response = self.client.put(url, content_type, body).await.map_err(http_error)?;
        if response.status != 200 {
            return Err(status_error(&response));
        }
        Ok(response.body)
    }

    /// `Authenticate`: the first message of an enrollment.
    pub async fn authenticate(&mut self, facts: &DeviceFacts, hostname: &str) -> Result<(), LinkError> {
        let body = messages::authenticate(&self.enrollment, &self.device_id, facts, hostname);
        self.put(true, body).await.map(drop)
    }

    /// `TokenUpdate`, with the unlock token when the enrollment may send it.
    pub async fn token_update(&mut self, unlock_token: Option<&SecretBytes>) -> Result<(), LinkError> {
        let body = messages::token_update(&self.enrollment, &self.device_id, unlock_token);
        self.put(true, body).await.map(drop)
    }

    /// Reads a command out of an answer; a body that holds none is a server failure (it is
    /// logged by what it is, never by content: it may carry an unlock token).
    fn commands(&self, body: &[u8]) -> Result<Vec<v1::Command>, LinkError> {
        match messages::command(&self.enrollment, &self.device_id, body) {
            Ok(None) => Ok(Vec::new()),
            Ok(Some(received)) => {
                tracing::info!(command_id = %received.command.command_id, request_type = %received.request_type, "Apple MDM command");
                Ok(vec![received.command])
            }
            Err(why) => Err(LinkError::Server(why)),
        }
    }
}

#[async_trait::async_trait]
impl ServerLink for AppleLink {
    async fn check_in(&mut self, _report: &CheckIn) -> Result<Option<i64>, LinkError> {
        Ok(None)
    }

    async fn escrow(&mut self, token: Escrow<'_>) -> Result<(), LinkError> {
        match token {
            Escrow::Unlock(token) if self.enrollment.sends_unlock_token() => self.token_update(Some(token)).await,
            Escrow::Unlock(_) => {
                tracing::debug!(
                    "this enrollment does not send the unlock token (User Enrollment, macOS, or no lock right)"
                );
                Ok(())
            }
            Escrow::Reset(_) => Err(LinkError::Refused("Apple's MDM protocol has no reset-token escrow".into())),
        }
    }

    async fn poll(&mut self) -> Result<Vec<v1::Command>, LinkError> {
        let body = self.put(false, messages::idle(&self.enrollment, &self.device_id)).await?;
        self.commands(&body)
    }

    async fn report(&mut self, result: &v1::CommandResult) -> Result<ReportReply, LinkError> {
        let Some(body) = messages::result(&self.enrollment, &self.device_id, result) else {
            tracing::info!(command_id = %result.command_id, "not applied yet; the server hands the command out again on the next poll");
            return Ok(ReportReply::default());
        };
        let answer = self.put(false, body).await?;
        // The result is taken; a next command that cannot be read must not make us send it again.
        let next = self.commands(&answer).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "the command handed back with the acknowledgement is unreadable");
            Vec::new()
        });
        Ok(ReportReply { duplicate: false, next })
    }

    async fn renew(&mut self, _csr_der: &[u8]) -> Result<Option<String>, LinkError> {
        Ok(None)
    }

    async fn subscribe(&mut self, _heartbeat: Duration) -> Result<Option<Box<dyn PushStream>>, LinkError> {
        Ok(None)
    }

    async fn unenroll(&mut self) -> Result<(), LinkError> {
        if !self.enrollment.checkout_when_removed {
            tracing::info!("the enrollment profile does not ask for CheckOut; the server is not told");
            return Ok(());
        }
        let body = messages::checkout(&self.enrollment, &self.device_id);
        self.put(true, body).await.map(drop)
    }
}
