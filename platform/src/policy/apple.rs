//! Apple passcode rules, following the `com.apple.mobiledevice.passwordpolicy` payload
//! (apple/device-management `mdm/profiles/com.apple.mobiledevice.passwordpolicy.yaml`).
//!
//! Keys and how they are read:
//! - `forcePIN` (default false): a passcode must be set; an empty one is refused.
//! - `minLength` (0..=16): at least that many characters.
//! - `requireAlphanumeric`: the payload text says "requires alphabetic characters (abcd) instead
//!   of only numeric characters" (one reading: at least one letter); Apple's declarative
//!   `RequireAlphanumericPasscode` says "at least one alphabetic character and at least one
//!   number" (the other reading: a letter and a digit). We follow the declarative text, the more
//!   precise of the two: a letters-only passcode is refused.
//! - `allowSimple` (default true): when false, a simple passcode is refused. Apple: "a simple
//!   passcode contains repeated characters, or increasing or decreasing characters (such as '123'
//!   or 'CBA')". We flag a run of three or more identical characters or of three or more
//!   characters rising or falling by one (case-insensitive), e.g. `111`, `123`, `cba` (the run
//!   length of three is inferred from Apple's examples; Apple publishes no vectors).
//! - `minComplexChars` (0..=4): at least that many characters that are neither letters nor digits.
//! - `pinHistory` (1..=50), `maxPINAgeInDays` (0..=730), `maxFailedAttempts` (2..=11): enforced by
//!   the device against its own records; carried for reporting and range-checked when parsed.
//! - User Enrollment: "the system allows this payload type, but ignores most of the keys. Instead,
//!   the presence of the payload forces only these settings: allowSimple false, forcePIN true,
//!   minLength 6" (Apple DeviceManagement, Passcode; the yaml marks every key `userenrollment:
//!   ignored`, and `minComplexChars` "is ignored for User Enrollments"). See
//!   [`ApplePolicy::user_enrollment`] and [`crate::facts::enforced_policy`].
use serde::{Deserialize, Serialize};

use super::{android, Metrics, Verdict, Violation};

/// Apple's documented upper bound for `minLength`.
pub const MAX_MIN_LENGTH: u32 = 16;

/// An Apple passcode payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ApplePolicy {
    /// `forcePIN`.
    pub force_pin: bool,
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
            force_pin: false,
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
    /// What a User Enrollment device enforces when any passcode payload is present: the
    /// payload's own keys are ignored.
    pub fn user_enrollment() -> Self {
        Self { force_pin: true, allow_simple: false, min_length: 6, ..Self::default() }
    }
}

/// The shortest run that makes a passcode simple.
pub const SIMPLE_RUN: usize = 3;

/// True when the passcode contains a run of [`SIMPLE_RUN`] repeated characters or characters
/// rising or falling by one.
pub fn is_simple(candidate: &str) -> bool {
    let folded: Vec<i64> = candidate.chars().map(|c| i64::from(u32::from(c.to_ascii_lowercase()))).collect();
    folded.windows(SIMPLE_RUN).any(|w| {
        let step = w[1] - w[0];
        (-1..=1).contains(&step) && w.windows(2).all(|p| p[1] - p[0] == step)
    })
}

/// Checks a candidate against an Apple policy.
pub fn check(policy: &ApplePolicy, candidate: &str) -> Verdict {
    let metrics: Metrics = android::measure(candidate);
    let length = candidate.chars().count();
    let letters = candidate.chars().filter(|c| c.is_alphabetic()).count();
    let digits = candidate.chars().filter(|c| c.is_numeric()).count();
    let complex = candidate.chars().filter(|c| !c.is_alphanumeric()).count();
    let mut violations = Vec::new();
    if policy.force_pin && candidate.is_empty() {
        violations.push(Violation::new("PASSCODE_REQUIRED", "forcePIN is set: the device must have a passcode"));
    }
    let min_length = policy.min_length.min(MAX_MIN_LENGTH) as usize;
    if length < min_length {
        violations.push(
            Violation::new("TOO_SHORT", format!("shorter than minLength {min_length}")).with_requirement(min_length),
        );
    }
    if policy.require_alphanumeric && (letters == 0 || digits == 0) {
        violations.push(Violation::new(
            "REQUIRES_ALPHANUMERIC",
            "requireAlphanumeric is set: the passcode needs at least one letter and at least one number",
        ));
    }
    if !policy.allow_simple && is_simple(candidate) {
        violations.push(Violation::new(
            "SIMPLE_PASSCODE",
            "allowSimple is false: repeated, increasing or decreasing characters are not allowed",
        ));
    }
    if complex < policy.min_complex_chars as usize {
        violations.push(
            Violation::new(
                "NOT_ENOUGH_COMPLEX_CHARS",
                format!("needs at least {} non-alphanumeric characters (minComplexChars)", policy.min_complex_chars),
            )
            .with_requirement(policy.min_complex_chars as usize),
        );
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
            (&strict, "xqz", &["TOO_SHORT", "REQUIRES_ALPHANUMERIC", "NOT_ENOUGH_COMPLEX_CHARS"]),
            (&strict, "123456", &["REQUIRES_ALPHANUMERIC", "SIMPLE_PASSCODE", "NOT_ENOUGH_COMPLEX_CHARS"]),
            (&strict, "abcdef", &["REQUIRES_ALPHANUMERIC", "SIMPLE_PASSCODE", "NOT_ENOUGH_COMPLEX_CHARS"]),
            (&strict, "fedcba!", &["REQUIRES_ALPHANUMERIC", "SIMPLE_PASSCODE"]),
            (&strict, "Pass123!", &["SIMPLE_PASSCODE"]),
            (&strict, "zz9!q1x", &[]),
            (&strict, "a1b2c3!", &[]),
        ];
        for (p, candidate, expected) in table {
            let got: Vec<_> = check(p, candidate).violations.iter().map(|v| v.code).collect();
            assert_eq!(got, *expected, "{candidate:?}");
        }
    }

    #[test]
    fn simple_means_a_run_of_three() {
        for simple in ["111", "123", "CBA", "cBa", "x999y", "ab4567", "9876"] {
            assert!(is_simple(simple), "{simple}");
        }
        for fine in ["", "11", "12", "1357", "193746", "a1b2c3", "aab", "xz!9"] {
            assert!(!is_simple(fine), "{fine}");
        }
    }

    #[test]
    fn user_enrollment_forces_six_and_no_simple_and_nothing_else() {
        let p = ApplePolicy::user_enrollment();
        assert!(!check(&p, "1234").compliant);
        assert!(!check(&p, "111111").compliant);
        assert!(!check(&p, "").compliant, "forcePIN");
        assert!(check(&p, "193746").compliant, "no requireAlphanumeric or minComplexChars under User Enrollment");
    }

    #[test]
    fn force_pin_refuses_an_empty_passcode() {
        let p = ApplePolicy { force_pin: true, ..ApplePolicy::default() };
        assert_eq!(check(&p, "").violations[0].code, "PASSCODE_REQUIRED");
        assert!(check(&ApplePolicy::default(), "").compliant);
    }
}
