//! The wire. Only this module (and the server) knows tonic and rustls.
//!
//! - [`tls`]: rustls client config (the configured CA only, optional client identity, TLS 1.3,
//!   the dialect's ALPN).
//! - [`grpc`]: the native `latchkey.v1` dialect as a [`crate::link::ServerLink`], its connector,
//!   enrollment (the one call without a client certificate) and the `check` probe.
//! - [`https`]: HTTP/1.1 over mutual TLS; [`apple`]: Apple's MDM protocol on it.
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tonic::transport::{Channel, Endpoint, Uri};

#[cfg(feature = "apple-mdm")]
pub mod apple;
pub mod grpc;
#[cfg(feature = "apple-mdm")]
pub mod https;
pub mod tls;

/// Host and port from `https://host:port`.
pub fn endpoint(url: &str) -> Result<(String, u16), String> {
    let rest = url.strip_prefix("https://").ok_or("URL must start with https://")?;
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = authority.rsplit_once(':').ok_or("URL must name a port")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err("URL has no host".into());
    }
    let port = port.parse::<u16>().map_err(|_| "port is not a number")?;
    Ok((host.to_owned(), port))
}

/// Opens an HTTP/2 channel to `url` over TLS with `config`, giving up after `connect_timeout`
/// (TCP and TLS handshake together).
pub async fn channel(
    url: &str,
    config: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
) -> Result<Channel, String> {
    let (host, port) = endpoint(url)?;
    let server_name = ServerName::try_from(host.clone()).map_err(|e| format!("{host}: {e}"))?;
    let connector = tokio_rustls::TlsConnector::from(config);
    // tonic sees plain h2; TLS is done here so we control versions and client auth.
    let authority = if host.contains(':') { format!("[{host}]") } else { host.clone() };
    let endpoint = Endpoint::from_shared(format!("http://{authority}:{port}"))
        .map_err(|e| e.to_string())?
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true);
    let connect = endpoint.connect_with_connector(tower::service_fn(move |_: Uri| {
        let (connector, server_name, host) = (connector.clone(), server_name.clone(), host.clone());
        async move {
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let tls = connector.connect(server_name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    }));
    match tokio::time::timeout(connect_timeout, connect).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(e)) => Err(crate::transport::grpc::transport_error(&e)),
        Err(_) => Err(format!("no connection within {}", humantime::format_duration(connect_timeout))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoints() {
        assert_eq!(endpoint("https://mdm.example.com:8443"), Ok(("mdm.example.com".into(), 8443)));
        assert_eq!(endpoint("https://127.0.0.1:1/x"), Ok(("127.0.0.1".into(), 1)));
        assert_eq!(endpoint("https://[::1]:9"), Ok(("::1".into(), 9)));
        assert!(endpoint("http://a:1").is_err());
        assert!(endpoint("https://a").is_err());
        assert!(endpoint("https://a:x").is_err());
    }
}
