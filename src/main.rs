//! `latchkey`: the agent daemon and its command line.
use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use latchkey::config::{Config, DEFAULT_CONFIG};
use latchkey::{agent, check, control, enroll, executor, policy_cmd, sim_cmd};
use latchkey_platform::Secret;

#[derive(Parser)]
#[command(name = "latchkey", version, about = "Latchkey device-side MDM agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent daemon.
    Run {
        /// Configuration file (drop-ins in its config.d/).
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Enroll this device (one time).
    Enroll {
        /// Configuration file.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Server URL (overrides server.url).
        #[arg(long)]
        server: Option<String>,
        /// Server CA file (overrides server.ca).
        #[arg(long)]
        ca: Option<PathBuf>,
        /// File holding the enrollment token, or `-` for stdin.
        #[arg(long)]
        token_file: String,
    },
    /// Ask the running agent for its status.
    Status {
        /// Configuration file (for the control socket path).
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Offline diagnostics.
    Check {
        /// Configuration file.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
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
        command: sim_cmd::SimCommand,
    },
    /// Platform bridge tools.
    Bridge {
        #[command(subcommand)]
        command: BridgeCommand,
    },
    /// Run the embedded demo: a server and simulated devices on loopback with real mTLS.
    #[cfg(feature = "demo")]
    Demo {
        /// Keep the demo's files in this directory instead of a temporary one.
        #[arg(long)]
        keep: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Check a passcode read from stdin against a policy.
    Check(policy_cmd::CheckArgs),
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

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LATCHKEY_LOG").unwrap_or_else(|_| default.into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(false);
    if std::env::var("LATCHKEY_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

fn read_token(spec: &str) -> Result<Secret> {
    let mut text = String::new();
    if spec == "-" {
        std::io::stdin().read_to_string(&mut text)?;
    } else {
        text = std::fs::read_to_string(spec).with_context(|| format!("reading {spec}"))?;
    }
    let token = Secret::new(text.trim().to_owned());
    anyhow::ensure!(!token.is_empty(), "the enrollment token is empty");
    Ok(token)
}

fn main() {
    let cli = Cli::parse();
    let code = match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn dispatch(command: Command) -> Result<i32> {
    match command {
        Command::Run { config } => {
            init_logging("info");
            let config = Config::load(&config)?;
            runtime()?.block_on(async {
                let shutdown = CancellationToken::new();
                let signals = shutdown.clone();
                tokio::spawn(async move {
                    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                        Ok(t) => t,
                        Err(_) => return,
                    };
                    tokio::select! {
                        _ = term.recv() => tracing::info!("SIGTERM: finishing in-flight work"),
                        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt: finishing in-flight work"),
                    }
                    signals.cancel();
                });
                agent::run(config, agent::RunOptions { fault: executor::Fault::from_env() }, shutdown).await
            })?;
            Ok(0)
        }
        Command::Enroll { config, server, ca, token_file } => {
            init_logging("warn");
            let mut table = if config.exists() || config != std::path::Path::new(DEFAULT_CONFIG) {
                Config::load(&config)?
            } else {
                Config::from_table(toml::Table::new())?
            };
            if let Some(url) = server {
                table.server.url = url;
            }
            if let Some(ca) = ca {
                table.server.ca = ca;
            }
            let token = read_token(&token_file)?;
            let id = runtime()?.block_on(enroll::enroll(&table, &token))?;
            println!("enrolled as {id}");
            Ok(0)
        }
        Command::Status { config, json } => {
            let config = Config::load(&config)?;
            let status = runtime()?.block_on(control::query(&config.control.socket))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                println!("device:        {}", status["device_id"].as_str().unwrap_or("-"));
                println!("server:        {}", status["server"].as_str().unwrap_or("-"));
                println!("link:          {}", status["link"]["link"].as_str().unwrap_or("-"));
                let last = status["link"]["last_checkin_unix_ms"].as_u64().unwrap_or(0);
                let last = if last == 0 {
                    "never".to_owned()
                } else {
                    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(last))
                        .to_string()
                };
                println!("last check-in: {last}");
                println!(
                    "journal:       {} pending, {} unreported",
                    status["journal"]["pending"], status["journal"]["unreported"]
                );
                println!(
                    "platform:      {} {}",
                    status["platform"]["facts"]["platform"], status["platform"]["facts"]["os_version"]
                );
            }
            Ok(0)
        }
        Command::Check { config, json } => {
            let lines = runtime()?.block_on(check::run(&config));
            if json {
                println!("{}", serde_json::to_string_pretty(&lines)?);
            } else {
                for l in &lines {
                    println!("{:<8} {:<14} {}", format!("{:?}", l.verdict).to_lowercase(), l.check, l.detail);
                }
            }
            Ok(if lines.iter().any(|l| l.verdict == check::Verdict::Failed) { 1 } else { 0 })
        }
        Command::Policy { command: PolicyCommand::Check(args) } => Ok(policy_cmd::run(&args)),
        Command::Sim { command } => {
            init_logging("warn");
            sim_cmd::run(command)
        }
        Command::Bridge { command: BridgeCommand::Conformance { socket } } => {
            let findings = latchkey::bridge::conformance(&socket);
            for f in &findings {
                println!("{:<6} {} — {}", if f.ok { "ok" } else { "FAILED" }, f.check, f.detail);
            }
            Ok(if findings.iter().all(|f| f.ok) { 0 } else { 1 })
        }
        #[cfg(feature = "demo")]
        Command::Demo { keep } => {
            init_logging("warn");
            let ok = runtime()?.block_on(latchkey::demo::run(keep))?;
            Ok(if ok { 0 } else { 1 })
        }
    }
}
