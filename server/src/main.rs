//! `latchkey-server`: the reference management server and its admin commands.
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use latchkey_platform::SecretBytes;
use latchkey_server::admin::{self, ActionSpec, Waker};
use latchkey_server::db::Db;
use latchkey_server::serve::{self, ServeConfig};

#[derive(Parser)]
#[command(name = "latchkey-server", version, about = "Latchkey reference management server")]
struct Cli {
    /// Data directory: CA, server identity, database, admin socket.
    #[arg(long, global = true, default_value = "/var/lib/latchkey-server")]
    data: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the device API (creates CA, identity and database on first start).
    Serve {
        /// Address to listen on; port 0 picks a free port and prints it.
        #[arg(long, default_value = "0.0.0.0:8443")]
        listen: SocketAddr,
        /// Push-stream heartbeat interval.
        #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
        heartbeat: Duration,
        /// Extra DNS name or IP for the server certificate (repeatable).
        #[arg(long = "server-name")]
        server_names: Vec<String>,
    },
    /// Print the CA certificate agents must trust (PEM).
    Ca,
    /// Enrollment tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// List enrolled devices.
    Devices {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Queue an action for a device.
    Action {
        /// What to do.
        kind: ActionKind,
        /// Target device id.
        #[arg(long)]
        device: String,
        /// reset-passcode: which passcode.
        #[arg(long, value_enum, default_value = "device")]
        scope: ScopeArg,
        /// lock: lock-screen message.
        #[arg(long, default_value = "")]
        message: String,
        /// lock: lock-screen phone number.
        #[arg(long, default_value = "")]
        phone: String,
        /// How long the device may still apply the action.
        #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// The device-actions status view.
    Actions {
        /// Only this device.
        #[arg(long)]
        device: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Temporary passcodes still within their seven days.
    Passcodes {
        /// The device.
        #[arg(long)]
        device: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Escrow management.
    Escrow {
        #[command(subcommand)]
        command: EscrowCommand,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a one-time enrollment token (printed once).
    Create {
        /// Lifetime.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
}

#[derive(Subcommand)]
enum EscrowCommand {
    /// Replace a device's escrowed unlock token (hex, read from a 0600 file or `-` for stdin).
    ImportUnlockToken {
        /// The device.
        #[arg(long)]
        device: String,
        /// File holding the hex token, or `-`.
        #[arg(long)]
        token_file: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ActionKind {
    ResetPasscode,
    RemovePasscode,
    Lock,
    ResetPin,
}

#[derive(Clone, Copy, ValueEnum)]
enum ScopeArg {
    Device,
    WorkProfile,
}

fn open_db(data: &std::path::Path) -> Result<Db> {
    let path = serve::db_path(data);
    if !path.exists() {
        bail!("no database at {}: run `latchkey-server serve --data {}` first", path.display(), data.display());
    }
    Ok(Db::open(&path)?)
}

fn time(ms: i64) -> String {
    if ms == 0 {
        return "-".into();
    }
    let t = std::time::UNIX_EPOCH + Duration::from_millis(ms as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn read_secret_file(spec: &str) -> Result<String> {
    let mut text = String::new();
    if spec == "-" {
        std::io::stdin().read_to_string(&mut text)?;
    } else {
        text = std::fs::read_to_string(spec).with_context(|| format!("reading {spec}"))?;
    }
    Ok(text.trim().to_owned())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("LATCHKEY_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let waker = Waker::Socket(serve::admin_socket(&cli.data));
    match cli.command {
        Command::Serve { listen, heartbeat, server_names } => {
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(async {
                let shutdown = CancellationToken::new();
                let config = ServeConfig { data: cli.data.clone(), listen, heartbeat, server_names };
                let running = serve::start(config, shutdown.clone()).await?;
                println!("listening on {}", running.addr);
                std::io::stdout().flush()?;
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
                shutdown.cancel();
                running.task.await??;
                Ok::<_, anyhow::Error>(())
            })?;
        }
        Command::Ca => {
            let (authority, _) = serve::prepare(&cli.data, &[])?;
            print!("{}", authority.ca_pem);
        }
        Command::Token { command: TokenCommand::Create { ttl } } => {
            let db = open_db(&cli.data)?;
            let token = admin::create_token(&db, ttl)?;
            println!("{}", token.expose());
        }
        Command::Devices { json } => {
            let devices = open_db(&cli.data)?.devices()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&devices)?);
            } else {
                println!(
                    "{:<36}  {:<14} {:<24} {:<10} {:<14} {:<20}",
                    "DEVICE", "PLATFORM", "MODE", "OS", "RESET TOKEN", "LAST CHECK-IN"
                );
                for d in devices {
                    println!(
                        "{:<36}  {:<14} {:<24} {:<10} {:<14} {:<20}",
                        d.device.device_id,
                        d.device.platform,
                        d.device.mode,
                        d.device.os_version,
                        d.reset_token_state,
                        time(d.last_checkin)
                    );
                }
            }
        }
        Command::Action { kind, device, scope, message, phone, ttl, json } => {
            let db = open_db(&cli.data)?;
            let spec = match kind {
                ActionKind::ResetPasscode => {
                    ActionSpec::ResetPasscode { work_profile: matches!(scope, ScopeArg::WorkProfile) }
                }
                ActionKind::RemovePasscode => ActionSpec::RemovePasscode,
                ActionKind::Lock => ActionSpec::Lock { message, phone },
                ActionKind::ResetPin => ActionSpec::ResetPin,
            };
            let queued = admin::queue_action(&db, &waker, &device, &spec, ttl)?;
            if json {
                let value = serde_json::json!({
                    "command_id": queued.command_id,
                    "temporary_passcode": queued.temporary_passcode.as_ref().map(|p| p.expose()),
                });
                println!("{value}");
            } else {
                println!("action {}", queued.command_id);
                if let Some(p) = &queued.temporary_passcode {
                    println!(
                        "temporary passcode (give it to the user; shown by `passcodes` for 7 days): {}",
                        p.expose()
                    );
                }
            }
        }
        Command::Actions { device, json } => {
            let rows = open_db(&cli.data)?.actions(device.as_deref())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!(
                    "{:<36}  {:<36}  {:<28} {:<14} {:<24} {:<20} {:<20} MESSAGE",
                    "ACTION", "DEVICE", "KIND", "STATE", "ERROR", "ISSUED", "REPORTED"
                );
                for r in rows {
                    println!(
                        "{:<36}  {:<36}  {:<28} {:<14} {:<24} {:<20} {:<20} {}",
                        r.command_id,
                        r.device_id,
                        r.action,
                        r.state,
                        if r.error_code.is_empty() { "-" } else { &r.error_code },
                        time(r.issued_at),
                        time(r.reported_at),
                        r.message
                    );
                }
            }
        }
        Command::Passcodes { device, json } => {
            let rows = open_db(&cli.data)?.passcodes(&device, latchkey_server::now_ms())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                for r in rows {
                    println!("{}  {}  {}  visible until {}", r.command_id, r.source, r.passcode, time(r.expires_at));
                }
            }
        }
        Command::Escrow { command: EscrowCommand::ImportUnlockToken { device, token_file } } => {
            let db = open_db(&cli.data)?;
            let hex = read_secret_file(&token_file)?;
            let token = SecretBytes::from_hex(&hex).context("the unlock token must be hex")?;
            admin::import_unlock_token(&db, &device, &token)?;
            println!("unlock token for {device} replaced");
        }
    }
    Ok(())
}
