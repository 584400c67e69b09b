//! The enrollment CA and the server identity, created on first start in the data directory:
//! `ca.pem`, `ca.key` (0600), `server.pem`, `server.key` (0600). Device certificates carry the
//! device id as their common name and are valid for [`DEVICE_CERT_DAYS`].
use std::path::Path;

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// Device certificate lifetime; agents renew at two thirds of it.
pub const DEVICE_CERT_DAYS: i64 = 30;

/// The CA and the server's own key material.
pub struct Authority {
    /// CA certificate, PEM (what agents trust).
    pub ca_pem: String,
    ca_key: KeyPair,
    /// Server certificate chain, PEM.
    pub server_cert_pem: String,
    /// Server private key, PEM.
    pub server_key_pem: zeroize::Zeroizing<String>,
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    latchkey_platform::atomic::write(path, text.as_bytes(), 0o600)
        .with_context(|| format!("writing {}", path.display()))
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

impl Authority {
    /// Loads the CA and server identity from `dir`, creating them on first use.
    pub fn load_or_create(dir: &Path, server_names: &[String]) -> Result<Self> {
        let (ca_cert, ca_key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
        if !ca_cert.exists() {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            let cert = ca_params().self_signed(&key)?;
            write_private(&ca_key_path, &key.serialize_pem())?;
            latchkey_platform::atomic::write(&ca_cert, cert.pem().as_bytes(), 0o644)?;
        }
        let ca_pem = std::fs::read_to_string(&ca_cert).with_context(|| format!("reading {}", ca_cert.display()))?;
        let ca_key = KeyPair::from_pem(
            &std::fs::read_to_string(&ca_key_path).with_context(|| format!("reading {}", ca_key_path.display()))?,
        )
        .context("CA key is not a valid PEM key")?;

        let (server_cert, server_key_path) = (dir.join("server.pem"), dir.join("server.key"));
        if !server_cert.exists() {
            let issuer = Issuer::from_ca_cert_pem(&ca_pem, &ca_key)?;
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
            names.extend(server_names.iter().cloned());
            let mut params = CertificateParams::new(names)?;
            params.distinguished_name.push(DnType::CommonName, "latchkey-server");
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            let now = OffsetDateTime::now_utc();
            params.not_before = now - Duration::hours(1);
            params.not_after = now + Duration::days(825);
            let cert = params.signed_by(&key, &issuer)?;
            write_private(&server_key_path, &key.serialize_pem())?;
            latchkey_platform::atomic::write(&server_cert, format!("{}{}", cert.pem(), ca_pem).as_bytes(), 0o644)?;
        }
        Ok(Self {
            ca_pem,
            ca_key,
            server_cert_pem: std::fs::read_to_string(&server_cert)?,
            server_key_pem: zeroize::Zeroizing::new(std::fs::read_to_string(&server_key_path)?),
        })
    }

    /// Signs a device CSR: the subject becomes `CN=<device_id>`, client-auth only.
    pub fn sign_device_csr(&self, csr_der: &[u8], device_id: &str) -> Result<String, String> {
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
        csr.params.not_after = now + Duration::days(DEVICE_CERT_DAYS);
        let issuer = Issuer::from_ca_cert_pem(&self.ca_pem, &self.ca_key).map_err(|e| e.to_string())?;
        let cert = csr.signed_by(&issuer).map_err(|e| format!("signing failed: {e}"))?;
        Ok(cert.pem())
    }
}

/// The common name of a DER certificate (the device id for device certificates).
pub fn common_name(cert_der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?.to_owned();
    Some(cn)
}
