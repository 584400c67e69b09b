//! Secrets at rest on the reference server — escrowed unlock and reset tokens, temporary
//! passcodes, device PINs, lock PINs — are sealed with AES-256-GCM under `secrets.key` (32 random
//! bytes, 0600) before they reach the database. A copy of the database alone (a backup, a stolen
//! disk image of the DB volume) reveals none of them; the key file is kept beside it in the
//! 0700 data directory, so this does not protect against someone who can read the whole data
//! directory — keep the key elsewhere (`--secrets-key`) for that. Each value is bound to where it
//! belongs (device and kind, or command) so a sealed value cannot be moved to another row.
use std::path::Path;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

/// Vault failures.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The key file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The key file is not 32 bytes.
    #[error("{0} is not a 32-byte key")]
    BadKey(String),
    /// A sealed value failed authentication (wrong key, or moved or altered).
    #[error("a sealed value does not open with this server's key (wrong secrets.key, or the value was altered)")]
    Unseal,
}

/// The sealing key.
pub struct Vault {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl Vault {
    /// Loads the key at `path`, creating it (0600) when `create` and it is missing.
    pub fn load(path: &Path, create: bool) -> Result<Self, VaultError> {
        let io = |source| VaultError::Io { path: path.display().to_string(), source };
        if create && !path.exists() {
            let mut bytes = Zeroizing::new([0u8; 32]);
            SystemRandom::new().fill(bytes.as_mut()).map_err(|_| io(std::io::Error::other("no randomness")))?;
            latchkey_platform::atomic::write(path, bytes.as_ref(), 0o600).map_err(io)?;
        }
        if let Some(mode) = latchkey_platform::atomic::restrict(path, 0o600).map_err(io)? {
            tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "secrets key was readable by others; narrowed to 0600");
        }
        let bytes = Zeroizing::new(std::fs::read(path).map_err(io)?);
        let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| VaultError::BadKey(path.display().to_string()))?;
        Ok(Self { key: LessSafeKey::new(key), rng: SystemRandom::new() })
    }

    /// Seals `plaintext` for the row `context` names: nonce ‖ ciphertext ‖ tag.
    pub fn seal(&self, plaintext: &[u8], context: &str) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        // SystemRandom only fails when the OS has no randomness at all; a zero nonce would then be
        // reused, so stop instead.
        if self.rng.fill(&mut nonce).is_err() {
            panic!("the operating system's random number generator failed");
        }
        let mut buffer = plaintext.to_vec();
        let tag = self.key.seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(context.as_bytes()),
            &mut buffer,
        );
        let Ok(tag) = tag else { panic!("AES-GCM sealing failed") };
        let mut out = Vec::with_capacity(NONCE_LEN + buffer.len() + tag.as_ref().len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buffer);
        out.extend_from_slice(tag.as_ref());
        zeroize::Zeroize::zeroize(&mut buffer);
        out
    }

    /// Opens a value sealed for `context`.
    pub fn open(&self, sealed: &[u8], context: &str) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        if sealed.len() < NONCE_LEN {
            return Err(VaultError::Unseal);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| VaultError::Unseal)?;
        let mut buffer = Zeroizing::new(body.to_vec());
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut buffer)
            .map_err(|_| VaultError::Unseal)?;
        Ok(Zeroizing::new(plain.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_open_only_with_their_key_and_context() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vault = Vault::load(&dir.path().join("secrets.key"), true).expect("key");
        let sealed = vault.seal(b"CANARY-TOKEN", "escrow:unlock:d1");
        assert!(!sealed.windows(12).any(|w| w == b"CANARY-TOKEN"), "sealed value holds the plaintext");
        assert_eq!(vault.open(&sealed, "escrow:unlock:d1").expect("open").as_slice(), b"CANARY-TOKEN");
        assert!(vault.open(&sealed, "escrow:unlock:d2").is_err(), "moved to another device");
        let other = Vault::load(&dir.path().join("other.key"), true).expect("key");
        assert!(other.open(&sealed, "escrow:unlock:d1").is_err());
        assert!(Vault::load(&dir.path().join("missing.key"), false).is_err());
    }
}
