//! One logging setup for every binary. Under systemd (stderr connected to the journal, as
//! `JOURNAL_STREAM` says) events go to journald natively, each with its priority, so
//! `journalctl -p warning` works; elsewhere one line per event on stderr (`LATCHKEY_LOG_FORMAT=json`
//! for JSON lines), which logcat and launchd capture as is. The level comes from `LATCHKEY_LOG`
//! or the caller's default and can be changed while running ([`Logging::set_level`], used on
//! SIGHUP).
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, Registry};

/// The installed logger; keep it to change the level later.
pub struct Logging {
    filter: reload::Handle<Targets, Registry>,
    /// Where events go: `journald`, `stderr` or `stderr-json`.
    pub sink: &'static str,
}

impl Logging {
    /// Replaces the level filter (`info`, `debug`, `latchkey=debug,warn`, …).
    pub fn set_level(&self, level: &str) -> Result<(), String> {
        self.filter.reload(parse_level(level)?).map_err(|e| e.to_string())
    }
}

/// Parses a level filter: a default level and `target=level` pairs, comma-separated. This is
/// `tracing_subscriber`'s `Targets` syntax, not `EnvFilter`'s: no span or field matching, which
/// needs the regex engine and would add a third to the device binary's code for no use here.
/// A bare word must be a level: `Targets` would read `loud` as a target enabled at trace.
pub fn parse_level(level: &str) -> Result<Targets, String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    for directive in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let level_part = directive.rsplit_once('=').map_or(directive, |(_, level)| level);
        if !LEVELS.contains(&level_part.to_ascii_lowercase().as_str()) {
            return Err(format!("log level {level:?}: {level_part:?} is not one of {}", LEVELS.join(", ")));
        }
    }
    level.parse::<Targets>().map_err(|e| format!("log level {level:?}: {e}"))
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
    let from_env = std::env::var("LATCHKEY_LOG").ok().and_then(|level| parse_level(&level).ok());
    let filter = from_env
        .or_else(|| parse_level(default_level).ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
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

#[cfg(test)]
mod tests {
    use super::parse_level;

    #[test]
    fn levels_and_target_pairs_parse_and_words_that_are_not_levels_do_not() {
        assert!(parse_level("info").is_ok());
        assert!(parse_level("latchkey=debug,warn").is_ok());
        assert!(parse_level("h2=off, latchkey_server=trace").is_ok());
        assert!(parse_level("loud").is_err());
        assert!(parse_level("latchkey=verbose").is_err());
    }
}
