//! The device identity under `state.dir/identity/`: `device.key` (0600, generated here, never
//! sent anywhere), `device.pem`, `server-ca.pem`, `device_id`. Every file is written atomically.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use zeroize::Zeroizing;

/// A loaded identity.
pub struct Identity {
    /// Server-assigned device id.
    pub device_id: String,
    /// Device certificate chain, PEM.
    pub cert_pem: String,
    /// Device private key, PEM.
    pub key_pem: Zeroizing<String>,
    /// The CA the server presented at enrollment, PEM.
    pub server_ca_pem: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").field("device_id", &self.device_id).field("key_pem", &"<redacted>").finish()
    }
}

/// The identity directory.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("identity")
}

/// A fresh P-256 key and a CSR for it.
pub fn new_key_and_csr() -> Result<(Zeroizing<String>, Vec<u8>)> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "latchkey-device");
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key)?;
    Ok((Zeroizing::new(key.serialize_pem()), csr.der().to_vec()))
}

impl Identity {
    /// Loads the identity, if the device is enrolled.
    pub fn load(state_dir: &Path) -> Result<Option<Self>> {
        let dir = dir(state_dir);
        if !dir.join("device_id").exists() {
            return Ok(None);
        }
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name)).with_context(|| format!("reading {}", dir.join(name).display()))
        };
        Ok(Some(Self {
            device_id: read("device_id")?.trim().to_owned(),
            cert_pem: read("device.pem")?,
            key_pem: Zeroizing::new(read("device.key")?),
            server_ca_pem: read("server-ca.pem")?,
        }))
    }

    /// Writes the identity; `device_id` last, so a crash mid-way leaves "not enrolled".
    pub fn store(&self, state_dir: &Path) -> Result<()> {
        let dir = dir(state_dir);
        create_private_dir(&dir)?;
        let write = |name: &str, text: &str, mode: u32| {
            latchkey_platform::atomic::write(&dir.join(name), text.as_bytes(), mode)
                .with_context(|| format!("writing {}", dir.join(name).display()))
        };
        write("device.key", &self.key_pem, 0o600)?;
        write("device.pem", &self.cert_pem, 0o644)?;
        write("server-ca.pem", &self.server_ca_pem, 0o644)?;
        write("device_id", &self.device_id, 0o644)
    }

    /// When the certificate expires (Unix seconds).
    pub fn not_after(&self) -> Option<i64> {
        use rustls::pki_types::pem::PemObject;
        let der = rustls::pki_types::CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).ok()?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
        Some(cert.validity().not_after.timestamp())
    }

    /// True when less than `renew_before` of validity remains.
    pub fn needs_renewal(&self, now_secs: i64, renew_before: std::time::Duration) -> bool {
        self.not_after().is_some_and(|t| t - now_secs < renew_before.as_secs() as i64)
    }
}

/// Creates a directory with mode 0700.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod {}", dir.display()))
}
