//! Operating a fleet with the real server: bursts lose nothing, one server per data directory,
//! commands expire at the server, devices show what they last reported, retire and unenroll
//! end management for good, and the server can be watched (metrics, gRPC health).
mod common;

use std::process::Command;
use std::time::Duration;

use common::{agent_bin, wait_until, Device, DeviceSpec, Server};

const T: Duration = Duration::from_secs(60);

fn started(root: &std::path::Path, server: &Server, name: &str, spec: DeviceSpec<'_>) -> Device {
    let mut device = Device::enroll(root, name, server, spec);
    device.start();
    device.wait_checked_in(T);
    device
}

/// Six devices (half streaming, half polling), six admin processes queuing at once while the
/// agents report and check in: every action gets its result and storage never fails.
#[test]
fn a_burst_of_admin_actions_reports_and_check_ins_loses_nothing() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with(root.path(), &["--metrics-listen", "127.0.0.1:0"]);
    let devices: Vec<Device> = (0..6)
        .map(|i| {
            let connect = if i % 2 == 0 { "" } else { "mode = \"poll\"" };
            started(root.path(), &server, &format!("burst{i}"), DeviceSpec { connect, ..DeviceSpec::new("aosp-user") })
        })
        .collect();
    let issued: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = devices
            .iter()
            .map(|d| {
                let server = &server;
                scope.spawn(move || {
                    (0..4)
                        .map(|n| {
                            let kind = if n % 2 == 0 { "lock" } else { "reset-passcode" };
                            server.action(kind, &d.id, &[]).0
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("admin thread")).collect()
    });
    assert_eq!(issued.len(), 24);
    for id in &issued {
        let row = server.wait_result(id, T);
        assert_eq!(row["state"], "succeeded", "{row}");
    }
    let log = server.log_text();
    assert!(!log.contains("database is locked") && !log.contains("storage failure"), "storage errors:\n{log}");
    assert_eq!(server.metric("latchkey_storage_errors_total"), 0.0);
    for d in &devices {
        assert!(!d.log_text().contains("storage failure"), "an agent saw a storage failure");
    }
}

#[test]
fn a_second_server_on_the_same_data_directory_is_refused() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(root.path());
    let second = Command::new(common::server_bin())
        .arg("--data")
        .arg(&server.dir)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .output()
        .expect("second serve");
    assert!(!second.status.success());
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(said.contains("already") && said.contains(server.dir.to_str().expect("utf8")), "{said}");
    // The first keeps serving its admin socket.
    let device = started(root.path(), &server, "still", DeviceSpec::new("aosp-user"));
    let out = server.action_json("lock", &device.id, &[]);
    assert_eq!(out["delivery"], "pushed", "{out}");
}

#[test]
fn an_action_past_its_ttl_expires_at_the_server_and_is_never_applied() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with(root.path(), &["--sweep-interval", "200ms"]);
    let mut device = Device::enroll(root.path(), "away", &server, DeviceSpec::new("aosp-user"));
    let (id, passcode) = server.action("reset-passcode", &device.id, &["--ttl", "1s"]);
    assert!(passcode.is_some());
    let row = server.wait_result(&id, Duration::from_secs(20));
    assert_eq!(row["state"], "expired", "{row}");
    let filtered: serde_json::Value =
        serde_json::from_str(&server.admin_ok(&["actions", "--state", "expired", "--json"])).expect("json");
    assert_eq!(filtered.as_array().map(Vec::len), Some(1), "{filtered}");
    // The passcode of an action that expired is no longer shown.
    let listed = server.admin_ok(&["passcodes", "--device", &device.id, "--json"]);
    assert!(!listed.contains(&passcode.expect("passcode")), "{listed}");
    device.start();
    device.wait_checked_in(T);
    let (next, _) = server.action("lock", &device.id, &[]);
    assert_eq!(server.wait_result(&next, T)["state"], "succeeded");
    assert_eq!(device.effects_for(&id), 0, "an expired action was applied");
    assert_eq!(server.action_row(&id).expect("row")["state"], "expired");
}

#[test]
fn the_server_says_up_front_what_it_knows_will_fail_and_shows_no_passcode_for_it() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(root.path());
    // An iPhone whose unlock token never reached the server (the device had none to give).
    let mut ios = Device::prepare(root.path(), "ios", &server, DeviceSpec::new("ios"));
    let mut sim = latchkey_platform::sim::SimState::load(&ios.sim).expect("sim");
    sim.unlock_token = None;
    sim.save(&ios.sim).expect("sim");
    let out = ios.enroll_with(&server.token());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    ios.id = String::from_utf8_lossy(&out.stdout).trim().trim_start_matches("enrolled as ").to_owned();
    assert_eq!(server.devices()[0]["unlock_token_escrowed"], false);
    let refused = server.admin(&["action", "remove-passcode", "--device", &ios.id]);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("not queued") && said.contains("unlock token"), "{said}");
    assert!(server.actions().is_empty());
    // Options that do not belong to an action are refused, not ignored.
    let wrong = server.admin(&["action", "lock", "--device", &ios.id, "--scope", "work-profile"]);
    assert_eq!(wrong.status.code(), Some(2), "{}", String::from_utf8_lossy(&wrong.stderr));
    let wrong = server.admin(&["action", "reset-passcode", "--device", &ios.id, "--message", "hello"]);
    assert_eq!(wrong.status.code(), Some(2));
}

#[test]
fn an_action_while_no_server_runs_says_delivery_waits_for_it() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(root.path());
    let device = Device::enroll(root.path(), "later", &server, DeviceSpec::new("aosp-user"));
    assert!(server.stop().success());
    let out = server.admin_ok(&["action", "lock", "--device", &device.id]);
    assert!(out.contains("no server is running"), "{out}");
    let json = server.action_json("lock", &device.id, &[]);
    assert_eq!(json["delivery"], "server_down", "{json}");
}

#[test]
fn devices_show_what_each_device_last_reported() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(root.path());
    let mut device = started(root.path(), &server, "reporting", DeviceSpec::new("android-wp-byod"));
    let device_id = device.id.clone();
    let row = |server: &Server| server.devices().into_iter().find(|d| d["device_id"] == device_id).expect("row");
    let first = row(&server);
    assert_eq!(first["online"], true, "{first}");
    assert_eq!(first["reset_token_state"], "pending_user");
    assert_eq!(first["agent_version"].as_str().map(|v| v.starts_with("0.1.0")), Some(true), "{first}");
    // The device changes: the user confirms, the OS is updated. The row follows the device,
    // not the enrollment snapshot.
    assert_eq!(device.user(&["confirm-credential"], ""), 0);
    let mut sim = latchkey_platform::sim::SimState::load(&device.sim).expect("sim");
    sim.facts.os_version = "15".into();
    sim.save(&device.sim).expect("sim");
    wait_until("the new state to be reported", T, || {
        let r = row(&server);
        r["reset_token_state"] == "active" && r["os_version"] == "15"
    });
    assert!(device.terminate().success());
    wait_until("the device to show offline", T, || row(&server)["online"] == false);
    assert!(row(&server)["last_seen"].as_i64() >= first["last_seen"].as_i64());
}

#[test]
fn a_retired_device_is_refused_and_its_agent_stops_for_good() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(root.path());
    let mut device = started(root.path(), &server, "retired", DeviceSpec::new("aosp-user"));
    // Something queued for a device that is retired is cancelled, never applied.
    let queued = server.action_json("lock", &device.id, &["--ttl", "1h"]);
    let said = server.admin_ok(&["device", "retire", "--device", &device.id]);
    assert!(said.contains("retired"), "{said}");
    let status = device.wait_exit(T);
    assert_eq!(status.code(), Some(5), "a retired device's agent must exit 5 (unmanaged), got {status}");
    let id = queued["command_id"].as_str().expect("id");
    let row = server.action_row(id).expect("row");
    assert!(
        row["state"] == "cancelled" || row["state"] == "succeeded",
        "a queued action must be cancelled (or already done) at retirement: {row}"
    );
    // Started again (as a service manager would), it stops at once with the same code.
    device.start();
    assert_eq!(device.wait_exit(T).code(), Some(5));
    let listed = server.devices();
    assert_eq!(listed.iter().find(|d| d["device_id"] == device.id).expect("row")["status"], "retired");
}

#[test]
fn unenroll_tells_the_server_and_leaves_no_identity_or_secret_behind() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(root.path());
    let mut device = started(root.path(), &server, "leaving", DeviceSpec::new("android-do"));
    wait_until("the reset token", T, || device.dir.join("state/secrets/reset_token").exists());
    assert!(device.terminate().success());
    let out = Command::new(agent_bin())
        .args(["unenroll", "--config", device.config.to_str().expect("utf8")])
        .output()
        .expect("unenroll");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let state = device.dir.join("state");
    assert!(!state.join("identity.json").exists());
    assert!(!state.join("secrets").exists() || std::fs::read_dir(state.join("secrets")).expect("dir").next().is_none());
    let listed = server.devices();
    assert_eq!(listed.iter().find(|d| d["device_id"] == device.id).expect("row")["status"], "unenrolled");
    // The service would be started again: not enrolled is its own exit code (3), not a loop.
    device.start();
    assert_eq!(device.wait_exit(T).code(), Some(3));
}

#[test]
fn metrics_and_health_can_be_watched() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with(root.path(), &["--metrics-listen", "127.0.0.1:0"]);
    let device = started(root.path(), &server, "watched", DeviceSpec::new("aosp-user"));
    let (id, _) = server.action("lock", &device.id, &[]);
    server.wait_result(&id, T);
    let text = server.scrape();
    for name in [
        "latchkey_streams_connected",
        "latchkey_enrollments_total",
        "latchkey_storage_errors_total",
        "latchkey_tls_handshake_failures_total",
        "latchkey_report_latency_seconds_count",
        "latchkey_commands",
        "latchkey_devices",
    ] {
        assert!(text.lines().any(|l| l.starts_with(name)), "{name} missing:\n{text}");
    }
    wait_until("the stream to be counted", T, || server.metric("latchkey_streams_connected") == 1.0);
    assert_eq!(server.metric("latchkey_enrollments_total"), 1.0);
    assert!(text.contains("state=\"succeeded\""), "{text}");
    // A client with no certificate completes TLS but fails a device RPC; a plain-TCP junk
    // client fails the handshake and is counted.
    let mut junk = std::net::TcpStream::connect(&server.addr).expect("connect");
    std::io::Write::write_all(&mut junk, b"GET / HTTP/1.0\r\n\r\n").expect("junk");
    drop(junk);
    wait_until("the failed handshake to be counted", T, || {
        server.metric("latchkey_tls_handshake_failures_total") >= 1.0
    });

    // gRPC health, as a load balancer asks it: TLS without a client certificate.
    let ca = std::fs::read_to_string(server.ca()).expect("ca");
    let status = tokio::runtime::Runtime::new().expect("runtime").block_on(async {
        let tls = latchkey::transport::tls::client_config(&ca, None, latchkey::transport::tls::H2).expect("tls");
        let channel = latchkey::transport::channel(&server.url(), tls, Duration::from_secs(10)).await.expect("channel");
        let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
        client
            .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
            .await
            .map(|r| r.into_inner().status)
    });
    assert_eq!(status.expect("health"), tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
}

/// SIGHUP re-reads the configured log level (here: from the debug the agent started with down
/// to warn); the agent keeps running and serving commands, and logs only warnings from then on.
#[test]
fn sighup_reloads_the_log_level_and_the_agent_carries_on() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(root.path());
    let spec = DeviceSpec { extra: "[log]\nlevel = \"warn\"\n", ..DeviceSpec::new("aosp-user") };
    let device = started(root.path(), &server, "hup", spec);
    assert!(device.log_text().contains(" INFO "), "the agent did not start at the environment's level");
    device.signal(nix::sys::signal::Signal::SIGHUP);
    wait_until("the reload", T, || device.log_text().contains("SIGHUP: applying the configured log level"));
    let (id, _) = server.action("lock", &device.id, &[]);
    assert_eq!(server.wait_result(&id, T)["state"], "succeeded", "the agent stopped serving after SIGHUP");
    assert!(device.status().is_some(), "the agent is gone");
    let log = device.log_text();
    let after = log.split("SIGHUP: applying the configured log level").nth(1).unwrap_or_default();
    let after = after.split_once('\n').map(|(_, rest)| rest).unwrap_or_default();
    assert!(
        !after.contains(" INFO ") && !after.contains(" DEBUG "),
        "info or debug lines after the reload to warn:\n{after}"
    );
}
