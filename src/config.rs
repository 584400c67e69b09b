//! Agent configuration: a base TOML file plus `config.d/*.toml` drop-ins merged in name order
//! (tables merge, scalars replace), deserialized once with unknown keys refused, then checked
//! by [`Config::check`], whose errors name the key.
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Default configuration file.
pub const DEFAULT_CONFIG: &str = "/etc/latchkey/config.toml";

/// The configuration file to use when `--config` is not given: `LATCHKEY_CONFIG`, else
/// [`DEFAULT_CONFIG`].
pub fn default_path() -> PathBuf {
    std::env::var_os("LATCHKEY_CONFIG").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG))
}

/// Configuration errors: each names the file or the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not valid TOML.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
    /// The merged document does not fit the schema (unknown key, wrong type).
    #[error("{0}")]
    Schema(String),
    /// A value is not acceptable.
    #[error("{key}: {message}")]
    Invalid {
        /// Dotted key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text)
        .map_err(|e| serde::de::Error::custom(format!("{e} (expected a duration such as \"20s\" or \"5m\")")))
}

/// The wire dialect the agent speaks to its server.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// Latchkey's own gRPC protocol (push stream, typed results).
    #[default]
    Latchkey,
    /// Apple's MDM check-in and command protocol (plist over HTTPS, polled).
    AppleMdm,
}

impl Protocol {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Latchkey => "latchkey",
            Self::AppleMdm => "apple-mdm",
        }
    }
}

/// `[server]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// The wire dialect.
    #[serde(default)]
    pub protocol: Protocol,
    /// `https://host:port` of the management server; with `apple-mdm`, the MDM ServerURL
    /// (empty: the enrollment profile's).
    #[serde(default)]
    pub url: String,
    /// `apple-mdm`: the check-in URL (empty: the profile's CheckInURL, else the server URL).
    #[serde(default)]
    pub checkin_url: String,
    /// `apple-mdm`: the push topic (empty: the profile's).
    #[serde(default)]
    pub topic: String,
    /// The only CA trusted for the server (PEM).
    #[serde(default = "default_ca")]
    pub ca: PathBuf,
}

fn default_ca() -> PathBuf {
    PathBuf::from("/etc/latchkey/server-ca.pem")
}

/// `[state]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// Identity, journal and secret store (0700).
    #[serde(default = "default_state_dir")]
    pub dir: PathBuf,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/latchkey")
}

/// Which OS port to use.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PortKind {
    /// Real Linux accounts.
    Linux,
    /// The device simulator.
    Sim,
    /// An out-of-process bridge over a local socket.
    Bridge,
}

/// `[platform]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformSection {
    /// Port.
    #[serde(default = "default_port")]
    pub port: PortKind,
    /// Simulator state file (port = "sim").
    pub sim_state: Option<PathBuf>,
    /// Bridge socket (port = "bridge").
    pub bridge_socket: Option<PathBuf>,
    /// Managed account (port = "linux").
    #[serde(default = "default_linux_user")]
    pub linux_user: String,
    /// Filesystem root holding etc/shadow (port = "linux").
    #[serde(default = "default_root")]
    pub linux_root: PathBuf,
    /// Session-lock command (port = "linux").
    #[serde(default = "default_lock_command")]
    pub lock_command: Vec<String>,
    /// How long the session-lock command may run before it is stopped (port = "linux").
    #[serde(default = "default_lock_timeout", deserialize_with = "duration")]
    pub lock_timeout: Duration,
    /// Passcode policy document for the linux port (plist, DPM JSON or PINComplexity).
    pub policy_file: Option<PathBuf>,
}

fn default_port() -> PortKind {
    PortKind::Linux
}
fn default_linux_user() -> String {
    "latchkey".into()
}
fn default_root() -> PathBuf {
    PathBuf::from("/")
}
fn default_lock_command() -> Vec<String> {
    vec!["loginctl".into(), "lock-sessions".into()]
}
fn default_lock_timeout() -> Duration {
    latchkey_platform::linux::DEFAULT_LOCK_TIMEOUT
}

/// How commands reach the agent.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ConnectMode {
    /// Push stream, polling as fallback.
    Stream,
    /// Polling only.
    Poll,
}

/// `[connect]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Connect {
    /// Stream or poll.
    #[serde(default = "default_mode")]
    pub mode: ConnectMode,
    /// Poll period (and stream-fallback period).
    #[serde(default = "default_poll", deserialize_with = "duration")]
    pub poll_interval: Duration,
    /// Heartbeat period on the stream.
    #[serde(default = "default_heartbeat", deserialize_with = "duration")]
    pub heartbeat: Duration,
    /// Slow check-in period.
    #[serde(default = "default_checkin", deserialize_with = "duration")]
    pub checkin_interval: Duration,
    /// Ceiling of the reconnect backoff.
    #[serde(default = "default_backoff_max", deserialize_with = "duration")]
    pub backoff_max: Duration,
}

fn default_mode() -> ConnectMode {
    ConnectMode::Stream
}
fn default_poll() -> Duration {
    Duration::from_secs(60)
}
fn default_heartbeat() -> Duration {
    Duration::from_secs(20)
}
fn default_checkin() -> Duration {
    Duration::from_secs(3600)
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(300)
}

/// `[control]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Control {
    /// Control socket for `latchkey status`.
    #[serde(default = "default_control")]
    pub socket: PathBuf,
}

fn default_control() -> PathBuf {
    PathBuf::from("/run/latchkey/control.sock")
}

/// `[identity]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySection {
    /// Renew the device certificate when less than this much validity remains.
    #[serde(default = "default_renew_before", deserialize_with = "duration")]
    pub renew_before: Duration,
}

fn default_renew_before() -> Duration {
    Duration::from_secs(10 * 24 * 3600)
}

/// `[log]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// Level filter (`info`, `debug`, `latchkey=debug,warn`); `LATCHKEY_LOG` overrides it at
    /// start; re-read on SIGHUP.
    #[serde(default = "default_log_level")]
    pub level: String,
}

fn default_log_level() -> String {
    "info".into()
}

/// The whole configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[server]`.
    pub server: Server,
    /// `[state]`.
    pub state: State,
    /// `[platform]`.
    pub platform: PlatformSection,
    /// `[connect]`.
    pub connect: Connect,
    /// `[control]`.
    pub control: Control,
    /// `[identity]`.
    pub identity: IdentitySection,
    /// `[log]`.
    pub log: LogSection,
}

/// Merges `overlay` into `base`: tables merge key by key, anything else replaces.
pub fn merge(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}

fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
    text.parse::<toml::Table>()
        .map_err(|e| ConfigError::Parse { path: path.to_owned(), message: e.message().to_owned() })
}

impl Config {
    /// Loads `path` and its `config.d/*.toml` drop-ins.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut table = read_table(path)?;
        let dropins = path.parent().unwrap_or(Path::new(".")).join("config.d");
        if let Ok(entries) = std::fs::read_dir(&dropins) {
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            files.sort();
            for file in files {
                merge(&mut table, read_table(&file)?);
            }
        }
        Self::from_table(table)
    }

    /// Builds a configuration from a merged table, applying defaults.
    pub fn from_table(mut table: toml::Table) -> Result<Self, ConfigError> {
        for section in ["server", "state", "platform", "connect", "control", "identity", "log"] {
            table.entry(section).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        }
        serde_path_to_error::deserialize::<_, Config>(toml::Value::Table(table)).map_err(|e| {
            let path = e.path().to_string();
            ConfigError::Schema(format!("{path}: {}", e.into_inner().message()))
        })
    }

    /// Semantic checks, separate from parsing.
    pub fn check(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| Err(ConfigError::Invalid { key, message: message.to_owned() });
        match self.server.protocol {
            Protocol::Latchkey => {
                if !self.server.url.starts_with("https://") {
                    return invalid("server.url", "must be an https:// URL (there is no plaintext mode)");
                }
                if crate::transport::endpoint(&self.server.url).is_err() {
                    return invalid("server.url", "must be https://HOST:PORT");
                }
            }
            // Empty URLs and topic come from the enrollment profile.
            #[cfg(not(feature = "apple-mdm"))]
            Protocol::AppleMdm => return invalid("server.protocol", crate::apple::NOT_BUILT),
            #[cfg(feature = "apple-mdm")]
            Protocol::AppleMdm => {
                for (key, url) in [("server.url", &self.server.url), ("server.checkin_url", &self.server.checkin_url)] {
                    if !url.is_empty() {
                        if let Err(message) = crate::transport::https::HttpsUrl::parse(url) {
                            return Err(ConfigError::Invalid { key, message });
                        }
                    }
                }
                if !self.server.topic.is_empty() && !self.server.topic.starts_with(crate::apple::TOPIC_PREFIX) {
                    return invalid("server.topic", "must start with com.apple.mgmt. (Apple's MDM topic namespace)");
                }
            }
        }
        match self.platform.port {
            PortKind::Sim if self.platform.sim_state.is_none() => {
                return invalid("platform.sim_state", "required with port = \"sim\"")
            }
            PortKind::Bridge if self.platform.bridge_socket.is_none() => {
                return invalid("platform.bridge_socket", "required with port = \"bridge\"")
            }
            PortKind::Linux if self.platform.lock_command.is_empty() => {
                return invalid("platform.lock_command", "must name a command")
            }
            _ => {}
        }
        let ms = Duration::from_millis;
        let s = Duration::from_secs;
        let bounds: [(&'static str, Duration, Duration, Duration); 6] = [
            ("connect.heartbeat", self.connect.heartbeat, ms(100), s(3600)),
            ("connect.poll_interval", self.connect.poll_interval, ms(100), s(86_400)),
            ("connect.checkin_interval", self.connect.checkin_interval, s(1), s(7 * 86_400)),
            ("connect.backoff_max", self.connect.backoff_max, s(1), s(86_400)),
            ("identity.renew_before", self.identity.renew_before, s(1), s(365 * 86_400)),
            ("platform.lock_timeout", self.platform.lock_timeout, ms(100), s(600)),
        ];
        for (key, value, min, max) in bounds {
            if value < min || value > max {
                return Err(ConfigError::Invalid {
                    key,
                    message: format!(
                        "{} is out of range: use {}..={}",
                        humantime::format_duration(value),
                        humantime::format_duration(min),
                        humantime::format_duration(max)
                    ),
                });
            }
        }
        if latchkey_common::log::parse_level(&self.log.level).is_err() {
            return invalid("log.level", "is not a log filter (try \"info\" or \"latchkey=debug,warn\")");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropins_merge_in_name_order_tables_merge_scalars_replace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().join("config.toml");
        std::fs::write(&base, "[server]\nurl = \"https://a:1\"\n[connect]\nmode = \"stream\"\nheartbeat = \"5s\"\n")
            .expect("base");
        std::fs::create_dir(dir.path().join("config.d")).expect("dir");
        std::fs::write(dir.path().join("config.d/20-poll.toml"), "[connect]\nmode = \"poll\"\n").expect("20");
        std::fs::write(dir.path().join("config.d/10-url.toml"), "[server]\nurl = \"https://b:2\"\n").expect("10");
        std::fs::write(dir.path().join("config.d/ignored.txt"), "garbage").expect("txt");
        let config = Config::load(&base).expect("load");
        assert_eq!(config.server.url, "https://b:2");
        assert_eq!(config.connect.mode, ConnectMode::Poll);
        assert_eq!(config.connect.heartbeat, Duration::from_secs(5));
        assert_eq!(config.connect.poll_interval, Duration::from_secs(60));
    }

    #[test]
    fn every_duration_is_bounded_and_zero_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        for (section, key) in [
            ("connect", "checkin_interval"),
            ("connect", "backoff_max"),
            ("connect", "heartbeat"),
            ("connect", "poll_interval"),
            ("identity", "renew_before"),
            ("platform", "lock_timeout"),
        ] {
            std::fs::write(&path, format!("[server]\nurl = \"https://a:1\"\n[{section}]\n{key} = \"0s\"\n"))
                .expect("write");
            let err = Config::load(&path).expect("parses").check().expect_err("zero must be refused").to_string();
            assert!(err.starts_with(&format!("{section}.{key}")), "{err}");
        }
    }

    #[test]
    fn apple_mdm_takes_its_urls_from_the_profile_unless_set_and_checks_what_is_set() {
        let check = |server: &str| {
            let table: toml::Table = format!("[server]\nprotocol = \"apple-mdm\"\n{server}").parse().expect("toml");
            Config::from_table(table).expect("schema").check().map_err(|e| e.to_string())
        };
        assert!(check("").is_ok(), "everything may come from the profile");
        assert!(check("url = \"https://mdm.example.com/mdm\"\ntopic = \"com.apple.mgmt.x\"\n").is_ok());
        assert!(check("url = \"http://mdm.example.com/mdm\"\n").expect_err("plaintext").starts_with("server.url"));
        assert!(check("checkin_url = \"https://\"\n").expect_err("no host").starts_with("server.checkin_url"));
        assert!(check("topic = \"com.example\"\n").expect_err("topic").starts_with("server.topic"));
        let native: toml::Table = "[server]\n".parse().expect("toml");
        assert!(Config::from_table(native).expect("schema").check().is_err(), "the native dialect needs its URL");
        let typo: toml::Table = "[server]\nprotocol = \"apple\"\n".parse().expect("toml");
        assert!(Config::from_table(typo).expect_err("unknown dialect").to_string().contains("protocol"));
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = Config::load(Path::new("/nonexistent/latchkey.toml")).expect_err("missing").to_string();
        assert!(err.contains("/nonexistent/latchkey.toml"), "{err}");
    }

    #[test]
    fn errors_name_the_file_or_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "[connect]\nmdoe = \"stream\"\n").expect("write");
        let err = Config::load(&path).expect_err("typo must fail").to_string();
        assert!(err.contains("mdoe"), "{err}");
        std::fs::write(&path, "[server]\nurl = \"http://plain:80\"\n").expect("write");
        let err = Config::load(&path).expect("parses").check().expect_err("plaintext").to_string();
        assert!(err.starts_with("server.url"), "{err}");
        std::fs::write(&path, "[server\n").expect("write");
        let err = Config::load(&path).expect_err("bad toml").to_string();
        assert!(err.contains("config.toml"), "{err}");
    }
}
