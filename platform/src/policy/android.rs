//! Android passcode rules, following AOSP's `PasswordPolicy.getMinMetrics()`,
//! `PasswordMetrics.validateCredential()` / `validatePasswordMetrics()` and
//! `LockscreenCredential`, so a verdict here is the verdict `DevicePolicyManager` would give.
//!
//! How AOSP decides, in order:
//! 1. The credential type comes from the text: empty is NONE, digits only is a PIN
//!    (`DevicePolicyManagerService.resetPasswordInternal` uses `isNumericOnly`), anything else is
//!    a PASSWORD.
//! 2. A password with a character outside ASCII 32..=127 is refused outright
//!    (`CONTAINS_INVALID_CHARACTERS`), as `LockscreenCredential.hasInvalidChars` does.
//! 3. A credential type weaker than the policy's, or one the complexity bucket does not allow, is
//!    refused outright (`WEAK_CREDENTIAL_TYPE`).
//! 4. Otherwise every rule is checked and every failure is reported: `TOO_LONG` (over
//!    `MAX_PASSWORD_LENGTH` = 16), `TOO_SHORT` (the policy length, raised by the complexity bucket
//!    and clamped to 4..=16), `TOO_SHORT_WHEN_ALL_NUMERIC`, the per-class minima and
//!    `CONTAINS_SEQUENCE` (a repeating or ordered run longer than 3).
use serde::{Deserialize, Serialize};

use super::{Metrics, Verdict, Violation};

/// `DevicePolicyManager.MAX_PASSWORD_LENGTH`.
pub const MAX_PASSWORD_LENGTH: usize = 16;
/// `LockPatternUtils.MIN_LOCK_PASSWORD_SIZE`.
pub const MIN_LOCK_PASSWORD_SIZE: usize = 4;
/// `PasswordMetrics.MAX_ALLOWED_SEQUENCE`.
pub const MAX_ALLOWED_SEQUENCE: usize = 3;

/// `DevicePolicyManager.PASSWORD_QUALITY_*`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Quality {
    /// No requirement.
    #[default]
    Unspecified,
    /// Any credential, patterns included.
    Something,
    /// A PIN or stronger.
    Numeric,
    /// A PIN without repeating or ordered runs longer than 3.
    NumericComplex,
    /// At least one letter or symbol.
    Alphabetic,
    /// At least one digit and one letter or symbol.
    Alphanumeric,
    /// Per-class minima.
    Complex,
}

impl Quality {
    /// Parses the command-line spelling.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "unspecified" => Self::Unspecified,
            "something" => Self::Something,
            "numeric" => Self::Numeric,
            "numeric-complex" => Self::NumericComplex,
            "alphabetic" => Self::Alphabetic,
            "alphanumeric" => Self::Alphanumeric,
            "complex" => Self::Complex,
            _ => return None,
        })
    }
}

/// `DevicePolicyManager.PASSWORD_COMPLEXITY_*`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Complexity {
    /// `PASSWORD_COMPLEXITY_NONE`.
    #[default]
    None,
    /// `PASSWORD_COMPLEXITY_LOW`: any credential.
    Low,
    /// `PASSWORD_COMPLEXITY_MEDIUM`: PIN without sequences, length 4; or password length 4.
    Medium,
    /// `PASSWORD_COMPLEXITY_HIGH`: PIN without sequences, length 8; or password length 6.
    High,
}

impl Complexity {
    /// Parses the command-line spelling.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "none" => Self::None,
            "low" => Self::Low,
            "medium" => Self::Medium,
            "high" => Self::High,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
        }
    }

    fn can_have_sequence(self) -> bool {
        matches!(self, Self::None | Self::Low)
    }

    fn minimum_length(self, contains_non_numeric: bool) -> usize {
        match self {
            Self::High if contains_non_numeric => 6,
            Self::High => 8,
            Self::Medium => 4,
            Self::Low | Self::None => 0,
        }
    }

    fn allows(self, cred: CredType) -> bool {
        match self {
            Self::High | Self::Medium => matches!(cred, CredType::Pin | CredType::Password),
            Self::Low => cred != CredType::None,
            Self::None => true,
        }
    }
}

/// An Android password policy as `DevicePolicyManager` holds it. The per-class minima apply
/// only with quality COMPLEX; unset ones take DPM's defaults (letters 1, digits 1, symbols 1).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AndroidPolicy {
    /// Required quality.
    pub quality: Quality,
    /// `setPasswordMinimumLength`; effective only with quality NUMERIC or stronger.
    pub min_length: u32,
    /// `setRequiredPasswordComplexity`.
    pub complexity: Complexity,
    /// `setPasswordMinimumLetters`.
    pub min_letters: Option<u32>,
    /// `setPasswordMinimumLowerCase`.
    pub min_lowercase: Option<u32>,
    /// `setPasswordMinimumUpperCase`.
    pub min_uppercase: Option<u32>,
    /// `setPasswordMinimumNumeric`.
    pub min_digits: Option<u32>,
    /// `setPasswordMinimumSymbols`.
    pub min_symbols: Option<u32>,
    /// `setPasswordMinimumNonLetter`.
    pub min_nonletter: Option<u32>,
}

/// `LockPatternUtils.CREDENTIAL_TYPE_*`, ordered as AOSP orders them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum CredType {
    /// No credential.
    None,
    /// A pattern.
    Pattern,
    /// A PIN.
    Pin,
    /// A password.
    Password,
}

impl CredType {
    fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Pattern => "pattern",
            Self::Pin => "pin",
            Self::Password => "password",
        }
    }
}

/// The requirement side of AOSP's `PasswordMetrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct MinMetrics {
    cred: CredType,
    length: usize,
    letters: usize,
    upper: usize,
    lower: usize,
    numeric: usize,
    symbols: usize,
    non_letter: usize,
    non_numeric: usize,
    seq_length: usize,
}

impl MinMetrics {
    fn of(cred: CredType) -> Self {
        Self {
            cred,
            length: 0,
            letters: 0,
            upper: 0,
            lower: 0,
            numeric: 0,
            symbols: 0,
            non_letter: 0,
            non_numeric: 0,
            seq_length: usize::MAX,
        }
    }

    /// `PasswordPolicy.getMinMetrics()`.
    fn from_policy(p: &AndroidPolicy) -> Self {
        let length = p.min_length as usize;
        match p.quality {
            Quality::Unspecified => Self::of(CredType::None),
            Quality::Something => Self::of(CredType::Pattern),
            Quality::Numeric | Quality::NumericComplex => {
                let mut m = Self::of(CredType::Pin);
                m.length = length;
                if p.quality == Quality::NumericComplex {
                    m.seq_length = MAX_ALLOWED_SEQUENCE;
                }
                m
            }
            Quality::Alphabetic | Quality::Alphanumeric | Quality::Complex => {
                let mut m = Self::of(CredType::Password);
                m.length = length;
                match p.quality {
                    Quality::Alphabetic => m.non_numeric = 1,
                    Quality::Alphanumeric => {
                        m.numeric = 1;
                        m.non_numeric = 1;
                    }
                    _ => {
                        m.numeric = p.min_digits.unwrap_or(1) as usize;
                        m.letters = p.min_letters.unwrap_or(1) as usize;
                        m.upper = p.min_uppercase.unwrap_or(0) as usize;
                        m.lower = p.min_lowercase.unwrap_or(0) as usize;
                        m.non_letter = p.min_nonletter.unwrap_or(0) as usize;
                        m.symbols = p.min_symbols.unwrap_or(1) as usize;
                    }
                }
                m
            }
        }
    }

    /// `PasswordMetrics.removeOverlapping()`: drops minima implied by others.
    fn remove_overlapping(&mut self) {
        let indirect_letters = self.upper + self.lower;
        let indirect_non_letter = self.numeric + self.symbols;
        let effective_letters = self.letters.max(indirect_letters);
        let indirect_non_numeric = effective_letters + self.symbols;
        let effective_non_letter = self.non_letter.max(indirect_non_letter);
        let effective_non_numeric = self.non_numeric.max(indirect_non_numeric);
        let indirect_length = (effective_letters + effective_non_letter).max(self.numeric + effective_non_numeric);
        if indirect_letters >= self.letters {
            self.letters = 0;
        }
        if indirect_non_letter >= self.non_letter {
            self.non_letter = 0;
        }
        if indirect_non_numeric >= self.non_numeric {
            self.non_numeric = 0;
        }
        if indirect_length >= self.length {
            self.length = 0;
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum CharClass {
    Lower,
    Upper,
    Digit,
    Symbol,
}

fn class_of(c: u8) -> CharClass {
    match c {
        b'a'..=b'z' => CharClass::Lower,
        b'A'..=b'Z' => CharClass::Upper,
        b'0'..=b'9' => CharClass::Digit,
        _ => CharClass::Symbol,
    }
}

fn max_diff(class: CharClass) -> i32 {
    match class {
        CharClass::Lower | CharClass::Upper => 1,
        CharClass::Digit => 10,
        CharClass::Symbol => 0,
    }
}

/// AOSP `PasswordMetrics.maxLengthSequence`: the longest run of one repeated character or of
/// characters of one class rising or falling by a constant step ("1234" 4, "13579" 5, "aabc" 3,
/// "qwertyuio" 1, ";;;;" 4, ":;<=>" 1).
pub fn max_length_sequence(bytes: &[u8]) -> usize {
    let Some(&first) = bytes.first() else {
        return 0;
    };
    let mut previous = first;
    let mut class = class_of(previous);
    let mut diff = 0i32;
    let mut has_diff = false;
    let mut max_length = 0usize;
    let mut start = 0usize;
    for (current, &c) in bytes.iter().enumerate().skip(1) {
        let class_current = class_of(c);
        let current_diff = i32::from(c) - i32::from(previous);
        if class_current != class || current_diff.abs() > max_diff(class) {
            max_length = max_length.max(current - start);
            start = current;
            has_diff = false;
            class = class_current;
        } else {
            if has_diff && current_diff != diff {
                max_length = max_length.max(current - start);
                start = current - 1;
            }
            diff = current_diff;
            has_diff = true;
        }
        previous = c;
    }
    max_length.max(bytes.len() - start)
}

/// Measures a candidate the way `PasswordMetrics.computeForPasswordOrPin` does.
pub fn measure(candidate: &str) -> Metrics {
    let bytes = candidate.as_bytes();
    let mut m = Metrics { length: bytes.len(), ..Metrics::default() };
    for &b in bytes {
        match class_of(b) {
            CharClass::Lower => {
                m.letters += 1;
                m.lower_case += 1;
                m.non_numeric += 1;
            }
            CharClass::Upper => {
                m.letters += 1;
                m.upper_case += 1;
                m.non_numeric += 1;
            }
            CharClass::Digit => {
                m.digits += 1;
                m.non_letter += 1;
            }
            CharClass::Symbol => {
                m.symbols += 1;
                m.non_letter += 1;
                m.non_numeric += 1;
            }
        }
    }
    m.max_sequence = max_length_sequence(bytes);
    m
}

fn cred_type_of(candidate: &str) -> CredType {
    if candidate.is_empty() {
        CredType::None
    } else if candidate.bytes().all(|b| b.is_ascii_digit()) {
        CredType::Pin
    } else {
        CredType::Password
    }
}

/// The highest complexity bucket a measured credential satisfies (`determineComplexity`).
fn determine_complexity(cred: CredType, m: &Metrics) -> Complexity {
    for bucket in [Complexity::High, Complexity::Medium, Complexity::Low, Complexity::None] {
        if !bucket.allows(cred) {
            continue;
        }
        if !matches!(cred, CredType::Pin | CredType::Password) {
            return bucket;
        }
        let sequence_ok = bucket.can_have_sequence() || m.max_sequence <= MAX_ALLOWED_SEQUENCE;
        if sequence_ok && m.length >= bucket.minimum_length(m.non_numeric > 0) {
            return bucket;
        }
    }
    Complexity::None
}

/// Checks a candidate against an Android policy.
pub fn check(policy: &AndroidPolicy, candidate: &str) -> Verdict {
    let cred = cred_type_of(candidate);
    let mut metrics = measure(candidate);
    metrics.extra.insert("credential_type".into(), cred.as_str().into());
    metrics.extra.insert("complexity".into(), determine_complexity(cred, &metrics).as_str().into());

    // LockscreenCredential refuses characters outside ASCII 32..=127 before anything else.
    if cred == CredType::Password && candidate.chars().any(|c| !(' '..='\u{7f}').contains(&c)) {
        let v = Violation::new("CONTAINS_INVALID_CHARACTERS", "contains a character outside printable ASCII (32-127)")
            .with_requirement(0);
        return Verdict::from(vec![v], metrics);
    }

    let admin = MinMetrics::from_policy(policy);
    let bucket = policy.complexity;
    if cred < admin.cred || !bucket.allows(cred) {
        let needed = if bucket.allows(admin.cred.max(CredType::Pattern)) {
            admin.cred.max(CredType::Pattern)
        } else {
            CredType::Pin
        };
        let v = Violation::new(
            "WEAK_CREDENTIAL_TYPE",
            format!("a {} is weaker than the policy allows: it needs at least a {}", cred.as_str(), needed.as_str()),
        )
        .with_requirement(0);
        return Verdict::from(vec![v], metrics);
    }
    if cred == CredType::None {
        return Verdict::from(vec![], metrics);
    }

    let mut violations = Vec::new();
    if metrics.length > MAX_PASSWORD_LENGTH {
        violations.push(
            Violation::new("TOO_LONG", format!("longer than the maximum of {MAX_PASSWORD_LENGTH} characters"))
                .with_requirement(MAX_PASSWORD_LENGTH),
        );
    }

    // applyComplexity(), then clamp and removeOverlapping().
    let is_pin = cred == CredType::Pin;
    let mut min = admin;
    if !bucket.can_have_sequence() {
        min.seq_length = min.seq_length.min(MAX_ALLOWED_SEQUENCE);
    }
    min.length = min.length.max(bucket.minimum_length(!is_pin));
    min.length = MAX_PASSWORD_LENGTH.min(min.length.max(MIN_LOCK_PASSWORD_SIZE));
    min.remove_overlapping();

    // comparePasswordMetrics().
    if metrics.length < min.length {
        violations.push(
            Violation::new("TOO_SHORT", format!("shorter than the minimum of {} characters", min.length))
                .with_requirement(min.length),
        );
    }
    if metrics.non_numeric == 0
        && min.non_numeric == 0
        && min.letters == 0
        && min.lower == 0
        && min.upper == 0
        && min.symbols == 0
    {
        let all_numeric_min = bucket.minimum_length(false);
        if all_numeric_min > min.length && all_numeric_min > min.numeric && metrics.length < all_numeric_min {
            violations.push(
                Violation::new(
                    "TOO_SHORT_WHEN_ALL_NUMERIC",
                    format!("an all-digit PIN must be at least {all_numeric_min} digits"),
                )
                .with_requirement(all_numeric_min),
            );
        }
    }
    let minima = [
        ("NOT_ENOUGH_LETTERS", metrics.letters, min.letters, "letters"),
        ("NOT_ENOUGH_UPPER_CASE", metrics.upper_case, min.upper, "upper-case letters"),
        ("NOT_ENOUGH_LOWER_CASE", metrics.lower_case, min.lower, "lower-case letters"),
        ("NOT_ENOUGH_DIGITS", metrics.digits, min.numeric, "digits"),
        ("NOT_ENOUGH_SYMBOLS", metrics.symbols, min.symbols, "symbols"),
        ("NOT_ENOUGH_NON_LETTER", metrics.non_letter, min.non_letter, "non-letters"),
        ("NOT_ENOUGH_NON_DIGITS", metrics.non_numeric, min.non_numeric, "non-digits"),
    ];
    for (code, actual, required, what) in minima {
        if actual < required {
            violations
                .push(Violation::new(code, format!("needs at least {required} {what}")).with_requirement(required));
        }
    }
    if metrics.max_sequence > min.seq_length {
        violations.push(
            Violation::new(
                "CONTAINS_SEQUENCE",
                format!("contains a repeating or ordered sequence longer than {MAX_ALLOWED_SEQUENCE} characters"),
            )
            .with_requirement(0),
        );
    }
    Verdict::from(violations, metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(quality: Quality, min_length: u32, complexity: Complexity) -> AndroidPolicy {
        AndroidPolicy { quality, min_length, complexity, ..AndroidPolicy::default() }
    }

    fn codes(p: &AndroidPolicy, candidate: &str) -> Vec<&'static str> {
        check(p, candidate).violations.iter().map(|v| v.code).collect()
    }

    #[test]
    fn max_length_sequence_matches_aosp_examples() {
        let table = [
            ("1234", 4),
            ("13579", 5),
            ("1234abc", 4),
            ("aabc", 3),
            ("qwertyuio", 1),
            ("@ABC", 3),
            (";;;;", 4),
            (":;<=>", 1),
            ("", 0),
            ("a", 1),
            ("9876", 4),
            ("1212", 2),
        ];
        for (input, expected) in table {
            assert_eq!(max_length_sequence(input.as_bytes()), expected, "{input}");
        }
    }

    #[test]
    fn quality_and_complexity_table() {
        use Complexity as C;
        use Quality as Q;
        let table: &[(AndroidPolicy, &str, &[&str])] = &[
            (policy(Q::Unspecified, 0, C::None), "", &[]),
            (policy(Q::Unspecified, 0, C::None), "abc", &["TOO_SHORT"]),
            (policy(Q::Unspecified, 8, C::None), "abcd", &[]),
            (policy(Q::Something, 0, C::None), "", &["WEAK_CREDENTIAL_TYPE"]),
            (policy(Q::Numeric, 6, C::None), "12345", &["TOO_SHORT"]),
            (policy(Q::Numeric, 6, C::None), "123456", &[]),
            (policy(Q::NumericComplex, 4, C::None), "1234", &["CONTAINS_SEQUENCE"]),
            (policy(Q::NumericComplex, 4, C::None), "1357", &["CONTAINS_SEQUENCE"]),
            (policy(Q::NumericComplex, 4, C::None), "1593", &[]),
            (policy(Q::NumericComplex, 4, C::None), "1112", &[]),
            (policy(Q::NumericComplex, 4, C::None), "11112", &["CONTAINS_SEQUENCE"]),
            (policy(Q::Alphabetic, 4, C::None), "1234", &["WEAK_CREDENTIAL_TYPE"]),
            (policy(Q::Alphabetic, 4, C::None), "abcd", &[]),
            (policy(Q::Alphanumeric, 6, C::None), "abcdef", &["NOT_ENOUGH_DIGITS"]),
            (policy(Q::Alphanumeric, 6, C::None), "abc12", &["TOO_SHORT"]),
            (policy(Q::Alphanumeric, 6, C::None), "abc123", &[]),
            (policy(Q::Unspecified, 0, C::Low), "", &["WEAK_CREDENTIAL_TYPE"]),
            (policy(Q::Unspecified, 0, C::Medium), "1234", &["CONTAINS_SEQUENCE"]),
            (policy(Q::Unspecified, 0, C::Medium), "1592", &[]),
            (policy(Q::Unspecified, 0, C::High), "159263", &["TOO_SHORT"]),
            (policy(Q::Unspecified, 0, C::High), "15926378", &[]),
            (policy(Q::Unspecified, 0, C::High), "abcfz1", &[]),
            (policy(Q::Unspecified, 0, C::High), "abcdz1", &["CONTAINS_SEQUENCE"]),
            (policy(Q::Unspecified, 0, C::None), "a234567890abcdefg", &["TOO_LONG"]),
            (policy(Q::Unspecified, 0, C::None), "pässword", &["CONTAINS_INVALID_CHARACTERS"]),
        ];
        for (p, candidate, expected) in table {
            assert_eq!(codes(p, candidate), *expected, "{p:?} / {candidate:?}");
        }
    }

    #[test]
    fn complex_quality_uses_dpm_defaults_and_reports_every_minimum() {
        let p = policy(Quality::Complex, 8, Complexity::None);
        // Defaults: 1 letter, 1 digit, 1 symbol.
        assert_eq!(codes(&p, "abcdefgh"), ["NOT_ENOUGH_DIGITS", "NOT_ENOUGH_SYMBOLS"]);
        assert!(check(&p, "abcd12!x").compliant);
        let strict =
            AndroidPolicy { min_uppercase: Some(2), min_lowercase: Some(2), min_symbols: Some(0), ..p.clone() };
        assert_eq!(codes(&strict, "abcd1234"), ["NOT_ENOUGH_UPPER_CASE"]);
    }

    /// Vectors from AOSP's `PasswordMetricsTest` (frameworks/base, core/tests/coretests).
    #[test]
    fn aosp_password_metrics_test_vectors() {
        let m = measure("6B~0z1Z3*8A");
        assert_eq!((m.length, m.letters, m.upper_case, m.lower_case), (11, 4, 3, 1));
        assert_eq!((m.digits, m.symbols, m.non_letter), (5, 2, 7));
        assert_eq!(max_length_sequence(b"1234abd"), 4);

        let complexity = |s: &str| check(&AndroidPolicy::default(), s).metrics.extra["complexity"].clone();
        for (candidate, expected) in [
            ("1234", "low"),
            ("124", "low"),
            ("a!", "low"),
            ("a!1", "low"),
            ("1238", "medium"),
            ("ab!c", "medium"),
            ("ab!1", "medium"),
            ("alphabetic!", "high"),
            ("alphanumeric123!", "high"),
            ("", "none"),
        ] {
            assert_eq!(complexity(candidate), expected, "{candidate:?}");
        }

        // validateCredential: "password" passes LOW; "™™™™" has invalid characters.
        let low = AndroidPolicy { complexity: Complexity::Low, ..AndroidPolicy::default() };
        assert!(check(&low, "password").compliant);
        assert_eq!(codes(&low, "™™™™"), ["CONTAINS_INVALID_CHARACTERS"]);
        // pinAndComplexityHigh: a 6-digit PIN without sequences needs 8 under HIGH.
        let high =
            AndroidPolicy { quality: Quality::Numeric, complexity: Complexity::High, ..AndroidPolicy::default() };
        let v = check(&high, "159263");
        assert_eq!(v.violations.iter().map(|x| (x.code, x.requirement)).collect::<Vec<_>>(), [("TOO_SHORT", Some(8))]);
        // nonAllNumberPasswordAndComplexityHigh: a 5-character password needs 6 under HIGH.
        let v = check(&AndroidPolicy { complexity: Complexity::High, ..AndroidPolicy::default() }, "a1b2c");
        assert_eq!(v.violations.iter().map(|x| (x.code, x.requirement)).collect::<Vec<_>>(), [("TOO_SHORT", Some(6))]);
    }

    #[test]
    fn complexity_is_reported_in_metrics() {
        let p = AndroidPolicy::default();
        let v = check(&p, "15926378");
        assert_eq!(v.metrics.extra.get("complexity").map(String::as_str), Some("high"));
        assert_eq!(v.metrics.extra.get("credential_type").map(String::as_str), Some("pin"));
        let v = check(&p, "1234");
        assert_eq!(v.metrics.extra.get("complexity").map(String::as_str), Some("low"));
    }
}
