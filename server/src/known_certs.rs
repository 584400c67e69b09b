//! Client certificates recently verified against storage, so a device's every RPC does not
//! parse its certificate and query the database again. An entry lives [`TTL`] at most; it is
//! dropped at once when the device's stream is closed by an admin (retirement), when the device
//! unenrolls or when a renewed certificate replaces it, so a refusal takes effect immediately
//! in this process and within [`TTL`] in any case.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a verified certificate is trusted without asking storage again.
pub const TTL: Duration = Duration::from_secs(10);

/// Most certificates remembered (a bound on memory; the oldest half goes when it is reached).
const MAX_ENTRIES: usize = 100_000;

/// The SHA-256 of a certificate's DER.
pub type CertDigest = [u8; 32];

/// The cache.
#[derive(Default)]
pub struct KnownCerts {
    entries: Mutex<HashMap<CertDigest, (String, Instant)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The digest of a certificate's DER.
pub fn digest(der: &[u8]) -> CertDigest {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, der).as_ref());
    out
}

impl KnownCerts {
    /// The device a verified certificate belongs to, if verified within [`TTL`].
    pub fn device(&self, cert: &CertDigest) -> Option<String> {
        let entries = lock(&self.entries);
        entries.get(cert).filter(|(_, at)| at.elapsed() < TTL).map(|(device, _)| device.clone())
    }

    /// Remembers a certificate storage just accepted for an active device.
    pub fn remember(&self, cert: CertDigest, device_id: &str) {
        let mut entries = lock(&self.entries);
        if entries.len() >= MAX_ENTRIES {
            let mut ages: Vec<Instant> = entries.values().map(|(_, at)| *at).collect();
            ages.sort_unstable();
            let cutoff = ages[ages.len() / 2];
            entries.retain(|_, (_, at)| *at > cutoff);
        }
        entries.insert(cert, (device_id.to_owned(), Instant::now()));
    }

    /// Forgets every certificate of a device.
    pub fn forget(&self, device_id: &str) {
        lock(&self.entries).retain(|_, (device, _)| device != device_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_until_forgotten() {
        let known = KnownCerts::default();
        let (a, b) = (digest(b"cert a"), digest(b"cert b"));
        known.remember(a, "dev-1");
        known.remember(b, "dev-2");
        assert_eq!(known.device(&a).as_deref(), Some("dev-1"));
        known.forget("dev-1");
        assert_eq!(known.device(&a), None);
        assert_eq!(known.device(&b).as_deref(), Some("dev-2"));
    }
}
