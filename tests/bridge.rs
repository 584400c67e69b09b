//! The platform bridge: the simulator served over the bridge socket passes the conformance
//! checks, and an agent whose port is the bridge applies commands end to end.
mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{agent_bin, wait_until, Device, DeviceSpec, Server};

struct Bridge(Child);

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve_bridge(sim: &std::path::Path, socket: &std::path::Path) -> Bridge {
    let child = Command::new(agent_bin())
        .args(["sim", "bridge", "--state", sim.to_str().expect("utf8"), "--socket", socket.to_str().expect("utf8")])
        .stderr(Stdio::null())
        .spawn()
        .expect("sim bridge");
    wait_until("the bridge socket", Duration::from_secs(10), || socket.exists());
    Bridge(child)
}

fn init_sim(path: &std::path::Path, profile: &str) {
    let out = Command::new(agent_bin())
        .args(["sim", "init", "--state", path.to_str().expect("utf8"), "--profile", profile])
        .output()
        .expect("sim init");
    assert!(out.status.success());
}

#[test]
fn the_simulator_bridge_passes_conformance() {
    for profile in ["android-do", "ios", "windows10-mobile"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (sim, socket) = (dir.path().join("sim.json"), dir.path().join("bridge.sock"));
        init_sim(&sim, profile);
        let _bridge = serve_bridge(&sim, &socket);
        let out = Command::new(agent_bin())
            .args(["bridge", "conformance", "--socket", socket.to_str().expect("utf8")])
            .output()
            .expect("conformance");
        assert!(out.status.success(), "{profile}: {}", String::from_utf8_lossy(&out.stdout));
    }
}

#[test]
fn an_agent_applies_commands_through_the_bridge() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(root.path());
    let (sim, socket) = (root.path().join("bridged-sim.json"), root.path().join("bridge.sock"));
    init_sim(&sim, "android-do");
    let bridge = serve_bridge(&sim, &socket);
    let platform = format!("[platform]\nport = \"bridge\"\nbridge_socket = \"{}\"\n", socket.display());
    let mut device = Device::enroll(
        root.path(),
        "bridged",
        &server,
        DeviceSpec { platform: Some(platform), ..DeviceSpec::new("android-do") },
    );
    device.start();
    device.wait_checked_in(Duration::from_secs(30));
    // The bridge restarts (as a DPC app may) after the agent registered its reset token.
    drop(bridge);
    std::fs::remove_file(&socket).ok();
    let _bridge = serve_bridge(&sim, &socket);
    let (id, passcode) = server.action("reset-passcode", &device.id, &[]);
    let row = server.wait_result(&id, Duration::from_secs(30));
    assert_eq!(row["state"], "succeeded", "{row}");
    let check = common::run_with_stdin(
        Command::new(agent_bin()).args(["sim", "user", "--state", sim.to_str().expect("utf8"), "check-passcode"]),
        &passcode.expect("passcode"),
    );
    assert!(check.status.success(), "the bridged device does not hold the new passcode");
}
