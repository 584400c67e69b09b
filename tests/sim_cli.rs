//! The simulator as a person and an admin use it from the shell: `latchkey sim init`, `sim user`,
//! `sim show`, with the platform's own rules applied to what they type.
mod common;

use std::process::Command;

use common::{agent_bin, run_with_stdin};

fn sim(args: &[&str]) -> std::process::Output {
    Command::new(agent_bin()).arg("sim").args(args).output().expect("latchkey sim")
}

/// Apple passcode payload doc: under User Enrollment the payload's keys are ignored and only
/// forcePIN, allowSimple = false and minLength 6 apply — whatever the profile asks for.
#[test]
fn user_enrollment_ignores_a_supplied_payload_and_enforces_its_own_rules() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("ue.json");
    let state_arg = state.to_str().expect("utf8");
    let payload = dir.path().join("passcode.mobileconfig");
    std::fs::write(
        &payload,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0"><dict>
  <key>PayloadType</key><string>com.apple.mobiledevice.passwordpolicy</string>
  <key>requireAlphanumeric</key><true/>
  <key>minLength</key><integer>10</integer>
  <key>minComplexChars</key><integer>2</integer>
</dict></plist>"#,
    )
    .expect("payload");
    let out = sim(&[
        "init",
        "--state",
        state_arg,
        "--profile",
        "ios-user-enrollment",
        "--passcode-policy",
        payload.to_str().expect("utf8"),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let set = |passcode: &str| {
        let mut cmd = Command::new(agent_bin());
        cmd.args(["sim", "user", "--state", state_arg, "set-passcode"]);
        run_with_stdin(&mut cmd, &format!("{passcode}\n")).status.code()
    };
    assert_eq!(set("19374"), Some(1), "five characters are below User Enrollment's six");
    assert_eq!(set("123456"), Some(1), "simple passcodes are refused (allowSimple = false)");
    assert_eq!(set("193746"), Some(0), "six digits satisfy User Enrollment even though the payload asks for more");
    let show = sim(&["show", "--json", "--state", state_arg]);
    let shown: serde_json::Value = serde_json::from_slice(&show.stdout).expect("json");
    assert_eq!(shown["enforced_device_policy"]["min_length"], 6, "{shown}");
    assert_eq!(shown["enforced_device_policy"]["require_alphanumeric"], false, "{shown}");
}

/// The same payload on a fully enrolled iPhone is enforced as written.
#[test]
fn a_supervised_iphone_enforces_the_payload_as_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("ios.json");
    let state_arg = state.to_str().expect("utf8");
    let payload = dir.path().join("passcode.plist");
    std::fs::write(
        &payload,
        r#"<?xml version="1.0"?><plist version="1.0"><dict><key>minLength</key><integer>8</integer></dict></plist>"#,
    )
    .expect("payload");
    let out =
        sim(&["init", "--state", state_arg, "--profile", "ios", "--passcode-policy", payload.to_str().expect("utf8")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut cmd = Command::new(agent_bin());
    cmd.args(["sim", "user", "--state", state_arg, "set-passcode"]);
    assert_eq!(run_with_stdin(&mut cmd, "193746\n").status.code(), Some(1), "minLength 8 applies");
}

#[test]
fn init_refuses_to_replace_a_device_unless_forced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("d.json");
    let state_arg = state.to_str().expect("utf8");
    assert!(sim(&["init", "--state", state_arg, "--profile", "macos"]).status.success());
    let again = sim(&["init", "--state", state_arg, "--profile", "ios"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"), "{}", String::from_utf8_lossy(&again.stderr));
    assert!(sim(&["init", "--state", state_arg, "--profile", "ios", "--force"]).status.success());
}
