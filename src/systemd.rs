//! systemd service notification (`Type=notify`): READY when the agent is up, STOPPING on
//! shutdown, RELOADING on SIGHUP, and the watchdog period (pings come from `watchdog`). A no-op
//! outside systemd.
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Sends one notification to `$NOTIFY_SOCKET`, if set.
pub fn notify(state: &str) {
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET") {
        notify_to(&path, state);
    }
}

/// Tells systemd a reload started (`RELOADING=1` with the monotonic time systemd 253+ wants);
/// `READY=1` ends it.
pub fn reloading() {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000)
        .unwrap_or(0);
    notify(&format!("RELOADING=1\nMONOTONIC_USEC={now}"));
}

/// Sends one notification to a notify socket: a path, or `@name` in the abstract namespace.
fn notify_to(socket_name: &std::ffi::OsStr, state: &str) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(socket) = UnixDatagram::unbound() else { return };
    let name = socket_name.as_bytes();
    if let Some(abstract_name) = name.strip_prefix(b"@") {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            use std::os::linux::net::SocketAddrExt;
            if let Ok(addr) = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name) {
                let _ = socket.send_to_addr(state.as_bytes(), &addr);
            }
        }
        return;
    }
    let _ = socket.send_to(state.as_bytes(), socket_name);
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
        notify_to(path.as_os_str(), "READY=1");
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn notifications_reach_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("latchkey-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("addr");
        let receiver = UnixDatagram::bind_addr(&addr).expect("bind");
        notify_to(std::ffi::OsStr::new(&format!("@{name}")), "STOPPING=1");
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"STOPPING=1");
    }
}
