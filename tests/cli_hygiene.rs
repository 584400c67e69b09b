//! Both command lines as an operator meets them: bounds, secrets only from private files,
//! errors that name the real cause once, help with examples, versions with the git revision,
//! man pages and completions, and admin output free of log lines.
mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use common::{agent_bin, server_bin, Device, DeviceSpec, Server};

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn ttls_out_of_bounds_are_usage_errors() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(root.path());
    let device = Device::enroll(root.path(), "bounded", &server, DeviceSpec::new("aosp-user"));
    for ttl in ["0s", "100000000d"] {
        let out = server.admin(&["token", "create", "--ttl", ttl]);
        assert_eq!(out.status.code(), Some(2), "token --ttl {ttl}: {}", text(&out));
        let out = server.admin(&["action", "lock", "--device", &device.id, "--ttl", ttl]);
        assert_eq!(out.status.code(), Some(2), "action --ttl {ttl}: {}", text(&out));
        assert!(text(&out).contains("--ttl") && text(&out).contains("TTL must be between"), "{}", text(&out));
    }
    assert!(server.actions().is_empty(), "an out-of-bounds action was queued");
    let long = "x".repeat(5000);
    let out = server.admin(&["action", "lock", "--device", &device.id, "--message", &long]);
    assert!(!out.status.success() && text(&out).contains("too long"), "{}", text(&out));
}

#[test]
fn an_oversized_hostname_is_refused_at_enrollment_and_the_token_survives() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(root.path());
    let token = server.token();
    let ca = std::fs::read_to_string(server.ca()).expect("ca");
    let (_, csr_der) = latchkey::identity::new_key_and_csr().expect("csr");
    let refused = tokio::runtime::Runtime::new().expect("runtime").block_on(async {
        let tls = latchkey::transport::tls::client_config(&ca, None, latchkey::transport::tls::H2).expect("tls");
        let channel = latchkey::transport::channel(&server.url(), tls, Duration::from_secs(10)).await.expect("channel");
        let mut client = latchkey_proto::v1::device_service_client::DeviceServiceClient::new(channel)
            .max_encoding_message_size(8 << 20);
        client
            .enroll(latchkey_proto::v1::EnrollRequest {
                enrollment_token: token.clone(),
                csr_der,
                device_facts: Some(latchkey_proto::v1::DeviceFacts {
                    hostname: "h".repeat(3 << 20),
                    ..Default::default()
                }),
            })
            .await
    });
    let status = refused.expect_err("a 3 MB hostname was accepted");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
    assert!(status.message().contains("hostname"), "{status}");
    assert!(server.devices().is_empty(), "an orphan device was recorded");
    // The token was not spent on a refused enrollment.
    let device = Device::prepare(root.path(), "after", &server, DeviceSpec::new("aosp-user"));
    let out = device.enroll_with(&token);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn token_files_must_be_private() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(root.path());
    let device = Device::prepare(root.path(), "tokenfile", &server, DeviceSpec::new("aosp-user"));
    let file = root.path().join("token");
    std::fs::write(&file, server.token()).expect("token");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let enroll = || {
        Command::new(agent_bin())
            .args(["enroll", "--config", device.config.to_str().expect("utf8"), "--token-file"])
            .arg(&file)
            .output()
            .expect("enroll")
    };
    let out = enroll();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("chmod 600"), "{}", text(&out));
    assert!(!device.dir.join("state/identity.json").exists());
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let out = enroll();
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn a_missing_config_is_named_once_and_latchkey_config_sets_the_default() {
    let root = tempfile::tempdir().expect("tempdir");
    let missing = root.path().join("nowhere/config.toml");
    let out = Command::new(agent_bin()).args(["check", "--config"]).arg(&missing).output().expect("check");
    assert!(!out.status.success());
    let said = text(&out);
    assert!(said.contains(missing.to_str().expect("utf8")), "{said}");
    assert!(said.matches("os error 2").count() <= 1, "the cause is repeated: {said}");

    let out = Command::new(agent_bin()).arg("check").env("LATCHKEY_CONFIG", &missing).output().expect("check");
    assert!(text(&out).contains(missing.to_str().expect("utf8")), "LATCHKEY_CONFIG ignored: {}", text(&out));
}

/// As an unprivileged user the agent's state directory is unreadable: `check` says so rather
/// than "not enrolled". Runs the check as `nobody` through setpriv (util-linux); as root only.
#[test]
fn check_as_a_user_who_cannot_read_the_state_says_permission_denied() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("not root: cannot switch to nobody, skipped");
        return;
    }
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let server = Server::start(root.path());
    let device = Device::enroll(root.path(), "private", &server, DeviceSpec::new("aosp-user"));
    for path in [&device.dir, &device.config] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    std::fs::set_permissions(&device.config, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let binary = root.path().join("latchkey");
    std::fs::copy(agent_bin(), &binary).expect("copy");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&binary)
        .args(["check", "--config", device.config.to_str().expect("utf8")])
        .output()
        .expect("setpriv");
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(said.to_lowercase().contains("permission denied"), "{said}");
    assert!(!said.contains("not enrolled"), "{said}");
}

#[test]
fn help_has_examples_and_versions_carry_the_git_revision() {
    for bin in [agent_bin(), server_bin()] {
        let help = Command::new(&bin).arg("--help").output().expect("help");
        assert!(String::from_utf8_lossy(&help.stdout).contains("Examples:"), "{}", bin.display());
        let version = Command::new(&bin).arg("--version").output().expect("version");
        let version = String::from_utf8_lossy(&version.stdout).into_owned();
        let rev = version.split("(git ").nth(1).and_then(|r| r.split(')').next()).unwrap_or_default();
        let in_checkout = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".git").exists();
        if in_checkout {
            assert!(rev.len() == 12 && rev.chars().all(|c| c.is_ascii_hexdigit()), "{version}");
        } else {
            assert!(!rev.is_empty(), "{version}");
        }
    }
}

#[test]
fn man_pages_and_completions_are_generated_for_both_binaries() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (bin, page, sub) in [
        (agent_bin(), "latchkey.1", "latchkey-enroll.1"),
        (server_bin(), "latchkey-server.1", "latchkey-server-serve.1"),
    ] {
        let out = Command::new(&bin).arg("man").arg(dir.path()).output().expect("man");
        assert!(out.status.success(), "{}", text(&out));
        for name in [page, sub] {
            let body = std::fs::read_to_string(dir.path().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(body.starts_with(".ie") || body.contains(".TH"), "{name} is not a man page");
        }
        let out = Command::new(&bin).args(["completions", "bash"]).output().expect("completions");
        assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("complete "), "{}", text(&out));
    }
}

#[test]
fn admin_commands_print_their_answer_and_no_log_lines() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(root.path());
    let out = Command::new(server_bin())
        .arg("--data")
        .arg(&server.dir)
        .args(["token", "create"])
        .env_remove("LATCHKEY_LOG")
        .output()
        .expect("token");
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(out.stderr.is_empty(), "log lines on stderr: {}", String::from_utf8_lossy(&out.stderr));
}
