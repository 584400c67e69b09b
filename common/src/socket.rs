//! Unix sockets that are private from the moment they appear: bound inside a 0700 staging
//! directory beside the target, narrowed to 0600 there, then renamed into place — no window in
//! which another user could connect before the mode is set.
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Binds a 0600 Unix socket at `path`, replacing a stale one, for async use (call within a tokio
/// runtime).
pub fn bind_private(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    let listener = bind_private_std(path)?;
    listener.set_nonblocking(true)?;
    tokio::net::UnixListener::from_std(listener)
}

/// Binds a 0600 Unix socket at `path`, replacing a stale one, for blocking use.
pub fn bind_private_std(path: &Path) -> std::io::Result<std::os::unix::net::UnixListener> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let staging = tempfile::Builder::new()
        .prefix(".staging.")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(dir)?;
    let staged = staging.path().join("socket");
    let listener = std::os::unix::net::UnixListener::bind(&staged)?;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::rename(&staged, path)?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_socket_is_private_and_replaces_a_stale_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("control.sock");
        std::fs::write(&path, b"stale").expect("stale");
        let _listener = bind_private(&path).expect("bind");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        tokio::net::UnixStream::connect(&path).await.expect("connect");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).expect("ls").collect();
        assert_eq!(leftovers.len(), 1, "staging directory left behind");
    }
}
