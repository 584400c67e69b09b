//! Client TLS: trust exactly the configured server CA, present the device identity when there
//! is one, TLS 1.3 only, ALPN h2.
use std::sync::Arc;

use anyhow::{Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Builds the client config; `identity` is (certificate chain PEM, private key PEM).
pub fn client_config(ca_pem: &str, identity: Option<(&str, &str)>) -> Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.context("server CA PEM")?).context("server CA certificate")?;
    }
    if roots.is_empty() {
        anyhow::bail!("the server CA file holds no certificate");
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((chain_pem, key_pem)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
                .collect::<Result<_, _>>()
                .context("device certificate PEM")?;
            let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).context("device key PEM")?;
            builder.with_client_auth_cert(chain, key)?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}
