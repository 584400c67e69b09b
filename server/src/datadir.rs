//! The server's data directory (0700): the enrollment CA, the server identity, the sealing key,
//! the database and the admin socket. `serve` creates it and holds its lock; every other command
//! needs it to exist already — a mistyped `--data` must not mint a new CA.
use std::path::{Path, PathBuf};

/// Data directory problems.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// The directory does not exist (and this command does not create it).
    #[error("no data directory at {0}: start `latchkey-server --data {0} serve` first, or pass the right --data")]
    Missing(String),
    /// Another server holds it.
    #[error("another latchkey-server is already serving {0}")]
    Locked(String),
    /// I/O.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// A data directory.
#[derive(Clone, Debug)]
pub struct DataDir {
    path: PathBuf,
}

/// The serving process's hold on the directory.
pub struct DirLock {
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl DataDir {
    /// An existing directory (every command but `serve`).
    pub fn existing(path: &Path) -> Result<Self, DataDirError> {
        if !path.join("ca.pem").exists() {
            return Err(DataDirError::Missing(path.display().to_string()));
        }
        Ok(Self { path: path.to_owned() })
    }

    /// Creates the directory (0700) if needed and takes its lock: one server per directory.
    pub fn for_serving(path: &Path) -> Result<(Self, DirLock), DataDirError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let io = |p: &Path| {
            let p = p.display().to_string();
            move |source| DataDirError::Io { path: p, source }
        };
        if !path.exists() {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(path).map_err(io(path))?;
        }
        latchkey_platform::atomic::restrict(path, 0o700).map_err(io(path))?;
        let lock_path = path.join("server.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|_| DataDirError::Locked(path.display().to_string()))?;
        Ok((Self { path: path.to_owned() }, DirLock { _lock: lock }))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The database.
    pub fn db(&self) -> PathBuf {
        self.path.join("latchkey.db")
    }

    /// The admin wake socket.
    pub fn admin_socket(&self) -> PathBuf {
        self.path.join("admin.sock")
    }

    /// The sealing key.
    pub fn secrets_key(&self) -> PathBuf {
        self.path.join("secrets.key")
    }
}
