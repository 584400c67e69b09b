//! One-time enrollment: the key is generated here and never leaves the device; the CSR goes to
//! the server with the enrollment token over TLS verified against the configured CA (no client
//! certificate yet); the identity is stored with atomic writes.
use anyhow::{Context, Result};

use latchkey_platform::Secret;
use latchkey_proto::{convert, v1};

use crate::config::Config;
use crate::identity::{self, Identity};

/// Enrolls; returns the device id.
pub async fn enroll(config: &Config, token: &Secret) -> Result<String> {
    config.check()?;
    if let Some(existing) = Identity::load(&config.state.dir)? {
        anyhow::bail!(
            "already enrolled as {}; remove {} to enroll again",
            existing.device_id,
            identity::dir(&config.state.dir).display()
        );
    }
    let mut port = crate::ports::open(config)?;
    let snapshot = port.snapshot().context("reading device facts from the platform port")?;
    let hostname = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default();
    let (key_pem, csr_der) = identity::new_key_and_csr()?;
    let ca = std::fs::read_to_string(&config.server.ca)
        .with_context(|| format!("reading server.ca {}", config.server.ca.display()))?;
    let tls = crate::transport::tls::client_config(&ca, None)?;
    let mut client = crate::transport::connect(&config.server.url, tls).await.context("connecting to the server")?;
    let response = client
        .enroll(v1::EnrollRequest {
            enrollment_token: token.expose().to_owned(),
            csr_der,
            device_facts: Some(convert::facts_to_wire(&snapshot.facts, &hostname)),
        })
        .await
        .map_err(|s| anyhow::anyhow!("enrollment refused: {}", s.message()))?
        .into_inner();
    identity::create_private_dir(&config.state.dir)?;
    let identity = Identity {
        device_id: response.device_id.clone(),
        cert_pem: response.cert_chain_pem,
        key_pem,
        server_ca_pem: response.server_ca_pem,
    };
    identity.store(&config.state.dir)?;
    tracing::info!(device_id = %identity.device_id, "enrolled");
    // Right after enrollment: register and escrow the tokens, notify the user if a credential
    // must be confirmed, and report the state. Best effort — the agent repeats it at start.
    if let Err(e) = first_sync(config, &identity, port).await {
        tracing::warn!(error = format!("{e:#}"), "first check-in after enrollment failed; the agent will retry");
    }
    Ok(response.device_id)
}

async fn first_sync(config: &Config, identity: &Identity, port: Box<dyn latchkey_platform::DevicePort>) -> Result<()> {
    let device = crate::agent::DeviceHandles {
        port: std::sync::Arc::new(std::sync::Mutex::new(port)),
        secrets: std::sync::Arc::new(crate::secrets::SecretStore::open(&config.state.dir)?),
        journal: std::sync::Arc::new(crate::journal::Journal::open(&config.state.dir.join("journal.db"))?),
    };
    let ca = std::fs::read_to_string(&config.server.ca)?;
    let tls = crate::transport::tls::client_config(&ca, Some((&identity.cert_pem, &identity.key_pem)))?;
    let mut client = crate::transport::connect(&config.server.url, tls).await?;
    crate::agent::sync_with_server(&device, &mut client).await
}
