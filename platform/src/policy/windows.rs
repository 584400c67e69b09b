//! Windows Hello for Business PIN rules, following PassportForWork `PINComplexity`:
//! `MinimumPINLength` and `MaximumPINLength` (4..=127), and for `UppercaseLetters`,
//! `LowercaseLetters`, `Digits`, `SpecialCharacters` one of 0 allowed, 1 at least one required,
//! 2 not allowed. Unconfigured values follow Microsoft's current Windows Hello policy text:
//! digits allowed but not required, upper- and lower-case letters and special characters not
//! allowed, minimum length 6, maximum 127. (Older Windows 10 documentation gave a minimum of 4;
//! which one a given build applies is inferred, and we follow the current text.)
//!
//! Special characters are the printable ASCII punctuation Microsoft lists for the
//! `SpecialCharacters` policy (``! " # $ % & ' ( ) * + , - . / : ; < = > ? @ [ \ ] ^ _ ` { | } ~``)
//! and the space character; anything else (non-ASCII, control characters) is never valid in a
//! Windows Hello PIN. Treating the space as special is inferred from the GPO text.
use serde::{Deserialize, Serialize};

use super::{android, Verdict, Violation};

/// `MinimumPINLength` lower bound.
pub const MIN_PIN_LENGTH: u32 = 4;
/// `MinimumPINLength` when not configured.
pub const DEFAULT_MIN_PIN_LENGTH: u32 = 6;
/// `MaximumPINLength` upper bound and default.
pub const MAX_PIN_LENGTH: u32 = 127;

/// One character class's rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CharRule {
    /// 0: may appear.
    Allowed,
    /// 1: at least one must appear.
    Required,
    /// 2: must not appear.
    Disallowed,
}

impl CharRule {
    /// Parses the command-line spelling.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "allowed" => Self::Allowed,
            "required" => Self::Required,
            "disallowed" => Self::Disallowed,
            _ => return None,
        })
    }

    /// Maps the CSP's integer value.
    pub fn from_csp(value: i64) -> Option<Self> {
        Some(match value {
            0 => Self::Allowed,
            1 => Self::Required,
            2 => Self::Disallowed,
            _ => return None,
        })
    }
}

/// A PINComplexity policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WindowsPolicy {
    /// `MinimumPINLength`.
    pub min_length: u32,
    /// `MaximumPINLength`.
    pub max_length: u32,
    /// `UppercaseLetters`.
    pub uppercase: CharRule,
    /// `LowercaseLetters`.
    pub lowercase: CharRule,
    /// `Digits`.
    pub digits: CharRule,
    /// `SpecialCharacters`.
    pub special: CharRule,
}

impl Default for WindowsPolicy {
    fn default() -> Self {
        Self {
            min_length: DEFAULT_MIN_PIN_LENGTH,
            max_length: MAX_PIN_LENGTH,
            uppercase: CharRule::Disallowed,
            lowercase: CharRule::Disallowed,
            digits: CharRule::Allowed,
            special: CharRule::Disallowed,
        }
    }
}

impl WindowsPolicy {
    /// Problems with the policy itself (the CSP rejects these values).
    pub fn validate(&self) -> Result<(), String> {
        let range = MIN_PIN_LENGTH..=MAX_PIN_LENGTH;
        if !range.contains(&self.min_length) || !range.contains(&self.max_length) {
            return Err(format!("PIN lengths must be within {MIN_PIN_LENGTH}..={MAX_PIN_LENGTH}"));
        }
        if self.min_length > self.max_length {
            return Err("MinimumPINLength is greater than MaximumPINLength".into());
        }
        if [self.uppercase, self.lowercase, self.digits, self.special].iter().all(|r| *r == CharRule::Disallowed) {
            return Err("every character class is disallowed: no PIN could satisfy it".into());
        }
        Ok(())
    }
}

/// True for the characters Windows accepts in the SpecialCharacters class.
pub fn is_special(c: char) -> bool {
    c == ' ' || c.is_ascii_punctuation()
}

/// Checks a candidate PIN against a PINComplexity policy.
pub fn check(policy: &WindowsPolicy, candidate: &str) -> Verdict {
    let metrics = android::measure(candidate);
    let mut violations = Vec::new();
    if let Err(problem) = policy.validate() {
        violations.push(Violation::new("INVALID_POLICY", problem));
        return Verdict::from(violations, metrics);
    }
    let length = candidate.chars().count();
    if length < policy.min_length as usize {
        violations.push(
            Violation::new("TOO_SHORT", format!("shorter than MinimumPINLength {}", policy.min_length))
                .with_requirement(policy.min_length as usize),
        );
    }
    if length > policy.max_length as usize {
        violations.push(
            Violation::new("TOO_LONG", format!("longer than MaximumPINLength {}", policy.max_length))
                .with_requirement(policy.max_length as usize),
        );
    }
    if candidate.chars().any(|c| !(c.is_ascii_alphanumeric() || is_special(c))) {
        violations.push(Violation::new(
            "CONTAINS_INVALID_CHARACTERS",
            "contains a character a Windows Hello PIN cannot hold (non-ASCII or control)",
        ));
    }
    let classes: [(CharRule, usize, &str, &'static str, &'static str); 4] = [
        (
            policy.uppercase,
            candidate.chars().filter(char::is_ascii_uppercase).count(),
            "upper-case letters",
            "UPPERCASE_REQUIRED",
            "UPPERCASE_DISALLOWED",
        ),
        (
            policy.lowercase,
            candidate.chars().filter(char::is_ascii_lowercase).count(),
            "lower-case letters",
            "LOWERCASE_REQUIRED",
            "LOWERCASE_DISALLOWED",
        ),
        (
            policy.digits,
            candidate.chars().filter(char::is_ascii_digit).count(),
            "digits",
            "DIGITS_REQUIRED",
            "DIGITS_DISALLOWED",
        ),
        (
            policy.special,
            candidate.chars().filter(|c| is_special(*c)).count(),
            "special characters",
            "SPECIAL_REQUIRED",
            "SPECIAL_DISALLOWED",
        ),
    ];
    for (rule, count, what, required_code, disallowed_code) in classes {
        match rule {
            CharRule::Required if count == 0 => {
                violations.push(Violation::new(required_code, format!("needs at least one of the {what}")))
            }
            CharRule::Disallowed if count > 0 => {
                violations.push(Violation::new(disallowed_code, format!("{what} are not allowed")))
            }
            _ => {}
        }
    }
    Verdict::from(violations, metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_table() {
        let default = WindowsPolicy::default();
        let mixed = WindowsPolicy {
            min_length: 6,
            max_length: 8,
            uppercase: CharRule::Required,
            lowercase: CharRule::Allowed,
            digits: CharRule::Required,
            special: CharRule::Disallowed,
        };
        let table: &[(&WindowsPolicy, &str, &[&str])] = &[
            (&default, "123456", &[]),
            (&default, "12345", &["TOO_SHORT"]),
            (&default, "12a456", &["LOWERCASE_DISALLOWED"]),
            (&default, "abcdef", &["LOWERCASE_DISALLOWED"]),
            (&default, "123 56", &["SPECIAL_DISALLOWED"]),
            (&mixed, "abcdefghi", &["TOO_LONG", "UPPERCASE_REQUIRED", "DIGITS_REQUIRED"]),
            (&mixed, "Abc12!", &["SPECIAL_DISALLOWED"]),
            (&mixed, "Abc123", &[]),
            (&mixed, "Abc12é", &["CONTAINS_INVALID_CHARACTERS"]),
        ];
        for (p, candidate, expected) in table {
            let got: Vec<_> = check(p, candidate).violations.iter().map(|v| v.code).collect();
            assert_eq!(got, *expected, "{candidate:?}");
        }
    }

    #[test]
    fn impossible_policy_is_named() {
        let p = WindowsPolicy { digits: CharRule::Disallowed, ..WindowsPolicy::default() };
        assert_eq!(check(&p, "123456").violations[0].code, "INVALID_POLICY");
        let p = WindowsPolicy { min_length: 9, max_length: 8, ..WindowsPolicy::default() };
        assert_eq!(check(&p, "123456789").violations[0].code, "INVALID_POLICY");
    }
}
