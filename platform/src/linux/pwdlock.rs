//! The account-database lock every shadow-utils tool takes: `lckpwdf(3)` opens `/etc/.pwd.lock`
//! (`O_WRONLY|O_CREAT`, 0600) and holds a POSIX write lock on it, waiting up to 15 seconds.
//! Taking the same lock keeps `passwd`, `useradd` and `chpasswd` from interleaving with us.
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg};

/// How long `lckpwdf` waits (glibc `TIMEOUT`).
pub const WAIT: Duration = Duration::from_secs(15);

/// The held lock; released when dropped (closing the file drops a POSIX lock).
#[derive(Debug)]
pub struct PwdLock {
    _file: File,
}

/// Takes `<root>/etc/.pwd.lock`, waiting up to `wait`.
pub fn lock(root: &Path, wait: Duration) -> std::io::Result<PwdLock> {
    let path = root.join("etc/.pwd.lock");
    let file = OpenOptions::new().write(true).create(true).truncate(false).mode(0o600).open(&path)?;
    let request = nix::libc::flock {
        l_type: nix::libc::F_WRLCK as _,
        l_whence: nix::libc::SEEK_SET as _,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    let deadline = Instant::now() + wait;
    loop {
        match fcntl(&file, FcntlArg::F_SETLK(&request)) {
            Ok(_) => return Ok(PwdLock { _file: file }),
            Err(nix::errno::Errno::EACCES | nix::errno::Errno::EAGAIN) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(nix::errno::Errno::EACCES | nix::errno::Errno::EAGAIN) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    format!("{} is held by another account tool", path.display()),
                ))
            }
            Err(e) => return Err(std::io::Error::from(e)),
        }
    }
}
