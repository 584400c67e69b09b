//! The admin CLI on bad input: clear errors, nothing half-created, private keys 0600; `ca` only
//! reads, `serve` creates and reissues.
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

fn server(data: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_latchkey-server"))
        .arg("--data")
        .arg(data)
        .args(args)
        .env("LATCHKEY_LOG", "info")
        .output()
        .expect("run latchkey-server")
}

/// Runs `serve` until it listens, then stops it; returns its log.
fn serve_once(data: &Path, extra: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_latchkey-server"))
        .arg("--data")
        .arg(data)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(extra)
        .env("LATCHKEY_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read");
    assert!(line.starts_with("listening on "), "serve did not start: {line:?}");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "serve exited {:?}", out.status);
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

#[test]
fn admin_commands_without_a_data_directory_say_what_to_do_and_create_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("none");
    for args in [&["devices"][..], &["ca"], &["token", "create"]] {
        let out = server(&data, args);
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("serve` first"), "{args:?}: {stderr}");
        assert!(!data.exists(), "{args:?}: a read-only command created the data directory");
    }
}

#[test]
fn serve_creates_private_material_with_tight_modes_and_ca_only_reads_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    serve_once(&data, &[]);
    for key in ["ca.key", "server.key", "secrets.key", "latchkey.db"] {
        assert_eq!(mode(&data.join(key)), 0o600, "{key}");
    }
    assert_eq!(mode(&data), 0o700);
    let before: Vec<_> = std::fs::read_dir(&data)
        .expect("list")
        .map(|e| {
            let e = e.expect("entry");
            (e.file_name(), e.metadata().expect("meta").modified().expect("mtime"))
        })
        .collect();
    let out = server(&data, &["ca"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(out.stdout, server(&data, &["ca"]).stdout, "the CA is stable");
    let after: Vec<_> = std::fs::read_dir(&data)
        .expect("list")
        .map(|e| {
            let e = e.expect("entry");
            (e.file_name(), e.metadata().expect("meta").modified().expect("mtime"))
        })
        .collect();
    assert_eq!(before.len(), after.len(), "`ca` created files");
    for entry in &before {
        assert!(after.contains(entry), "`ca` changed {:?}", entry.0);
    }
}

#[test]
fn serve_reissues_the_server_certificate_when_a_requested_name_is_not_covered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    serve_once(&data, &[]);
    let read = || std::fs::read_to_string(data.join("server.pem")).expect("server.pem");
    let first = read();
    assert!(!latchkey_server::ca::covered_names(&first).contains(&"mdm.example.com".to_owned()));
    let ca = server(&data, &["ca"]).stdout;
    let log = serve_once(&data, &["--server-name", "mdm.example.com"]);
    let second = read();
    let names = latchkey_server::ca::covered_names(&second);
    assert!(names.contains(&"mdm.example.com".to_owned()) && names.contains(&"127.0.0.1".to_owned()), "{names:?}");
    assert!(log.contains("server certificate issued"), "{log}");
    assert_eq!(server(&data, &["ca"]).stdout, ca, "the CA itself is kept: enrolled devices still trust it");
    // Already covered: nothing is reissued.
    serve_once(&data, &["--server-name", "mdm.example.com"]);
    assert_eq!(read(), second);
}

#[test]
fn a_private_key_readable_by_others_is_narrowed_with_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    serve_once(&data, &[]);
    std::fs::set_permissions(data.join("ca.key"), std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let log = serve_once(&data, &[]);
    assert_eq!(mode(&data.join("ca.key")), 0o600);
    assert!(log.contains("narrowed to 0600"), "{log}");
}

#[test]
fn actions_for_unknown_devices_and_bad_tokens_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    serve_once(&data, &[]);
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
