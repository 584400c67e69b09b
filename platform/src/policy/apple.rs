//! Apple passcode rules, following the `com.apple.mobiledevice.passwordpolicy` payload.
//!
//! Keys and how they are read:
//! - `minLength` (0..=16): at least that many characters.
//! - `requireAlphanumeric`: the passcode must contain letters, not only digits. Apple's text is
//!   "requires alphabetic characters instead of only numeric characters"; we read it as at least
//!   one letter (inferred: Apple publishes no test vectors).
//! - `allowSimple` (default true): when false, a simple passcode is refused. Apple defines simple
//!   as "repeated characters, or increasing or decreasing characters (such as 123 or CBA)"; we
//!   treat a passcode as simple when the whole of it is one repeated character or one run rising
//!   or falling by one (case-insensitive), e.g. `1111`, `1234`, `4321`, `abcd` (inferred).
//! - `minComplexChars` (0..=4): at least that many characters that are neither letters nor digits.
//! - User Enrollment forces `allowSimple = false` and `minLength = 6` whatever the payload says
//!   (Apple DeviceManagement, Passcode payload); see [`ApplePolicy::for_user_enrollment`].
use serde::{Deserialize, Serialize};

use super::{android, Metrics, Verdict, Violation};

/// Apple's documented upper bound for `minLength`.
pub const MAX_MIN_LENGTH: u32 = 16;

/// An Apple passcode payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ApplePolicy {
    /// `minLength`.
    pub min_length: u32,
    /// `requireAlphanumeric`.
    pub require_alphanumeric: bool,
    /// `allowSimple`.
    pub allow_simple: bool,
    /// `minComplexChars`.
    pub min_complex_chars: u32,
    /// `pinHistory` (enforced by the device against its history; carried for reporting).
    pub pin_history: u32,
    /// `maxPINAgeInDays` (carried for reporting).
    pub max_pin_age_days: u32,
    /// `maxFailedAttempts` (carried for reporting).
    pub max_failed_attempts: u32,
}

impl Default for ApplePolicy {
    fn default() -> Self {
        Self {
            min_length: 0,
            require_alphanumeric: false,
            allow_simple: true,
            min_complex_chars: 0,
            pin_history: 0,
            max_pin_age_days: 0,
            max_failed_attempts: 0,
        }
    }
}

impl ApplePolicy {
    /// The policy a User Enrollment device actually enforces for this payload.
    pub fn for_user_enrollment(&self) -> Self {
        Self { allow_simple: false, min_length: 6, ..self.clone() }
    }
}

/// True when the whole passcode is one repeated character or one ascending/descending run.
pub fn is_simple(candidate: &str) -> bool {
    let folded: Vec<u32> = candidate.chars().map(|c| c.to_ascii_lowercase() as u32).collect();
    if folded.len() < 2 {
        return !folded.is_empty();
    }
    let steps: Vec<i64> = folded.windows(2).map(|w| i64::from(w[1]) - i64::from(w[0])).collect();
    let first = steps[0];
    (first == 0 || first == 1 || first == -1) && steps.iter().all(|&s| s == first)
}

/// Checks a candidate against an Apple policy.
pub fn check(policy: &ApplePolicy, candidate: &str) -> Verdict {
    let metrics: Metrics = android::measure(candidate);
    let length = candidate.chars().count();
    let letters = candidate.chars().filter(|c| c.is_alphabetic()).count();
    let complex = candidate.chars().filter(|c| !c.is_alphanumeric()).count();
    let mut violations = Vec::new();
    let min_length = policy.min_length.min(MAX_MIN_LENGTH) as usize;
    if length < min_length {
        violations.push(Violation::new("TOO_SHORT", format!("shorter than minLength {min_length}")));
    }
    if policy.require_alphanumeric && letters == 0 {
        violations.push(Violation::new(
            "REQUIRES_ALPHANUMERIC",
            "requireAlphanumeric is set: the passcode must contain letters, not only digits",
        ));
    }
    if !policy.allow_simple && is_simple(candidate) {
        violations.push(Violation::new(
            "SIMPLE_PASSCODE",
            "allowSimple is false: repeated, increasing or decreasing characters are not allowed",
        ));
    }
    if complex < policy.min_complex_chars as usize {
        violations.push(Violation::new(
            "NOT_ENOUGH_COMPLEX_CHARS",
            format!("needs at least {} non-alphanumeric characters (minComplexChars)", policy.min_complex_chars),
        ));
    }
    Verdict::from(violations, metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apple_table() {
        let base = ApplePolicy::default();
        let strict = ApplePolicy {
            min_length: 6,
            require_alphanumeric: true,
            allow_simple: false,
            min_complex_chars: 1,
            ..ApplePolicy::default()
        };
        let table: &[(&ApplePolicy, &str, &[&str])] = &[
            (&base, "", &[]),
            (&base, "1111", &[]),
            (&strict, "xqz", &["TOO_SHORT", "NOT_ENOUGH_COMPLEX_CHARS"]),
            (&strict, "123456", &["REQUIRES_ALPHANUMERIC", "SIMPLE_PASSCODE", "NOT_ENOUGH_COMPLEX_CHARS"]),
            (&strict, "abcdef", &["SIMPLE_PASSCODE", "NOT_ENOUGH_COMPLEX_CHARS"]),
            (&strict, "fedcba", &["SIMPLE_PASSCODE", "NOT_ENOUGH_COMPLEX_CHARS"]),
            (&strict, "fedcba!", &[]),
            (&strict, "a1b2c3!", &[]),
        ];
        for (p, candidate, expected) in table {
            let got: Vec<_> = check(p, candidate).violations.iter().map(|v| v.code).collect();
            assert_eq!(got, *expected, "{candidate:?}");
        }
    }

    #[test]
    fn user_enrollment_forces_six_and_no_simple() {
        let p = ApplePolicy::default().for_user_enrollment();
        assert!(!check(&p, "1234").compliant);
        assert!(!check(&p, "111111").compliant);
        assert!(check(&p, "193746").compliant);
    }
}
