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

/// What every enrollment starts with: a valid configuration, the private state directory, its
/// lock (held until the caller drops it) and no current enrollment.
fn begin(config: &Config) -> Result<crate::agent::InstanceLock, Exit> {
    config.check().map_err(|e| Exit::new(Code::Usage, e.to_string()))?;
    identity::create_private_dir(&config.state.dir)
        .map_err(|e| failure(&format!("creating {}", config.state.dir.display()), e))?;
    let instance = crate::agent::lock_instance(&config.state.dir)?;
    match Identity::load(&config.state.dir) {
        Ok(Some(existing)) => Err(Exit::new(
            Code::Usage,
            format!("already enrolled as {}; `latchkey unenroll` first to enroll again", existing.device_id),
        )),
        Ok(None) => Ok(instance),
        // A damaged identity is replaced by a new enrollment.
        Err(e) => {
            tracing::warn!(error = %e, "replacing an unusable identity");
            Ok(instance)
        }
    }
}

/// Enrolls; returns the device id.
pub async fn enroll(config: &Config, token: &Secret) -> Result<String, Exit> {
    let _instance = begin(config)?;
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
        apple: None,
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

/// Enrolls from an Apple enrollment profile: the identity comes from its PKCS#12 payload, the
/// device introduces itself with `Authenticate`, then `TokenUpdate` (with the unlock token where
/// Apple sends one). Both must be accepted, or nothing is stored. Returns the UDID (or the
/// EnrollmentID of a User Enrollment), a new random one per enrollment.
#[cfg(feature = "apple-mdm")]
pub async fn enroll_apple(
    config: &Config,
    profile_path: &std::path::Path,
    password: impl FnOnce() -> Result<Secret, Exit>,
) -> Result<String, Exit> {
    use crate::config::Protocol;
    use latchkey_platform::{ManagementMode, Platform};
    if config.server.protocol != Protocol::AppleMdm {
        return Err(Exit::new(
            Code::Usage,
            "--mobileconfig needs server.protocol = \"apple-mdm\" in the configuration".to_owned(),
        ));
    }
    let _instance = begin(config)?;
    let bytes = std::fs::read(profile_path).map_err(|e| failure(&format!("reading {}", profile_path.display()), e))?;
    let profile = crate::apple::profile::parse(&bytes)
        .map_err(|e| Exit::new(Code::Usage, format!("{}: {e}", profile_path.display())))?;
    let password = match profile.password.clone() {
        Some(p) => p,
        None => password()?,
    };
    let (cert_pem, key_pem) = crate::apple::profile::identity(&profile.pkcs12, &password)
        .map_err(|e| Exit::new(Code::Usage, format!("{}: {e}", profile_path.display())))?;
    let mut port = crate::ports::open(config).map_err(|e| failure("the platform port", e))?;
    let snapshot = port.snapshot().map_err(|e| failure("reading device facts from the platform port", e))?;
    let facts = &snapshot.facts;
    if !matches!(facts.platform, Platform::Ios | Platform::Macos) {
        return Err(Exit::new(
            Code::Usage,
            format!(
                "Apple's MDM protocol manages iOS-like and macOS devices; this device is {}",
                facts.platform.as_str()
            ),
        ));
    }
    let mdm = profile.mdm;
    let enrollment = crate::apple::Enrollment {
        topic: mdm.topic,
        server_url: mdm.server_url,
        checkin_url: mdm.checkin_url,
        access_rights: mdm.access_rights,
        checkout_when_removed: mdm.checkout_when_removed,
        user_enrollment: facts.mode == ManagementMode::AppleUserEnrollment,
        platform: facts.platform,
    };
    if !enrollment.allows_lock_and_removal() {
        tracing::warn!(
            "the profile's AccessRights do not include 4: the server cannot lock this device or remove its passcode"
        );
    }
    let device_id = uuid::Uuid::new_v4().hyphenated().to_string().to_uppercase();
    let identity = Identity {
        device_id: device_id.clone(),
        journal_id: identity::new_journal_id(),
        cert_pem,
        key_pem,
        apple: Some(enrollment),
    };
    identity.validate().map_err(|e| {
        Exit::new(Code::Usage, format!("{}: the identity payload is unusable: {e}", profile_path.display()))
    })?;
    let connector = crate::agent::apple_connector(config, Arc::new(RwLock::new(identity.clone())))?;
    let hostname = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default();
    let unlock_token = port.unlock_token().map_err(|e| failure("reading the unlock token", e))?;
    let escrowed = unlock_token.filter(|_| connector.enrollment.sends_unlock_token());
    let refused = |e: LinkError| match e {
        LinkError::Refused(why) | LinkError::IdentityRefused(why) | LinkError::Unmanaged(why) => {
            Exit::new(Code::Failure, format!("enrollment refused: {why}; nothing was stored"))
        }
        other => failure("enrollment (nothing was stored)", other),
    };
    let talk = async {
        let mut link = connector.open().await?;
        link.authenticate(facts, &hostname).await?;
        link.token_update(escrowed.as_ref()).await
    };
    tokio::time::timeout(ENROLL_TIMEOUT, talk)
        .await
        .map_err(|_| failure("enrollment", "the server did not answer; nothing was stored"))?
        .map_err(refused)?;
    let journal_path = config.state.dir.join("journal.db");
    Journal::remove(&journal_path).map_err(|e| failure("removing the previous journal", e))?;
    let (journal, _) =
        Journal::open(&journal_path, &identity.journal_id, false).map_err(|e| failure("creating the journal", e))?;
    if let Some(token) = &escrowed {
        crate::lifecycle::unlock_token_escrowed(&journal, token).map_err(|e| failure("recording the escrow", e))?;
    }
    identity.store(&config.state.dir).map_err(|e| failure("storing the identity", e))?;
    tracing::info!(device_id = %device_id, user_enrollment = connector.enrollment.user_enrollment, "enrolled with the Apple MDM server");
    Ok(device_id)
}
