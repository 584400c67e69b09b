//! The secret store. On Linux the durable copy of a secret is a 0600 file under
//! `state.dir/secrets/` written atomically (the kernel keyring forgets at reboot, and headless
//! devices have no Secret Service); platforms with a persistent OS keystore reach it through the
//! bridge port instead. Values are hex-encoded and zeroed after use.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use latchkey_platform::SecretBytes;

/// A 0600 file-backed secret store.
pub struct SecretStore {
    dir: PathBuf,
}

impl SecretStore {
    /// Opens (creating 0700) the store under `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Self> {
        let dir = state_dir.join("secrets");
        crate::identity::create_private_dir(&dir)?;
        Ok(Self { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Reads a secret.
    pub fn get(&self, name: &str) -> Result<Option<SecretBytes>> {
        match std::fs::read_to_string(self.path(name)) {
            Ok(text) => {
                let text = zeroize::Zeroizing::new(text);
                SecretBytes::from_hex(text.trim()).map(Some).with_context(|| format!("secret {name} is corrupt"))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading secret {name}")),
        }
    }

    /// Stores a secret atomically.
    pub fn put(&self, name: &str, value: &SecretBytes) -> Result<()> {
        latchkey_platform::atomic::write(&self.path(name), value.to_hex().expose().as_bytes(), 0o600)
            .with_context(|| format!("writing secret {name}"))
    }

    /// True when a probe secret can be written, read back and removed.
    pub fn usable(&self) -> Result<()> {
        let probe = SecretBytes::random(16);
        self.put(".probe", &probe)?;
        let back = self.get(".probe")?.context("probe vanished")?;
        std::fs::remove_file(self.path(".probe"))?;
        anyhow::ensure!(back.ct_eq(probe.expose()), "probe read back differently");
        Ok(())
    }
}
