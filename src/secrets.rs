//! The secret store. On Linux the durable copy of a secret is a 0600 file under
//! `state.dir/secrets/` written atomically (the kernel keyring forgets at reboot, and headless
//! devices have no Secret Service); platforms with a persistent OS keystore reach it through the
//! bridge port instead. Values are hex-encoded and zeroed after use.
use std::path::{Path, PathBuf};

use latchkey_platform::SecretBytes;

/// Secret store failures; they name the secret, never show it.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// A secret file could not be read or written.
    #[error("secret {name}: {source}")]
    Io {
        /// The secret.
        name: String,
        /// Why.
        source: std::io::Error,
    },
    /// A secret file does not hold a secret.
    #[error("secret {name} in {path} is corrupt; remove the file and the agent makes a new one (for the reset token the user is asked to confirm their passcode again)")]
    Corrupt {
        /// The secret.
        name: String,
        /// Its file.
        path: String,
    },
}

/// A 0600 file-backed secret store.
pub struct SecretStore {
    dir: PathBuf,
}

impl SecretStore {
    /// Opens (creating 0700) the store under `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Self, SecretError> {
        let dir = state_dir.join("secrets");
        crate::identity::create_private_dir(&dir).map_err(|source| SecretError::Io { name: "store".into(), source })?;
        Ok(Self { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Reads a secret.
    pub fn get(&self, name: &str) -> Result<Option<SecretBytes>, SecretError> {
        match std::fs::read_to_string(self.path(name)) {
            Ok(text) => {
                let text = zeroize::Zeroizing::new(text);
                SecretBytes::from_hex(text.trim()).filter(|b| !b.is_empty()).map(Some).ok_or_else(|| {
                    SecretError::Corrupt { name: name.into(), path: self.path(name).display().to_string() }
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(SecretError::Io { name: name.into(), source }),
        }
    }

    /// Stores a secret atomically.
    pub fn put(&self, name: &str, value: &SecretBytes) -> Result<(), SecretError> {
        latchkey_platform::atomic::write(&self.path(name), value.to_hex().expose().as_bytes(), 0o600)
            .map_err(|source| SecretError::Io { name: name.into(), source })
    }

    /// Checks every stored secret reads back; names the first that does not.
    pub fn verify(&self) -> Result<usize, SecretError> {
        let entries =
            std::fs::read_dir(&self.dir).map_err(|source| SecretError::Io { name: "store".into(), source })?;
        let mut n = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            self.get(&name)?;
            n += 1;
        }
        Ok(n)
    }

    /// True when a probe secret can be written, read back and removed.
    pub fn usable(&self) -> Result<(), SecretError> {
        let probe = SecretBytes::random(16);
        self.put(".probe", &probe)?;
        let back = self.get(".probe")?;
        std::fs::remove_file(self.path(".probe"))
            .map_err(|source| SecretError::Io { name: ".probe".into(), source })?;
        match back {
            Some(b) if b.ct_eq(probe.expose()) => Ok(()),
            _ => Err(SecretError::Corrupt { name: ".probe".into(), path: self.path(".probe").display().to_string() }),
        }
    }

    /// Deletes every secret (unenrollment).
    pub fn remove_all(state_dir: &Path) -> std::io::Result<()> {
        match std::fs::remove_dir_all(state_dir.join("secrets")) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}
