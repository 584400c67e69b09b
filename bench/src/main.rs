//! `latchkey-bench`: the real binaries measured against baselines taken in the same run.
//! Prints one JSON object per line: `{"bench", "metric", "value", "unit", "baseline", "ratio"}`.
//!
//! - `roundtrip`: sequential commands through server and agent processes, against the floor
//!   (a bare mTLS unary RPC plus the fsyncs a durable command needs).
//! - `fleet`: N agents (default 10,000) with their own identities and connections; one command
//!   to each; time to 50/99/100 % of results; server memory per idle connection.
//! - `footprint`: the device build enrolled and idle: size, PSS, RSS, threads, wake-ups.
//! - `storm`: the fleet reconnecting after a server restart.
//! - `all --quick`: every one of them, small, for CI (under three minutes).
mod fleet;
mod footprint;
mod procs;
mod procstat;
mod report;
mod roundtrip;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "latchkey-bench", version = latchkey_common::VERSION, about = "Latchkey benchmarks (JSON lines)")]
struct Cli {
    /// The agent binary (default: target/device/latchkey if built, else beside this program).
    #[arg(long, global = true)]
    agent_bin: Option<PathBuf>,
    /// The server binary (default: beside this program).
    #[arg(long, global = true)]
    server_bin: Option<PathBuf>,
    #[command(subcommand)]
    command: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Sequential commands against the floor.
    Roundtrip {
        /// Commands timed.
        #[arg(long, default_value_t = 1000)]
        commands: usize,
    },
    /// One command to each device of a fleet.
    Fleet {
        /// Devices.
        #[arg(long, default_value_t = 10_000)]
        devices: usize,
        /// Agents per host process (0: from the open-file limit, at most 2,000).
        #[arg(long, default_value_t = 0)]
        per_host: usize,
    },
    /// The device build, enrolled and idle.
    Footprint {
        /// The idle window.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        window: Duration,
    },
    /// The fleet reconnecting after a server restart.
    Storm {
        /// Devices.
        #[arg(long, default_value_t = 10_000)]
        devices: usize,
        /// Agents per host process (0: from the open-file limit, at most 2,000).
        #[arg(long, default_value_t = 0)]
        per_host: usize,
    },
    /// Every benchmark; `--quick` makes each small enough for CI.
    All {
        /// 200 round trips, 500 devices, a 10 s idle window.
        #[arg(long)]
        quick: bool,
    },
    /// Runs agents in this process for `fleet` and `storm`.
    #[command(hide = true)]
    AgentsHost {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        server: String,
        #[arg(long)]
        ca: PathBuf,
        #[arg(long)]
        tokens: PathBuf,
        #[arg(long)]
        heartbeat: String,
        /// The bench that started this host.
        #[arg(long)]
        parent: u32,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Bench::AgentsHost { dir, server, ca, tokens, heartbeat, parent } = &cli.command {
        tracing_subscriber_init();
        return fleet::host(dir, server, ca, tokens, heartbeat, *parent);
    }
    let bins = procs::Bins::find(cli.agent_bin, cli.server_bin)?;
    match cli.command {
        Bench::Roundtrip { commands } => roundtrip::run(&bins, &roundtrip::Options { commands, floor_samples: 500 }),
        Bench::Fleet { devices, per_host } => fleet::run(&bins, &fleet::Options { devices, per_host }),
        Bench::Footprint { window } => footprint::run(&bins, window),
        Bench::Storm { devices, per_host } => fleet::storm(&bins, &fleet::Options { devices, per_host }),
        Bench::All { quick } => {
            let (commands, devices, window) =
                if quick { (200, 500, Duration::from_secs(10)) } else { (1000, 10_000, Duration::from_secs(60)) };
            roundtrip::run(&bins, &roundtrip::Options { commands, floor_samples: 300 })?;
            footprint::run(&bins, window)?;
            fleet::run(&bins, &fleet::Options { devices, per_host: 0 })?;
            fleet::storm(&bins, &fleet::Options { devices, per_host: 0 })
        }
        Bench::AgentsHost { .. } => Ok(()),
    }
}

/// Agent hosts log warnings and errors of their agents to their host.log.
fn tracing_subscriber_init() {
    let _ = latchkey_common::log::init("warn");
}
