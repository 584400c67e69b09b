//! Secret holders. Their memory is zeroed on drop, `Debug` prints `<redacted>`, and there is no
//! `Display`: a secret reaches text only through an explicit `expose()`.
use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// A textual secret: a passcode or PIN. There is no `==`: compare with [`Secret::ct_eq`], whose
/// time does not depend on where the values differ.
#[derive(Clone, Default)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a string; the caller's copy should be dropped or zeroed.
    pub fn new(value: String) -> Self {
        Self(Zeroizing::new(value))
    }

    /// The secret's text, for the one place that must hand it to the OS.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when no secret is held.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Compares in constant time (for equal lengths).
    pub fn ct_eq(&self, other: &str) -> bool {
        self.0.len() == other.len() && bool::from(self.0.as_bytes().ct_eq(other.as_bytes()))
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self::new(value.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A binary secret: an unlock token or reset-password token.
#[derive(Clone, Default)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Wraps bytes.
    pub fn new(value: Vec<u8>) -> Self {
        Self(Zeroizing::new(value))
    }

    /// `n` bytes from rand's thread-local CSPRNG (ChaCha, seeded and reseeded by the OS).
    pub fn random(n: usize) -> Self {
        let mut bytes = vec![0u8; n];
        rand::RngExt::fill(&mut rand::rng(), bytes.as_mut_slice());
        Self::new(bytes)
    }

    /// The bytes, for the one place that must hand them on.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// True when no secret is held.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Compares in constant time (for equal lengths), so a timing side channel reveals nothing
    /// about how much of a guessed token was right.
    pub fn ct_eq(&self, other: &[u8]) -> bool {
        self.0.len() == other.len() && bool::from(self.0.as_slice().ct_eq(other))
    }

    /// Lower-case hex, for storage in 0600 files only; no unzeroed copy is left behind.
    pub fn to_hex(&self) -> Secret {
        Secret(latchkey_common::hex::encode(&self.0))
    }

    /// Parses lower- or upper-case hex.
    pub fn from_hex(hex: &str) -> Option<Self> {
        latchkey_common::hex::decode(hex).map(Self)
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(<redacted {} bytes>)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let s = Secret::from("CANARY-1234");
        let b = SecretBytes::new(b"CANARY-5678".to_vec());
        assert!(!format!("{s:?}").contains("CANARY"));
        assert!(!format!("{b:?}").contains("CANARY"));
    }

    #[test]
    fn hex_round_trips_and_compares() {
        let b = SecretBytes::random(32);
        let back = SecretBytes::from_hex(b.to_hex().expose()).expect("valid hex");
        assert!(b.ct_eq(back.expose()));
        assert!(!b.ct_eq(&back.expose()[..31]));
        assert!(SecretBytes::from_hex("zz").is_none());
        assert!(SecretBytes::from_hex("abc").is_none());
        assert!(Secret::from("482913").ct_eq("482913"));
        assert!(!Secret::from("482913").ct_eq("482914"));
        assert!(!Secret::from("482913").ct_eq("48291"));
    }
}
