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
}

impl Violation {
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
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
}

impl Verdict {
    pub(crate) fn from(violations: Vec<Violation>, metrics: Metrics) -> Self {
        Self { compliant: violations.is_empty(), violations, metrics }
    }

    /// The violations as one admin-readable line.
    pub fn summary(&self) -> String {
        self.violations.iter().map(|v| v.message.as_str()).collect::<Vec<_>>().join("; ")
    }
}
