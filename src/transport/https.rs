//! HTTP/1.1 over mutual TLS 1.3, for dialects that speak plain HTTPS (Apple's MDM protocol):
//! one keep-alive connection per server, opened again when the server has closed it.
use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use zeroize::Zeroizing;

/// A request body; zeroed when hyper drops it (check-ins carry the unlock token).
pub type Body = Full<Cursor<Zeroizing<Vec<u8>>>>;

/// The largest answer read (an Apple command is a few KiB; profiles sent by InstallProfile may
/// be large, and are refused unread anyway).
pub const MAX_RESPONSE: usize = 4 << 20;

/// `https://host[:port][/path]`, port 443 when not named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpsUrl {
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Path and query, `/` at least.
    pub path: String,
}

impl HttpsUrl {
    /// Parses; the error says what is wrong.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url.strip_prefix("https://").ok_or("must be an https:// URL")?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(':') && (h.starts_with('[') || !h.contains(':')) => {
                (h, p.parse::<u16>().map_err(|_| format!("port {p:?} is not a number"))?)
            }
            _ => (authority, 443),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains('@') {
            return Err("must name a host (https://HOST[:PORT]/PATH)".into());
        }
        Ok(Self { host: host.to_owned(), port, path: path.to_owned() })
    }

    /// `host:port` as the Host header writes it.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Why a request failed, before any HTTP status.
#[derive(Debug)]
pub enum HttpError {
    /// No connection: TCP, TLS, or the connection closed under the request.
    Connect(String),
    /// No answer within the deadline.
    Timeout(Duration),
    /// The answer was larger than [`MAX_RESPONSE`] or broken.
    Body(String),
}

/// An answer.
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Body (zeroed on drop: it may carry an unlock token).
    pub body: Zeroizing<Vec<u8>>,
}

/// HTTP/1.1 client for one identity.
pub struct Client {
    tls: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
    user_agent: String,
    conn: Option<(String, SendRequest<Body>)>,
}

impl Client {
    /// A client presenting the identity inside `tls`.
    pub fn new(tls: Arc<rustls::ClientConfig>, connect_timeout: Duration) -> Self {
        Self { tls, connect_timeout, user_agent: format!("latchkey/{}", latchkey_common::VERSION), conn: None }
    }

    /// Opens (or reuses) the connection to `url`'s server.
    pub async fn connect(&mut self, url: &HttpsUrl) -> Result<(), HttpError> {
        let authority = url.authority();
        if let Some((open, sender)) = &self.conn {
            if *open == authority && !sender.is_closed() {
                return Ok(());
            }
        }
        self.conn = None;
        let server_name =
            ServerName::try_from(url.host.clone()).map_err(|e| HttpError::Connect(format!("{}: {e}", url.host)))?;
        let connector = tokio_rustls::TlsConnector::from(self.tls.clone());
        let open = async {
            let tcp = tokio::net::TcpStream::connect((url.host.as_str(), url.port)).await?;
            tcp.set_nodelay(true)?;
            let tls = connector.connect(server_name, tcp).await?;
            hyper::client::conn::http1::handshake::<_, Body>(TokioIo::new(tls)).await.map_err(std::io::Error::other)
        };
        let (sender, connection) = match tokio::time::timeout(self.connect_timeout, open).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => return Err(HttpError::Connect(latchkey_common::exit::render(&e))),
            Err(_) => return Err(HttpError::Timeout(self.connect_timeout)),
        };
        // The connection task ends when the sender is dropped or the server closes.
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "HTTPS connection ended");
            }
        });
        self.conn = Some((authority, sender));
        Ok(())
    }

    /// `PUT`s `body` to `url` and reads the answer.
    pub async fn put(
        &mut self,
        url: &HttpsUrl,
        content_type: &str,
        body: Zeroizing<Vec<u8>>,
    ) -> Result<Response, HttpError> {
        self.connect(url).await?;
        let Some((_, sender)) = self.conn.as_mut() else { return Err(HttpError::Connect("not connected".into())) };
        let request = hyper::Request::put(url.path.as_str())
            .header(hyper::header::HOST, url.authority())
            .header(hyper::header::CONTENT_TYPE, content_type)
            .header(hyper::header::USER_AGENT, self.user_agent.as_str())
            .body(Full::new(Cursor::new(body)))
            .map_err(|e| HttpError::Connect(e.to_string()))?;
        let sent = async {
            sender.ready().await?;
            sender.send_request(request).await
        };
        let response = match sent.await {
            Ok(r) => r,
            Err(e) => {
                self.conn = None;
                return Err(HttpError::Connect(latchkey_common::exit::render(&e)));
            }
        };
        let status = response.status().as_u16();
        let collected = Limited::new(response.into_body(), MAX_RESPONSE).collect().await.map_err(|e| {
            self.conn = None;
            HttpError::Body(e.to_string())
        })?;
        let body = Zeroizing::new(collected.to_bytes().to_vec());
        Ok(Response { status, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_https_urls_with_and_without_port() {
        let u = HttpsUrl::parse("https://mdm.example.com/mdm").expect("url");
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("mdm.example.com", 443, "/mdm"));
        let u = HttpsUrl::parse("https://127.0.0.1:8443/mdm?x=1").expect("url");
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("127.0.0.1", 8443, "/mdm?x=1"));
        assert_eq!(u.authority(), "127.0.0.1:8443");
        let u = HttpsUrl::parse("https://[::1]:9").expect("url");
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("::1", 9, "/"));
        assert_eq!(u.authority(), "[::1]:9");
        assert!(HttpsUrl::parse("http://a/mdm").is_err());
        assert!(HttpsUrl::parse("https:///mdm").is_err());
        assert!(HttpsUrl::parse("https://a:x/mdm").is_err());
    }
}
