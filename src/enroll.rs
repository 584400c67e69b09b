//! Joining and leaving management.
//!
//! Enrollment: the key is generated here and never leaves the device; the CSR goes to the server
//! with the enrollment token over TLS verified against the configured CA (no client certificate
//! yet); the identity and a new journal are stored; then the first check-in registers and
//! escrows the tokens and notifies the user where a credential must be confirmed.
//!
//! Unenrollment: with the daemon stopped, report what is left, tell the server (unless
//! `--local`), then delete identity, secrets and journal.
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use latchkey_common::exit::{Code, Exit};
use latchkey_platform::Secret;
use latchkey_proto::{convert, v1};

use crate::config::Config;
use crate::device::Device;
use crate::identity::{self, Identity};
use crate::journal::Journal;
use crate::link::driver::{self, DeviceSide, DriverConfig};
use crate::link::LinkError;
use crate::secrets::SecretStore;

/// How long enrollment waits for the server.
const ENROLL_TIMEOUT: Duration = Duration::from_secs(30);

fn failure(what: &str, e: impl std::fmt::Display) -> Exit {
    Exit::new(Code::Failure, format!("{what}: {e}"))
}

/// The device handles for a one-off session outside the daemon.
fn device(config: &Config, identity: Identity, journal: Journal) -> Result<Device, Exit> {
    let port = crate::ports::open(config).map_err(|e| failure("the platform port", e))?;
    let secrets = SecretStore::open(&config.state.dir).map_err(|e| failure("the secret store", e))?;
    let (commands, _) = tokio::sync::mpsc::unbounded_channel();
    Ok(Device::new(
        Arc::new(Mutex::new(port)),
        Arc::new(secrets),
        Arc::new(journal),
        Arc::new(RwLock::new(identity)),
        config.state.dir.clone(),
        config.identity.renew_before,
        commands,
        Arc::default(),
    ))
}

/// Enrolls; returns the device id.
pub async fn enroll(config: &Config, token: &Secret) -> Result<String, Exit> {
    config.check().map_err(|e| Exit::new(Code::Usage, e.to_string()))?;
    identity::create_private_dir(&config.state.dir)
        .map_err(|e| failure(&format!("creating {}", config.state.dir.display()), e))?;
    let _instance = crate::agent::lock_instance(&config.state.dir)?;
    match Identity::load(&config.state.dir) {
        Ok(Some(existing)) => {
            return Err(Exit::new(
                Code::Usage,
                format!("already enrolled as {}; `latchkey unenroll` first to enroll again", existing.device_id),
            ))
        }
        Ok(None) => {}
        // A damaged identity is replaced by a new enrollment.
        Err(e) => tracing::warn!(error = %e, "replacing an unusable identity"),
    }
    let snapshot = crate::ports::open(config)
        .and_then(|mut p| p.snapshot())
        .map_err(|e| failure("reading device facts from the platform port", e))?;
    let hostname = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default();
    let (key_pem, csr_der) = identity::new_key_and_csr().map_err(|e| failure("generating the device key", e))?;
    let ca = std::fs::read_to_string(&config.server.ca)
        .map_err(|e| failure(&format!("reading server.ca {}", config.server.ca.display()), e))?;
    let request = v1::EnrollRequest {
        enrollment_token: token.expose().to_owned(),
        csr_der,
        device_facts: Some(convert::facts_to_wire(&snapshot.facts, &hostname)),
    };
    let response = crate::transport::grpc::enroll(&config.server.url, &ca, request, ENROLL_TIMEOUT).await.map_err(
        |e| match e {
            LinkError::Refused(why) | LinkError::IdentityRefused(why) => {
                Exit::new(Code::Failure, format!("enrollment refused: {why}"))
            }
            other => failure("enrollment", other),
        },
    )?;
    let identity = Identity {
        device_id: response.device_id.clone(),
        journal_id: identity::new_journal_id(),
        cert_pem: response.cert_chain_pem,
        key_pem,
    };
    // The agent trusts only the configured CA; a different enrollment CA means the device's
    // certificate chains to a CA this config does not name (a misconfigured server, or one
    // that rotated its CA): worth a warning, not a refusal — the link proves itself on use.
    if !response.server_ca_pem.trim().is_empty() && response.server_ca_pem.trim() != ca.trim() {
        tracing::warn!(
            "the server's enrollment CA differs from server.ca in the config; the agent keeps trusting server.ca only"
        );
    }
    // A journal left by an earlier enrollment belongs to another identity.
    let journal_path = config.state.dir.join("journal.db");
    Journal::remove(&journal_path).map_err(|e| failure("removing the previous journal", e))?;
    let (journal, _) =
        Journal::open(&journal_path, &identity.journal_id, false).map_err(|e| failure("creating the journal", e))?;
    identity.store(&config.state.dir).map_err(|e| failure("storing the identity", e))?;
    tracing::info!(device_id = %identity.device_id, "enrolled");
    // Right after enrollment: register and escrow the tokens, notify the user if a credential
    // must be confirmed, and report the state. Best effort: the daemon repeats it at start.
    let connector = crate::agent::connector(config, Arc::new(RwLock::new(identity.clone())))?;
    let device = device(config, identity, journal)?;
    let first = async {
        let link = connector.connect().await?;
        let mut link = driver::Deadlined::new(link, DriverConfig::rpc_deadline_for(config.connect.heartbeat));
        device.check_in(&mut link, false).await
    };
    if let Err(e) = first.await {
        tracing::warn!(error = %e, "first check-in after enrollment failed; the agent will retry");
    }
    Ok(response.device_id)
}

/// Leaves management.
pub async fn unenroll(config: &Config, local_only: bool) -> Result<(), Exit> {
    let _instance = crate::agent::lock_instance(&config.state.dir).map_err(|_| {
        Exit::new(Code::Failure, "the agent is running: stop it first (`systemctl stop latchkey`)".to_owned())
    })?;
    let identity = crate::agent::load_identity(config);
    if let (false, Ok(identity)) = (local_only, &identity) {
        let journal_path = config.state.dir.join("journal.db");
        let (journal, _) =
            Journal::open(&journal_path, &identity.journal_id, true).map_err(|e| failure("the journal", e))?;
        let connector = crate::agent::connector(config, Arc::new(RwLock::new(identity.clone())))?;
        let device = device(config, identity.clone(), journal)?;
        let told = async {
            let link = connector.connect().await?;
            let mut link = driver::Deadlined::new(link, DriverConfig::rpc_deadline_for(config.connect.heartbeat));
            driver::flush(&mut link, &device).await?;
            crate::link::ServerLink::unenroll(&mut link).await
        };
        match tokio::time::timeout(ENROLL_TIMEOUT, told).await {
            Ok(Ok(())) => tracing::info!("the server was told"),
            Ok(Err(LinkError::Unmanaged(_))) => tracing::info!("the server had already stopped managing this device"),
            Ok(Err(e)) => {
                return Err(Exit::new(
                    Code::Failure,
                    format!("the server could not be told ({e}); nothing was deleted — retry, or use --local to leave without telling it"),
                ))
            }
            Err(_) => {
                return Err(Exit::new(
                    Code::Failure,
                    "the server did not answer; nothing was deleted — retry, or use --local to leave without telling it".to_owned(),
                ))
            }
        }
    }
    let dir = &config.state.dir;
    Identity::remove(dir).map_err(|e| failure("deleting the identity", e))?;
    SecretStore::remove_all(dir).map_err(|e| failure("deleting the secrets", e))?;
    Journal::remove(&dir.join("journal.db")).map_err(|e| failure("deleting the journal", e))?;
    let _ = std::fs::remove_file(dir.join("linux-effects.json"));
    Ok(())
}
