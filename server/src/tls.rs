//! The server's rustls configuration: TLS 1.3 only, ALPN h2, client certificates verified
//! against the enrollment CA but optional at the TLS layer so `Enroll` can run without one;
//! every other RPC demands a verified certificate (see `service`).
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM input does not hold what it should.
    #[error("{what}: {source}")]
    Pem {
        /// Which input.
        what: &'static str,
        /// The parser's reason.
        source: rustls::pki_types::pem::Error,
    },
    /// rustls refused the material or the settings.
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built.
    #[error(transparent)]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

fn pem(what: &'static str) -> impl Fn(rustls::pki_types::pem::Error) -> TlsError {
    move |source| TlsError::Pem { what, source }
}

/// Builds the server TLS config.
pub fn server_config(ca_pem: &str, cert_chain_pem: &str, key_pem: &str) -> Result<rustls::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.map_err(pem("CA certificate PEM"))?)?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(pem("server certificate PEM"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(pem("server key PEM"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}
