//! The daemon: one instance per state directory (lock file); recovery of whatever a crash left
//! behind; a worker that journals and applies commands one at a time; the link driver that keeps
//! the server connection; the control socket for `latchkey status`. Everything stops on one
//! cancellation token, and in-flight work finishes first.
//!
//! Nothing here is global: many agents can run in one process (the fleet benchmark).
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use latchkey_common::exit::{Code, Exit};

use crate::config::{Config, ConnectMode, Protocol};
use crate::device::{Device, Problems};
use crate::executor::{Executor, Fault};
use crate::identity::{Identity, IdentityError};
use crate::journal::{Journal, Opened};
use crate::link::driver::{self, Driver, DriverConfig, Stopped};
use crate::link::machine::Timing;
use crate::link::Connector;
use crate::secrets::SecretStore;
use crate::status::{LinkStatus, PlatformView, Status};
use crate::watchdog::Watchdog;

/// Options that are not configuration (tests and benchmarks set them).
#[derive(Clone)]
pub struct RunOptions {
    /// Crash injection (test builds only).
    pub fault: Option<Fault>,
    /// The service manager's watchdog.
    pub watchdog: Watchdog,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self { fault: None, watchdog: Watchdog::with_period(None) }
    }
}

/// Holds the one-instance lock for a state directory.
pub struct InstanceLock {
    _lock: nix::fcntl::Flock<std::fs::File>,
}

fn io_exit(what: &str, path: &std::path::Path, e: &std::io::Error) -> Exit {
    let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
        " — permission denied: run as root (or as the agent's own user)"
    } else {
        ""
    };
    Exit::new(Code::Failure, format!("{what} {}: {e}{hint}", path.display()))
}

/// Takes the state directory's lock or says who holds it.
pub fn lock_instance(state_dir: &std::path::Path) -> Result<InstanceLock, Exit> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = state_dir.join("agent.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| io_exit("opening", &path, &e))?;
    let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|_| {
        Exit::new(Code::Failure, format!("another latchkey agent is already running on {}", state_dir.display()))
    })?;
    Ok(InstanceLock { _lock: lock })
}

/// Loads the identity, mapping each failure to the exit code a service manager acts on.
pub fn load_identity(config: &Config) -> Result<Identity, Exit> {
    match Identity::load(&config.state.dir) {
        Ok(Some(identity)) => Ok(identity),
        Ok(None) => Err(Exit::new(
            Code::NotEnrolled,
            format!(
                "this device is not enrolled ({} is missing): run `latchkey enroll` first",
                crate::identity::path(&config.state.dir).display()
            ),
        )),
        Err(e @ IdentityError::Unusable { .. }) => Err(Exit::new(Code::IdentityUnusable, e.to_string())),
        Err(IdentityError::Io { path, source }) => Err(io_exit("reading", std::path::Path::new(&path), &source)),
        Err(e) => Err(Exit::new(Code::Failure, e.to_string())),
    }
}

/// The Apple enrollment as this configuration runs it: the profile's URLs and topic, each
/// replaced by the configuration's when it names one.
pub fn apple_enrollment(config: &Config, identity: &Identity) -> Result<crate::apple::Enrollment, Exit> {
    let Some(mut enrollment) = identity.apple.clone() else {
        return Err(Exit::new(
            Code::Usage,
            "server.protocol is \"apple-mdm\" but this device was enrolled with the latchkey protocol: set it back, or unenroll and enroll with --mobileconfig".to_owned(),
        ));
    };
    let server = &config.server;
    for (configured, value) in [
        (&server.url, &mut enrollment.server_url),
        (&server.checkin_url, &mut enrollment.checkin_url),
        (&server.topic, &mut enrollment.topic),
    ] {
        if !configured.is_empty() {
            value.clone_from(configured);
        }
    }
    Ok(enrollment)
}

fn read_server_ca(config: &Config) -> Result<String, Exit> {
    std::fs::read_to_string(&config.server.ca).map_err(|e| io_exit("reading server.ca", &config.server.ca, &e))
}

/// The Apple MDM connector, typed (enrollment and `check` need its check-in messages).
#[cfg(feature = "apple-mdm")]
pub fn apple_connector(
    config: &Config,
    identity: Arc<RwLock<Identity>>,
) -> Result<crate::transport::apple::AppleConnector, Exit> {
    let enrollment = apple_enrollment(config, &identity.read().unwrap_or_else(|p| p.into_inner()))?;
    Ok(crate::transport::apple::AppleConnector {
        enrollment,
        ca_pem: read_server_ca(config)?,
        identity,
        connect_timeout: DriverConfig::rpc_deadline_for(config.connect.heartbeat),
    })
}

/// The connector for the configured dialect.
pub fn connector(config: &Config, identity: Arc<RwLock<Identity>>) -> Result<Arc<dyn Connector>, Exit> {
    if config.server.protocol == Protocol::AppleMdm {
        #[cfg(feature = "apple-mdm")]
        return Ok(Arc::new(apple_connector(config, identity)?));
        #[cfg(not(feature = "apple-mdm"))]
        return Err(Exit::new(Code::Usage, crate::apple::NOT_BUILT.to_owned()));
    }
    if identity.read().unwrap_or_else(|p| p.into_inner()).apple.is_some() {
        return Err(Exit::new(
            Code::Usage,
            "this device was enrolled from an Apple enrollment profile: set server.protocol = \"apple-mdm\"".to_owned(),
        ));
    }
    Ok(Arc::new(crate::transport::grpc::GrpcConnector {
        url: config.server.url.clone(),
        ca_pem: read_server_ca(config)?,
        identity,
        connect_timeout: DriverConfig::rpc_deadline_for(config.connect.heartbeat),
    }))
}

/// Runs the agent until `shutdown` is cancelled, or until the server stops managing the device.
pub async fn run(config: Config, options: RunOptions, shutdown: CancellationToken) -> Result<(), Exit> {
    config.check().map_err(|e| Exit::new(Code::Usage, e.to_string()))?;
    crate::identity::create_private_dir(&config.state.dir).map_err(|e| io_exit("creating", &config.state.dir, &e))?;
    let _instance = lock_instance(&config.state.dir)?;
    let identity = load_identity(&config)?;
    let journal_path = config.state.dir.join("journal.db");
    let (journal, opened) = Journal::open(&journal_path, &identity.journal_id, true)
        .map_err(|e| Exit::new(Code::Failure, e.to_string()))?;
    if let Opened::Recovered(_) = opened {
        tracing::warn!(path = %journal_path.display(), "the journal was missing: started a new one; commands issued before now are checked against the device before anything is done");
    }
    let journal = Arc::new(journal);
    let secrets = Arc::new(SecretStore::open(&config.state.dir).map_err(|e| Exit::new(Code::Failure, e.to_string()))?);
    let port = Arc::new(Mutex::new(crate::ports::open(&config).map_err(|e| Exit::new(Code::Failure, e.to_string()))?));
    let executor = Arc::new(Executor {
        device_id: identity.device_id.clone(),
        journal: journal.clone(),
        port: port.clone(),
        secrets: secrets.clone(),
        fault: options.fault,
    });
    let device_id = identity.device_id.clone();
    let identity = Arc::new(RwLock::new(identity));
    tracing::info!(device_id = %device_id, "agent starting");

    let results_ready = Arc::new(Notify::new());
    let device_changed = Arc::new(Notify::new());
    let signals = crate::worker::Signals {
        results_ready: results_ready.clone(),
        device_changed: device_changed.clone(),
        beat: options.watchdog.worker(),
    };
    // Commands journaled before a restart: settle the ones caught mid-effect, run the rest.
    let recovering = executor.clone();
    let restart_queue = tokio::task::spawn_blocking(move || recovering.recover())
        .await
        .map_err(|e| Exit::new(Code::Failure, e.to_string()))?;
    results_ready.notify_one();
    for command in restart_queue {
        let runner = executor.clone();
        tokio::task::spawn_blocking(move || {
            let mut command = command;
            runner.run_journaled(&command);
            latchkey_proto::scrub(&mut command);
        })
        .await
        .map_err(|e| Exit::new(Code::Failure, e.to_string()))?;
        results_ready.notify_one();
    }

    let (commands, commands_rx) = mpsc::unbounded_channel();
    let problems: Problems = Arc::default();
    let device = Arc::new(Device::new(
        port.clone(),
        secrets,
        journal.clone(),
        identity.clone(),
        config.state.dir.clone(),
        config.identity.renew_before,
        commands,
        problems.clone(),
    ));
    let link_status = Arc::new(Mutex::new(LinkStatus::default()));
    let connector = connector(&config, identity.clone())?;

    let tracker = TaskTracker::new();
    let worker_stop = CancellationToken::new();
    tracker.spawn(crate::worker::run(executor, commands_rx, signals, worker_stop.clone()));
    let status =
        status_source(&config, device_id, identity.clone(), journal, device.clone(), link_status.clone(), problems);
    // Its own token: the control socket also closes when the server ends management.
    let control_stop = shutdown.child_token();
    tracker.spawn(crate::control::serve(config.control.socket.clone(), status, control_stop.clone()));

    let heartbeat = config.connect.heartbeat;
    let driver = Driver {
        config: DriverConfig {
            timing: Timing {
                heartbeat,
                backoff_max: config.connect.backoff_max,
                push: config.connect.mode == ConnectMode::Stream,
            },
            poll_interval: config.connect.poll_interval,
            checkin_interval: config.connect.checkin_interval,
            rpc_deadline: DriverConfig::rpc_deadline_for(heartbeat),
        },
        connector: connector.clone(),
        device: device.clone(),
        results_ready,
        device_changed,
        status: link_status,
        watchdog: options.watchdog.clone(),
    };
    crate::systemd::notify("READY=1");
    let stopped = driver.run(rand::random::<f64>, shutdown.clone()).await;
    crate::systemd::notify("STOPPING=1");
    // The worker finishes the command it is on; then what it produced is reported.
    worker_stop.cancel();
    control_stop.cancel();
    tracker.close();
    tracker.wait().await;
    // A server that no longer manages the device refuses its reports too.
    if stopped == Stopped::Shutdown {
        final_flush(connector.as_ref(), device.as_ref(), heartbeat).await;
    }
    tracing::info!("agent stopped");
    match stopped {
        Stopped::Shutdown => Ok(()),
        Stopped::Unmanaged(why) => Err(Exit::new(
            Code::Unmanaged,
            format!("the server no longer manages this device ({why}); `latchkey unenroll --local` removes what is left of the enrollment"),
        )),
    }
}

fn status_source(
    config: &Config,
    device_id: String,
    identity: Arc<RwLock<Identity>>,
    journal: Arc<Journal>,
    device: Arc<Device>,
    link: Arc<Mutex<LinkStatus>>,
    problems: Problems,
) -> crate::control::StatusSource {
    let server = match config.server.protocol {
        Protocol::AppleMdm => apple_enrollment(config, &identity.read().unwrap_or_else(|p| p.into_inner()))
            .map_or_else(|_| config.server.url.clone(), |apple| format!("{} (Apple MDM)", apple.server_url)),
        Protocol::Latchkey => config.server.url.clone(),
    };
    Arc::new(move || {
        let snapshot = device.last_snapshot();
        Status {
            device_id: device_id.clone(),
            server: server.clone(),
            agent_version: latchkey_common::VERSION.to_owned(),
            link: link.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            certificate_not_after: identity.read().unwrap_or_else(|p| p.into_inner()).not_after(),
            journal: journal.counts().unwrap_or_default(),
            journal_recovering: journal.lost_at().is_some(),
            platform: snapshot.map(|s| PlatformView {
                platform: s.facts.platform,
                os_version: s.facts.os_version,
                mode: s.facts.mode,
                passcode_present: s.state.passcode_present,
                reset_token: s.state.reset_token,
                locked: s.state.locked,
            }),
            problems: problems.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect(),
        }
    })
}

/// Reports what is left unreported before the process exits, within a few seconds.
async fn final_flush(connector: &dyn Connector, device: &Device, heartbeat: Duration) {
    use crate::link::driver::DeviceSide;
    if device.unreported().await.is_empty() {
        return;
    }
    let attempt = async {
        let link = connector.connect().await?;
        let mut link = driver::Deadlined::new(link, DriverConfig::rpc_deadline_for(heartbeat));
        driver::flush(&mut link, device).await
    };
    match tokio::time::timeout(Duration::from_secs(5), attempt).await {
        Ok(Ok(())) => tracing::info!("reported outstanding results before exit"),
        _ => tracing::info!("results left unreported are kept in the journal for the next start"),
    }
}
