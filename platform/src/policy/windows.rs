//! Windows Hello for Business PIN rules, following the PassportForWork CSP's `PINComplexity`
//! nodes (MicrosoftDocs `windows/client-management/mdm/passportforwork-csp.md`, 2019 text, and
//! the current auto-generated text of the same page).
//!
//! What is configured is kept apart from what applies ([`WindowsPolicy::effective`]):
//! - `MinimumPINLength` / `MaximumPINLength`: 4..=127. Not configured: "the PIN length must be
//!   greater than or equal to 4" / "less than or equal to 127" (both texts; the DDF default is 4).
//!   "If the above specified conditions for the minimum PIN length aren't met, default values will
//!   be used for both the maximum and minimum PIN lengths": a value out of range, or a minimum
//!   above the maximum, makes both lengths 4 and 127. The CSP's prose says the minimum "must be
//!   less than" the maximum; the DDF ranges overlap and equal values are common in the field, so
//!   we read it as "not greater than" (inferred).
//! - `UppercaseLetters`, `LowercaseLetters`, `Digits`, `SpecialCharacters`: 0 allowed, 1 at least
//!   one required, 2 not allowed. "Default PIN complexity behavior is that digits are required and
//!   all other character sets are not allowed": not configured means Digits = 1 and the others = 2
//!   (2019 text; the current page's prose agrees for the letter and special classes, although
//!   its generated DDF tables list 0 as the default — we follow the prose).
//!   "If all character sets are allowed but none are explicitly required, then the default PIN
//!   complexity behavior will apply."
//! - Special characters are exactly the CSP's list ``! " # $ % & ' ( ) * + , - . / : ; < = > ? @
//!   [ \ ] ^ _ ` { | } ~`` — the ASCII punctuation. The space is not in it and, like any other
//!   character outside the four classes, cannot be part of a PIN.
//! - Every class disallowed leaves no possible PIN; the CSP does not say what Windows does then.
//!   We report `INVALID_POLICY` (inferred).
use serde::{Deserialize, Serialize};

use super::{android, Verdict, Violation};

/// `MinimumPINLength` lower bound and default.
pub const MIN_PIN_LENGTH: u32 = 4;
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

/// A PINComplexity policy as configured: `None` is "not configured".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WindowsPolicy {
    /// `MinimumPINLength`.
    pub min_length: Option<u32>,
    /// `MaximumPINLength`.
    pub max_length: Option<u32>,
    /// `UppercaseLetters`.
    pub uppercase: Option<CharRule>,
    /// `LowercaseLetters`.
    pub lowercase: Option<CharRule>,
    /// `Digits`.
    pub digits: Option<CharRule>,
    /// `SpecialCharacters`.
    pub special: Option<CharRule>,
}

/// The rules Windows applies for a [`WindowsPolicy`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Effective {
    /// Minimum PIN length.
    pub min_length: u32,
    /// Maximum PIN length.
    pub max_length: u32,
    /// Upper-case letters.
    pub uppercase: CharRule,
    /// Lower-case letters.
    pub lowercase: CharRule,
    /// Digits.
    pub digits: CharRule,
    /// Special characters.
    pub special: CharRule,
    /// Fall-backs that were applied, in words.
    pub notes: Vec<String>,
}

impl Effective {
    /// The default PIN complexity behaviour: digits required, nothing else allowed.
    fn default_classes(&mut self) {
        self.uppercase = CharRule::Disallowed;
        self.lowercase = CharRule::Disallowed;
        self.digits = CharRule::Required;
        self.special = CharRule::Disallowed;
    }

    /// The four class rules.
    pub fn classes(&self) -> [CharRule; 4] {
        [self.uppercase, self.lowercase, self.digits, self.special]
    }
}

impl WindowsPolicy {
    /// What Windows enforces for this configuration.
    pub fn effective(&self) -> Effective {
        let mut e = Effective {
            min_length: self.min_length.unwrap_or(MIN_PIN_LENGTH),
            max_length: self.max_length.unwrap_or(MAX_PIN_LENGTH),
            uppercase: self.uppercase.unwrap_or(CharRule::Disallowed),
            lowercase: self.lowercase.unwrap_or(CharRule::Disallowed),
            digits: self.digits.unwrap_or(CharRule::Required),
            special: self.special.unwrap_or(CharRule::Disallowed),
            notes: Vec::new(),
        };
        let range = MIN_PIN_LENGTH..=MAX_PIN_LENGTH;
        if !range.contains(&e.min_length) || !range.contains(&e.max_length) || e.min_length > e.max_length {
            e.notes.push(format!(
                "MinimumPINLength {} / MaximumPINLength {} are out of range or reversed, so the defaults {MIN_PIN_LENGTH} and {MAX_PIN_LENGTH} apply to both",
                e.min_length, e.max_length
            ));
            e.min_length = MIN_PIN_LENGTH;
            e.max_length = MAX_PIN_LENGTH;
        }
        if e.classes().iter().all(|r| *r == CharRule::Allowed) {
            e.notes.push(
                "every character class is allowed and none required, so the default applies: digits required, nothing else allowed"
                    .into(),
            );
            e.default_classes();
        }
        e
    }

    /// Problems with the policy itself that leave no PIN possible.
    pub fn validate(&self) -> Result<(), String> {
        if self.effective().classes().iter().all(|r| *r == CharRule::Disallowed) {
            return Err("every character class is disallowed: no PIN could satisfy it".into());
        }
        Ok(())
    }
}

/// True for the characters Windows accepts in the SpecialCharacters class (the CSP's list,
/// which is exactly ASCII punctuation; not the space).
pub fn is_special(c: char) -> bool {
    c.is_ascii_punctuation()
}

/// Checks a candidate PIN against a PINComplexity policy.
pub fn check(policy: &WindowsPolicy, candidate: &str) -> Verdict {
    let metrics = android::measure(candidate);
    let effective = policy.effective();
    let mut violations = Vec::new();
    if let Err(problem) = policy.validate() {
        violations.push(Violation::new("INVALID_POLICY", problem));
        return Verdict::from(violations, metrics).with_notes(effective.notes);
    }
    let length = candidate.chars().count();
    if length < effective.min_length as usize {
        violations.push(
            Violation::new("TOO_SHORT", format!("shorter than MinimumPINLength {}", effective.min_length))
                .with_requirement(effective.min_length as usize),
        );
    }
    if length > effective.max_length as usize {
        violations.push(
            Violation::new("TOO_LONG", format!("longer than MaximumPINLength {}", effective.max_length))
                .with_requirement(effective.max_length as usize),
        );
    }
    if candidate.chars().any(|c| !(c.is_ascii_alphanumeric() || is_special(c))) {
        violations.push(Violation::new(
            "CONTAINS_INVALID_CHARACTERS",
            "contains a character a Windows Hello PIN cannot hold (a space, non-ASCII or control character)",
        ));
    }
    let classes: [(CharRule, usize, &str, &'static str, &'static str); 4] = [
        (
            effective.uppercase,
            candidate.chars().filter(char::is_ascii_uppercase).count(),
            "upper-case letters",
            "UPPERCASE_REQUIRED",
            "UPPERCASE_DISALLOWED",
        ),
        (
            effective.lowercase,
            candidate.chars().filter(char::is_ascii_lowercase).count(),
            "lower-case letters",
            "LOWERCASE_REQUIRED",
            "LOWERCASE_DISALLOWED",
        ),
        (
            effective.digits,
            candidate.chars().filter(char::is_ascii_digit).count(),
            "digits",
            "DIGITS_REQUIRED",
            "DIGITS_DISALLOWED",
        ),
        (
            effective.special,
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
    Verdict::from(violations, metrics).with_notes(effective.notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(p: &WindowsPolicy, candidate: &str) -> Vec<&'static str> {
        check(p, candidate).violations.iter().map(|v| v.code).collect()
    }

    #[test]
    fn unconfigured_means_digits_required_and_nothing_else_length_four_to_127() {
        let p = WindowsPolicy::default();
        let table: &[(&str, &[&str])] = &[
            ("1234", &[]),
            ("123", &["TOO_SHORT"]),
            ("12a456", &["LOWERCASE_DISALLOWED"]),
            ("abcdef", &["LOWERCASE_DISALLOWED", "DIGITS_REQUIRED"]),
            ("123 56", &["CONTAINS_INVALID_CHARACTERS"]),
            ("12!456", &["SPECIAL_DISALLOWED"]),
        ];
        for (candidate, expected) in table {
            assert_eq!(codes(&p, candidate), *expected, "{candidate:?}");
        }
        assert!(check(&p, &"1".repeat(127)).compliant);
        assert_eq!(codes(&p, &"1".repeat(128)), ["TOO_LONG"]);
    }

    #[test]
    fn allowing_lowercase_alone_keeps_digits_required() {
        // Digits stays at its default 1 (required): `--lowercase allowed` does not accept `abcdef`.
        let p = WindowsPolicy { lowercase: Some(CharRule::Allowed), ..WindowsPolicy::default() };
        assert_eq!(codes(&p, "abcdef"), ["DIGITS_REQUIRED"]);
        assert!(check(&p, "abc123").compliant);
    }

    #[test]
    fn all_allowed_none_required_falls_back_to_the_default_behaviour() {
        let all = Some(CharRule::Allowed);
        let p = WindowsPolicy { uppercase: all, lowercase: all, digits: all, special: all, ..WindowsPolicy::default() };
        assert_eq!(codes(&p, "abcdef"), ["LOWERCASE_DISALLOWED", "DIGITS_REQUIRED"]);
        assert!(check(&p, "135790").compliant);
        assert!(!check(&p, "135790").notes.is_empty(), "the fall-back is explained");
        // Explicitly allowing digits (no other rule) is not "all allowed": letters stay disallowed.
        let digits_allowed = WindowsPolicy { digits: all, ..WindowsPolicy::default() };
        assert!(check(&digits_allowed, "1357").compliant);
        assert_eq!(codes(&digits_allowed, "ab12"), ["LOWERCASE_DISALLOWED"]);
    }

    #[test]
    fn lengths_out_of_range_or_reversed_fall_back_to_the_defaults_for_both() {
        for (min, max) in [(Some(2), None), (Some(9), Some(8)), (None, Some(200)), (Some(6), Some(3))] {
            let p = WindowsPolicy { min_length: min, max_length: max, ..WindowsPolicy::default() };
            let e = p.effective();
            assert_eq!((e.min_length, e.max_length), (MIN_PIN_LENGTH, MAX_PIN_LENGTH), "{min:?} {max:?}");
            assert!(check(&p, "1234").compliant, "{min:?} {max:?}");
        }
        let exact = WindowsPolicy { min_length: Some(6), max_length: Some(6), ..WindowsPolicy::default() };
        assert_eq!(codes(&exact, "12345"), ["TOO_SHORT"]);
        assert_eq!(codes(&exact, "1234567"), ["TOO_LONG"]);
        assert!(check(&exact, "123456").compliant);
    }

    #[test]
    fn configured_classes_apply_and_special_is_the_csp_list() {
        let p = WindowsPolicy {
            min_length: Some(6),
            max_length: Some(8),
            uppercase: Some(CharRule::Required),
            lowercase: Some(CharRule::Allowed),
            digits: Some(CharRule::Required),
            special: Some(CharRule::Disallowed),
        };
        assert_eq!(codes(&p, "abcdefghi"), ["TOO_LONG", "UPPERCASE_REQUIRED", "DIGITS_REQUIRED"]);
        assert_eq!(codes(&p, "Abc12!"), ["SPECIAL_DISALLOWED"]);
        assert!(check(&p, "Abc123").compliant);
        assert_eq!(codes(&p, "Abc12é"), ["CONTAINS_INVALID_CHARACTERS"]);
        for c in "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~".chars() {
            assert!(is_special(c), "{c:?}");
        }
        assert!(!is_special(' '));
    }

    #[test]
    fn a_policy_that_allows_nothing_is_named() {
        let p = WindowsPolicy { digits: Some(CharRule::Disallowed), ..WindowsPolicy::default() };
        assert_eq!(codes(&p, "123456"), ["INVALID_POLICY"]);
    }
}
