//! Client TLS: trust exactly the configured server CA, present the device identity when there
//! is one, TLS 1.3 only, ALPN h2.
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// ALPN for gRPC.
pub const H2: &[u8] = b"h2";
/// ALPN for plain HTTPS.
pub const HTTP1: &[u8] = b"http/1.1";

/// Builds the client config; `identity` is (certificate chain PEM, private key PEM). The error
/// names what is wrong with the material, never its content.
pub fn client_config(
    ca_pem: &str,
    identity: Option<(&str, &str)>,
    alpn: &[u8],
) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|_| "the server CA file is not PEM".to_owned())?;
        roots.add(cert).map_err(|e| format!("the server CA certificate is unusable ({e})"))?;
    }
    if roots.is_empty() {
        return Err("the server CA file holds no certificate".into());
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((chain_pem, key_pem)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|_| "the device certificate is not PEM".to_owned())?;
            let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
                .map_err(|_| "the device key is not PEM".to_owned())?;
            builder.with_client_auth_cert(chain, key).map_err(|e| format!("the device identity is unusable ({e})"))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(Arc::new(config))
}
