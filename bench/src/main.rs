//! `latchkey-bench fleet`: many agents in one process against the reference server on loopback,
//! real mTLS. Prints one JSON object per line:
//! `{"bench", "metric", "value", "unit", "baseline", "ratio"}`; baselines are measured in the
//! same run (push latency against poll latency).
#![forbid(unsafe_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;
use tokio_util::sync::CancellationToken;

use latchkey::config::Config;
use latchkey_platform::request::Request;
use latchkey_platform::sim::profile::{self, InitOptions};
use latchkey_server::admin::{self, ActionOptions, Admin, Waker};
use latchkey_server::serve::{self, ServeConfig};

#[derive(Parser)]
#[command(name = "latchkey-bench", about = "Latchkey fleet benchmark")]
struct Cli {
    /// Agents on the push stream (and as many polling, as the baseline).
    #[arg(long, default_value_t = 25)]
    devices: usize,
    /// Rounds of one command per device.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Poll interval of the baseline agents.
    #[arg(long, default_value = "1s", value_parser = humantime_parse)]
    poll_interval: Duration,
}

fn humantime_parse(text: &str) -> Result<Duration, String> {
    let ms = text.strip_suffix("ms").map(|n| n.parse::<u64>().map(Duration::from_millis));
    let s = text.strip_suffix('s').map(|n| n.parse::<u64>().map(Duration::from_secs));
    ms.or(s).and_then(Result::ok).ok_or_else(|| format!("expected e.g. 500ms or 2s, got {text}"))
}

fn emit(metric: &str, value: f64, unit: &str, baseline: Option<f64>) {
    let ratio = baseline.filter(|b| *b > 0.0).map(|b| value / b);
    let line = serde_json::json!({"bench": "fleet", "metric": metric, "value": value, "unit": unit, "baseline": baseline, "ratio": ratio});
    println!("{line}");
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn rss_kb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0.0)
}

fn agent_config(dir: &Path, server: &str, ca: &Path, mode: &str, poll: Duration) -> Result<Config> {
    let sim = dir.join("sim.json");
    profile::build("aosp-user", &InitOptions::default())?.save(&sim).map_err(anyhow::Error::msg)?;
    let text = format!(
        "[server]\nurl = \"https://{server}\"\nca = \"{}\"\n[state]\ndir = \"{}\"\n[platform]\nport = \"sim\"\nsim_state = \"{}\"\n\
         [connect]\nmode = \"{mode}\"\nheartbeat = \"2s\"\npoll_interval = \"{}ms\"\nbackoff_max = \"5s\"\n[control]\nsocket = \"{}\"\n",
        ca.display(),
        dir.join("state").display(),
        sim.display(),
        poll.as_millis(),
        dir.join("control.sock").display()
    );
    std::fs::write(dir.join("config.toml"), text)?;
    Ok(Config::load(&dir.join("config.toml"))?)
}

/// Waits for `condition`, polling every 20 ms, up to `limit`.
async fn wait_for(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) -> Result<()> {
    let until = Instant::now() + limit;
    while !condition() {
        anyhow::ensure!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("LATCHKEY_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let root = tempfile::Builder::new().prefix("latchkey-bench-").tempdir()?;
    let data = root.path().join("server");
    let shutdown = CancellationToken::new();
    let server_stop = shutdown.child_token();
    let config =
        ServeConfig { heartbeat: Duration::from_secs(2), ..ServeConfig::new(data.clone(), "127.0.0.1:0".parse()?) };
    let server = serve::start(config.clone(), server_stop.clone()).await?;
    let (store, addr) = (server.store.clone(), server.addr);
    let admin =
        Admin { store: store.clone(), vault: server.vault.clone(), waker: Waker::InProcess(server.hub.clone()) };
    let ca = data.join("ca.pem");
    let rss_server_only = rss_kb();

    let mut devices = Vec::new();
    let mut enroll_ms = Vec::new();
    for (group, mode) in [("push", "stream"), ("poll", "poll")] {
        for i in 0..cli.devices {
            let dir = root.path().join(format!("{group}-{i:04}"));
            std::fs::create_dir_all(&dir)?;
            let config = agent_config(&dir, &addr.to_string(), &ca, mode, cli.poll_interval)?;
            let token = admin.create_token(Duration::from_secs(600)).await?;
            let started = Instant::now();
            let id = latchkey::enroll::enroll(&config, &token).await.map_err(|e| anyhow::anyhow!("enroll: {e}"))?;
            enroll_ms.push(started.elapsed().as_secs_f64() * 1000.0);
            devices.push((group, id, config));
        }
    }
    let mut agents = Vec::new();
    for (_, _, config) in &devices {
        let (config, stop) = (config.clone(), shutdown.child_token());
        agents.push(tokio::spawn(async move {
            latchkey::agent::run(config, Default::default(), stop).await.map_err(|e| e.to_string())
        }));
    }
    let t0 = latchkey::now_ms();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let rows = store.devices().await?;
        if rows.iter().filter(|r| r.last_checkin > t0).count() >= devices.len() {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for every agent to check in");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rss_with_agents = rss_kb();

    let mut latency: std::collections::HashMap<&str, Vec<f64>> = Default::default();
    for _ in 0..cli.rounds {
        let mut pending = Vec::new();
        for (group, id, _) in &devices {
            let spec = Request::Lock { message: String::new(), phone: String::new() };
            let options = ActionOptions { ttl: admin::DEFAULT_COMMAND_TTL, force: true };
            let queued = admin.queue_action(id, &spec, options).await?;
            pending.push((*group, queued.command_id, Instant::now()));
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        while !pending.is_empty() {
            anyhow::ensure!(Instant::now() < deadline, "results did not arrive");
            let rows = store.actions(Default::default(), latchkey::now_ms()).await?;
            pending.retain(|(group, id, issued)| {
                let done = rows.iter().any(|r| &r.command_id == id && r.state.is_final());
                if done {
                    latency.entry(group).or_default().push(issued.elapsed().as_secs_f64() * 1000.0);
                }
                !done
            });
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    // Reconnect storm: stop the server, start it again on the same address and data, and see
    // how the push fleet comes back (each new stream session checks in first; polling agents
    // simply resume on their channel and need no new session).
    let push_ids: Vec<String> = devices.iter().filter(|(g, _, _)| *g == "push").map(|(_, id, _)| id.clone()).collect();
    server_stop.cancel();
    let _ = server.task.await;
    let restarted = serve::start(ServeConfig { listen: addr, ..config }, shutdown.child_token()).await?;
    let t_restart = latchkey::now_ms();
    let back = Instant::now();
    wait_for("the push fleet to reconnect", Duration::from_secs(120), || restarted.hub.connected() >= push_ids.len())
        .await?;
    let all_back_ms = back.elapsed().as_secs_f64() * 1000.0;
    let mut checkins: Vec<i64> = restarted
        .store
        .devices()
        .await?
        .iter()
        .filter(|r| push_ids.contains(&r.device_id) && r.last_checkin > t_restart)
        .map(|r| r.last_checkin - t_restart)
        .collect();
    checkins.sort_unstable();
    let busiest_100ms =
        checkins.iter().map(|t| checkins.iter().filter(|u| **u >= *t && **u < t + 100).count()).max().unwrap_or(0);

    shutdown.cancel();
    for a in agents {
        let _ = a.await;
    }
    let _ = restarted.task.await;

    let sorted = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v
    };
    let push = sorted(latency.remove("push").unwrap_or_default());
    let poll = sorted(latency.remove("poll").unwrap_or_default());
    let enroll = sorted(enroll_ms);
    emit("agents", devices.len() as f64, "count", None);
    emit("enroll_p50", percentile(&enroll, 0.5), "ms", None);
    emit("command_latency_p50", percentile(&push, 0.5), "ms", Some(percentile(&poll, 0.5)));
    emit("command_latency_p95", percentile(&push, 0.95), "ms", Some(percentile(&poll, 0.95)));
    emit("command_latency_max", push.last().copied().unwrap_or(0.0), "ms", poll.last().copied());
    let per_agent = (rss_with_agents - rss_server_only) / devices.len() as f64;
    emit("rss_per_agent", per_agent, "kB", None);
    emit("rss_total", rss_with_agents, "kB", Some(rss_server_only));
    emit("reconnect_all_back", all_back_ms, "ms", None);
    // Baseline: every push agent in the same 100 ms, i.e. a stampede.
    emit("reconnect_busiest_100ms", busiest_100ms as f64, "check-ins", Some(push_ids.len() as f64));
    Ok(())
}
