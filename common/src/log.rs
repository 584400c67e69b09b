//! One logging setup for every binary. Under systemd (stderr connected to the journal, as
//! `JOURNAL_STREAM` says) events go to journald natively, each with its priority, so
//! `journalctl -p warning` works; elsewhere one line per event on stderr (`LATCHKEY_LOG_FORMAT=json`
//! for JSON lines), which logcat and launchd capture as is. The level comes from `LATCHKEY_LOG`
//! or the caller's default and can be changed while running ([`Logging::set_level`], used on
//! SIGHUP).
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// The installed logger; keep it to change the level later.
pub struct Logging {
    filter: reload::Handle<EnvFilter, Registry>,
    /// Where events go: `journald`, `stderr` or `stderr-json`.
    pub sink: &'static str,
}

impl Logging {
    /// Replaces the level filter (`info`, `debug`, `latchkey=debug,warn`, …).
    pub fn set_level(&self, level: &str) -> Result<(), String> {
        let filter = EnvFilter::try_new(level).map_err(|e| format!("log level {level:?}: {e}"))?;
        self.filter.reload(filter).map_err(|e| e.to_string())
    }
}

/// True when stderr is the journal stream systemd connected (not a pipe we were started with).
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else { return false };
    let Some((dev, ino)) = stream.split_once(':') else { return false };
    match std::fs::metadata("/proc/self/fd/2") {
        Ok(meta) => dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino()),
        Err(_) => false,
    }
}

/// Installs the logger once per process; `default_level` applies when `LATCHKEY_LOG` is unset.
/// A second call (many agents in one test process) keeps the first logger.
pub fn init(default_level: &str) -> Option<Logging> {
    let filter = EnvFilter::try_from_env("LATCHKEY_LOG").unwrap_or_else(|_| EnvFilter::new(default_level));
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let json = std::env::var("LATCHKEY_LOG_FORMAT").as_deref() == Ok("json");
    let sink = if stderr_is_journal() {
        match tracing_journald::layer() {
            Ok(journald) => {
                registry.with(journald.with_syslog_identifier("latchkey".into())).try_init().map(|()| "journald")
            }
            Err(_) => registry.with(stderr_layer()).try_init().map(|()| "stderr"),
        }
    } else if json {
        registry
            .with(tracing_subscriber::fmt::layer().json().flatten_event(true).with_writer(std::io::stderr))
            .try_init()
            .map(|()| "stderr-json")
    } else {
        registry.with(stderr_layer()).try_init().map(|()| "stderr")
    };
    sink.ok().map(|sink| Logging { filter: handle, sink })
}

fn stderr_layer<S>() -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(false)
}
