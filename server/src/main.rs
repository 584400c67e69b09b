//! `latchkey-server`: the reference management server and its admin commands.
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use latchkey_common::exit::{self, Code, Exit};
use latchkey_common::time::rfc3339;
use latchkey_platform::request::Request;
use latchkey_platform::{ResetFlags, Scope, SecretBytes};
use latchkey_server::admin::{self, ActionOptions, Admin, Delivery, Waker};
use latchkey_server::admin_socket::AdminSocket;
use latchkey_server::datadir::DataDir;
use latchkey_server::records::{ActionFilter, CommandState, PasscodeKind};
use latchkey_server::serve::{self, ServeConfig};
use latchkey_server::service::passcode_context;
use latchkey_server::store::sqlite::SqliteStore;
use latchkey_server::store::RetryPolicy;
use latchkey_server::vault::Vault;

const EXAMPLES: &str = "Examples:
  latchkey-server --data /srv/lk serve --listen 0.0.0.0:8443 --server-name mdm.example.com
  latchkey-server --data /srv/lk ca > server-ca.pem
  latchkey-server --data /srv/lk token create --ttl 24h
  latchkey-server --data /srv/lk action reset-passcode --device ID
  latchkey-server --data /srv/lk action lock --device ID --message 'Call IT' --phone '+1 555 0100' --wait 30s
  latchkey-server --data /srv/lk actions --state failed --since 1h
  latchkey-server --data /srv/lk device retire --device ID";

/// A lifetime for a token or an action: a duration within the bounds the server accepts, so
/// a typo is a usage error before anything is created.
fn ttl(text: &str) -> Result<Duration, String> {
    let ttl = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    admin::check_ttl(ttl, "the").map_err(|e| e.to_string())?;
    Ok(ttl)
}

#[derive(Parser)]
#[command(name = "latchkey-server", version = latchkey_common::VERSION, about = "Latchkey reference management server", after_help = EXAMPLES)]
struct Cli {
    /// Data directory: CA, server identity, database, admin socket. Only `serve` creates it.
    #[arg(long, global = true, default_value = "/var/lib/latchkey-server")]
    data: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the device API (creates CA, identity and database on first start).
    Serve(ServeArgs),
    /// Print the CA certificate agents must trust (PEM).
    Ca,
    /// Enrollment tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// List enrolled devices with what they last reported.
    Devices {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Manage one device.
    Device {
        #[command(subcommand)]
        command: DeviceCommand,
    },
    /// Queue an action for a device.
    Action {
        #[command(subcommand)]
        kind: ActionKind,
    },
    /// The device-actions status view.
    Actions(ActionsArgs),
    /// Temporary passcodes and PINs still visible (7 days; 30 for macOS lock PINs).
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
    /// `man` and `completions` (hidden).
    #[command(flatten)]
    Docs(latchkey_common::cli::DocsCommand),
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on; port 0 picks a free port and prints it.
    #[arg(long, default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// Push-stream heartbeat interval.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    heartbeat: Duration,
    /// Extra DNS name or IP for the server certificate (repeatable); the certificate is
    /// reissued when it does not cover them.
    #[arg(long = "server-name")]
    server_names: Vec<String>,
    /// Serve Prometheus metrics on this address (plain HTTP, path /metrics).
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Lifetime of device certificates.
    #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
    device_cert_lifetime: Duration,
    /// Delay before a command the device answered `not_now` is delivered again (doubles each time).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    not_now_retry: Duration,
    /// How often expired commands and passcodes are swept.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    sweep_interval: Duration,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a one-time enrollment token (printed once).
    Create {
        /// Lifetime (1s..30d).
        #[arg(long, default_value = "24h", value_parser = ttl)]
        ttl: Duration,
    },
}

#[derive(Subcommand)]
enum DeviceCommand {
    /// Stop managing a device: its certificate is refused from now on, its queue cancelled, its
    /// escrow and passcodes deleted.
    Retire {
        /// The device.
        #[arg(long)]
        device: String,
    },
}

#[derive(Args)]
struct ActionCommon {
    /// Target device id.
    #[arg(long)]
    device: String,
    /// How long the device may still apply the action (1s..30d).
    #[arg(long, default_value = "7d", value_parser = ttl)]
    ttl: Duration,
    /// Queue it even when the device's last report says it will be refused.
    #[arg(long)]
    force: bool,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
    /// Wait up to this long for the outcome (the device's result, expiry or cancellation) and
    /// print it; the serving process answers when it is stored.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    wait: Option<Duration>,
}

#[derive(Subcommand)]
enum ActionKind {
    /// Reset the passcode (a temporary passcode is generated; on iOS the passcode is removed).
    ResetPasscode {
        #[command(flatten)]
        common: ActionCommon,
        /// Which passcode.
        #[arg(long, value_enum, default_value = "device")]
        scope: ScopeArg,
        /// Android: no other admin may reset it again until the user has entered it.
        #[arg(long)]
        require_entry: bool,
    },
    /// Remove the passcode with the escrowed unlock token (iOS).
    RemovePasscode {
        #[command(flatten)]
        common: ActionCommon,
    },
    /// Lock the device now (macOS: a six-digit PIN is generated).
    Lock {
        #[command(flatten)]
        common: ActionCommon,
        /// Lock-screen message.
        #[arg(long, default_value = "")]
        message: String,
        /// Lock-screen phone number.
        #[arg(long, default_value = "")]
        phone: String,
    },
    /// Windows 10 Mobile PIN recovery (the device generates the PIN).
    ResetPin {
        #[command(flatten)]
        common: ActionCommon,
    },
}

#[derive(Args)]
struct ActionsArgs {
    /// Only this device.
    #[arg(long)]
    device: Option<String>,
    /// Only in this state (pending, sent, succeeded, failed, not_supported, not_now, rejected,
    /// expired, cancelled).
    #[arg(long, value_parser = parse_state)]
    state: Option<CommandState>,
    /// Only issued within this long (`1h`) or since this time (RFC 3339).
    #[arg(long, value_parser = parse_since)]
    since: Option<i64>,
    /// At most this many (the newest).
    #[arg(long)]
    limit: Option<usize>,
    /// Only this command.
    #[arg(long)]
    command: Option<String>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum EscrowCommand {
    /// Replace a device's escrowed unlock token (hex, from a 0600 file or `-` for stdin).
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
enum ScopeArg {
    Device,
    WorkProfile,
}

fn parse_state(text: &str) -> Result<CommandState, String> {
    CommandState::parse(text).ok_or_else(|| format!("expected one of {}", CommandState::NAMES.join(", ")))
}

fn parse_since(text: &str) -> Result<i64, String> {
    if let Ok(ago) = humantime::parse_duration(text) {
        return Ok(latchkey_server::now_ms() - i64::try_from(ago.as_millis()).unwrap_or(i64::MAX));
    }
    humantime::parse_rfc3339_weak(text)
        .map(|t| t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0))
        .map_err(|_| "expected a duration (1h) or an RFC 3339 time".to_owned())
}

fn main() {
    let cli = Cli::parse();
    let serving = matches!(cli.command, Command::Serve(_));
    // Admin commands print results on stdout; their log lines stay out of the way.
    let _logging = latchkey_common::log::init(if serving { "info" } else { "warn" });
    exit::finish("latchkey-server", run(cli).map(|()| Code::Ok));
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn admin(data: &Path) -> anyhow::Result<Admin> {
    let dir = DataDir::existing(data)?;
    Ok(Admin {
        store: Arc::new(SqliteStore::open(&dir.db())?),
        vault: Arc::new(Vault::load(&dir.secrets_key(), false)?),
        waker: Waker::Socket(AdminSocket::new(dir.admin_socket())),
    })
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let data = cli.data;
    match cli.command {
        Command::Serve(args) => serve_forever(&data, args),
        Command::Ca => {
            let dir = DataDir::existing(&data)?;
            print!("{}", latchkey_server::ca::Authority::load(dir.path())?.ca_pem);
            Ok(())
        }
        Command::Docs(docs) => Ok(docs.run(Cli::command())?),
        command => runtime()?.block_on(admin_command(&data, command)),
    }
}

/// One descriptor per device connection: take every descriptor the hard limit allows (as Go
/// programs do by default) and say how many devices that leaves room for.
fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::info!(from = soft, to = hard, "open-file limit raised"),
            Err(e) => tracing::warn!(soft, hard, error = %e, "open-file limit not raised"),
        },
        Ok((soft, _)) => tracing::info!(limit = soft, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "open-file limit unknown"),
    }
}

fn serve_forever(data: &Path, args: ServeArgs) -> anyhow::Result<()> {
    raise_open_file_limit();
    runtime()?.block_on(async {
        let shutdown = CancellationToken::new();
        // Installed before "listening on" is printed: whoever reads that line may signal at once.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let config = ServeConfig {
            heartbeat: args.heartbeat,
            server_names: args.server_names,
            metrics_listen: args.metrics_listen,
            device_cert_lifetime: args.device_cert_lifetime,
            retry: RetryPolicy { first_delay_ms: args.not_now_retry.as_millis() as i64, ..RetryPolicy::default() },
            sweep_interval: args.sweep_interval,
            ..ServeConfig::new(data.to_owned(), args.listen)
        };
        let running = serve::start(config, shutdown.clone()).await?;
        println!("listening on {}", running.addr);
        if let Some(addr) = running.metrics_addr {
            println!("metrics on http://{addr}/metrics");
        }
        std::io::stdout().flush()?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        shutdown.cancel();
        running.task.await?.map_err(anyhow::Error::msg)
    })
}

fn delivery_text(delivery: Delivery) -> &'static str {
    match delivery {
        Delivery::Pushed => "pushed to the device's stream",
        Delivery::Queued => "queued; the device gets it on its next poll or connection",
        Delivery::ServerDown => {
            "queued; no server is running on this data directory, so delivery waits until `latchkey-server serve` runs"
        }
    }
}

async fn admin_command(data: &Path, command: Command) -> anyhow::Result<()> {
    let admin = admin(data)?;
    match command {
        Command::Token { command: TokenCommand::Create { ttl } } => {
            println!("{}", admin.create_token(ttl).await?.expose());
        }
        Command::Devices { json } => {
            let devices = admin.store.devices().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&devices)?);
                return Ok(());
            }
            println!(
                "{:<36}  {:<14} {:<22} {:<11} {:<10} {:<7} {:<20} {:<14} AGENT",
                "DEVICE", "PLATFORM", "MODE", "OS", "STATUS", "ONLINE", "LAST SEEN", "RESET TOKEN"
            );
            for d in devices {
                println!(
                    "{:<36}  {:<14} {:<22} {:<11} {:<10} {:<7} {:<20} {:<14} {}",
                    d.device_id,
                    d.platform.as_str(),
                    d.mode.as_str(),
                    d.os_version,
                    d.status.as_str(),
                    if d.online { "yes" } else { "no" },
                    rfc3339(d.last_seen.max(d.last_checkin)),
                    d.reset_token_state.as_str(),
                    if d.agent_version.is_empty() { "-" } else { &d.agent_version },
                );
            }
        }
        Command::Device { command: DeviceCommand::Retire { device } } => {
            let (cancelled, delivery) = admin.retire(&device).await?;
            println!("device {device} retired; {cancelled} queued action(s) cancelled");
            if delivery == Delivery::ServerDown {
                println!("no server is running: the device is refused as soon as it connects");
            }
        }
        Command::Action { kind } => queue_action(&admin, kind).await?,
        Command::Actions(args) => {
            let filter = ActionFilter {
                device_id: args.device,
                state: args.state,
                since: args.since,
                limit: args.limit,
                command_id: args.command,
            };
            let rows = admin.store.actions(filter, latchkey_server::now_ms()).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(());
            }
            println!(
                "{:<36}  {:<36}  {:<28} {:<14} {:<24} {:<20} {:<20} MESSAGE",
                "ACTION", "DEVICE", "KIND", "STATE", "ERROR", "ISSUED", "REPORTED"
            );
            for r in rows {
                let kind =
                    if r.requested == r.action { r.action.clone() } else { format!("{} ({})", r.action, r.requested) };
                println!(
                    "{:<36}  {:<36}  {:<28} {:<14} {:<24} {:<20} {:<20} {}",
                    r.command_id,
                    r.device_id,
                    kind,
                    r.state.as_str(),
                    if r.error_code.is_empty() { "-" } else { &r.error_code },
                    rfc3339(r.issued_at),
                    rfc3339(r.reported_at),
                    r.message
                );
            }
        }
        Command::Passcodes { device, json } => show_passcodes(&admin, &device, json).await?,
        Command::Escrow { command: EscrowCommand::ImportUnlockToken { device, token_file } } => {
            let hex = latchkey_common::secret_input::read(&token_file, "unlock token")?;
            let bytes = latchkey_common::hex::decode(&hex)
                .ok_or_else(|| Exit::new(Code::Usage, "the unlock token must be hex"))?;
            admin.import_unlock_token(&device, &SecretBytes::new(bytes.to_vec())).await?;
            println!("unlock token for {device} replaced");
        }
        Command::Serve(_) | Command::Ca | Command::Docs(_) => {}
    }
    Ok(())
}

async fn queue_action(admin: &Admin, kind: ActionKind) -> anyhow::Result<()> {
    let (common, request) = match kind {
        ActionKind::ResetPasscode { common, scope, require_entry } => {
            let scope = match scope {
                ScopeArg::Device => Scope::Device,
                ScopeArg::WorkProfile => Scope::WorkProfile,
            };
            let flags = ResetFlags { require_entry, ..ResetFlags::default() };
            (common, Request::ResetPasscode { scope, flags })
        }
        ActionKind::RemovePasscode { common } => (common, Request::RemovePasscode),
        ActionKind::Lock { common, message, phone } => (common, Request::Lock { message, phone }),
        ActionKind::ResetPin { common } => (common, Request::ResetPin),
    };
    let options = ActionOptions { ttl: common.ttl, force: common.force };
    let queued = admin.queue_action(&common.device, &request, options).await.map_err(|e| match e {
        admin::AdminError::Invalid(m) => anyhow::Error::new(Exit::new(Code::Usage, m)),
        other => anyhow::Error::new(other),
    })?;
    let outcome = match common.wait {
        Some(limit) => Some(admin.wait_result(&queued.command_id, limit).await?),
        None => None,
    };
    let result = |record: &latchkey_server::records::ActionRecord| {
        serde_json::json!({
            "state": record.state.as_str(),
            "final": record.state.is_final(),
            "error_code": record.error_code,
            "message": record.message,
        })
    };
    if common.json {
        let mut value = serde_json::json!({
            "command_id": queued.command_id,
            "requested": queued.requested,
            "action": queued.action,
            "temporary_passcode": queued.temporary_passcode.as_ref().map(|p| p.expose()),
            "lock_pin": queued.lock_pin.as_ref().map(|p| p.expose()),
            "note": queued.note,
            "warning": queued.warning,
            "delivery": match queued.delivery { Delivery::Pushed => "pushed", Delivery::Queued => "queued", Delivery::ServerDown => "server_down" },
        });
        if let Some(Some(record)) = &outcome {
            value["result"] = result(record);
        }
        println!("{value}");
        return Ok(());
    }
    println!("action {} ({})", queued.command_id, queued.action);
    if let Some(note) = queued.note {
        println!("note: {note}");
    }
    if let Some(warning) = &queued.warning {
        println!("warning: queued with --force although {warning}");
    }
    if let Some(p) = &queued.temporary_passcode {
        println!("temporary passcode (give it to the user; `passcodes` shows it for 7 days): {}", p.expose());
    }
    if let Some(p) = &queued.lock_pin {
        println!("lock PIN (the Mac unlocks with it; `passcodes` shows it for 30 days): {}", p.expose());
    }
    println!("{}", delivery_text(queued.delivery));
    match outcome {
        Some(Some(record)) if record.state.is_final() => {
            let detail = [record.error_code.as_str(), record.message.as_str()]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(": ");
            println!("result: {}{}{}", record.state.as_str(), if detail.is_empty() { "" } else { " " }, detail);
        }
        Some(Some(record)) => println!(
            "result: none yet (still {}); `latchkey-server actions --command {}` shows it later",
            record.state.as_str(),
            record.command_id
        ),
        Some(None) | None => {}
    }
    Ok(())
}

async fn show_passcodes(admin: &Admin, device: &str, json: bool) -> anyhow::Result<()> {
    let rows = admin.store.passcodes(device, latchkey_server::now_ms()).await?;
    let mut shown = Vec::new();
    for row in rows {
        // A passcode is shown while its action may still succeed, and after it did.
        let visible = matches!(row.command_state, CommandState::Pending | CommandState::Sent)
            || row.command_state == CommandState::Done(latchkey_platform::Status::Succeeded);
        let value = if visible {
            let plain = admin.vault.open(&row.sealed, &passcode_context(&row.command_id))?;
            Some(String::from_utf8_lossy(&plain).into_owned())
        } else {
            None
        };
        shown.push((row, value));
    }
    if json {
        let list: Vec<_> = shown
            .iter()
            .map(|(r, v)| {
                serde_json::json!({
                    "command_id": r.command_id, "device_id": r.device_id, "kind": r.kind.as_str(),
                    "state": r.command_state.as_str(), "passcode": v, "created_at": r.created_at, "expires_at": r.expires_at,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    for (r, v) in &shown {
        let what = match r.kind {
            PasscodeKind::Temporary => "temporary passcode",
            PasscodeKind::DevicePin => "device-generated PIN",
            PasscodeKind::LockPin => "macOS lock PIN",
        };
        let value = v.clone().unwrap_or_else(|| format!("(hidden: the action is {})", r.command_state.as_str()));
        println!(
            "{}  {what:<22} {:<13} {value}  visible until {}",
            r.command_id,
            r.command_state.as_str(),
            rfc3339(r.expires_at)
        );
    }
    Ok(())
}
