//! The agent's files on disk damaged, missing or too open: the device keeps being managed where
//! it can, never applies a command twice, and otherwise stops with words and a distinct exit
//! code that the service manager does not restart on.
mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use common::{agent_bin, Device, DeviceSpec, Server};

const T: Duration = Duration::from_secs(30);

fn remove_journal(device: &Device, leave_empty: bool) {
    let state = device.dir.join("state");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(state.join(format!("journal.db{suffix}")));
    }
    if leave_empty {
        std::fs::write(state.join("journal.db"), b"").expect("0-byte journal");
    }
}

/// The lock was applied, the agent died before reporting, and then the journal vanished (or
/// became a 0-byte file). The server delivers the command again; the agent must ask the device
/// rather than lock a second time.
fn lost_journal_does_not_apply_twice(leave_empty: bool) {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(root.path());
    let mut device = Device::enroll(root.path(), "amnesiac", &server, DeviceSpec::new("aosp-user"));
    device.start_with_env(&[("LATCHKEY_FAULT", "crash-after-apply")]);
    device.wait_checked_in(T);
    let (id, _) = server.action("lock", &device.id, &[]);
    assert!(!device.wait_exit(T).success(), "the fault did not fire");
    assert_eq!(device.effects_for(&id), 1);
    remove_journal(&device, leave_empty);

    device.start();
    let row = server.wait_result(&id, T);
    assert_eq!(device.effects_for(&id), 1, "the lock ran a second time: {row}");
    assert_eq!(row["state"], "succeeded", "the device itself says it is locked: {row}");
    assert!(device.log_text().contains("the journal was missing"), "the loss was not reported");
    // And the device is managed as before.
    let (next, _) = server.action("lock", &device.id, &[]);
    assert_eq!(server.wait_result(&next, T)["state"], "succeeded");
    assert_eq!(device.effects_for(&next), 1);
}

#[test]
fn a_missing_journal_does_not_apply_an_unacknowledged_command_twice() {
    lost_journal_does_not_apply_twice(false);
}

#[test]
fn a_zero_byte_journal_does_not_apply_an_unacknowledged_command_twice() {
    lost_journal_does_not_apply_twice(true);
}

#[test]
fn a_corrupt_secret_is_reported_while_commands_keep_flowing_and_check_fails_with_the_way_out() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(root.path());
    let mut device = Device::enroll(root.path(), "corrupt-secret", &server, DeviceSpec::new("android-do"));
    device.start();
    device.wait_checked_in(T);
    let secret = device.dir.join("state/secrets/reset_token");
    common::wait_until("the reset token to be stored", T, || secret.exists());
    assert!(device.terminate().success());
    std::fs::write(&secret, b"not hex at all").expect("corrupt the secret");
    // The user sets a screen lock, so the device can be locked remotely.
    assert_eq!(device.user(&["set-passcode"], "951753\n"), 0);

    device.start();
    device.wait_checked_in(T);
    let (id, _) = server.action("lock", &device.id, &[]);
    assert_eq!(server.wait_result(&id, T)["state"], "succeeded", "a bad secret cut the device off");
    let status = device.status().expect("status");
    let problems = status["problems"].to_string();
    assert!(problems.contains("reset_token"), "status does not show the problem: {status}");

    let check = Command::new(agent_bin())
        .args(["check", "--json", "--config", device.config.to_str().expect("utf8")])
        .output()
        .expect("check");
    assert!(!check.status.success(), "check passed with a corrupt secret");
    let lines: serde_json::Value = serde_json::from_slice(&check.stdout).expect("json");
    let line = lines
        .as_array()
        .expect("array")
        .iter()
        .find(|l| l["check"] == "secret store")
        .expect("a secret store line")
        .clone();
    assert_eq!(line["verdict"], "failed", "{line}");
    let detail = line.to_string();
    assert!(detail.contains("reset_token") && detail.contains("remove the file"), "no way out given: {detail}");
}

/// Runs the agent with a damaged identity; it must stop at once with exit code 4 and words.
fn refuses_identity(device: &mut Device, words: &str) {
    device.start();
    let status = device.wait_exit(T);
    assert_eq!(status.code(), Some(4), "an unusable identity must exit 4, got {status}");
    let log = device.log_text();
    assert!(log.contains(words), "the log does not say {words:?}:\n{log}");
    assert!(!log.contains("[80, 82, 73"), "bytes instead of words:\n{log}");
}

#[test]
fn an_unusable_identity_stops_the_agent_with_its_own_exit_code_and_a_reason_in_words() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(root.path());
    let mut device = Device::enroll(root.path(), "broken-id", &server, DeviceSpec::new("macos"));
    let path = device.dir.join("state/identity.json");
    let original = std::fs::read_to_string(&path).expect("identity");
    let mut doc: serde_json::Value = serde_json::from_str(&original).expect("json");

    // A truncated private key.
    let key = doc["private_key_pem"].as_str().expect("key").to_owned();
    doc["private_key_pem"] = key[..key.len() / 2].into();
    std::fs::write(&path, doc.to_string()).expect("write");
    refuses_identity(&mut device, "private key");

    // Another device's certificate.
    let other = Device::enroll(root.path(), "other", &server, DeviceSpec::new("macos"));
    let theirs: serde_json::Value =
        serde_json::from_slice(&std::fs::read(other.dir.join("state/identity.json")).expect("other")).expect("json");
    let mut doc: serde_json::Value = serde_json::from_str(&original).expect("json");
    doc["certificate_pem"] = theirs["certificate_pem"].clone();
    std::fs::write(&path, doc.to_string()).expect("write");
    refuses_identity(&mut device, "certificate");

    // The original works again: nothing was rewritten or deleted by the refusals.
    std::fs::write(&path, &original).expect("restore");
    device.start();
    device.wait_checked_in(T);
}

#[test]
fn an_identity_readable_by_others_is_narrowed_with_a_warning() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(root.path());
    let mut device = Device::enroll(root.path(), "open-id", &server, DeviceSpec::new("macos"));
    let path = device.dir.join("state/identity.json");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    device.start();
    device.wait_checked_in(T);
    let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(device.log_text().contains("narrowed"), "no warning:\n{}", device.log_text());
}

#[test]
fn zero_durations_are_refused_by_name_before_anything_runs() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(root.path());
    for (key, line) in [("checkin_interval", "checkin_interval = \"0s\""), ("backoff_max", "backoff_max = \"0s\"")] {
        let spec = DeviceSpec { connect: line, ..DeviceSpec::new("macos") };
        let mut device = Device::prepare(root.path(), key, &server, spec);
        device.start();
        let status = device.wait_exit(T);
        assert_eq!(status.code(), Some(2), "{key}: {status}");
        assert!(device.log_text().contains(key), "{key} not named:\n{}", device.log_text());
    }
}
