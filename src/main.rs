//! `latchkey`: the agent daemon and its command line.
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use latchkey::config::{self, Config};
use latchkey::{agent, check, control, enroll, executor};
use latchkey_common::exit::{self, Code, Exit};
use latchkey_platform::Secret;

mod cli;

macro_rules! examples {
    () => {
        "Examples:
  latchkey enroll --config /etc/latchkey/config.toml --token-file -     (token on stdin)
  systemctl start latchkey                                              (runs `latchkey run`)
  latchkey status
  latchkey check
  echo -n 'Tmp-4821x' | latchkey policy check --dialect android --quality alphanumeric --min-length 8
  latchkey sim init --state dev.json --profile android-do"
    };
}
// A device build has no `demo` to show.
#[cfg(feature = "demo")]
const EXAMPLES: &str = concat!(examples!(), "\n  latchkey demo");
#[cfg(not(feature = "demo"))]
const EXAMPLES: &str = examples!();

#[derive(Parser)]
#[command(name = "latchkey", version = latchkey_common::VERSION, about = "Latchkey device-side MDM agent", after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent daemon.
    Run {
        /// Configuration file (drop-ins in its config.d/); default $LATCHKEY_CONFIG or /etc/latchkey/config.toml.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Enroll this device (one time).
    Enroll {
        /// Configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Server URL (overrides server.url).
        #[arg(long)]
        server: Option<String>,
        /// Server CA file (overrides server.ca).
        #[arg(long)]
        ca: Option<PathBuf>,
        /// File holding the enrollment token (0600), or `-` for stdin.
        #[arg(long, required_unless_present = "mobileconfig", conflicts_with = "mobileconfig")]
        token_file: Option<String>,
        /// Enroll with an Apple MDM server from this enrollment profile (unsigned
        /// .mobileconfig with a com.apple.mdm and a com.apple.security.pkcs12 payload); needs
        /// server.protocol = "apple-mdm".
        #[arg(long, value_name = "FILE")]
        #[cfg_attr(not(feature = "apple-mdm"), arg(hide = true))]
        mobileconfig: Option<PathBuf>,
        /// File holding the PKCS#12 password (0600), or `-` for stdin (the default when the
        /// profile does not carry it).
        #[arg(long, requires = "mobileconfig")]
        #[cfg_attr(not(feature = "apple-mdm"), arg(hide = true))]
        password_file: Option<String>,
    },
    /// Leave management: report what is left, tell the server, delete identity, secrets and
    /// journal. The daemon must be stopped.
    Unenroll {
        /// Configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Do not contact the server (it may be gone); only delete local state.
        #[arg(long)]
        local: bool,
    },
    /// Ask the running agent for its status.
    Status {
        /// Configuration file (for the control socket path).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Offline diagnostics.
    Check {
        /// Configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Passcode policies.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// The device simulator.
    Sim {
        #[command(subcommand)]
        command: cli::sim::SimCommand,
    },
    /// Platform bridge tools.
    Bridge {
        #[command(subcommand)]
        command: BridgeCommand,
    },
    #[cfg(feature = "demo")]
    /// Run the demo: the reference server and one simulated device per matrix row, on loopback
    /// with real mTLS, real processes; prints the device-actions table.
    Demo {
        /// Keep the demo's files in this directory instead of a temporary one.
        #[arg(long)]
        keep: Option<PathBuf>,
        /// One JSON object per row instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// `man` and `completions` (hidden).
    #[cfg(feature = "docs")]
    #[command(flatten)]
    Docs(latchkey_common::cli::DocsCommand),
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Check a passcode read from stdin against a policy.
    Check(cli::policy::CheckArgs),
}

#[derive(Subcommand)]
enum BridgeCommand {
    /// Run the conformance checks against a bridge (changes the device: use a test device).
    Conformance {
        /// Bridge socket.
        #[arg(long)]
        socket: PathBuf,
    },
}

fn main() {
    let cli = Cli::parse();
    exit::finish("latchkey", dispatch(cli.command));
}

/// One thread runs the agent's async work: it waits on the network almost all the time, and
/// file and port I/O goes to blocking threads anyway. Fewer threads, fewer wake-ups, and no
/// cross-thread hand-offs on the path of a command.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

fn load(config: Option<PathBuf>) -> anyhow::Result<Config> {
    let path = config.unwrap_or_else(config::default_path);
    Config::load(&path).map_err(|e| Exit::new(Code::Usage, e.to_string()).into())
}

/// The daemon: SIGTERM and SIGINT finish in-flight work and exit; SIGHUP re-reads the log level.
fn run_daemon(config_path: Option<PathBuf>) -> anyhow::Result<Code> {
    let path = config_path.unwrap_or_else(config::default_path);
    let config = Config::load(&path).map_err(|e| Exit::new(Code::Usage, e.to_string()))?;
    let logging = latchkey_common::log::init(&config.log.level);
    runtime()?.block_on(async move {
        let shutdown = CancellationToken::new();
        let signals = shutdown.clone();
        let (mut term, mut hup) = (
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?,
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?,
        );
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = term.recv() => { tracing::info!("SIGTERM: finishing in-flight work"); break; }
                    _ = tokio::signal::ctrl_c() => { tracing::info!("interrupt: finishing in-flight work"); break; }
                    _ = hup.recv() => {
                        latchkey::systemd::reloading();
                        match (Config::load(&path), logging.as_ref()) {
                            // Said before the switch, so it shows whichever way the level moves.
                            (Ok(c), Some(logging)) => {
                                tracing::info!(level = %c.log.level, "SIGHUP: applying the configured log level");
                                if let Err(e) = logging.set_level(&c.log.level) {
                                    tracing::warn!(error = %e, "SIGHUP: log level not changed");
                                }
                            }
                            (Err(e), _) => tracing::warn!(error = %e, "SIGHUP: configuration not reloaded"),
                            (Ok(_), None) => {}
                        }
                        latchkey::systemd::notify("READY=1");
                    }
                }
            }
            signals.cancel();
        });
        let options = agent::RunOptions {
            fault: executor::Fault::from_env(),
            watchdog: latchkey::watchdog::Watchdog::from_env(),
        };
        agent::run(config, options, shutdown).await?;
        Ok::<_, anyhow::Error>(Code::Ok)
    })
}

fn dispatch(command: Command) -> anyhow::Result<Code> {
    match command {
        Command::Run { config } => run_daemon(config),
        Command::Enroll { config, server, ca, token_file, mobileconfig, password_file } => {
            let _logging = latchkey_common::log::init("warn");
            #[cfg(not(feature = "apple-mdm"))]
            if mobileconfig.is_some() || password_file.is_some() {
                return Err(Exit::new(Code::Usage, latchkey::apple::NOT_BUILT.to_owned()).into());
            }
            let path = config.unwrap_or_else(config::default_path);
            // With --server and --ca a configuration file is optional.
            let mut table = if path.exists() || server.is_none() {
                Config::load(&path).map_err(|e| Exit::new(Code::Usage, e.to_string()))?
            } else {
                Config::from_table(toml::Table::new()).map_err(|e| Exit::new(Code::Usage, e.to_string()))?
            };
            if let Some(url) = server {
                table.server.url = url;
            }
            if let Some(ca) = ca {
                table.server.ca = ca;
            }
            #[cfg(feature = "apple-mdm")]
            if let Some(profile) = mobileconfig {
                let password = || {
                    let source = password_file.as_deref().unwrap_or("-");
                    latchkey_common::secret_input::read(source, "PKCS#12 password")
                        .map(|p| Secret::new(p.as_str().to_owned()))
                        .map_err(|e| Exit::new(Code::Usage, e.to_string()))
                };
                let id = runtime()?.block_on(enroll::enroll_apple(&table, &profile, password))?;
                println!("enrolled as {id}");
                return Ok(Code::Ok);
            }
            let token_file = token_file.unwrap_or_else(|| "-".to_owned());
            let token = latchkey_common::secret_input::read(&token_file, "enrollment token")
                .map_err(|e| Exit::new(Code::Usage, e.to_string()))?;
            let token = Secret::new(token.as_str().to_owned());
            let id = runtime()?.block_on(enroll::enroll(&table, &token))?;
            println!("enrolled as {id}");
            Ok(Code::Ok)
        }
        Command::Unenroll { config, local } => {
            let _logging = latchkey_common::log::init("warn");
            let config = load(config)?;
            runtime()?.block_on(enroll::unenroll(&config, local))?;
            println!("unenrolled: identity, secrets and journal deleted");
            Ok(Code::Ok)
        }
        Command::Status { config, json } => {
            let config = load(config)?;
            let status = runtime()?.block_on(control::query(&config.control.socket))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", status.render());
            }
            Ok(Code::Ok)
        }
        Command::Check { config, json } => {
            let _logging = latchkey_common::log::init("error");
            let path = config.unwrap_or_else(config::default_path);
            let lines = runtime()?.block_on(check::run(&path));
            if json {
                println!("{}", serde_json::to_string_pretty(&lines)?);
            } else {
                print!("{}", check::render(&lines));
            }
            Ok(if lines.iter().any(|l| l.verdict == check::Verdict::Failed) { Code::Failure } else { Code::Ok })
        }
        Command::Policy { command: PolicyCommand::Check(args) } => Ok(cli::policy::run(&args)),
        Command::Sim { command } => {
            let _logging = latchkey_common::log::init("warn");
            cli::sim::run(command)
        }
        Command::Bridge { command: BridgeCommand::Conformance { socket } } => {
            let findings = latchkey::bridge::conformance(&socket);
            for f in &findings {
                println!("{:<6} {} — {}", if f.ok { "ok" } else { "FAILED" }, f.check, f.detail);
            }
            Ok(if findings.iter().all(|f| f.ok) { Code::Ok } else { Code::Failure })
        }
        #[cfg(feature = "demo")]
        Command::Demo { keep, json } => {
            let _logging = latchkey_common::log::init("warn");
            let ok = cli::demo::run(keep, json)?;
            Ok(if ok { Code::Ok } else { Code::Failure })
        }
        #[cfg(feature = "docs")]
        Command::Docs(docs) => {
            docs.run(<Cli as clap::CommandFactory>::command())?;
            Ok(Code::Ok)
        }
    }
}
