//! End to end: the real `latchkey-server` and `latchkey` binaries on loopback, real certificates,
//! real SQLite files, simulated devices with persisted state.
mod common;

use std::process::Command;
use std::time::Duration;

use common::{agent_bin, wait_until, Device, DeviceSpec, Proxy, Server};

const T: Duration = Duration::from_secs(30);

fn started(root: &std::path::Path, server: &Server, name: &str, spec: DeviceSpec<'_>) -> Device {
    let mut device = Device::enroll(root, name, server, spec);
    device.start();
    device.wait_checked_in(T);
    device
}

fn assert_no_secret_in_logs(secret: &str, server: &Server, devices: &[&Device]) {
    assert!(!secret.is_empty());
    assert!(!server.log_text().contains(secret), "secret found in the server log");
    for d in devices {
        assert!(!d.log_text().contains(secret), "secret found in the agent log of {}", d.id);
    }
}

#[test]
fn device_owner_reset_over_the_push_stream() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(root.path());
    let device = started(root.path(), &server, "do", DeviceSpec::new("android-do"));
    // `--wait`: the admin learns the outcome from the same command (the server answers it).
    let queued = server.action_json("reset-passcode", &device.id, &["--wait", "30s"]);
    assert_eq!(queued["result"]["state"], "succeeded", "{queued}");
    assert_eq!(queued["result"]["final"], true, "{queued}");
    let id = queued["command_id"].as_str().expect("id").to_owned();
    let passcode = queued["temporary_passcode"].as_str().expect("a temporary passcode for an Android reset").to_owned();
    let row = server.action_row(&id).expect("row");
    assert_eq!(row["state"], "succeeded", "stored before the wait answered: {row}");
    assert_eq!(device.user(&["check-passcode"], &passcode), 0, "the device does not hold the temporary passcode");
    assert_eq!(device.effects_for(&id), 1);
    let listed = server.admin_ok(&["passcodes", "--device", &device.id]);
    assert!(listed.contains(&passcode), "temporary passcode not listed for the admin");
    assert_no_secret_in_logs(&passcode, &server, &[&device]);
    let reset_token =
        std::fs::read_to_string(device.dir.join("state/secrets/reset_token")).expect("reset token in the secret store");
    assert_eq!(reset_token.trim().len(), 64, "reset token must be 32 random bytes");
    assert_no_secret_in_logs(reset_token.trim(), &server, &[&device]);
    let identity: serde_json::Value =
        serde_json::from_slice(&std::fs::read(device.dir.join("state/identity.json")).expect("identity"))
            .expect("json");
    let key = identity["private_key_pem"].as_str().expect("device key");
    let key_body = key.lines().nth(1).expect("key body");
    assert_no_secret_in_logs(key_body, &server, &[&device]);
    use std::os::unix::fs::PermissionsExt;
    for private in ["state/identity.json", "state/secrets/reset_token", "state/journal.db", "state/journal.db-wal"] {
        let mode = std::fs::metadata(device.dir.join(private)).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{private} is {mode:o}");
    }
}

#[test]
fn device_owner_reset_by_polling_only() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(root.path());
    let device = started(
        root.path(),
        &server,
        "poller",
        DeviceSpec { connect: "mode = \"poll\"", ..DeviceSpec::new("android-do") },
    );
    let status = Command::new(agent_bin())
        .args(["status", "--json", "--config", device.config.to_str().expect("utf8")])
        .output()
        .expect("status");
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status json");
    assert_eq!(status["link"]["phase"], "poll");
    assert_eq!(status["device_id"], device.id.as_str());
    let (id, passcode) = server.action("reset-passcode", &device.id, &[]);
    let row = server.wait_result(&id, T);
    assert_eq!(row["state"], "succeeded", "{row}");
    assert_eq!(device.user(&["check-passcode"], &passcode.expect("passcode")), 0);
    assert!(!server.log_text().contains("push stream opened"), "a poll-only agent opened a push stream");
}

#[test]
fn ios_removal_with_the_right_token_and_with_a_wrong_one() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(root.path());
    let good = started(root.path(), &server, "ios-good", DeviceSpec::new("ios"));
    let bad = started(root.path(), &server, "ios-bad", DeviceSpec::new("ios"));
    let escrowed =
        |id: &str| server.devices().iter().any(|d| d["device_id"] == id && d["unlock_token_escrowed"] == true);
    wait_until("unlock tokens escrowed", T, || escrowed(&good.id) && escrowed(&bad.id));

    let (id, _) = server.action("remove-passcode", &good.id, &[]);
    let row = server.wait_result(&id, T);
    assert_eq!(row["state"], "succeeded", "{row}");
    assert_eq!(row["outputs"]["user_prompted_for_new_passcode"], "true");
    let sim = good.sim_show();
    assert_eq!(sim["passcode_present"], false);
    assert_eq!(sim["new_passcode_prompt"], true);

    let wrong = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let out = common::run_with_stdin(
        Command::new(common::server_bin()).arg("--data").arg(&server.dir).args([
            "escrow",
            "import-unlock-token",
            "--device",
            &bad.id,
            "--token-file",
            "-",
        ]),
        wrong,
    );
    assert!(out.status.success());
    let (id, _) = server.action("remove-passcode", &bad.id, &[]);
    let row = server.wait_result(&id, T);
    assert_eq!(row["state"], "failed");
    assert_eq!(row["error_code"], "UNLOCK_TOKEN_MISMATCH");
    assert!(row["message"].as_str().unwrap_or_default().contains("wiped"), "{row}");
    assert_eq!(bad.sim_show()["passcode_present"], true, "passcode removed despite the mismatch");
    assert_eq!(bad.effects_for(&id), 0);

    let device = latchkey_platform::sim::SimState::load(&good.sim).expect("sim");
    let token_hex = device.unlock_token.clone().expect("device token");
    assert_no_secret_in_logs(&token_hex, &server, &[&good, &bad]);
}

#[test]
fn aosp_lock_without_a_passcode_policy_is_an_honest_failure_said_up_front() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(root.path());
    let device = started(root.path(), &server, "aosp", DeviceSpec::new("aosp-userless"));
    // The server knows from the last check-in: it says so and queues nothing.
    let refused = server.admin(&["action", "lock", "--device", &device.id, "--message", "call IT"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("not queued") && stderr.contains("NO_PASSCODE_POLICY"), "{stderr}");
    assert!(server.actions().is_empty(), "a refused action was queued");
    // Forced, the device answers for itself, and says the same (here to a waiting admin).
    let out = server.admin_ok(&[
        "action",
        "lock",
        "--device",
        &device.id,
        "--force",
        "--message",
        "call IT",
        "--wait",
        "30s",
    ]);
    assert!(out.contains("result: failed NO_PASSCODE_POLICY: "), "{out}");
    let id = out.split_whitespace().nth(1).expect("action ID").to_owned();
    let row = server.action_row(&id).expect("row");
    assert_eq!(row["state"], "failed");
    assert_eq!(row["error_code"], "NO_PASSCODE_POLICY");
    assert!(row["message"].as_str().unwrap_or_default().contains("assign"), "{row}");
    let sim = device.sim_show();
    assert_eq!(sim["locked"], false, "the device was locked although the lock was reported failed");
    assert_eq!(device.effects_for(&id), 0);
}

#[test]
fn clients_without_or_with_a_foreign_certificate_are_refused() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(root.path());
    let ca = std::fs::read_to_string(server.ca()).expect("ca");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");

    let client = |chain: Option<(String, String)>| {
        let ca = ca.clone();
        let url = server.url();
        async move {
            let identity = chain.as_ref().map(|(c, k)| (c.as_str(), k.as_str()));
            let tls = latchkey::transport::tls::client_config(&ca, identity, latchkey::transport::tls::H2)
                .map_err(anyhow::Error::msg)?;
            let channel =
                latchkey::transport::channel(&url, tls, Duration::from_secs(10)).await.map_err(anyhow::Error::msg)?;
            Ok::<_, anyhow::Error>(latchkey_proto::v1::device_service_client::DeviceServiceClient::new(channel))
        }
    };
    let no_cert = runtime.block_on(async {
        let mut client = client(None).await?;
        client.poll(latchkey_proto::v1::PollRequest {}).await.map_err(anyhow::Error::from)
    });
    let err = no_cert.expect_err("poll without a certificate must fail");
    let status = err.downcast_ref::<tonic::Status>().expect("a gRPC status");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);

    let other_ca_key = rcgen::KeyPair::generate().expect("key");
    let mut other_ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    other_ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let other_ca_cert = other_ca.self_signed(&other_ca_key).expect("ca");
    let issuer = rcgen::Issuer::new(other_ca, &other_ca_key);
    let client_key = rcgen::KeyPair::generate().expect("key");
    let mut client_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    client_params.distinguished_name.push(rcgen::DnType::CommonName, "forged-device");
    let client_cert = client_params.signed_by(&client_key, &issuer).expect("cert");
    let chain = format!("{}{}", client_cert.pem(), other_ca_cert.pem());
    let foreign = runtime.block_on(async {
        let mut client = client(Some((chain, client_key.serialize_pem()))).await?;
        client.poll(latchkey_proto::v1::PollRequest {}).await.map_err(anyhow::Error::from)
    });
    assert!(foreign.is_err(), "a certificate from another CA was accepted");
    wait_until("the server to log the refused handshake", T, || server.log_text().contains("TLS handshake refused"));
}

#[test]
fn enrollment_tokens_are_single_use_and_expire() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(root.path());
    let token = server.token();
    let first = Device::prepare(root.path(), "first", &server, DeviceSpec::new("android-do"));
    assert!(first.enroll_with(&token).status.success());
    let second = Device::prepare(root.path(), "second", &server, DeviceSpec::new("android-do"));
    let out = second.enroll_with(&token);
    assert!(!out.status.success(), "a token was used twice");
    assert!(String::from_utf8_lossy(&out.stderr).contains("already used"), "{}", String::from_utf8_lossy(&out.stderr));

    let created = common::now_ms();
    let expired = server.admin_ok(&["token", "create", "--ttl", "1s"]).trim().to_owned();
    // The token's lifetime has to pass: wait for the clock, not for a fixed time.
    wait_until("the token's second to pass", T, || common::now_ms() > created + 1_100);
    let third = Device::prepare(root.path(), "third", &server, DeviceSpec::new("android-do"));
    let out = third.enroll_with(&expired);
    assert!(!out.status.success(), "an expired token was accepted");
    assert!(String::from_utf8_lossy(&out.stderr).contains("expired"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = third.enroll_with("lk1-not-a-real-token");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid"));
    assert_no_secret_in_logs(&token, &server, &[]);
}

#[test]
fn a_crash_after_applying_is_neither_lost_nor_applied_twice() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(root.path());
    let mut device = Device::enroll(root.path(), "crashy", &server, DeviceSpec::new("android-do"));
    device.start_with_env(&[("LATCHKEY_FAULT", "crash-after-apply")]);
    device.wait_checked_in(T);
    let (id, passcode) = server.action("reset-passcode", &device.id, &[]);
    let status = device.wait_exit(T);
    assert!(!status.success(), "the fault did not fire");
    assert_eq!(server.action_row(&id).expect("row")["state"], "sent", "a result was reported before the crash");
    assert_eq!(device.effects_for(&id), 1, "the effect should have happened before the crash");

    device.start();
    let row = server.wait_result(&id, T);
    assert_eq!(row["state"], "succeeded", "{row}");
    assert_eq!(row["outputs"]["recovered_after_restart"], "true");
    assert_eq!(device.effects_for(&id), 1, "the command was applied twice");
    assert_eq!(device.user(&["check-passcode"], &passcode.clone().expect("passcode")), 0);
    assert_no_secret_in_logs(&passcode.expect("passcode"), &server, &[&device]);
}

#[test]
fn a_crash_before_reporting_reports_the_journaled_result_once() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(root.path());
    let mut device = Device::enroll(root.path(), "crashy2", &server, DeviceSpec::new("aosp-user"));
    device.start_with_env(&[("LATCHKEY_FAULT", "crash-before-report")]);
    device.wait_checked_in(T);
    let (id, _) = server.action("lock", &device.id, &[]);
    assert!(!device.wait_exit(T).success());
    assert_eq!(server.action_row(&id).expect("row")["state"], "sent");
    device.start();
    let row = server.wait_result(&id, T);
    assert_eq!(row["state"], "succeeded", "{row}");
    assert!(row["outputs"].get("recovered_after_restart").is_none(), "a journaled result should be reported as it was");
    assert_eq!(device.effects_for(&id), 1);
}

#[test]
fn check_names_every_check_and_passes_on_a_healthy_device() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(root.path());
    let device = started(root.path(), &server, "checked", DeviceSpec::new("macos"));
    let check = Command::new(agent_bin())
        .args(["check", "--json", "--config", device.config.to_str().expect("utf8")])
        .output()
        .expect("check");
    let lines: serde_json::Value = serde_json::from_slice(&check.stdout).expect("check json");
    assert!(check.status.success(), "{lines}");
    let names: Vec<&str> =
        lines.as_array().expect("array").iter().map(|l| l["check"].as_str().expect("name")).collect();
    assert_eq!(names, ["config", "state", "identity", "journal", "secret store", "platform port", "server", "clock"]);
}

#[test]
fn sigterm_finishes_the_command_in_flight_then_exits_zero() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(root.path());
    let fake_root = common::linux_root(root.path(), "kiosk:$6$salt$hash:19000:0:99999:7:::");
    let (started_marker, done_marker) = (root.path().join("lock-started"), root.path().join("lock-done"));
    // A lock that takes a while: SIGTERM arrives while it runs.
    let lock =
        format!("[\"sh\", \"-c\", \"touch {}; sleep 1; touch {}\"]", started_marker.display(), done_marker.display());
    let platform = format!(
        "[platform]\nport = \"linux\"\nlinux_root = \"{}\"\nlinux_user = \"kiosk\"\nlock_command = {lock}\n",
        fake_root.display()
    );
    let mut device =
        started(root.path(), &server, "term", DeviceSpec { platform: Some(platform), ..DeviceSpec::new("linux") });
    let (id, _) = server.action("lock", &device.id, &[]);
    wait_until("the lock to start", T, || started_marker.exists());
    assert!(!done_marker.exists());
    let status = device.terminate();
    assert!(status.success(), "agent exited with {status}");
    assert!(done_marker.exists(), "the command in flight was cut short");
    let row = server.wait_result(&id, T);
    assert_eq!(row["state"], "succeeded", "the result was not reported before exit: {row}");
    assert!(device.log_text().contains("agent stopped"));
}

#[test]
fn a_command_queued_while_the_link_is_cut_arrives_after_it_heals() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(root.path());
    let proxy = Proxy::start(&server.addr);
    let device = started(
        root.path(),
        &server,
        "flaky",
        DeviceSpec { url: Some(format!("https://{}", proxy.addr)), ..DeviceSpec::new("aosp-user") },
    );
    let phase = || device.status().and_then(|s| s["link"]["phase"].as_str().map(str::to_owned)).unwrap_or_default();
    wait_until("the push stream", T, || phase() == "stream");
    proxy.cut();
    let (id, _) = server.action("lock", &device.id, &[]);
    wait_until("the agent to notice the cut", T, || phase() != "stream");
    proxy.restore();
    let row = server.wait_result(&id, T);
    assert_eq!(row["state"], "succeeded", "{row}");
    assert_eq!(device.effects_for(&id), 1);
}

/// A connection that silently stops carrying bytes while a result is about to be reported: only
/// HTTP/2 keepalive would notice (about 50 s); the report's own deadline, tied to the heartbeat,
/// moves it to a fresh connection. The 20 s bound is far above that deadline (1 s here) plus a
/// reconnect, and far below keepalive.
#[test]
fn a_report_on_a_silently_dead_connection_moves_to_a_new_one() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(root.path());
    let proxy = Proxy::start(&server.addr);
    let fake_root = common::linux_root(root.path(), "kiosk:$6$salt$hash:19000:0:99999:7:::");
    let (started_marker, go) = (root.path().join("lock-started"), root.path().join("go"));
    // The lock waits for the test's go-ahead, so the connection dies while it is mid-apply.
    let lock = format!(
        "[\"sh\", \"-c\", \"touch {}; while [ ! -e {} ]; do sleep 0.05; done\"]",
        started_marker.display(),
        go.display()
    );
    let platform = format!(
        "[platform]\nport = \"linux\"\nlinux_root = \"{}\"\nlinux_user = \"kiosk\"\nlock_command = {lock}\n",
        fake_root.display()
    );
    let spec = DeviceSpec {
        platform: Some(platform),
        url: Some(format!("https://{}", proxy.addr)),
        ..DeviceSpec::new("linux")
    };
    let device = started(root.path(), &server, "blackholed", spec);
    let (id, _) = server.action("lock", &device.id, &[]);
    wait_until("the lock to start", T, || started_marker.exists());
    proxy.blackhole();
    std::fs::write(&go, b"").expect("go");
    let row = server.wait_result(&id, Duration::from_secs(20));
    assert_eq!(row["state"], "succeeded", "{row}");
}

#[test]
fn a_second_agent_on_the_same_state_is_refused_and_bad_config_is_named() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(root.path());
    let device = started(root.path(), &server, "single", DeviceSpec::new("windows"));
    let out = Command::new(agent_bin())
        .args(["run", "--config", device.config.to_str().expect("utf8")])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already running"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad = root.path().join("bad.toml");
    std::fs::write(&bad, "[connect]\nheartbeat = \"soon\"\n").expect("write");
    let out = Command::new(agent_bin()).args(["run", "--config", bad.to_str().expect("utf8")]).output().expect("run");
    assert_eq!(out.status.code(), Some(2), "a configuration error is a usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("heartbeat"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_reset_token_waits_for_the_user_who_is_notified_until_it_is_active() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(root.path());
    // Enrollment alone registers and escrows the token and asks the user to confirm.
    let mut device = Device::enroll(root.path(), "byod", &server, DeviceSpec::new("android-wp-byod"));
    let token_state = |id: &str| {
        server
            .devices()
            .iter()
            .find(|d| d["device_id"] == id)
            .map(|d| d["reset_token_state"].clone())
            .unwrap_or_default()
    };
    assert_eq!(token_state(&device.id), "pending_user", "token state not reported at enrollment");
    let notifications = |d: &Device| d.sim_show()["notifications"].as_object().map(|m| m.len()).unwrap_or(0);
    assert_eq!(notifications(&device), 1, "the user was not asked to confirm their credential right after enrollment");
    device.start();
    device.wait_checked_in(T);

    // The server knows the token is pending: it says so instead of showing a passcode.
    let early = server.admin(&["action", "reset-passcode", "--device", &device.id, "--scope", "work-profile"]);
    assert!(!early.status.success());
    let said = String::from_utf8_lossy(&early.stderr);
    assert!(said.contains("RESET_TOKEN_NOT_ACTIVE"), "{said}");
    assert!(!String::from_utf8_lossy(&early.stdout).contains("temporary passcode"));
    let forced = server.action_json("reset-passcode", &device.id, &["--scope", "work-profile", "--force"]);
    assert!(forced["temporary_passcode"].is_null(), "a passcode was shown for a reset predicted to fail");
    let early = forced["command_id"].as_str().expect("id").to_owned();
    assert_eq!(server.wait_result(&early, T)["error_code"], "RESET_TOKEN_NOT_ACTIVE");

    assert_eq!(device.user(&["confirm-credential"], ""), 0);
    wait_until("the active token to be reported", T, || token_state(&device.id) == "active");
    wait_until("the notification to be withdrawn", T, || notifications(&device) == 0);
    let (id, passcode) = server.action("reset-passcode", &device.id, &["--scope", "work-profile"]);
    assert_eq!(server.wait_result(&id, T)["state"], "succeeded");
    assert_eq!(device.user(&["check-passcode", "--work-profile"], &passcode.expect("passcode")), 0);
    assert_eq!(device.user(&["check-passcode"], "951753"), 0, "the device passcode must not change");
}

#[test]
fn an_expired_command_is_rejected_not_applied() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(root.path());
    let mut device = Device::enroll(root.path(), "late", &server, DeviceSpec::new("aosp-user"));
    // The server still thinks it is fresh; the device's clock says it expired an hour ago
    // (a test-build clock shift stands in for a device that was offline past the TTL).
    let (id, _) = server.action("lock", &device.id, &["--ttl", "1h"]);
    device.start_with_env(&[("LATCHKEY_TEST_CLOCK_OFFSET_MS", "7200000")]);
    let row = server.wait_result(&id, T);
    assert_eq!(row["state"], "rejected");
    assert_eq!(row["error_code"], "EXPIRED");
    assert_eq!(device.effects_for(&id), 0);
    assert_eq!(device.sim_show()["locked"], false);
}

#[test]
fn junk_on_the_server_port_harms_nobody() {
    use std::io::{Read, Write};
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(root.path());
    for junk in [&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..], &[0x16, 0x03, 0x01, 0xff, 0xff, 0x00][..], &[0u8; 4096][..]]
    {
        let mut s = std::net::TcpStream::connect(&server.addr).expect("connect");
        let _ = s.write_all(junk);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
    let device = started(root.path(), &server, "after-junk", DeviceSpec::new("aosp-user"));
    let (id, _) = server.action("lock", &device.id, &[]);
    assert_eq!(server.wait_result(&id, T)["state"], "succeeded");
}

#[test]
fn the_device_certificate_is_renewed_before_it_expires() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(root.path());
    // Device certificates live 30 days; asking for 60 days of headroom forces a renewal.
    let spec = DeviceSpec { extra: "[identity]\nrenew_before = \"60d\"\n", ..DeviceSpec::new("aosp-user") };
    let mut device = Device::enroll(root.path(), "renew", &server, spec);
    let identity = device.dir.join("state/identity.json");
    let read = || {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&identity).expect("identity")).expect("json");
        (
            v["certificate_pem"].as_str().expect("cert").to_owned(),
            v["private_key_pem"].as_str().expect("key").to_owned(),
        )
    };
    let (old_cert, old_key) = read();
    device.start();
    wait_until("the renewal", T, || read().0 != old_cert);
    let (_, new_key) = read();
    assert_ne!(old_key, new_key, "renewal must use a fresh key made on the device");
    wait_until("the server to log the renewal", T, || server.log_text().contains("identity renewed"));
    // The agent reconnects with the new certificate; from then on the old one is refused.
    wait_until("the renewed certificate to be used", T, || server.log_text().contains("renewed certificate in use"));
    let ca = std::fs::read_to_string(server.ca()).expect("ca");
    let refused = tokio::runtime::Runtime::new().expect("runtime").block_on(async {
        let tls =
            latchkey::transport::tls::client_config(&ca, Some((&old_cert, &old_key)), latchkey::transport::tls::H2)
                .map_err(anyhow::Error::msg)?;
        let channel = latchkey::transport::channel(&server.url(), tls, Duration::from_secs(10))
            .await
            .map_err(anyhow::Error::msg)?;
        let mut client = latchkey_proto::v1::device_service_client::DeviceServiceClient::new(channel);
        client.poll(latchkey_proto::v1::PollRequest {}).await.map_err(anyhow::Error::from)
    });
    let err = refused.expect_err("the replaced certificate still works");
    let status = err.downcast_ref::<tonic::Status>().expect("a gRPC status");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status}");
    // The renewed identity works: restart the agent (new TLS session) and run a command.
    assert!(device.terminate().success());
    device.start();
    device.wait_checked_in(T);
    let (id, _) = server.action("lock", &device.id, &[]);
    assert_eq!(server.wait_result(&id, T)["state"], "succeeded");
}

#[test]
fn a_corrupt_journal_stops_the_agent_with_a_clear_error_and_is_left_intact() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(root.path());
    let device = Device::enroll(root.path(), "corrupt", &server, DeviceSpec::new("macos"));
    let journal = device.dir.join("state/journal.db");
    let junk = b"this is not an SQLite database, but it may be evidence".repeat(100);
    std::fs::write(&journal, &junk).expect("corrupt the journal");
    let out = Command::new(agent_bin())
        .args(["run", "--config", device.config.to_str().expect("utf8")])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("journal"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(std::fs::read(&journal).expect("journal"), junk, "the agent changed a journal it could not read");
}

/// Raw bytes sent as a gRPC message body, to put malformed protobuf on the wire.
#[derive(Clone, Default, PartialEq)]
struct RawBody(Vec<u8>);

impl std::fmt::Debug for RawBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RawBody({} bytes)", self.0.len())
    }
}

impl prost::Message for RawBody {
    fn encode_raw(&self, buf: &mut impl prost::bytes::BufMut) {
        buf.put_slice(&self.0);
    }
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }
    fn encoded_len(&self) -> usize {
        self.0.len()
    }
    fn clear(&mut self) {
        self.0.clear();
    }
}

#[test]
fn malformed_protobuf_gets_a_specific_error_and_the_server_carries_on() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(root.path());
    let ca = std::fs::read_to_string(server.ca()).expect("ca");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    // A truncated varint, a field with an invalid wire type, and a length past the end.
    for body in [vec![0x08, 0xff], vec![0x0f, 0x01], vec![0x12, 0x7f, 0x41]] {
        let status = runtime.block_on(async {
            let tls = latchkey::transport::tls::client_config(&ca, None, latchkey::transport::tls::H2).expect("tls");
            let channel =
                latchkey::transport::channel(&server.url(), tls, Duration::from_secs(10)).await.expect("connect");
            let mut grpc = tonic::client::Grpc::new(channel);
            grpc.ready().await.expect("ready");
            let codec = tonic_prost::ProstCodec::<RawBody, latchkey_proto::v1::EnrollResponse>::default();
            let path = tonic::codegen::http::uri::PathAndQuery::from_static("/latchkey.v1.DeviceService/Enroll");
            grpc.unary(tonic::Request::new(RawBody(body)), path, codec).await.expect_err("malformed body accepted")
        });
        assert!(
            matches!(status.code(), tonic::Code::Internal | tonic::Code::InvalidArgument),
            "unexpected status {status:?}"
        );
        assert!(status.message().to_lowercase().contains("decode"), "not specific: {}", status.message());
    }
    let device = started(root.path(), &server, "after-garbage", DeviceSpec::new("aosp-user"));
    let (id, _) = server.action("lock", &device.id, &[]);
    assert_eq!(server.wait_result(&id, T)["state"], "succeeded");
}
