//! The admin CLI on bad input: clear errors, nothing half-created, private keys 0600.
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn server(data: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_latchkey-server"))
        .arg("--data")
        .arg(data)
        .args(args)
        .output()
        .expect("run latchkey-server")
}

#[test]
fn admin_commands_without_a_database_say_what_to_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("none");
    let out = server(&data, &["devices"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("latchkey-server serve"), "{stderr}");
    assert!(!data.join("latchkey.db").exists(), "a read-only command created a database");
}

#[test]
fn ca_creates_private_material_with_tight_modes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let out = server(&data, &["ca"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("-----BEGIN CERTIFICATE-----"));
    for key in ["ca.key", "server.key"] {
        let mode = std::fs::metadata(data.join(key)).expect("key").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{key}");
    }
    let mode = std::fs::metadata(&data).expect("dir").permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    // A second run reuses the same CA.
    let again = server(&data, &["ca"]);
    assert_eq!(out.stdout, again.stdout);
}

#[test]
fn actions_for_unknown_devices_and_bad_tokens_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    assert!(server(&data, &["ca"]).status.success());
    // `ca` prepares the database too.
    let out = server(&data, &["action", "lock", "--device", "no-such-device"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown device"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = server(&data, &["token", "create", "--ttl", "soon"]);
    assert_eq!(out.status.code(), Some(2), "a bad duration is a usage error");
    let token = server(&data, &["token", "create"]);
    assert!(token.status.success());
    let text = String::from_utf8_lossy(&token.stdout);
    assert!(text.trim().starts_with("lk1-") && text.trim().len() > 40);
    let db = std::fs::read(data.join("latchkey.db")).expect("db");
    let wal = std::fs::read(data.join("latchkey.db-wal")).unwrap_or_default();
    for bytes in [db, wal] {
        assert!(!String::from_utf8_lossy(&bytes).contains(text.trim()), "the token is stored in clear");
    }
}
