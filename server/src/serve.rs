//! Running the server: hold the data directory, accept TLS 1.3 (a bounded number of handshakes at
//! once, each with a deadline, backing off when accepting itself fails — out of descriptors),
//! read each client certificate once (`peer.rs`), hand the streams to tonic, listen on the admin
//! socket, sweep expired commands and passcodes on a timer, serve gRPC health and (optionally)
//! Prometheus metrics, stop on cancellation.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncBufReadExt;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use latchkey_proto::v1::{self, device_service_server::DeviceServiceServer};
use prost::Message;

use crate::ca::Authority;
use crate::datadir::{DataDir, DirLock};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::peer::Identified;
use crate::service::Service;
use crate::store::sqlite::SqliteStore;
use crate::store::{RetryPolicy, Store};
use crate::vault::Vault;

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
    /// Plain-HTTP address for `/metrics`, if any.
    pub metrics_listen: Option<SocketAddr>,
    /// Lifetime of device certificates.
    pub device_cert_lifetime: Duration,
    /// How `not_now` answers are retried.
    pub retry: RetryPolicy,
    /// TLS handshakes in progress at most.
    pub max_handshakes: usize,
    /// How often expired commands and passcodes are swept.
    pub sweep_interval: Duration,
}

impl ServeConfig {
    /// Defaults for `data` and `listen`.
    pub fn new(data: PathBuf, listen: SocketAddr) -> Self {
        Self {
            data,
            listen,
            heartbeat: Duration::from_secs(20),
            server_names: Vec::new(),
            metrics_listen: None,
            device_cert_lifetime: crate::ca::DEVICE_CERT_LIFETIME,
            retry: RetryPolicy::default(),
            max_handshakes: 512,
            sweep_interval: Duration::from_secs(5),
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Data directory.
    #[error(transparent)]
    DataDir(#[from] crate::datadir::DataDirError),
    /// CA.
    #[error(transparent)]
    Ca(#[from] crate::ca::CaError),
    /// Sealing key.
    #[error(transparent)]
    Vault(#[from] crate::vault::VaultError),
    /// Storage.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// Binding or configuring a listener.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// TLS configuration.
    #[error("TLS configuration: {0}")]
    Tls(String),
}

/// A bound, running server.
pub struct Running {
    /// The bound address.
    pub addr: SocketAddr,
    /// The metrics address, when serving metrics.
    pub metrics_addr: Option<SocketAddr>,
    /// Storage.
    pub store: Arc<dyn Store>,
    /// Live streams.
    pub hub: Arc<Hub>,
    /// The sealing key.
    pub vault: Arc<Vault>,
    /// Completes when the server has stopped.
    pub task: tokio::task::JoinHandle<Result<(), String>>,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServeError {
    let what = what.into();
    move |source| ServeError::Io { what, source }
}

/// Binds and starts serving; returns once every listener is bound.
pub async fn start(config: ServeConfig, shutdown: CancellationToken) -> Result<Running, ServeError> {
    let (dir, lock) = DataDir::for_serving(&config.data)?;
    let mut authority = Authority::ensure(dir.path(), &config.server_names)?;
    authority.device_cert_lifetime = config.device_cert_lifetime;
    let vault = Arc::new(Vault::load(&dir.secrets_key(), true)?);
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.db())?);
    store.all_offline().await?;
    let tls = crate::tls::server_config(&authority.ca_pem, &authority.server_cert_pem, &authority.server_key_pem)
        .map_err(|e| ServeError::Tls(e.to_string()))?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind(config.listen).await.map_err(io(format!("binding {}", config.listen)))?;
    let addr = listener.local_addr().map_err(io("reading the bound address"))?;
    let hub = Arc::new(Hub::default());
    let metrics = Metrics::new();

    let admin_path = dir.admin_socket();
    let admin =
        latchkey_common::socket::bind_private(&admin_path).map_err(io(format!("binding {}", admin_path.display())))?;
    tokio::spawn(admin_listener(admin, hub.clone(), store.clone(), shutdown.clone()));
    tokio::spawn(sweeper(store.clone(), hub.clone(), config.sweep_interval, shutdown.clone()));

    let metrics_addr = match config.metrics_listen {
        Some(listen) => Some(serve_metrics(listen, store.clone(), metrics.clone(), shutdown.clone()).await?),
        None => None,
    };

    let service = Service {
        store: store.clone(),
        authority: Arc::new(authority),
        vault: vault.clone(),
        hub: hub.clone(),
        metrics: metrics.clone(),
        heartbeat: config.heartbeat,
        retry: config.retry,
        shutdown: shutdown.clone(),
    };
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<DeviceServiceServer<Service>>().await;

    let (conn_tx, conn_rx) = tokio::sync::mpsc::channel(256);
    tokio::spawn(accept_loop(listener, acceptor, conn_tx, metrics, config.max_handshakes, shutdown.clone()));
    let incoming = tokio_stream::wrappers::ReceiverStream::new(conn_rx);
    let task = tokio::spawn(async move {
        let _lock: DirLock = lock;
        let result = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .add_service(health_service)
            .add_service(DeviceServiceServer::new(service))
            .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
            .await
            .map_err(|e| format!("serving: {e}"));
        let _ = std::fs::remove_file(&admin_path);
        result
    });
    tracing::info!(addr = %addr, "latchkey-server listening");
    Ok(Running { addr, metrics_addr, store, hub, vault, task })
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    conn_tx: tokio::sync::mpsc::Sender<Result<Identified, std::io::Error>>,
    metrics: Arc<Metrics>,
    max_handshakes: usize,
    shutdown: CancellationToken,
) {
    let handshakes = Arc::new(Semaphore::new(max_handshakes.max(1)));
    let mut pause = Duration::from_millis(5);
    loop {
        // At most `max_handshakes` at once: a flood of connections waits in the kernel's backlog
        // instead of in our memory.
        let permit = tokio::select! {
            permit = handshakes.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => return },
            _ = shutdown.cancelled() => return,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => { pause = Duration::from_millis(5); pair }
                Err(e) => {
                    // Out of descriptors (EMFILE) and similar: retrying at once only spins.
                    tracing::warn!(error = %e, pause_ms = pause.as_millis() as u64, "accept failed; backing off");
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = shutdown.cancelled() => return,
                    }
                    pause = (pause * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let _ = tcp.set_nodelay(true);
        metrics.connections.inc();
        let (acceptor, conn_tx, metrics) = (acceptor.clone(), conn_tx.clone(), metrics.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = conn_tx.send(Ok(Identified::new(tls))).await;
                }
                Ok(Err(e)) => {
                    metrics.tls_failures.inc();
                    tracing::info!(peer = %peer, error = %e, "TLS handshake refused");
                }
                Err(_) => {
                    metrics.tls_failures.inc();
                    tracing::info!(peer = %peer, "TLS handshake timed out");
                }
            }
        });
    }
}

/// Admin socket lines: `wake DEVICE` (new work) or `close DEVICE` (retired), answered `reached`
/// or `absent`; `wait COMMAND`, answered `final RECORD` (its `actions --json` row; or `unknown`)
/// once the command is final.
async fn admin_listener(listener: UnixListener, hub: Arc<Hub>, store: Arc<dyn Store>, shutdown: CancellationToken) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "admin socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let (hub, store, shutdown) = (hub.clone(), store.clone(), shutdown.clone());
        tokio::spawn(async move {
            let (reader, mut writer) = stream.into_split();
            let mut lines = tokio::io::BufReader::new(reader).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                // A `push` line carries a command, which may carry a passcode.
                let line = zeroize::Zeroizing::new(line);
                let answer = match line.trim().split_once(' ') {
                    Some(("close", device_id)) => reached(hub.close(device_id.trim())),
                    Some(("wake", device_id)) => reached(hub.wake(device_id.trim())),
                    Some(("push", hex)) => reached(hand_over(&hub, hex.trim())),
                    Some(("wait", command_id)) => {
                        let waited = tokio::select! {
                            w = crate::admin::wait_final(&hub, store.as_ref(), command_id.trim()) => w,
                            _ = shutdown.cancelled() => return,
                        };
                        match waited {
                            // The record itself, so the admin need not read it back from storage.
                            Ok(Some(record)) => match serde_json::to_string(&record) {
                                Ok(json) => format!("final {json}\n"),
                                Err(_) => format!("final {}\n", record.state.as_str()),
                            },
                            Ok(None) => "unknown\n".to_owned(),
                            Err(e) => {
                                tracing::warn!(error = %e, "waiting for a result");
                                "error\n".to_owned()
                            }
                        }
                    }
                    _ => {
                        tracing::warn!("unknown admin socket request");
                        reached(false)
                    }
                };
                if tokio::io::AsyncWriteExt::write_all(&mut writer, answer.as_bytes()).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// `push HEX`: a command the admin just queued, handed to its device's stream task as it is.
fn hand_over(hub: &Hub, hex: &str) -> bool {
    let command = latchkey_common::hex::decode(hex).and_then(|bytes| v1::Command::decode(bytes.as_slice()).ok());
    match command {
        Some(command) => hub.hand_over(command),
        None => {
            tracing::warn!("malformed command handed over on the admin socket; the device gets it from storage");
            false
        }
    }
}

fn reached(yes: bool) -> String {
    (if yes { "reached\n" } else { "absent\n" }).to_owned()
}

/// Expires commands, drops passcodes past their days, writes last-seen times in one batch.
async fn sweeper(store: Arc<dyn Store>, hub: Arc<Hub>, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let now = crate::now_ms();
        match store.expire_due(now).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(n_commands = n, "commands expired"),
            Err(e) => tracing::warn!(error = %e, "expiring commands"),
        }
        if let Err(e) = store.purge_passcodes(now).await {
            tracing::warn!(error = %e, "purging passcodes");
        }
        let seen = hub.take_seen();
        if !seen.is_empty() {
            if let Err(e) = store.touch(seen).await {
                tracing::warn!(error = %e, "recording last-seen times");
            }
        }
    }
}

async fn serve_metrics(
    listen: SocketAddr,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<SocketAddr, ServeError> {
    let listener = TcpListener::bind(listen).await.map_err(io(format!("binding the metrics address {listen}")))?;
    let addr = listener.local_addr().map_err(io("reading the metrics address"))?;
    let router = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (store, metrics) = (store.clone(), metrics.clone());
            async move {
                match metrics.render(store.as_ref(), crate::now_ms()).await {
                    Ok(text) => (
                        axum::http::StatusCode::OK,
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        text,
                    ),
                    Err(e) => (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        [(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                        e,
                    ),
                }
            }
        }),
    );
    tokio::spawn(async move {
        let served = axum::serve(listener, router).with_graceful_shutdown(shutdown.cancelled_owned()).await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "metrics endpoint stopped");
        }
    });
    tracing::info!(addr = %addr, "metrics on /metrics");
    Ok(addr)
}
