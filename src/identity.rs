//! The device identity: one file, `state.dir/identity.json` (0600), holding the device id, the
//! private key (generated here, never sent anywhere), its certificate, the CA the server
//! presented at enrollment and the id of the journal that belongs to this enrollment. Key and
//! certificate always change together — a renewal replaces the whole file in one atomic write —
//! so no crash can leave a key with another key's certificate.
//!
//! Loading checks the identity is usable and says in words what is wrong when it is not (a
//! truncated key, a certificate that is not PEM, a certificate for another key or another
//! device): those need a new enrollment, and the agent exits with a code its service manager does
//! not restart on.
use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Identity failures.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The identity file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The identity is damaged or not this device's; re-enrollment is the way out.
    #[error("the device identity in {path} is unusable: {problem}; remove it and enroll again (`latchkey unenroll --local`, then `latchkey enroll`)")]
    Unusable {
        /// The file.
        path: String,
        /// What is wrong, in words.
        problem: String,
    },
    /// A key could not be generated or a CSR built.
    #[error("generating a key: {0}")]
    Generate(#[from] rcgen::Error),
}

/// The identity file's format.
#[derive(Clone, Serialize, Deserialize)]
struct Stored {
    version: u32,
    device_id: String,
    journal_id: String,
    certificate_pem: String,
    private_key_pem: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    apple: Option<crate::apple::Enrollment>,
}

/// A loaded identity.
#[derive(Clone)]
pub struct Identity {
    /// Server-assigned device id.
    pub device_id: String,
    /// The journal that belongs to this enrollment.
    pub journal_id: String,
    /// Device certificate chain, PEM.
    pub cert_pem: String,
    /// Device private key, PEM.
    pub key_pem: Zeroizing<String>,
    /// An Apple MDM enrollment (the device id is then its UDID or EnrollmentID, and the
    /// certificate came from the enrollment profile, named as its issuer chose).
    pub apple: Option<crate::apple::Enrollment>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").field("device_id", &self.device_id).field("key_pem", &"<redacted>").finish()
    }
}

/// The identity file.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("identity.json")
}

/// A fresh P-256 key and a CSR for it.
pub fn new_key_and_csr() -> Result<(Zeroizing<String>, Vec<u8>), IdentityError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "latchkey-device");
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key)?;
    Ok((Zeroizing::new(key.serialize_pem()), csr.der().to_vec()))
}

/// A new random id for a journal.
pub fn new_journal_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn unusable(path: &Path, problem: impl Into<String>) -> IdentityError {
    IdentityError::Unusable { path: path.display().to_string(), problem: problem.into() }
}

impl Identity {
    /// Loads the identity: `Ok(None)` when the device is not enrolled.
    pub fn load(state_dir: &Path) -> Result<Option<Self>, IdentityError> {
        let file = path(state_dir);
        let io = |source| IdentityError::Io { path: file.display().to_string(), source };
        let bytes = match std::fs::read(&file) {
            Ok(bytes) => Zeroizing::new(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        if let Some(mode) = latchkey_platform::atomic::restrict(&file, 0o600).map_err(io)? {
            tracing::warn!(path = %file.display(), mode = format!("{mode:o}"), "the device identity (it holds the private key) was readable by others; narrowed to 0600 — consider the key exposed and re-enroll");
        }
        let stored: Stored = serde_json::from_slice(&bytes)
            .map_err(|e| unusable(&file, format!("the file is not an identity ({e})")))?;
        let identity = Self {
            device_id: stored.device_id,
            journal_id: stored.journal_id,
            cert_pem: stored.certificate_pem,
            key_pem: Zeroizing::new(stored.private_key_pem),
            apple: stored.apple,
        };
        identity.validate().map_err(|problem| unusable(&file, problem))?;
        Ok(Some(identity))
    }

    /// Checks key and certificate belong together and (native enrollments) to this device.
    pub fn validate(&self) -> Result<(), String> {
        let facts = crate::certificate::facts_from_pem(&self.cert_pem)?;
        let key = KeyPair::from_pem(&self.key_pem)
            .map_err(|_| "the private key is not a usable PEM key (truncated or damaged)".to_owned())?;
        if key.public_key_raw() != facts.public_key.as_slice() {
            return Err("the certificate was issued for another key".into());
        }
        if self.apple.is_none() && facts.common_name.as_deref() != Some(self.device_id.as_str()) {
            return Err(format!(
                "the certificate is for device {:?}, not {:?}",
                facts.common_name.unwrap_or_default(),
                self.device_id
            ));
        }
        Ok(())
    }

    /// Writes the identity in one atomic replace (0600).
    pub fn store(&self, state_dir: &Path) -> Result<(), IdentityError> {
        let file = path(state_dir);
        let stored = Stored {
            version: 1,
            device_id: self.device_id.clone(),
            journal_id: self.journal_id.clone(),
            certificate_pem: self.cert_pem.clone(),
            private_key_pem: self.key_pem.as_str().to_owned(),
            apple: self.apple.clone(),
        };
        let bytes = Zeroizing::new(serde_json::to_vec_pretty(&stored).map_err(|e| unusable(&file, e.to_string()))?);
        drop(stored);
        latchkey_platform::atomic::write(&file, &bytes, 0o600)
            .map_err(|source| IdentityError::Io { path: file.display().to_string(), source })
    }

    /// The same identity with a renewed key and certificate.
    pub fn renewed(&self, cert_pem: String, key_pem: Zeroizing<String>) -> Result<Self, String> {
        let renewed = Self { cert_pem, key_pem, ..self.clone() };
        renewed.validate()?;
        Ok(renewed)
    }

    /// When the certificate expires (Unix seconds).
    pub fn not_after(&self) -> Option<i64> {
        crate::certificate::facts_from_pem(&self.cert_pem).ok().map(|f| f.not_after)
    }

    /// When renewal is due (Unix seconds): `renew_before` ahead of expiry.
    pub fn renew_at(&self, renew_before: std::time::Duration) -> Option<i64> {
        self.not_after().map(|t| t - i64::try_from(renew_before.as_secs()).unwrap_or(i64::MAX / 2))
    }

    /// Deletes the identity file.
    pub fn remove(state_dir: &Path) -> Result<(), IdentityError> {
        let file = path(state_dir);
        match std::fs::remove_file(&file) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(IdentityError::Io { path: file.display().to_string(), source }),
        }
    }
}

/// Creates a directory with mode 0700 (and narrows an existing one).
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.exists() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    latchkey_platform::atomic::restrict(dir, 0o700).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed stand-in for a server-issued certificate, CN = `device_id`.
    fn identity(device_id: &str) -> Identity {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, device_id);
        let cert = params.self_signed(&key).expect("cert");
        Identity {
            device_id: device_id.into(),
            journal_id: new_journal_id(),
            cert_pem: cert.pem(),
            key_pem: Zeroizing::new(key.serialize_pem()),
            apple: None,
        }
    }

    #[test]
    fn round_trips_in_one_private_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(Identity::load(dir.path()).expect("load").is_none());
        let id = identity("dev-1");
        id.store(dir.path()).expect("store");
        let back = Identity::load(dir.path()).expect("load").expect("enrolled");
        assert_eq!((back.device_id.as_str(), back.journal_id.as_str()), ("dev-1", id.journal_id.as_str()));
        let mode = std::fs::metadata(path(dir.path())).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::set_permissions(path(dir.path()), std::fs::Permissions::from_mode(0o644)).expect("chmod");
        Identity::load(dir.path()).expect("load").expect("enrolled");
        let mode = std::fs::metadata(path(dir.path())).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "a readable identity must be narrowed");
    }

    #[test]
    fn damaged_or_foreign_identities_are_explained_in_words() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = identity("dev-1");
        let other = identity("dev-2");
        let cases: Vec<(Identity, &str)> = vec![
            (Identity { key_pem: Zeroizing::new(good.key_pem[..40].to_owned()), ..good.clone() }, "private key"),
            (Identity { cert_pem: "garbage".into(), ..good.clone() }, "not a PEM certificate"),
            (Identity { key_pem: other.key_pem.clone(), ..good.clone() }, "another key"),
            (Identity { device_id: "dev-9".into(), ..good.clone() }, "for device"),
        ];
        for (bad, words) in cases {
            bad.store(dir.path()).expect("store");
            let err = Identity::load(dir.path()).expect_err("must refuse").to_string();
            assert!(err.contains(words), "{err}");
            assert!(err.contains("enroll again"), "{err}");
            assert!(!err.contains("[80, 82"), "bytes instead of words: {err}");
        }
        std::fs::write(path(dir.path()), b"{ truncated").expect("write");
        assert!(matches!(Identity::load(dir.path()), Err(IdentityError::Unusable { .. })));
    }

    #[test]
    fn renewal_keeps_key_and_certificate_together() {
        let id = identity("dev-1");
        let other = identity("dev-1");
        assert!(id.renewed(other.cert_pem.clone(), id.key_pem.clone()).is_err(), "new certificate, old key");
        assert!(id.renewed(other.cert_pem.clone(), other.key_pem.clone()).is_ok());
    }
}
