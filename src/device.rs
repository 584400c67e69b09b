//! The device side of the link: the port, the secret store, the journal and the identity, as the
//! link driver needs them ([`DeviceSide`]). Every blocking call (port, files, SQLite) runs off
//! the async threads.
//!
//! A problem on the device — a corrupt secret, a bridge that does not answer — is recorded for
//! `latchkey status` and `latchkey check`, and never cuts the device off from its server:
//! commands keep being received and results reported.
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use latchkey_platform::{DevicePort, PortSnapshot, SecretBytes};
use latchkey_proto::v1;

use crate::identity::Identity;
use crate::journal::Journal;
use crate::lifecycle;
use crate::link::driver::{DeviceSide, Renewal};
use crate::link::{CheckIn, Escrow, LinkError, ServerLink};
use crate::secrets::SecretStore;

/// Problems that need a person, by kind; shown by `latchkey status`.
pub type Problems = Arc<Mutex<BTreeMap<&'static str, String>>>;

/// What the agent compares to notice device-side changes: the port snapshot and a digest of the
/// unlock token (the token itself is never kept here).
#[derive(Clone, PartialEq)]
struct DeviceView {
    snapshot: PortSnapshot,
    unlock_token_sha256: Option<String>,
}

/// What a check-in needs, read from the device in one blocking call.
struct Reading {
    view: DeviceView,
    escrow: lifecycle::Escrow,
    unlock_escrowed: bool,
}

/// The device handles.
#[derive(Clone)]
pub struct Device {
    /// The OS port.
    pub port: Arc<Mutex<Box<dyn DevicePort>>>,
    /// The secret store.
    pub secrets: Arc<SecretStore>,
    /// The journal (also holds what was escrowed).
    pub journal: Arc<Journal>,
    /// The identity, replaced on renewal.
    pub identity: Arc<RwLock<Identity>>,
    /// Where the identity lives.
    pub state_dir: std::path::PathBuf,
    /// Renew this long before the certificate expires.
    pub renew_before: Duration,
    /// Commands for the worker.
    pub commands: mpsc::UnboundedSender<v1::Command>,
    /// Problems for status.
    pub problems: Problems,
    last_reported: Arc<Mutex<Option<DeviceView>>>,
}

fn hostname() -> String {
    nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, LinkError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| LinkError::Server(format!("device task failed: {e}")))
}

impl Device {
    /// The handles.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        port: Arc<Mutex<Box<dyn DevicePort>>>,
        secrets: Arc<SecretStore>,
        journal: Arc<Journal>,
        identity: Arc<RwLock<Identity>>,
        state_dir: std::path::PathBuf,
        renew_before: Duration,
        commands: mpsc::UnboundedSender<v1::Command>,
        problems: Problems,
    ) -> Self {
        Self {
            port,
            secrets,
            journal,
            identity,
            state_dir,
            renew_before,
            commands,
            problems,
            last_reported: Arc::default(),
        }
    }

    fn problem(&self, kind: &'static str, text: Option<String>) {
        let mut problems = self.problems.lock().unwrap_or_else(|p| p.into_inner());
        match text {
            Some(text) => {
                if problems.get(kind) != Some(&text) {
                    tracing::error!(problem = kind, "{text}");
                }
                problems.insert(kind, text);
            }
            None => {
                problems.remove(kind);
            }
        }
    }

    /// Reads the device and brings the token lifecycles up to date.
    async fn read(&self) -> Result<Reading, LinkError> {
        let me = self.clone();
        let (reading, lifecycle_problem) = blocking(move || -> Result<(Reading, Option<String>), String> {
            let mut port = me.port.lock().unwrap_or_else(|p| p.into_inner());
            let before = port.snapshot().map_err(|e| e.to_string())?;
            // A lifecycle failure (a corrupt secret) is a problem to report, not a reason to
            // stop checking in.
            let (escrow, problem) = match lifecycle::reconcile(port.as_mut(), &before, &me.secrets, &me.journal) {
                Ok(escrow) => (escrow, None),
                Err(e) => (lifecycle::Escrow::default(), Some(e.to_string())),
            };
            let snapshot = port.snapshot().map_err(|e| e.to_string())?;
            let unlock = port.unlock_token().map_err(|e| e.to_string())?;
            let view = DeviceView { snapshot, unlock_token_sha256: unlock.map(|t| lifecycle::sha256_hex(t.expose())) };
            let unlock_escrowed = lifecycle::unlock_escrowed(&me.journal);
            Ok((Reading { view, escrow, unlock_escrowed }, problem))
        })
        .await?
        .map_err(|e| {
            self.problem("port", Some(format!("the platform port does not answer: {e}")));
            LinkError::Server(format!("the platform port does not answer: {e}"))
        })?;
        self.problem("port", None);
        self.problem("lifecycle", lifecycle_problem);
        Ok(reading)
    }

    async fn escrow(&self, link: &mut dyn ServerLink, escrow: lifecycle::Escrow) -> Result<(), LinkError> {
        if let Some(token) = escrow.reset_token {
            link.escrow(Escrow::Reset(&token)).await?;
            let journal = self.journal.clone();
            if let Err(e) = blocking(move || lifecycle::reset_token_escrowed(&journal)).await? {
                tracing::warn!(error = %e, "recording the reset-token escrow");
            }
        }
        if let Some(token) = escrow.unlock_token {
            link.escrow(Escrow::Unlock(&token)).await?;
            let journal = self.journal.clone();
            let recorded = blocking(move || lifecycle::unlock_token_escrowed(&journal, &token)).await?;
            if let Err(e) = recorded {
                tracing::warn!(error = %e, "recording the unlock-token escrow");
            }
            tracing::info!("unlock token escrowed");
        }
        Ok(())
    }

    /// The device as last read (no port call: status must not wait for a command in progress).
    pub fn last_snapshot(&self) -> Option<PortSnapshot> {
        self.last_reported.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|v| v.snapshot.clone())
    }

    /// The current unlock token (for dialects that escrow it themselves).
    pub async fn unlock_token(&self) -> Option<SecretBytes> {
        let port = self.port.clone();
        blocking(move || port.lock().unwrap_or_else(|p| p.into_inner()).unlock_token().ok().flatten())
            .await
            .ok()
            .flatten()
    }
}

#[async_trait::async_trait]
impl DeviceSide for Device {
    async fn check_in(&self, link: &mut dyn ServerLink, only_if_changed: bool) -> Result<(), LinkError> {
        let reading = match self.read().await {
            Ok(r) => r,
            // The port is down: the link stays up; check in again when it answers.
            Err(_) if only_if_changed => return Ok(()),
            Err(e) => return Err(e),
        };
        let unchanged = self.last_reported.lock().unwrap_or_else(|p| p.into_inner()).as_ref() == Some(&reading.view);
        if only_if_changed && unchanged && reading.escrow.is_empty() {
            return Ok(());
        }
        if only_if_changed {
            tracing::info!("device state changed on the device; checking in");
        }
        self.escrow(link, reading.escrow).await?;
        let snapshot = &reading.view.snapshot;
        let report = CheckIn {
            facts: snapshot.facts.clone(),
            state: snapshot.state.clone(),
            hostname: hostname(),
            agent_version: latchkey_common::VERSION.to_owned(),
            unlock_token_escrowed: reading.unlock_escrowed,
        };
        link.check_in(&report).await?;
        tracing::info!(
            reset_token = snapshot.state.reset_token.as_str(),
            passcode_present = snapshot.state.passcode_present,
            "checked in"
        );
        *self.last_reported.lock().unwrap_or_else(|p| p.into_inner()) = Some(reading.view);
        Ok(())
    }

    async fn unreported(&self) -> Vec<v1::CommandResult> {
        let journal = self.journal.clone();
        match blocking(move || journal.unreported()).await {
            Ok(Ok(results)) => results,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "reading unreported results");
                Vec::new()
            }
            Err(_) => Vec::new(),
        }
    }

    async fn acknowledged(&self, command_id: &str) {
        let (journal, id) = (self.journal.clone(), command_id.to_owned());
        if let Ok(Err(e)) = blocking(move || journal.ack(&id, latchkey_common::time::now_ms())).await {
            tracing::error!(command_id = %command_id, error = %e, "recording an acknowledgement");
        }
    }

    fn deliver(&self, command: v1::Command) {
        if self.commands.send(command).is_err() {
            tracing::warn!("the command worker has stopped; the server delivers the command again");
        }
    }

    async fn renew(&self, link: &mut dyn ServerLink) -> Result<Renewal, LinkError> {
        let (key_pem, csr) =
            blocking(crate::identity::new_key_and_csr).await?.map_err(|e| LinkError::Server(e.to_string()))?;
        let Some(cert_pem) = link.renew(&csr).await? else { return Ok(Renewal::NotSupported) };
        let current = self.identity.read().unwrap_or_else(|p| p.into_inner()).clone();
        let renewed = current
            .renewed(cert_pem, key_pem)
            .map_err(|e| LinkError::Refused(format!("the server issued an unusable certificate: {e}")))?;
        let (dir, stored) = (self.state_dir.clone(), renewed.clone());
        blocking(move || stored.store(&dir))
            .await?
            .map_err(|e| LinkError::Server(format!("storing the renewed identity: {e}")))?;
        *self.identity.write().unwrap_or_else(|p| p.into_inner()) = renewed;
        Ok(Renewal::Renewed)
    }

    fn renew_at(&self) -> Option<SystemTime> {
        let at = self.identity.read().unwrap_or_else(|p| p.into_inner()).renew_at(self.renew_before)?;
        Some(std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(at).unwrap_or(0)))
    }
}
