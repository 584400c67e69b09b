//! Every row of the platform matrix through the real server and real agent processes: one
//! simulated device per row, its admin requests in order, the expected state and error code,
//! and — for successes — the effect visible on the device exactly once.
mod common;

use std::path::Path;
use std::time::Duration;

use common::{Device, DeviceSpec, Server};
use latchkey_platform::matrix;
use latchkey_platform::sim::SimState;
use latchkey_platform::Status;
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

/// Runs `latchkey demo --json` (real server and agent processes, one simulated device per
/// matrix row) and checks every outcome against [`matrix::DEVICES`] here, independently of the
/// demo's own verdict: the state and error code the server recorded, the outputs, and the
/// effects on the device's persisted simulator state.
#[test]
fn every_row_of_the_platform_matrix_end_to_end() {
    let root = tempfile::tempdir().expect("tempdir");
    let kept = root.path().join("demo");
    let out = std::process::Command::new(common::agent_bin())
        .args(["demo", "--json", "--keep"])
        .arg(&kept)
        .env("LATCHKEY_SERVER_BIN", common::server_bin())
        .output()
        .expect("demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    let expected: Vec<_> = matrix::steps().collect();
    assert_eq!(
        lines.len(),
        expected.len(),
        "one line per matrix step; stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut failures = Vec::new();
    for (line, (device, step)) in lines.iter().zip(&expected) {
        let mut problems = Vec::new();
        if line["device"] != device.label || line["profile"] != device.profile {
            problems.push(format!("line is for {} / {}", line["device"], line["profile"]));
        }
        let code = step.code.map(|c| c.as_str()).unwrap_or_default();
        if line["state"] != step.status.as_str() || line["error_code"] != code {
            problems.push(format!(
                "expected {} {code}, got {} {}",
                step.status.as_str(),
                line["state"],
                line["error_code"]
            ));
        }
        let sim = SimState::load(Path::new(line["sim_state"].as_str().unwrap_or_default())).expect("sim state");
        let command_id = line["command_id"].as_str().unwrap_or_default();
        let kinds: Vec<&str> =
            sim.effects.iter().filter(|e| e.command_id == command_id).map(|e| e.kind.as_str()).collect();
        let mut distinct = kinds.clone();
        distinct.sort_unstable();
        distinct.dedup();
        if step.status == Status::Succeeded {
            if kinds.is_empty() || distinct.len() != kinds.len() {
                problems.push(format!("effects on the device: {kinds:?} (want each once)"));
            }
        } else if !kinds.is_empty() {
            problems.push(format!("a refused action left effects: {kinds:?}"));
        }
        if line["ok"] != true {
            problems.push(format!("the demo saw: {}", line["problems"]));
        }
        if !problems.is_empty() {
            failures.push(format!("{} step {}: {}", device.label, line["step"], problems.join("; ")));
        }
    }
    assert!(failures.is_empty(), "rows not as the matrix expects:\n{}", failures.join("\n"));
    assert!(out.status.success(), "the demo exited {:?}", out.status);
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
