//! The README's main command: `latchkey demo` prints the device-actions table and exits 0.
mod common;

#[test]
fn the_demo_runs_every_row_and_exits_zero() {
    let out = std::process::Command::new(common::agent_bin()).arg("demo").output().expect("demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("DEVICE") && stdout.contains("ERROR CODE"), "no table:\n{stdout}");
    for code in [
        "API_LEVEL",
        "MANAGEMENT_MODE",
        "NO_PASSCODE_POLICY",
        "RESET_TOKEN_NOT_ACTIVE",
        "UNLOCK_TOKEN_MISMATCH",
        "USER_ENROLLMENT",
        "PIN_RECOVERY_DISABLED",
    ] {
        assert!(stdout.contains(code), "the demo never shows {code}");
    }
    assert!(!stdout.contains(" NO "), "a row did not match:\n{stdout}");
}
