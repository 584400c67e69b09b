//! Password hashing in the system's own crypt format — `ENCRYPT_METHOD` of `<root>/etc/login.defs`:
//! YESCRYPT (`$y$`, Debian 11+ default), SHA512 (`$6$`) or SHA256 (`$5$`); SHA512 when unset or
//! weaker (we never write DES or MD5).
use std::fs;
use std::path::Path;

use crate::port::PortError;
use crate::secret::Secret;

/// A crypt scheme the port can write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CryptMethod {
    /// `$y$`.
    Yescrypt,
    /// `$6$`.
    Sha512,
    /// `$5$`.
    Sha256,
}

/// The system's configured scheme, from `ENCRYPT_METHOD` in `<root>/etc/login.defs`.
pub fn crypt_method(root: &Path) -> CryptMethod {
    let text = fs::read_to_string(root.join("etc/login.defs")).unwrap_or_default();
    let method = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix("ENCRYPT_METHOD"))
        .map(|v| v.trim().to_ascii_uppercase());
    match method.as_deref() {
        Some("YESCRYPT") => CryptMethod::Yescrypt,
        Some("SHA256") => CryptMethod::Sha256,
        _ => CryptMethod::Sha512,
    }
}

/// Hashes a password in the given crypt format (random salt, default cost).
pub fn crypt(method: CryptMethod, password: &Secret) -> Result<String, PortError> {
    use password_hash::PasswordHasher;
    let failed = |_| PortError::Unavailable("crypt failed".into());
    let mut salt = [0u8; 12];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)
        .map_err(|_| PortError::Unavailable("no randomness for a salt".into()))?;
    let bytes = password.expose().as_bytes();
    match method {
        CryptMethod::Yescrypt => {
            yescrypt::Yescrypt::default().hash_password_with_salt(bytes, &salt).map(|h| h.to_string()).map_err(failed)
        }
        // 12 bytes make the 16 base64 characters glibc's SHA-crypt reads: a longer salt is
        // silently cut to 16 by crypt(3), so the system would compute another hash than ours.
        CryptMethod::Sha512 => {
            sha_crypt::ShaCrypt::SHA512.hash_password_with_salt(bytes, &salt).map(|h| h.to_string()).map_err(failed)
        }
        CryptMethod::Sha256 => {
            sha_crypt::ShaCrypt::SHA256.hash_password_with_salt(bytes, &salt).map(|h| h.to_string()).map_err(failed)
        }
    }
}

/// Whether `password` matches a `$y$`, `$6$` or `$5$` shadow hash.
pub fn crypt_matches(password: &Secret, hashed: &str) -> bool {
    use password_hash::PasswordVerifier;
    let bytes = password.expose().as_bytes();
    if hashed.starts_with("$y$") {
        yescrypt::Yescrypt::default().verify_password(bytes, hashed).is_ok()
    } else if hashed.starts_with("$6$") || hashed.starts_with("$5$") {
        sha_crypt::ShaCrypt::default().verify_password(bytes, hashed).is_ok()
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hashes made by the system's own libxcrypt (Debian 12, `crypt(3)`), password `Tmp-4821x`.
    const SYSTEM_VECTORS: [&str; 3] = [
        "$6$rjUcUYIpu5hlYQcI$H7q0iS6ApkqXS6v7yWu2A9shGBFA8XNAS/1.KEhbUWjCjAWCpGtUNqGoxjAuEQq33Nf4JEHf6LRHi9T9SJ3Za1",
        "$5$x8X7co3YVTeQdUfE$rg1hNNlNJwc/J4.sHSxT7zxkmaNFC3cDgzQPAQRpvl0",
        "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$HW8bPZKZkTQCjO9XVpMPyf7a.Z6HGMKQ/wqUo7EqwD5",
    ];

    #[test]
    fn verifies_hashes_made_by_the_system_crypt() {
        for vector in SYSTEM_VECTORS {
            assert!(crypt_matches(&Secret::from("Tmp-4821x"), vector), "{vector}");
            assert!(!crypt_matches(&Secret::from("Tmp-4821y"), vector), "{vector}");
        }
        assert!(!crypt_matches(&Secret::from(""), "!"));
    }
}
