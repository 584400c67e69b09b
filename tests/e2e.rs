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
    let (id, passcode) = server.action("reset-passcode", &device.id, &[]);
    let passcode = passcode.expect("a temporary passcode for an Android reset");
    let row = server.wait_result(&id, T);
    assert_eq!(row["state"], "succeeded", "{row}");
    assert_eq!(device.user(&["check-passcode"], &passcode), 0, "the device does not hold the temporary passcode");
    assert_eq!(device.effects_for(&id), 1);
    let listed = server.admin_ok(&["passcodes", "--device", &device.id]);
    assert!(listed.contains(&passcode), "temporary passcode not listed for the admin");
    assert_no_secret_in_logs(&passcode, &server, &[&device]);
    let reset_token =
        std::fs::read_to_string(device.dir.join("state/secrets/reset_token")).expect("reset token in the secret store");
    assert_eq!(reset_token.trim().len(), 64, "reset token must be 32 random bytes");
    assert_no_secret_in_logs(reset_token.trim(), &server, &[&device]);
    let key = std::fs::read_to_string(device.dir.join("state/identity/device.key")).expect("device key");
    let key_body = key.lines().nth(1).expect("key body");
    assert_no_secret_in_logs(key_body, &server, &[&device]);
    use std::os::unix::fs::PermissionsExt;
    for private in ["state/identity/device.key", "state/secrets/reset_token", "state/journal.db"] {
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
    assert_eq!(status["link"]["link"], "poll");
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

    let device_token: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&good.sim).expect("sim")).expect("json");
    let token_hex = device_token["unlock_token"].as_str().expect("device token").to_owned();
    assert_no_secret_in_logs(&token_hex, &server, &[&good, &bad]);
}

#[test]
fn aosp_lock_without_a_passcode_policy_is_an_honest_failure() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(root.path());
    let device = started(root.path(), &server, "aosp", DeviceSpec::new("aosp-userless"));
    let (id, _) = server.action("lock", &device.id, &["--message", "call IT"]);
    let row = server.wait_result(&id, T);
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

    let no_cert = runtime.block_on(async {
        let tls = latchkey::transport::tls::client_config(&ca, None)?;
        let mut client = latchkey::transport::connect(&server.url(), tls).await?;
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
        let tls = latchkey::transport::tls::client_config(&ca, Some((&chain, &client_key.serialize_pem())))?;
        let mut client = latchkey::transport::connect(&server.url(), tls).await?;
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

    let expired = server.admin_ok(&["token", "create", "--ttl", "1ms"]).trim().to_owned();
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
fn sigterm_finishes_and_exits_zero() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(root.path());
    let mut device = started(root.path(), &server, "term", DeviceSpec::new("macos"));
    let check = Command::new(agent_bin())
        .args(["check", "--json", "--config", device.config.to_str().expect("utf8")])
        .output()
        .expect("check");
    let lines: serde_json::Value = serde_json::from_slice(&check.stdout).expect("check json");
    assert!(check.status.success(), "{lines}");
    let names: Vec<&str> =
        lines.as_array().expect("array").iter().map(|l| l["check"].as_str().expect("name")).collect();
    assert_eq!(names, ["config", "identity", "secret store", "platform port", "server", "clock"]);
    let status = device.terminate();
    assert!(status.success(), "agent exited with {status}");
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
    wait_until("the push stream", T, || device.log_text().contains("push stream open"));
    proxy.cut();
    let (id, _) = server.action("lock", &device.id, &[]);
    wait_until("the agent to notice the cut", T, || {
        device.log_text().contains("server link failed") || device.log_text().contains("push stream lost")
    });
    proxy.restore();
    let row = server.wait_result(&id, T);
    assert_eq!(row["state"], "succeeded", "{row}");
    assert_eq!(device.effects_for(&id), 1);
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
    assert_eq!(out.status.code(), Some(1));
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

    let (early, _) = server.action("reset-passcode", &device.id, &["--scope", "work-profile"]);
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
    // Queued while the device is off, expiring at once: by the time it arrives it is stale.
    let (id, _) = server.action("lock", &device.id, &["--ttl", "1ms"]);
    device.start();
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
    let device = started(root.path(), &server, "after-junk", DeviceSpec::new("android-do"));
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
    let identity = device.dir.join("state/identity");
    let read = |name: &str| std::fs::read_to_string(identity.join(name)).expect("identity file");
    let (old_cert, old_key) = (read("device.pem"), read("device.key"));
    device.start();
    wait_until("the renewal", T, || device.log_text().contains("device certificate renewed"));
    let (new_cert, new_key) = (read("device.pem"), read("device.key"));
    assert_ne!(old_cert, new_cert);
    assert_ne!(old_key, new_key, "renewal must use a fresh key made on the device");
    assert!(server.log_text().contains("identity renewed"));
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
            let tls = latchkey::transport::tls::client_config(&ca, None).expect("tls");
            let channel = latchkey::transport::channel(&server.url(), tls).await.expect("connect");
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
