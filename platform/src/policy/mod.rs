//! The passcode-policy engine: one verdict type, three dialects.
//!
//! - [`android`]: AOSP `PasswordPolicy` / `PasswordMetrics` semantics.
//! - [`apple`]: the `com.apple.mobiledevice.passwordpolicy` payload semantics.
//! - [`windows`]: PassportForWork `PINComplexity` semantics.
//! - [`profile`]: reading each platform's own policy documents (plist, DPM JSON, PINComplexity).
//! - [`generate`]: temporary passcodes that satisfy a policy.
//!
//! Every check is a pure function of (policy, candidate) and explains every violation.
use serde::{Deserialize, Serialize};

pub mod android;
pub mod apple;
pub mod generate;
pub mod profile;
pub mod windows;

pub use android::AndroidPolicy;
pub use apple::ApplePolicy;
pub use windows::WindowsPolicy;

/// A passcode policy in one platform dialect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "dialect", rename_all = "snake_case")]
pub enum PasscodePolicy {
    /// Android / AOSP.
    Android(AndroidPolicy),
    /// Apple.
    Apple(ApplePolicy),
    /// Windows Hello / PassportForWork.
    Windows(WindowsPolicy),
}

impl PasscodePolicy {
    /// Checks a candidate passcode against this policy.
    pub fn check(&self, candidate: &str) -> Verdict {
        match self {
            Self::Android(p) => android::check(p, candidate),
            Self::Apple(p) => apple::check(p, candidate),
            Self::Windows(p) => windows::check(p, candidate),
        }
    }

    /// The dialect's name, as used on the command line.
    pub fn dialect(&self) -> &'static str {
        match self {
            Self::Android(_) => "android",
            Self::Apple(_) => "ios",
            Self::Windows(_) => "windows",
        }
    }
}

/// One broken rule: a stable machine code and a sentence for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Stable identifier of the rule, e.g. `TOO_SHORT`.
    pub code: &'static str,
    /// What is wrong and what would fix it; never contains the candidate.
    pub message: String,
    /// The rule's threshold where it has one (AOSP `PasswordValidationError.requirement`:
    /// the minimum length for `TOO_SHORT`, the count for `NOT_ENOUGH_*`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requirement: Option<usize>,
}

impl Violation {
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), requirement: None }
    }

    pub(crate) fn with_requirement(mut self, requirement: usize) -> Self {
        self.requirement = Some(requirement);
        self
    }
}

/// Character counts of a candidate. Never contains the candidate itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metrics {
    /// Characters in the candidate.
    pub length: usize,
    /// ASCII letters.
    pub letters: usize,
    /// Upper-case ASCII letters.
    pub upper_case: usize,
    /// Lower-case ASCII letters.
    pub lower_case: usize,
    /// ASCII digits.
    pub digits: usize,
    /// Everything else.
    pub symbols: usize,
    /// Digits and symbols.
    pub non_letter: usize,
    /// Letters and symbols.
    pub non_numeric: usize,
    /// Longest repeating or ordered run (AOSP `maxLengthSequence`).
    pub max_sequence: usize,
    /// Dialect-specific extras, e.g. Android's credential type and complexity bucket.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty", default)]
    pub extra: std::collections::BTreeMap<String, String>,
}

/// The engine's answer for one candidate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// True when no rule is broken.
    pub compliant: bool,
    /// Every broken rule, in the platform's own order.
    pub violations: Vec<Violation>,
    /// What the engine measured.
    pub metrics: Metrics,
    /// How the platform read the policy where that is not obvious (a fall-back to defaults).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Verdict {
    pub(crate) fn from(violations: Vec<Violation>, metrics: Metrics) -> Self {
        Self { compliant: violations.is_empty(), violations, metrics, notes: Vec::new() }
    }

    pub(crate) fn with_notes(mut self, notes: Vec<String>) -> Self {
        self.notes = notes;
        self
    }

    /// The violations as one admin-readable line.
    pub fn summary(&self) -> String {
        self.violations.iter().map(|v| v.message.as_str()).collect::<Vec<_>>().join("; ")
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Every violation names its rule and explains it, whatever the policy and candidate;
        /// the verdict is compliant exactly when there is no violation; nothing panics.
        #[test]
        fn every_violation_names_its_rule(
            candidate in "\\PC{0,24}",
            min_length in 0u32..20,
            dialect in 0u8..3,
        ) {
            let policy = match dialect {
                0 => PasscodePolicy::Android(AndroidPolicy {
                    quality: android::Quality::Complex, min_length, min_uppercase: Some(1), ..AndroidPolicy::default()
                }),
                1 => PasscodePolicy::Apple(ApplePolicy { min_length: min_length.min(16), allow_simple: false, min_complex_chars: 1, ..ApplePolicy::default() }),
                _ => PasscodePolicy::Windows(WindowsPolicy { min_length: Some(min_length), ..WindowsPolicy::default() }),
            };
            let verdict = policy.check(&candidate);
            prop_assert_eq!(verdict.compliant, verdict.violations.is_empty());
            for v in &verdict.violations {
                prop_assert!(!v.code.is_empty() && v.code.chars().all(|c| c.is_ascii_uppercase() || c == '_'));
                prop_assert!(!v.message.is_empty());
                if candidate.chars().count() >= 10 {
                    prop_assert!(!v.message.contains(candidate.as_str()), "a message echoes the candidate");
                }
            }
        }
    }
}
