//! Temporary passcodes: drawn from the OS CSPRNG, shaped to what a policy needs, and accepted
//! only when the engine itself says the result complies.
use rand::seq::SliceRandom;
use rand::RngExt;

use super::android::{Complexity, Quality};
use super::windows::CharRule;
use super::PasscodePolicy;
use crate::secret::Secret;

const DIGITS: &[u8] = b"0123456789";
const LOWER: &[u8] = b"abcdefghijkmnpqrstuvwxyz";
const UPPER: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ";
const SYMBOLS: &[u8] = b"!#%+-=?@";

/// Attempts before giving up: a satisfiable policy is met within a handful.
const MAX_ATTEMPTS: usize = 1000;

/// The character classes and length a temporary passcode needs.
struct Shape {
    length: usize,
    required: Vec<&'static [u8]>,
    pool: Vec<&'static [u8]>,
}

fn shape(policy: &PasscodePolicy) -> Shape {
    match policy {
        PasscodePolicy::Android(p) => {
            let wants_pin = p.quality <= Quality::NumericComplex;
            let floor = match (p.complexity, wants_pin) {
                (Complexity::High, true) => 8,
                _ => 6,
            };
            let length = (p.min_length as usize).max(floor).min(16);
            if wants_pin {
                return Shape { length, required: vec![DIGITS], pool: vec![DIGITS] };
            }
            let mut required: Vec<&'static [u8]> = vec![LOWER, DIGITS];
            let n = |v: Option<u32>, default: u32| v.unwrap_or(default) as usize;
            let mut extra: Vec<&'static [u8]> = Vec::new();
            if p.quality == Quality::Complex {
                let symbols = n(p.min_symbols, 1).max(n(p.min_nonletter, 0).saturating_sub(n(p.min_digits, 1)));
                for (class, count) in [
                    (UPPER, n(p.min_uppercase, 0)),
                    (LOWER, n(p.min_lowercase, 0) + n(p.min_letters, 1)),
                    (DIGITS, n(p.min_digits, 1)),
                    (SYMBOLS, symbols),
                ] {
                    extra.extend(std::iter::repeat_n(class, count));
                }
            }
            required.extend(extra);
            let length = length.max(required.len()).min(16);
            Shape { length, required, pool: vec![LOWER, UPPER, DIGITS] }
        }
        PasscodePolicy::Apple(p) => {
            let length = (p.min_length as usize).max(6);
            let mut required: Vec<&'static [u8]> = vec![DIGITS];
            if p.require_alphanumeric {
                required.push(LOWER);
            }
            required.extend(std::iter::repeat_n(SYMBOLS, p.min_complex_chars as usize));
            let pool: Vec<&'static [u8]> = if p.require_alphanumeric { vec![LOWER, DIGITS] } else { vec![DIGITS] };
            Shape { length: length.max(required.len()), required, pool }
        }
        PasscodePolicy::Windows(p) => {
            // Generate against what Windows enforces, defaults and fall-backs applied.
            let p = p.effective();
            let classes = [(p.uppercase, UPPER), (p.lowercase, LOWER), (p.digits, DIGITS), (p.special, SYMBOLS)];
            let required: Vec<&'static [u8]> =
                classes.iter().filter(|(r, _)| *r == CharRule::Required).map(|(_, c)| *c).collect();
            let mut pool: Vec<&'static [u8]> =
                classes.iter().filter(|(r, c)| *r != CharRule::Disallowed && *c != SYMBOLS).map(|(_, c)| *c).collect();
            if pool.is_empty() && p.special != CharRule::Disallowed {
                pool.push(SYMBOLS);
            }
            let length = (p.min_length as usize).max(6).min(p.max_length as usize);
            Shape { length: length.max(required.len()), required, pool }
        }
    }
}

/// Generates a passcode that complies with `policy`, or says why none could be made.
pub fn temporary_passcode(policy: &PasscodePolicy) -> Result<Secret, String> {
    let shape = shape(policy);
    if shape.pool.is_empty() && shape.required.is_empty() {
        return Err("the policy allows no characters".into());
    }
    let mut rng = rand::rng();
    for _ in 0..MAX_ATTEMPTS {
        let mut chars: Vec<u8> = shape.required.iter().map(|class| class[rng.random_range(0..class.len())]).collect();
        while chars.len() < shape.length {
            let class = shape.pool[rng.random_range(0..shape.pool.len())];
            chars.push(class[rng.random_range(0..class.len())]);
        }
        chars.shuffle(&mut rng);
        let candidate = Secret::new(String::from_utf8_lossy(&chars).into_owned());
        if policy.check(candidate.expose()).compliant {
            return Ok(candidate);
        }
    }
    Err(format!("no compliant passcode found for this {} policy", policy.dialect()))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::policy::{AndroidPolicy, ApplePolicy, WindowsPolicy};

    fn quality() -> impl Strategy<Value = Quality> {
        prop_oneof![
            Just(Quality::Unspecified),
            Just(Quality::Something),
            Just(Quality::Numeric),
            Just(Quality::NumericComplex),
            Just(Quality::Alphabetic),
            Just(Quality::Alphanumeric),
            Just(Quality::Complex),
        ]
    }

    fn complexity() -> impl Strategy<Value = Complexity> {
        prop_oneof![Just(Complexity::None), Just(Complexity::Low), Just(Complexity::Medium), Just(Complexity::High),]
    }

    fn rule() -> impl Strategy<Value = CharRule> {
        prop_oneof![Just(CharRule::Allowed), Just(CharRule::Required), Just(CharRule::Disallowed)]
    }

    proptest! {
        #[test]
        fn every_generated_android_passcode_complies(
            quality in quality(), complexity in complexity(), min_length in 0u32..=12,
            upper in 0u32..=2, symbols in 0u32..=2,
        ) {
            let policy = PasscodePolicy::Android(AndroidPolicy {
                quality, complexity, min_length,
                min_uppercase: Some(upper), min_symbols: Some(symbols),
                ..AndroidPolicy::default()
            });
            let passcode = temporary_passcode(&policy).map_err(TestCaseError::fail)?;
            let verdict = policy.check(passcode.expose());
            prop_assert!(verdict.compliant, "{:?}", verdict.violations);
        }

        #[test]
        fn every_generated_apple_passcode_complies(
            min_length in 0u32..=16, require_alphanumeric: bool, allow_simple: bool,
            min_complex_chars in 0u32..=4,
        ) {
            let policy = PasscodePolicy::Apple(ApplePolicy {
                min_length, require_alphanumeric, allow_simple, min_complex_chars,
                ..ApplePolicy::default()
            });
            let passcode = temporary_passcode(&policy).map_err(TestCaseError::fail)?;
            prop_assert!(policy.check(passcode.expose()).compliant);
        }

        /// Whatever is configured — nothing, out-of-range lengths, "all allowed" — the PIN
        /// complies with the rules Windows applies (defaults and fall-backs included).
        #[test]
        fn every_generated_windows_pin_complies(
            min_length in proptest::option::of(0u32..=12), max_length in proptest::option::of(0u32..=140),
            uppercase in proptest::option::of(rule()), lowercase in proptest::option::of(rule()),
            digits in proptest::option::of(rule()), special in proptest::option::of(rule()),
        ) {
            let p = WindowsPolicy { min_length, max_length, uppercase, lowercase, digits, special };
            prop_assume!(p.validate().is_ok());
            let policy = PasscodePolicy::Windows(p);
            let passcode = temporary_passcode(&policy).map_err(TestCaseError::fail)?;
            prop_assert!(policy.check(passcode.expose()).compliant);
        }
    }
}
