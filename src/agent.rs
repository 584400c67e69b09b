//! The daemon: one instance per state directory (lock file), a worker that journals and applies
//! commands one at a time, and a link loop that keeps the server connection — push stream with
//! heartbeats both ways, polling on every (re)connect and as the fallback, reports retried until
//! acked, reconnects with jittered exponential backoff. Everything stops on one cancellation
//! token; in-flight work finishes first.
//!
//! Nothing here is global: many agents can run in one process (tests, demo, fleet benchmark).
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use latchkey_platform::DevicePort;
use latchkey_proto::{convert, v1};

use crate::config::{Config, ConnectMode};
use crate::executor::{Executor, Fault};
use crate::identity::{self, Identity};
use crate::journal::Journal;
use crate::secrets::SecretStore;
use crate::transport::{self, backoff, Client};

/// What `latchkey status` shows about the link.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct LinkStatus {
    /// disconnected, stream, poll.
    pub link: &'static str,
    /// Last successful check-in, Unix ms.
    pub last_checkin_unix_ms: i64,
    /// Last connection error, if any.
    pub last_error: Option<String>,
}

/// Options that are not configuration (tests and the demo set them).
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Crash injection.
    pub fault: Option<Fault>,
}

struct Shared {
    config: Config,
    device_id: String,
    journal: Arc<Journal>,
    secrets: Arc<SecretStore>,
    port: Arc<Mutex<Box<dyn DevicePort>>>,
    link: Arc<Mutex<LinkStatus>>,
    results_ready: Notify,
    state_changed: Notify,
    commands: mpsc::Sender<v1::Command>,
    /// What the last check-in saw, to notice changes made on the device itself.
    last_reported: Mutex<Option<DeviceView>>,
}

enum SessionEnd {
    Shutdown,
    StreamLost,
}

/// Holds the one-instance lock for a state directory.
pub struct InstanceLock {
    _lock: nix::fcntl::Flock<std::fs::File>,
}

/// Takes the state directory's lock or says who holds it.
pub fn lock_instance(state_dir: &std::path::Path) -> Result<InstanceLock> {
    let path = state_dir.join("agent.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|_| anyhow::anyhow!("another latchkey agent is already running on {}", state_dir.display()))?;
    Ok(InstanceLock { _lock: lock })
}

/// Runs the agent until `shutdown` is cancelled.
pub async fn run(config: Config, options: RunOptions, shutdown: CancellationToken) -> Result<()> {
    config.check()?;
    identity::create_private_dir(&config.state.dir)?;
    let _instance = lock_instance(&config.state.dir)?;
    let identity = Identity::load(&config.state.dir)?
        .ok_or_else(|| anyhow::anyhow!("this device is not enrolled: run `latchkey enroll` first"))?;
    let journal = Arc::new(Journal::open(&config.state.dir.join("journal.db")).context("opening the journal")?);
    let secrets = Arc::new(SecretStore::open(&config.state.dir)?);
    let port = Arc::new(Mutex::new(crate::ports::open(&config)?));
    let executor = Arc::new(Executor {
        device_id: identity.device_id.clone(),
        journal: journal.clone(),
        port: port.clone(),
        secrets: secrets.clone(),
        fault: options.fault,
    });
    let (tx, rx) = mpsc::channel::<v1::Command>(64);
    let shared = Arc::new(Shared {
        config: config.clone(),
        device_id: identity.device_id.clone(),
        journal,
        secrets,
        port,
        link: Arc::new(Mutex::new(LinkStatus { link: "disconnected", ..LinkStatus::default() })),
        results_ready: Notify::new(),
        state_changed: Notify::new(),
        commands: tx,
        last_reported: Mutex::new(None),
    });
    tracing::info!(device_id = %identity.device_id, "agent starting");

    let recovering = executor.clone();
    let restart_queue = tokio::task::spawn_blocking(move || recovering.recover()).await?;
    shared.results_ready.notify_one();
    for mut command in restart_queue {
        // Journaled as received before the restart: run them now (journal says not started).
        let runner = executor.clone();
        if tokio::task::spawn_blocking(move || {
            let finished = runner.run_journaled(&command);
            crate::executor::scrub(&mut command);
            finished
        })
        .await?
        {
            shared.results_ready.notify_one();
        }
    }

    let tracker = TaskTracker::new();
    tracker.spawn(worker(executor, rx, shared.clone(), shutdown.clone()));
    if let Some(period) = crate::systemd::watchdog_interval() {
        let stop = shutdown.clone();
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tokio::select! {
                    _ = tick.tick() => crate::systemd::notify("WATCHDOG=1"),
                    _ = stop.cancelled() => return,
                }
            }
        });
    }
    crate::systemd::notify("READY=1");
    tracker.spawn(crate::control::serve(
        config.control.socket.clone(),
        shared.clone().status_source(),
        shutdown.clone(),
    ));
    link_loop(&shared, identity, &shutdown).await;
    crate::systemd::notify("STOPPING=1");
    tracker.close();
    tracker.wait().await;
    final_flush(&shared).await;
    tracing::info!("agent stopped");
    Ok(())
}

impl Shared {
    fn status_source(self: Arc<Self>) -> crate::control::StatusSource {
        let me = self.clone();
        Arc::new(move || {
            let link = me.link.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let counts = me.journal.counts().unwrap_or_default();
            let snapshot = me.port.lock().unwrap_or_else(|p| p.into_inner()).snapshot().ok();
            serde_json::json!({
                "device_id": me.device_id,
                "server": me.config.server.url,
                "link": link,
                "journal": counts,
                "platform": snapshot,
                "agent_version": env!("CARGO_PKG_VERSION"),
            })
        })
    }

    fn set_link(&self, link: &'static str, error: Option<String>) {
        let mut s = self.link.lock().unwrap_or_else(|p| p.into_inner());
        s.link = link;
        if error.is_some() || link != "disconnected" {
            s.last_error = error;
        }
    }
}

async fn worker(
    executor: Arc<Executor>,
    mut rx: mpsc::Receiver<v1::Command>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    loop {
        let command = tokio::select! {
            c = rx.recv() => match c { Some(c) => c, None => return },
            _ = shutdown.cancelled() => return,
        };
        let runner = executor.clone();
        // Once started, a command runs to completion even if shutdown arrives meanwhile.
        match tokio::task::spawn_blocking(move || {
            let mut command = command;
            let finished = runner.handle(&command);
            crate::executor::scrub(&mut command);
            finished
        })
        .await
        {
            Ok(true) => {
                shared.results_ready.notify_one();
                shared.state_changed.notify_one();
            }
            Ok(false) => shared.results_ready.notify_one(),
            Err(e) => tracing::error!(error = %e, "command worker failed"),
        }
    }
}

async fn link_loop(shared: &Arc<Shared>, mut identity: Identity, shutdown: &CancellationToken) {
    let mut attempt = 0u32;
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        match session(shared, &mut identity, shutdown, &mut attempt).await {
            Ok(SessionEnd::Shutdown) => return,
            Ok(SessionEnd::StreamLost) => {
                tracing::info!("push stream lost; polling and reconnecting");
                shared.set_link("disconnected", None);
            }
            Err(e) => {
                attempt = attempt.saturating_add(1);
                tracing::warn!(error = format!("{e:#}"), attempt, "server link failed");
                shared.set_link("disconnected", Some(format!("{e:#}")));
            }
        }
        let delay =
            backoff::jittered(attempt, shared.config.connect.backoff_max).min(shared.config.connect.poll_interval);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

async fn connect(shared: &Shared, identity: &Identity) -> Result<Client> {
    let ca = std::fs::read_to_string(&shared.config.server.ca)
        .with_context(|| format!("reading server.ca {}", shared.config.server.ca.display()))?;
    let tls = transport::tls::client_config(&ca, Some((&identity.cert_pem, &identity.key_pem)))?;
    transport::connect(&shared.config.server.url, tls).await
}

async fn session(
    shared: &Arc<Shared>,
    identity: &mut Identity,
    shutdown: &CancellationToken,
    attempt: &mut u32,
) -> Result<SessionEnd> {
    let mut client = connect(shared, identity).await?;
    renew_if_needed(shared, &mut client, identity).await?;
    check_in(shared, &mut client).await?;
    flush(shared, &mut client).await?;
    poll_once(shared, &mut client).await?;
    *attempt = 0;
    let connect = &shared.config.connect;
    let mut checkin = tokio::time::interval(connect.checkin_interval);
    checkin.reset();
    if connect.mode == ConnectMode::Poll {
        shared.set_link("poll", None);
        let mut poll = tokio::time::interval(connect.poll_interval);
        poll.reset();
        loop {
            tokio::select! {
                _ = poll.tick() => {
                    poll_once(shared, &mut client).await?;
                    check_in_if_changed(shared, &mut client).await?;
                }
                _ = shared.results_ready.notified() => flush(shared, &mut client).await?,
                _ = shared.state_changed.notified() => check_in(shared, &mut client).await?,
                _ = checkin.tick() => check_in(shared, &mut client).await?,
                _ = shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
            }
        }
    }
    let (out_tx, out_rx) = mpsc::channel::<v1::AgentEvent>(4);
    let beat = || v1::AgentEvent {
        event: Some(v1::agent_event::Event::Heartbeat(v1::Heartbeat { sent_at_unix_ms: crate::now_ms() })),
    };
    out_tx.send(beat()).await.ok();
    let mut inbound = client
        .subscribe(tokio_stream::wrappers::ReceiverStream::new(out_rx))
        .await
        .context("opening the push stream")?
        .into_inner();
    shared.set_link("stream", None);
    tracing::info!("push stream open");
    let mut heartbeat = tokio::time::interval(connect.heartbeat);
    heartbeat.reset();
    let mut last_seen = tokio::time::Instant::now();
    loop {
        tokio::select! {
            message = inbound.message() => match message {
                Ok(Some(event)) => {
                    last_seen = tokio::time::Instant::now();
                    if let Some(v1::server_event::Event::Command(command)) = event.event {
                        tracing::info!(command_id = %command.command_id, "command pushed");
                        if shared.commands.send(command).await.is_err() {
                            return Ok(SessionEnd::Shutdown);
                        }
                    }
                }
                Ok(None) => return Ok(SessionEnd::StreamLost),
                Err(status) => {
                    tracing::info!(code = ?status.code(), "push stream ended");
                    return Ok(SessionEnd::StreamLost);
                }
            },
            _ = heartbeat.tick() => {
                if last_seen.elapsed() > connect.heartbeat * 3 {
                    tracing::info!("no heartbeat from the server for three periods");
                    return Ok(SessionEnd::StreamLost);
                }
                if out_tx.send(beat()).await.is_err() {
                    return Ok(SessionEnd::StreamLost);
                }
                check_in_if_changed(shared, &mut client).await?;
            }
            _ = shared.results_ready.notified() => flush(shared, &mut client).await?,
            _ = shared.state_changed.notified() => check_in(shared, &mut client).await?,
            _ = checkin.tick() => check_in(shared, &mut client).await?,
            _ = shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
        }
    }
}

async fn renew_if_needed(shared: &Shared, client: &mut Client, identity: &mut Identity) -> Result<()> {
    let now_secs = crate::now_ms() / 1000;
    if !identity.needs_renewal(now_secs, shared.config.identity.renew_before) {
        return Ok(());
    }
    let (key_pem, csr_der) = identity::new_key_and_csr()?;
    let response = client
        .renew_identity(v1::RenewRequest { csr_der })
        .await
        .context("renewing the device certificate")?
        .into_inner();
    let renewed = Identity {
        device_id: identity.device_id.clone(),
        cert_pem: response.cert_chain_pem,
        key_pem,
        server_ca_pem: identity.server_ca_pem.clone(),
    };
    renewed.store(&shared.config.state.dir)?;
    *identity = renewed;
    tracing::info!("device certificate renewed");
    Ok(())
}

/// The device-side state a check-in needs.
#[derive(Clone)]
pub struct DeviceHandles {
    /// The OS port.
    pub port: Arc<Mutex<Box<dyn DevicePort>>>,
    /// The secret store.
    pub secrets: Arc<SecretStore>,
    /// The journal (also holds what was escrowed).
    pub journal: Arc<Journal>,
}

/// Brings the token lifecycles up to date, escrows what changed and checks in. Used by every
/// check-in and once right at enrollment, so the reset token is registered, escrowed and the
/// user notified as soon as the device is enrolled.
pub async fn sync_with_server(device: &DeviceHandles, client: &mut Client) -> Result<()> {
    sync(device, client).await.map(|_| ())
}

async fn sync(device: &DeviceHandles, client: &mut Client) -> Result<DeviceView> {
    let me = device.clone();
    let (state, escrow, local) = tokio::task::spawn_blocking(move || -> Result<_> {
        let mut port = me.port.lock().unwrap_or_else(|p| p.into_inner());
        let before = port.snapshot()?;
        let escrow = crate::lifecycle::reconcile(port.as_mut(), &before, &me.secrets, &me.journal)?;
        let after = port.snapshot()?;
        let local = device_side_view(port.as_mut())?;
        Ok((after, escrow, local))
    })
    .await??;
    if let Some(token) = escrow.reset_token {
        client
            .escrow_reset_token(v1::ResetToken { token: token.expose().to_vec() })
            .await
            .context("escrowing the reset token")?;
        crate::lifecycle::reset_token_escrowed(&device.journal)?;
    }
    if let Some(token) = escrow.unlock_token {
        client
            .escrow_unlock_token(v1::UnlockToken { token: token.expose().to_vec() })
            .await
            .context("escrowing the unlock token")?;
        crate::lifecycle::unlock_token_escrowed(&device.journal, &token)?;
        tracing::info!("unlock token escrowed");
    }
    let hostname = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default();
    let facts = convert::facts_to_wire(&state.facts, &hostname);
    let escrowed = crate::lifecycle::unlock_escrowed(&device.journal);
    let message = convert::state_to_wire(facts, &state.state, env!("CARGO_PKG_VERSION"), escrowed);
    client.check_in(message).await.context("check-in")?;
    tracing::info!(
        reset_token = state.state.reset_token.as_str(),
        passcode_present = state.state.passcode_present,
        "checked in"
    );
    Ok(local)
}

async fn check_in(shared: &Arc<Shared>, client: &mut Client) -> Result<()> {
    let device =
        DeviceHandles { port: shared.port.clone(), secrets: shared.secrets.clone(), journal: shared.journal.clone() };
    let local = sync(&device, client).await?;
    shared.link.lock().unwrap_or_else(|p| p.into_inner()).last_checkin_unix_ms = crate::now_ms();
    *shared.last_reported.lock().unwrap_or_else(|p| p.into_inner()) = Some(local);
    Ok(())
}

/// What the agent compares to notice device-side changes: the port snapshot and a digest of the
/// unlock token (the token itself is never kept here).
#[derive(PartialEq)]
struct DeviceView {
    snapshot: latchkey_platform::PortSnapshot,
    unlock_token_sha256: Option<String>,
}

fn device_side_view(port: &mut dyn DevicePort) -> Result<DeviceView> {
    let snapshot = port.snapshot()?;
    let unlock_token_sha256 = port.unlock_token()?.map(|t| crate::lifecycle::sha256_hex(t.expose()));
    Ok(DeviceView { snapshot, unlock_token_sha256 })
}

/// Checks in when the device changed on its own (the user confirmed a credential, a policy
/// arrived, the unlock token rotated). A cheap local read at heartbeat cadence.
async fn check_in_if_changed(shared: &Arc<Shared>, client: &mut Client) -> Result<()> {
    let me = shared.clone();
    let now = tokio::task::spawn_blocking(move || {
        let mut port = me.port.lock().unwrap_or_else(|p| p.into_inner());
        device_side_view(port.as_mut())
    })
    .await??;
    let changed = shared.last_reported.lock().unwrap_or_else(|p| p.into_inner()).as_ref() != Some(&now);
    if changed {
        tracing::info!("device state changed on the device; checking in");
        check_in(shared, client).await?;
    }
    Ok(())
}

async fn poll_once(shared: &Shared, client: &mut Client) -> Result<()> {
    let response = client.poll(v1::PollRequest {}).await.context("poll")?.into_inner();
    for command in response.commands {
        tracing::info!(command_id = %command.command_id, "command polled");
        if shared.commands.send(command).await.is_err() {
            break;
        }
    }
    Ok(())
}

async fn flush(shared: &Shared, client: &mut Client) -> Result<()> {
    let results = shared.journal.unreported()?;
    for result in results {
        let id = result.command_id.clone();
        match client.report(result).await {
            Ok(ack) => {
                shared.journal.ack(&id, crate::now_ms())?;
                tracing::info!(command_id = %id, duplicate = ack.into_inner().duplicate, "result acknowledged");
            }
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::NotFound | tonic::Code::PermissionDenied | tonic::Code::InvalidArgument
                ) =>
            {
                // The server will never accept this result; keep it in the journal, stop resending.
                tracing::warn!(command_id = %id, code = ?status.code(), message = status.message(), "server refused the result permanently");
                shared.journal.ack(&id, crate::now_ms())?;
            }
            Err(status) => return Err(anyhow::anyhow!("report failed: {status}")),
        }
    }
    Ok(())
}

async fn final_flush(shared: &Arc<Shared>) {
    if shared.journal.unreported().map(|r| r.is_empty()).unwrap_or(true) {
        return;
    }
    let attempt = async {
        let identity = Identity::load(&shared.config.state.dir)?.context("identity vanished")?;
        let mut client = connect(shared, &identity).await?;
        flush(shared, &mut client).await
    };
    match tokio::time::timeout(Duration::from_secs(5), attempt).await {
        Ok(Ok(())) => tracing::info!("reported outstanding results before exit"),
        _ => tracing::info!("results left unreported are kept in the journal for the next start"),
    }
}
