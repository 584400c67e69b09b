//! The agent's link to the server: TLS 1.3 client configuration, the tonic channel over it,
//! and reconnect backoff. Only this module knows tonic and rustls.
//!
//! - [`tls`]: rustls client config (server CA only, optional client identity, TLS 1.3, h2).
//! - [`backoff`]: jittered exponential reconnect delays.
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tonic::transport::{Channel, Endpoint, Uri};

use latchkey_proto::v1::device_service_client::DeviceServiceClient;

pub mod backoff;
pub mod tls;

/// The gRPC client type.
pub type Client = DeviceServiceClient<Channel>;

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

/// Opens a client for the device service at `url` over TLS with `config`.
pub async fn connect(url: &str, config: Arc<rustls::ClientConfig>) -> anyhow::Result<Client> {
    Ok(DeviceServiceClient::new(channel(url, config).await?).max_decoding_message_size(4 << 20))
}

/// Opens an HTTP/2 channel to `url` over TLS with `config`.
pub async fn channel(url: &str, config: Arc<rustls::ClientConfig>) -> anyhow::Result<Channel> {
    let (host, port) = endpoint(url).map_err(anyhow::Error::msg)?;
    let server_name = ServerName::try_from(host.clone())?;
    let connector = tokio_rustls::TlsConnector::from(config);
    // tonic sees plain h2; TLS is done here so we control versions and client auth.
    let endpoint = Endpoint::from_shared(format!(
        "http://{}:{port}",
        if host.contains(':') { format!("[{host}]") } else { host.clone() }
    ))?
    .connect_timeout(std::time::Duration::from_secs(10))
    .tcp_nodelay(true)
    .http2_keep_alive_interval(std::time::Duration::from_secs(30))
    .keep_alive_while_idle(true);
    let channel = endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let (connector, server_name, host) = (connector.clone(), server_name.clone(), host.clone());
            async move {
                let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
                tcp.set_nodelay(true)?;
                let tls = connector.connect(server_name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await?;
    Ok(channel)
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
