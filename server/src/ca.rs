//! The enrollment CA and the server identity in the data directory: `ca.pem`, `ca.key` (0600),
//! `server.pem`, `server.key` (0600). Only `serve` creates them ([`Authority::ensure`]); it also
//! reissues the server certificate when it does not cover every name asked for
//! (`--server-name`). Every other command only reads ([`Authority::load`]). Device certificates
//! carry the device id as their common name.
use std::path::Path;
use std::time::Duration as StdDuration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

use crate::records::CertInfo;

/// Device certificate lifetime by default; agents renew before it ends.
pub const DEVICE_CERT_LIFETIME: StdDuration = StdDuration::from_secs(30 * 24 * 3600);

/// Names every server certificate covers.
const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// CA failures.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Key or certificate material is unusable.
    #[error("{path}: {problem}")]
    Material {
        /// The file.
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
}

/// The CA and the server's own key material.
pub struct Authority {
    /// CA certificate, PEM (what agents trust).
    pub ca_pem: String,
    ca_key: KeyPair,
    /// Server certificate chain, PEM.
    pub server_cert_pem: String,
    /// Server private key, PEM.
    pub server_key_pem: zeroize::Zeroizing<String>,
    /// Device certificate lifetime.
    pub device_cert_lifetime: StdDuration,
}

/// A signed device certificate.
pub struct DeviceCert {
    /// PEM.
    pub pem: String,
    /// Fingerprint and expiry.
    pub info: CertInfo,
}

fn read(path: &Path) -> Result<String, CaError> {
    std::fs::read_to_string(path).map_err(|source| CaError::Io { path: path.display().to_string(), source })
}

/// Reads a private key, narrowing its mode to 0600 (and warning) if others could read it.
fn read_private(path: &Path) -> Result<zeroize::Zeroizing<String>, CaError> {
    let io = |source| CaError::Io { path: path.display().to_string(), source };
    if let Some(mode) = latchkey_platform::atomic::restrict(path, 0o600).map_err(io)? {
        tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "private key was readable by others; narrowed to 0600 — consider it exposed");
    }
    Ok(zeroize::Zeroizing::new(read(path)?))
}

fn write_private(path: &Path, text: &str) -> Result<(), CaError> {
    latchkey_platform::atomic::write(path, text.as_bytes(), 0o600)
        .map_err(|source| CaError::Io { path: path.display().to_string(), source })
}

fn write_public(path: &Path, text: &str) -> Result<(), CaError> {
    latchkey_platform::atomic::write(path, text.as_bytes(), 0o644)
        .map_err(|source| CaError::Io { path: path.display().to_string(), source })
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Latchkey Enrollment CA");
    dn.push(DnType::OrganizationName, "Latchkey");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(3650);
    params
}

/// The DNS names and IP addresses a certificate (PEM) covers.
pub fn covered_names(cert_pem: &str) -> Vec<String> {
    use rustls::pki_types::pem::PemObject;
    let Ok(der) = rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes()) else { return Vec::new() };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&der) else { return Vec::new() };
    let Ok(Some(san)) = cert.subject_alternative_name() else { return Vec::new() };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::DNSName(dns) => Some(dns.to_string()),
            x509_parser::extensions::GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => <[u8; 4]>::try_from(*bytes).ok().map(|b| std::net::IpAddr::from(b).to_string()),
                16 => <[u8; 16]>::try_from(*bytes).ok().map(|b| std::net::IpAddr::from(b).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// A certificate's fingerprint and expiry.
pub fn cert_info(der: &[u8]) -> Option<CertInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let sha256 = latchkey_common::hex::encode_public(ring::digest::digest(&ring::digest::SHA256, der).as_ref());
    Some(CertInfo { sha256, not_after: cert.validity().not_after.timestamp() })
}

impl Authority {
    /// Reads the CA and server identity; fails if they do not exist.
    pub fn load(dir: &Path) -> Result<Self, CaError> {
        let ca_pem = read(&dir.join("ca.pem"))?;
        let key_path = dir.join("ca.key");
        let ca_key = KeyPair::from_pem(&read_private(&key_path)?).map_err(|e| CaError::Material {
            path: key_path.display().to_string(),
            problem: format!("not a usable private key ({e})"),
        })?;
        Ok(Self {
            ca_pem,
            ca_key,
            server_cert_pem: read(&dir.join("server.pem"))?,
            server_key_pem: read_private(&dir.join("server.key"))?,
            device_cert_lifetime: DEVICE_CERT_LIFETIME,
        })
    }

    /// Creates the CA when missing, and (re)issues the server certificate when it is missing or
    /// does not cover every name in `server_names`.
    pub fn ensure(dir: &Path, server_names: &[String]) -> Result<Self, CaError> {
        let (ca_cert, ca_key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
        if !ca_cert.exists() {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            let cert = ca_params().self_signed(&key)?;
            write_private(&ca_key_path, &key.serialize_pem())?;
            write_public(&ca_cert, &cert.pem())?;
        }
        let mut names: Vec<String> = LOOPBACK_NAMES.iter().map(|n| (*n).to_owned()).collect();
        for name in server_names {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        let server_cert = dir.join("server.pem");
        let covered = if server_cert.exists() { covered_names(&read(&server_cert)?) } else { Vec::new() };
        if names.iter().any(|n| !covered.contains(n)) {
            let (ca_pem, ca_key) = Self::load_ca_only(dir)?;
            issue_server_cert(dir, &ca_pem, &ca_key, &names)?;
            tracing::info!(names = %names.join(","), "server certificate issued");
        }
        Self::load(dir)
    }

    fn load_ca_only(dir: &Path) -> Result<(String, KeyPair), CaError> {
        let key_path = dir.join("ca.key");
        let key = KeyPair::from_pem(&read_private(&key_path)?).map_err(|e| CaError::Material {
            path: key_path.display().to_string(),
            problem: format!("not a usable private key ({e})"),
        })?;
        Ok((read(&dir.join("ca.pem"))?, key))
    }

    /// Signs a device CSR: the subject becomes `CN=<device_id>`, client-auth only.
    pub fn sign_device_csr(&self, csr_der: &[u8], device_id: &str) -> Result<DeviceCert, String> {
        let der = rustls::pki_types::CertificateSigningRequestDer::from(csr_der.to_vec());
        let mut csr = CertificateSigningRequestParams::from_der(&der).map_err(|e| format!("invalid CSR: {e}"))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, device_id);
        csr.params.distinguished_name = dn;
        csr.params.subject_alt_names = Vec::new();
        csr.params.is_ca = IsCa::ExplicitNoCa;
        csr.params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        csr.params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let now = OffsetDateTime::now_utc();
        csr.params.not_before = now - Duration::minutes(5);
        let lifetime = Duration::seconds(i64::try_from(self.device_cert_lifetime.as_secs()).unwrap_or(i64::MAX));
        csr.params.not_after = now + lifetime;
        let issuer = Issuer::from_ca_cert_pem(&self.ca_pem, &self.ca_key).map_err(|e| e.to_string())?;
        let cert = csr.signed_by(&issuer).map_err(|e| format!("signing failed: {e}"))?;
        let info = cert_info(cert.der()).ok_or("the issued certificate does not parse")?;
        Ok(DeviceCert { pem: cert.pem(), info })
    }
}

/// Issues the server certificate for `names` under the CA.
fn issue_server_cert(dir: &Path, ca_pem: &str, ca_key: &KeyPair, names: &[String]) -> Result<(), CaError> {
    let issuer = Issuer::from_ca_cert_pem(ca_pem, ca_key)?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(names.to_vec())?;
    params.distinguished_name.push(DnType::CommonName, "latchkey-server");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(825);
    let cert = params.signed_by(&key, &issuer)?;
    write_private(&dir.join("server.key"), &key.serialize_pem())?;
    write_public(&dir.join("server.pem"), &format!("{}{ca_pem}", cert.pem()))
}

/// The common name of a DER certificate (the device id for device certificates).
pub fn common_name(cert_der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?.to_owned();
    Some(cn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_reissues_the_server_certificate_for_new_names_and_load_only_reads() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(Authority::load(dir.path()).is_err(), "load must not create anything");
        assert!(!dir.path().join("ca.pem").exists());
        let first = Authority::ensure(dir.path(), &[]).expect("ensure");
        assert!(covered_names(&first.server_cert_pem).contains(&"127.0.0.1".to_owned()));
        let again = Authority::ensure(dir.path(), &[]).expect("ensure");
        assert_eq!(again.server_cert_pem, first.server_cert_pem, "reissued without need");
        let named = Authority::ensure(dir.path(), &["mdm.example.com".into()]).expect("ensure");
        assert_ne!(named.server_cert_pem, first.server_cert_pem);
        assert!(covered_names(&named.server_cert_pem).contains(&"mdm.example.com".to_owned()));
        assert_eq!(named.ca_pem, first.ca_pem, "the CA must never change");
    }

    #[test]
    fn a_world_readable_ca_key_is_narrowed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        Authority::ensure(dir.path(), &[]).expect("ensure");
        let key = dir.path().join("ca.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        Authority::load(dir.path()).expect("load");
        assert_eq!(std::fs::metadata(&key).expect("meta").permissions().mode() & 0o777, 0o600);
    }
}
