//! Reads passcode policies in each platform's own form:
//! - Apple configuration profiles or bare payloads (`com.apple.mobiledevice.passwordpolicy`),
//!   XML or binary plist;
//! - Android `DevicePolicyManager`-style JSON (`passwordQuality`, `passwordMinimumLength`,
//!   `requiredPasswordComplexity`, `passwordMinimumLetters`…; names or DPM integer constants);
//! - PassportForWork `PINComplexity` nodes, as OMA-URI lines (`…/PINComplexity/Digits = 1`) or as
//!   a JSON object of node names.
use std::io::Cursor;

use serde_json::Value;

use super::android::{AndroidPolicy, Complexity, Quality};
use super::apple::ApplePolicy;
use super::windows::{CharRule, WindowsPolicy};
use super::PasscodePolicy;

/// The Apple payload type that carries a passcode policy.
pub const APPLE_PAYLOAD_TYPE: &str = "com.apple.mobiledevice.passwordpolicy";

/// Why a policy document could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProfileError {
    /// Not a plist, JSON or OMA-URI document.
    #[error("unrecognised policy document: {0}")]
    Format(String),
    /// A field holds a value of the wrong type or out of range.
    #[error("{key}: {problem}")]
    Field {
        /// The offending key.
        key: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A configuration profile without a passcode payload.
    #[error("no {APPLE_PAYLOAD_TYPE} payload in the profile")]
    NoPasscodePayload,
}

fn field(key: &str, problem: impl Into<String>) -> ProfileError {
    ProfileError::Field { key: key.to_owned(), problem: problem.into() }
}

/// Reads a policy document, detecting its form.
pub fn parse(bytes: &[u8]) -> Result<PasscodePolicy, ProfileError> {
    let text = std::str::from_utf8(bytes).unwrap_or("");
    let trimmed = text.trim_start();
    if bytes.starts_with(b"bplist") || trimmed.starts_with("<?xml") || trimmed.starts_with("<plist") {
        return parse_apple(bytes).map(PasscodePolicy::Apple);
    }
    if trimmed.starts_with('{') {
        let value: Value = serde_json::from_str(trimmed).map_err(|e| ProfileError::Format(e.to_string()))?;
        let Value::Object(map) = value else {
            return Err(ProfileError::Format("expected a JSON object".into()));
        };
        if map.keys().any(|k| k.starts_with("password") || k.starts_with("requiredPassword")) {
            return parse_android(&map).map(PasscodePolicy::Android);
        }
        let nodes = map.into_iter().collect::<Vec<_>>();
        return parse_windows(nodes).map(PasscodePolicy::Windows);
    }
    if trimmed.contains("PINComplexity/") {
        let mut nodes = Vec::new();
        for line in trimmed.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let (path, value) =
                line.split_once('=').ok_or_else(|| ProfileError::Format(format!("expected `path = value`: {line}")))?;
            let name = path.trim().rsplit('/').next().unwrap_or_default().to_owned();
            let value = value.trim();
            let json = value.parse::<i64>().map(Value::from).unwrap_or(Value::from(value));
            nodes.push((name, json));
        }
        return parse_windows(nodes).map(PasscodePolicy::Windows);
    }
    Err(ProfileError::Format("expected a plist, a JSON object or PINComplexity OMA-URI lines".into()))
}

fn parse_apple(bytes: &[u8]) -> Result<ApplePolicy, ProfileError> {
    let value =
        plist::Value::from_reader(Cursor::new(bytes)).map_err(|e| ProfileError::Format(format!("plist: {e}")))?;
    let dict = value.as_dictionary().ok_or_else(|| ProfileError::Format("plist root is not a dictionary".into()))?;
    // A full configuration profile nests the payload in PayloadContent.
    let payload = match dict.get("PayloadContent").and_then(plist::Value::as_array) {
        Some(contents) => contents
            .iter()
            .filter_map(plist::Value::as_dictionary)
            .find(|d| d.get("PayloadType").and_then(plist::Value::as_string) == Some(APPLE_PAYLOAD_TYPE))
            .ok_or(ProfileError::NoPasscodePayload)?,
        None => dict,
    };
    let uint = |key: &str| -> Result<u32, ProfileError> {
        match payload.get(key) {
            None => Ok(0),
            Some(v) => v
                .as_unsigned_integer()
                .or_else(|| v.as_signed_integer().and_then(|i| u64::try_from(i).ok()))
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| field(key, "expected a non-negative integer")),
        }
    };
    let boolean = |key: &str, default: bool| -> Result<bool, ProfileError> {
        match payload.get(key) {
            None => Ok(default),
            Some(v) => v.as_boolean().ok_or_else(|| field(key, "expected a boolean")),
        }
    };
    let policy = ApplePolicy {
        force_pin: boolean("forcePIN", false)?,
        min_length: uint("minLength")?,
        require_alphanumeric: boolean("requireAlphanumeric", false)?,
        allow_simple: boolean("allowSimple", true)?,
        min_complex_chars: uint("minComplexChars")?,
        pin_history: uint("pinHistory")?,
        max_pin_age_days: uint("maxPINAgeInDays")?,
        max_failed_attempts: uint("maxFailedAttempts")?,
    };
    if policy.min_length > super::apple::MAX_MIN_LENGTH {
        return Err(field("minLength", "must be 0..=16"));
    }
    if policy.min_complex_chars > 4 {
        return Err(field("minComplexChars", "must be 0..=4"));
    }
    // Apple's documented ranges; a key that is absent reads as 0 (not set).
    let ranges = [
        ("maxFailedAttempts", policy.max_failed_attempts, 2..=11),
        ("pinHistory", policy.pin_history, 1..=50),
        ("maxPINAgeInDays", policy.max_pin_age_days, 0..=730),
    ];
    for (key, value, range) in ranges {
        if payload.contains_key(key) && !range.contains(&value) {
            return Err(field(key, format!("must be {}..={}", range.start(), range.end())));
        }
    }
    Ok(policy)
}

fn android_quality(value: &Value) -> Option<Quality> {
    if let Some(n) = value.as_i64() {
        return Some(match n {
            0 => Quality::Unspecified,
            0x10000 => Quality::Something,
            0x20000 => Quality::Numeric,
            0x30000 => Quality::NumericComplex,
            0x40000 => Quality::Alphabetic,
            0x50000 => Quality::Alphanumeric,
            0x60000 => Quality::Complex,
            _ => return None,
        });
    }
    let name = value.as_str()?.trim_start_matches("PASSWORD_QUALITY_").to_ascii_lowercase();
    Quality::parse(&name.replace('_', "-"))
}

fn android_complexity(value: &Value) -> Option<Complexity> {
    if let Some(n) = value.as_i64() {
        return Some(match n {
            0 => Complexity::None,
            0x10000 => Complexity::Low,
            0x30000 => Complexity::Medium,
            0x50000 => Complexity::High,
            _ => return None,
        });
    }
    let name = value.as_str()?.trim_start_matches("PASSWORD_COMPLEXITY_").to_ascii_lowercase();
    Complexity::parse(&name)
}

fn parse_android(map: &serde_json::Map<String, Value>) -> Result<AndroidPolicy, ProfileError> {
    let count = |key: &str| -> Result<Option<u32>, ProfileError> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| field(key, "expected a non-negative integer")),
        }
    };
    let quality = match map.get("passwordQuality") {
        None => Quality::Unspecified,
        Some(v) => android_quality(v).ok_or_else(|| field("passwordQuality", "unknown quality"))?,
    };
    let complexity = match map.get("requiredPasswordComplexity") {
        None => Complexity::None,
        Some(v) => android_complexity(v).ok_or_else(|| field("requiredPasswordComplexity", "unknown complexity"))?,
    };
    Ok(AndroidPolicy {
        quality,
        complexity,
        min_length: count("passwordMinimumLength")?.unwrap_or(0),
        min_letters: count("passwordMinimumLetters")?,
        min_lowercase: count("passwordMinimumLowerCase")?,
        min_uppercase: count("passwordMinimumUpperCase")?,
        min_digits: count("passwordMinimumNumeric")?,
        min_symbols: count("passwordMinimumSymbols")?,
        min_nonletter: count("passwordMinimumNonLetter")?,
    })
}

fn parse_windows(nodes: Vec<(String, Value)>) -> Result<WindowsPolicy, ProfileError> {
    let mut policy = WindowsPolicy::default();
    for (name, value) in nodes {
        let int = value.as_i64().ok_or_else(|| field(&name, "expected an integer"))?;
        let rule = || CharRule::from_csp(int).map(Some).ok_or_else(|| field(&name, "expected 0, 1 or 2"));
        // A length outside 4..=127 is kept as configured: Windows then falls back to the
        // defaults for both lengths (see `windows.rs`); only a value that is not a length at all
        // is an error.
        let length = || u32::try_from(int).map(Some).map_err(|_| field(&name, "expected a non-negative integer"));
        match name.as_str() {
            "MinimumPINLength" => policy.min_length = length()?,
            "MaximumPINLength" => policy.max_length = length()?,
            "UppercaseLetters" => policy.uppercase = rule()?,
            "LowercaseLetters" => policy.lowercase = rule()?,
            "Digits" => policy.digits = rule()?,
            "SpecialCharacters" => policy.special = rule()?,
            // History and Expiration are enforced by Windows against its own records.
            "History" | "Expiration" => {}
            other => return Err(field(other, "not a PINComplexity node")),
        }
    }
    policy.validate().map_err(|p| field("PINComplexity", p))?;
    Ok(policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROFILE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0"><dict>
  <key>PayloadType</key><string>Configuration</string>
  <key>PayloadContent</key><array><dict>
    <key>PayloadType</key><string>com.apple.mobiledevice.passwordpolicy</string>
    <key>minLength</key><integer>6</integer>
    <key>requireAlphanumeric</key><true/>
    <key>allowSimple</key><false/>
    <key>minComplexChars</key><integer>1</integer>
    <key>maxFailedAttempts</key><integer>10</integer>
  </dict></array>
</dict></plist>"#;

    #[test]
    fn reads_an_apple_configuration_profile_in_xml_and_binary() {
        let expected = ApplePolicy {
            min_length: 6,
            require_alphanumeric: true,
            allow_simple: false,
            min_complex_chars: 1,
            max_failed_attempts: 10,
            ..ApplePolicy::default()
        };
        assert_eq!(parse(PROFILE.as_bytes()), Ok(PasscodePolicy::Apple(expected.clone())));
        let value = plist::Value::from_reader_xml(PROFILE.as_bytes()).expect("xml");
        let mut binary = Vec::new();
        value.to_writer_binary(&mut binary).expect("binary");
        assert_eq!(parse(&binary), Ok(PasscodePolicy::Apple(expected)));
    }

    #[test]
    fn apple_ranges_are_enforced_with_the_key_named() {
        let doc = |key: &str, value: i64| {
            format!(
                "<?xml version=\"1.0\"?><plist version=\"1.0\"><dict><key>{key}</key><integer>{value}</integer></dict></plist>"
            )
        };
        assert!(parse(doc("maxFailedAttempts", 11).as_bytes()).is_ok());
        for (key, bad) in [
            ("maxFailedAttempts", 1),
            ("maxFailedAttempts", 12),
            ("pinHistory", 51),
            ("maxPINAgeInDays", 731),
            ("minLength", 17),
        ] {
            match parse(doc(key, bad).as_bytes()) {
                Err(ProfileError::Field { key: named, .. }) => assert_eq!(named, key),
                other => panic!("{key}={bad}: {other:?}"),
            }
        }
        let negative = doc("minLength", -1);
        assert!(matches!(parse(negative.as_bytes()), Err(ProfileError::Field { .. })));
    }

    #[test]
    fn reads_android_dpm_fields_by_name_and_constant() {
        let by_name = br#"{"passwordQuality":"PASSWORD_QUALITY_NUMERIC_COMPLEX","passwordMinimumLength":6}"#;
        let by_int = br#"{"passwordQuality":196608,"passwordMinimumLength":6,"requiredPasswordComplexity":327680}"#;
        let PasscodePolicy::Android(a) = parse(by_name).expect("by name") else { panic!("dialect") };
        assert_eq!((a.quality, a.min_length), (Quality::NumericComplex, 6));
        let PasscodePolicy::Android(b) = parse(by_int).expect("by int") else { panic!("dialect") };
        assert_eq!((b.quality, b.complexity), (Quality::NumericComplex, Complexity::High));
        assert!(parse(br#"{"passwordQuality":"BOGUS"}"#).is_err());
    }

    #[test]
    fn reads_pincomplexity_oma_uri_lines() {
        let doc = b"./Device/Vendor/MSFT/PassportForWork/tenant/Policies/PINComplexity/MinimumPINLength = 8\n\
                    ./Device/Vendor/MSFT/PassportForWork/tenant/Policies/PINComplexity/LowercaseLetters = 0\n";
        let PasscodePolicy::Windows(w) = parse(doc).expect("parse") else { panic!("dialect") };
        assert_eq!((w.min_length, w.lowercase, w.digits), (Some(8), Some(CharRule::Allowed), None));
        let bad = b"./Device/Vendor/MSFT/PassportForWork/t/Policies/PINComplexity/Digits = 7\n";
        assert!(matches!(parse(bad), Err(ProfileError::Field { .. })));
    }
}
