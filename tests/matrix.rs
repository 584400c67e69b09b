//! Every row of SPEC §3 through the real server and real agent processes: one simulated device
//! per row, one admin action, the expected state and error code, and — for successes — the
//! effect visible on the device exactly once.
mod common;

use std::time::Duration;

use common::{wait_until, Device, DeviceSpec, Server};

const T: Duration = Duration::from_secs(60);

/// (row, profile, sim init flags, user confirms credential first, action, action flags, state, code)
type Row = (
    &'static str,
    &'static str,
    &'static [&'static str],
    bool,
    &'static str,
    &'static [&'static str],
    &'static str,
    &'static str,
);

const ROWS: &[Row] = &[
    ("Android 6.x device admin", "android6-da", &[], false, "reset-passcode", &[], "succeeded", ""),
    ("Android 7+ device admin", "android7-da", &[], false, "reset-passcode", &[], "not_supported", "API_LEVEL"),
    ("Android Enterprise device owner", "android-do", &[], false, "reset-passcode", &[], "succeeded", ""),
    (
        "work profile, device-level",
        "android-wp-byod",
        &[],
        false,
        "reset-passcode",
        &[],
        "not_supported",
        "MANAGEMENT_MODE",
    ),
    (
        "corporate work profile, device-level",
        "android-wp-cope",
        &[],
        false,
        "reset-passcode",
        &[],
        "not_supported",
        "MANAGEMENT_MODE",
    ),
    (
        "work profile 8.0+, token pending",
        "android-wp-byod",
        &[],
        false,
        "reset-passcode",
        &["--scope", "work-profile"],
        "failed",
        "RESET_TOKEN_NOT_ACTIVE",
    ),
    (
        "work profile 8.0+ (personal)",
        "android-wp-byod",
        &[],
        true,
        "reset-passcode",
        &["--scope", "work-profile"],
        "succeeded",
        "",
    ),
    (
        "work profile (corporate)",
        "android-wp-cope",
        &[],
        true,
        "reset-passcode",
        &["--scope", "work-profile"],
        "succeeded",
        "",
    ),
    (
        "work profile on 7.x",
        "android7-wp",
        &[],
        true,
        "reset-passcode",
        &["--scope", "work-profile"],
        "not_supported",
        "API_LEVEL",
    ),
    (
        "Android 7.x, work-profile scope",
        "android7-da",
        &[],
        false,
        "reset-passcode",
        &["--scope", "work-profile"],
        "not_supported",
        "API_LEVEL",
    ),
    (
        "no work-profile passcode policy",
        "android-wp-byod",
        &["--no-passcode-policy"],
        true,
        "reset-passcode",
        &["--scope", "work-profile"],
        "failed",
        "NO_PASSCODE_POLICY",
    ),
    ("AOSP user-associated", "aosp-user", &[], false, "reset-passcode", &[], "succeeded", ""),
    ("AOSP userless", "aosp-userless", &[], false, "reset-passcode", &[], "succeeded", ""),
    ("AOSP lock with policy", "aosp-user", &[], false, "lock", &[], "succeeded", ""),
    ("AOSP lock without policy", "aosp-userless", &[], false, "lock", &[], "failed", "NO_PASSCODE_POLICY"),
    ("iOS reset", "ios", &[], false, "reset-passcode", &[], "not_supported", "PLATFORM_UNSUPPORTED"),
    ("iOS removal", "ios", &[], false, "remove-passcode", &[], "succeeded", ""),
    (
        "iOS User Enrollment reset",
        "ios-user-enrollment",
        &[],
        false,
        "reset-passcode",
        &[],
        "not_supported",
        "USER_ENROLLMENT",
    ),
    (
        "iOS User Enrollment removal",
        "ios-user-enrollment",
        &[],
        false,
        "remove-passcode",
        &[],
        "not_supported",
        "USER_ENROLLMENT",
    ),
    ("macOS reset", "macos", &[], false, "reset-passcode", &[], "not_supported", "PLATFORM_UNSUPPORTED"),
    ("Windows desktop reset", "windows", &[], false, "reset-passcode", &[], "not_supported", "PLATFORM_UNSUPPORTED"),
    ("Windows desktop PIN reset", "windows", &[], false, "reset-pin", &[], "not_supported", "PLATFORM_UNSUPPORTED"),
    ("Windows 10 Mobile PIN recovery", "windows10-mobile", &[], false, "reset-pin", &[], "succeeded", ""),
    (
        "Windows 10 Mobile, recovery off",
        "windows10-mobile",
        &["--pin-recovery-disabled"],
        false,
        "reset-pin",
        &[],
        "failed",
        "PIN_RECOVERY_DISABLED",
    ),
    (
        "Android remove passcode",
        "android-do",
        &[],
        false,
        "remove-passcode",
        &[],
        "not_supported",
        "PLATFORM_UNSUPPORTED",
    ),
];

#[test]
fn every_row_of_the_platform_matrix_end_to_end() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(root.path());
    let mut devices = Vec::new();
    for (i, (_, profile, sim_args, _, _, _, _, _)) in ROWS.iter().enumerate() {
        let mut d = Device::enroll(
            root.path(),
            &format!("row{i:02}"),
            &server,
            DeviceSpec { sim_args, ..DeviceSpec::new(profile) },
        );
        d.start();
        devices.push(d);
    }
    for d in &devices {
        d.wait_checked_in(T);
    }
    let escrowed =
        |id: &str| server.devices().iter().any(|j| j["device_id"] == id && j["unlock_token_escrowed"] == true);
    let mut issued = Vec::new();
    for (row, device) in ROWS.iter().zip(&devices) {
        let (_, profile, _, confirm, action, flags, _, _) = row;
        if *confirm {
            assert_eq!(device.user(&["confirm-credential"], ""), 0);
        }
        if *action == "remove-passcode" && *profile == "ios" {
            wait_until("the unlock token escrow", T, || escrowed(&device.id));
        }
        issued.push(server.action(action, &device.id, flags));
    }
    let mut failures = Vec::new();
    for ((row, device), (command_id, passcode)) in ROWS.iter().zip(&devices).zip(&issued) {
        let (name, _, _, _, action, flags, state, code) = row;
        let result = server.wait_result(command_id, T);
        let mut ok = result["state"] == *state && result["error_code"] == *code;
        let effects = device.effects_for(command_id);
        if *state == "succeeded" {
            ok &= effects == 1;
            if let Some(p) = passcode {
                let scope: &[&str] = if flags.contains(&"work-profile") {
                    &["check-passcode", "--work-profile"]
                } else {
                    &["check-passcode"]
                };
                ok &= device.user(scope, p) == 0;
            }
            if *action == "reset-pin" {
                let listed = server.admin_ok(&["passcodes", "--device", &device.id, "--json"]);
                ok &= listed.contains("device-generated");
            }
        } else {
            ok &= effects == 0;
        }
        if !ok {
            failures.push(format!(
                "{name}: got {} / {} (effects {effects}): {}",
                result["state"], result["error_code"], result["message"]
            ));
        }
    }
    assert!(failures.is_empty(), "rows not as SPEC §3 expects:\n{}", failures.join("\n"));
}

#[test]
fn a_temporary_passcode_that_violates_the_policy_in_force_is_refused_and_changes_nothing() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(root.path());
    let mut device = Device::enroll(root.path(), "strict", &server, DeviceSpec::new("aosp-user"));
    device.start();
    device.wait_checked_in(T);
    // The device receives a stricter policy; the server still knows the old one, so the
    // temporary passcode it generates (six digits) will not satisfy the new one.
    let policy = root.path().join("strict.json");
    std::fs::write(&policy, r#"{"passwordQuality":"PASSWORD_QUALITY_ALPHANUMERIC","passwordMinimumLength":10}"#)
        .expect("policy");
    let out = std::process::Command::new(common::agent_bin())
        .args([
            "sim",
            "set-policy",
            "--state",
            device.sim.to_str().expect("utf8"),
            "--passcode-policy",
            policy.to_str().expect("utf8"),
        ])
        .output()
        .expect("set-policy");
    assert!(out.status.success());
    let (id, passcode) = server.action("reset-passcode", &device.id, &[]);
    let row = server.wait_result(&id, T);
    assert_eq!(row["state"], "failed");
    assert_eq!(row["error_code"], "PASSCODE_NOT_COMPLIANT");
    assert_eq!(row["outputs"]["violations"], "WEAK_CREDENTIAL_TYPE");
    assert_eq!(device.effects_for(&id), 0);
    assert_eq!(device.user(&["check-passcode"], "951753"), 0, "the current passcode changed");
    assert_ne!(device.user(&["check-passcode"], &passcode.expect("passcode")), 0);
}
