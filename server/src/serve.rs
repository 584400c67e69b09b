//! Running the server: bind, accept TLS 1.3 (handshakes off the accept loop, with a deadline),
//! hand the streams to tonic, listen on the admin wake socket, stop on cancellation.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::AsyncBufReadExt;
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;

use latchkey_proto::v1::device_service_server::DeviceServiceServer;

use crate::ca::Authority;
use crate::db::Db;
use crate::hub::Hub;
use crate::service::Service;

/// Server settings.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Data directory (created 0700).
    pub data: PathBuf,
    /// Address to bind; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Push-stream heartbeat.
    pub heartbeat: Duration,
    /// Extra names for the server certificate.
    pub server_names: Vec<String>,
}

/// The database file inside a data directory.
pub fn db_path(data: &Path) -> PathBuf {
    data.join("latchkey.db")
}

/// The admin wake socket inside a data directory.
pub fn admin_socket(data: &Path) -> PathBuf {
    data.join("admin.sock")
}

/// Creates the data directory (0700), the CA, the server identity and the database.
pub fn prepare(data: &Path, server_names: &[String]) -> Result<(Arc<Authority>, Arc<Db>)> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o700))?;
    let authority = Authority::load_or_create(data, server_names)?;
    let db = Db::open(&db_path(data)).with_context(|| format!("opening {}", db_path(data).display()))?;
    Ok((Arc::new(authority), Arc::new(db)))
}

/// A bound, running server.
pub struct Running {
    /// The bound address.
    pub addr: SocketAddr,
    /// Database.
    pub db: Arc<Db>,
    /// Live streams.
    pub hub: Arc<Hub>,
    /// The CA agents trust, PEM.
    pub ca_pem: String,
    /// Completes when the server has stopped.
    pub task: tokio::task::JoinHandle<Result<()>>,
}

/// Binds and starts serving; returns once the listener is bound.
pub async fn start(config: ServeConfig, shutdown: CancellationToken) -> Result<Running> {
    let (authority, db) = prepare(&config.data, &config.server_names)?;
    let tls = crate::tls::server_config(&authority.ca_pem, &authority.server_cert_pem, &authority.server_key_pem)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let hub = Arc::new(Hub::default());

    let socket_path = admin_socket(&config.data);
    let _ = std::fs::remove_file(&socket_path);
    let admin = UnixListener::bind(&socket_path).with_context(|| format!("binding {}", socket_path.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&socket_path, std::fs::Permissions::from_mode(0o600))?;
    }
    tokio::spawn(wake_listener(admin, hub.clone(), shutdown.clone()));

    let service = Service {
        db: db.clone(),
        authority: authority.clone(),
        hub: hub.clone(),
        heartbeat: config.heartbeat,
        shutdown: shutdown.clone(),
    };
    let (conn_tx, conn_rx) = tokio::sync::mpsc::channel(256);
    let accept_shutdown = shutdown.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => { tracing::warn!(error = %e, "accept failed"); continue; }
                },
                _ = accept_shutdown.cancelled() => break,
            };
            let (acceptor, conn_tx) = (acceptor.clone(), conn_tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = conn_tx.send(Ok::<_, std::io::Error>(tls)).await;
                    }
                    Ok(Err(e)) => tracing::info!(peer = %peer, error = %e, "TLS handshake refused"),
                    Err(_) => tracing::info!(peer = %peer, "TLS handshake timed out"),
                }
            });
        }
    });
    let incoming = tokio_stream::wrappers::ReceiverStream::new(conn_rx);
    let serve_shutdown = shutdown.clone();
    let task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .add_service(DeviceServiceServer::new(service))
            .serve_with_incoming_shutdown(incoming, serve_shutdown.cancelled_owned())
            .await
            .context("serving")
    });
    tracing::info!(addr = %addr, "latchkey-server listening");
    Ok(Running { addr, db, hub, ca_pem: authority.ca_pem.clone(), task })
}

async fn wake_listener(listener: UnixListener, hub: Arc<Hub>, shutdown: CancellationToken) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted { Ok((s, _)) => s, Err(_) => continue },
            _ = shutdown.cancelled() => return,
        };
        let hub = hub.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stream).lines();
            while let Ok(Some(device_id)) = lines.next_line().await {
                hub.wake(device_id.trim());
            }
        });
    }
}
