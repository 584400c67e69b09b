//! systemd service notification (`Type=notify`): READY when the agent is up, STOPPING on
//! shutdown, RELOADING on SIGHUP, and the watchdog period (pings come from `watchdog`). A no-op
//! outside systemd.
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Sends one notification to `$NOTIFY_SOCKET`, if set.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let Ok(socket) = UnixDatagram::unbound() else { return };
    // Abstract-namespace sockets ("@name") are Linux-only and need an address type std does not
    // expose portably; systemd uses a filesystem path for services by default.
    let _ = socket.send_to(state.as_bytes(), path);
}

/// The watchdog period systemd asked for (`WATCHDOG_USEC`), if it is meant for this process.
pub fn watchdog_period() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Some(pid) = std::env::var("WATCHDOG_PID").ok().and_then(|p| p.parse::<u32>().ok()) {
        if pid != std::process::id() {
            return None;
        }
    }
    Some(Duration::from_micros(usec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_reach_the_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let receiver = UnixDatagram::bind(&path).expect("bind");
        // No other test in this binary reads NOTIFY_SOCKET.
        std::env::set_var("NOTIFY_SOCKET", &path);
        notify("READY=1");
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1");
    }
}
