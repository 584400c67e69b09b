//! `latchkey policy check`: one candidate passcode from stdin (trailing newline stripped)
//! against a policy from flags or a platform policy document. Exit 0 compliant, 1 not
//! compliant, 2 usage error.
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use latchkey_common::exit::Code;
use latchkey_platform::policy::android::{AndroidPolicy, Complexity, Quality};
use latchkey_platform::policy::windows::CharRule;
use latchkey_platform::policy::{profile, ApplePolicy, PasscodePolicy, WindowsPolicy};
use latchkey_platform::Secret;

/// Policy dialect.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Dialect {
    /// Android / AOSP (PasswordMetrics semantics).
    Android,
    /// Apple passcode payload.
    Ios,
    /// PassportForWork PINComplexity.
    Windows,
}

fn parse_quality(s: &str) -> Result<Quality, String> {
    Quality::parse(s)
        .ok_or_else(|| "expected unspecified|something|numeric|numeric-complex|alphabetic|alphanumeric|complex".into())
}
fn parse_complexity(s: &str) -> Result<Complexity, String> {
    Complexity::parse(s).ok_or_else(|| "expected none|low|medium|high".into())
}
fn parse_rule(s: &str) -> Result<CharRule, String> {
    CharRule::parse(s).ok_or_else(|| "expected allowed|required|disallowed".into())
}
fn parse_bool(s: &str) -> Result<bool, String> {
    match s {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("expected true|false".into()),
    }
}

/// Flags of `latchkey policy check`.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Policy dialect.
    #[arg(long, value_enum)]
    pub dialect: Dialect,
    /// Read the policy from a platform document (Apple plist, DPM JSON, PINComplexity lines).
    #[arg(long)]
    pub profile: Option<PathBuf>,
    /// Print the verdict, every violation and the metrics as JSON.
    #[arg(long)]
    pub json: bool,
    /// android: required quality.
    #[arg(long, value_parser = parse_quality)]
    pub quality: Option<Quality>,
    /// android/ios/windows: minimum length.
    #[arg(long)]
    pub min_length: Option<u32>,
    /// android: required complexity.
    #[arg(long, value_parser = parse_complexity)]
    pub complexity: Option<Complexity>,
    /// android: minimum letters (quality complex).
    #[arg(long)]
    pub min_letters: Option<u32>,
    /// android: minimum lower-case letters (quality complex).
    #[arg(long)]
    pub min_lowercase: Option<u32>,
    /// android: minimum upper-case letters (quality complex).
    #[arg(long)]
    pub min_uppercase: Option<u32>,
    /// android: minimum digits (quality complex).
    #[arg(long)]
    pub min_digits: Option<u32>,
    /// android: minimum symbols (quality complex).
    #[arg(long)]
    pub min_symbols: Option<u32>,
    /// android: minimum non-letters (quality complex).
    #[arg(long)]
    pub min_nonletter: Option<u32>,
    /// ios: require letters, not only digits.
    #[arg(long)]
    pub require_alphanumeric: bool,
    /// ios: allow simple passcodes (default true).
    #[arg(long, value_parser = parse_bool)]
    pub allow_simple: Option<bool>,
    /// ios: minimum non-alphanumeric characters.
    #[arg(long)]
    pub min_complex_chars: Option<u32>,
    /// windows: maximum length.
    #[arg(long)]
    pub max_length: Option<u32>,
    /// windows: upper-case letters.
    #[arg(long, value_parser = parse_rule)]
    pub uppercase: Option<CharRule>,
    /// windows: lower-case letters.
    #[arg(long, value_parser = parse_rule)]
    pub lowercase: Option<CharRule>,
    /// windows: digits.
    #[arg(long, value_parser = parse_rule)]
    pub digits: Option<CharRule>,
    /// windows: special characters.
    #[arg(long, value_parser = parse_rule)]
    pub special: Option<CharRule>,
}

/// A usage error (exit 2).
pub struct Usage(pub String);

fn flags_for(args: &CheckArgs) -> Vec<(&'static str, bool, Dialect)> {
    use Dialect::*;
    vec![
        ("--quality", args.quality.is_some(), Android),
        ("--complexity", args.complexity.is_some(), Android),
        ("--min-letters", args.min_letters.is_some(), Android),
        ("--min-lowercase", args.min_lowercase.is_some(), Android),
        ("--min-uppercase", args.min_uppercase.is_some(), Android),
        ("--min-digits", args.min_digits.is_some(), Android),
        ("--min-symbols", args.min_symbols.is_some(), Android),
        ("--min-nonletter", args.min_nonletter.is_some(), Android),
        ("--require-alphanumeric", args.require_alphanumeric, Ios),
        ("--allow-simple", args.allow_simple.is_some(), Ios),
        ("--min-complex-chars", args.min_complex_chars.is_some(), Ios),
        ("--max-length", args.max_length.is_some(), Windows),
        ("--uppercase", args.uppercase.is_some(), Windows),
        ("--lowercase", args.lowercase.is_some(), Windows),
        ("--digits", args.digits.is_some(), Windows),
        ("--special", args.special.is_some(), Windows),
    ]
}

/// Builds the policy the flags describe.
pub fn policy_from_args(args: &CheckArgs) -> Result<PasscodePolicy, Usage> {
    let policy = described_policy(args)?;
    // A policy no passcode could satisfy is the caller's mistake, not the passcode's.
    if let PasscodePolicy::Windows(windows) = &policy {
        windows.validate().map_err(Usage)?;
    }
    Ok(policy)
}

fn described_policy(args: &CheckArgs) -> Result<PasscodePolicy, Usage> {
    for (flag, set, dialect) in flags_for(args) {
        if set && dialect != args.dialect {
            return Err(Usage(format!("{flag} does not apply to --dialect {:?}", args.dialect).to_lowercase()));
        }
    }
    if let Some(path) = &args.profile {
        let bytes = std::fs::read(path).map_err(|e| Usage(format!("{}: {e}", path.display())))?;
        let policy = profile::parse(&bytes).map_err(|e| Usage(format!("{}: {e}", path.display())))?;
        let matches = matches!(
            (&policy, args.dialect),
            (PasscodePolicy::Android(_), Dialect::Android)
                | (PasscodePolicy::Apple(_), Dialect::Ios)
                | (PasscodePolicy::Windows(_), Dialect::Windows)
        );
        if !matches {
            return Err(Usage(
                format!("{} holds a {} policy, not {:?}", path.display(), policy.dialect(), args.dialect)
                    .to_lowercase(),
            ));
        }
        return Ok(policy);
    }
    Ok(match args.dialect {
        Dialect::Android => PasscodePolicy::Android(AndroidPolicy {
            quality: args.quality.unwrap_or_default(),
            min_length: args.min_length.unwrap_or(0),
            complexity: args.complexity.unwrap_or_default(),
            min_letters: args.min_letters,
            min_lowercase: args.min_lowercase,
            min_uppercase: args.min_uppercase,
            min_digits: args.min_digits,
            min_symbols: args.min_symbols,
            min_nonletter: args.min_nonletter,
        }),
        Dialect::Ios => {
            let min_length = args.min_length.unwrap_or(0);
            if min_length > 16 {
                return Err(Usage("--min-length must be 0..=16 for ios".into()));
            }
            PasscodePolicy::Apple(ApplePolicy {
                min_length,
                require_alphanumeric: args.require_alphanumeric,
                allow_simple: args.allow_simple.unwrap_or(true),
                min_complex_chars: args.min_complex_chars.unwrap_or(0),
                ..ApplePolicy::default()
            })
        }
        // What is not given is "not configured": Windows' own defaults and fall-backs apply,
        // and lengths out of range fall back rather than being refused (PassportForWork CSP).
        Dialect::Windows => PasscodePolicy::Windows(WindowsPolicy {
            min_length: args.min_length,
            max_length: args.max_length,
            uppercase: args.uppercase,
            lowercase: args.lowercase,
            digits: args.digits,
            special: args.special,
        }),
    })
}

/// Runs the command; returns the exit code: 0 compliant, 1 not compliant, 2 usage error.
pub fn run(args: &CheckArgs) -> Code {
    let policy = match policy_from_args(args) {
        Ok(p) => p,
        Err(Usage(message)) => {
            eprintln!("error: {message}");
            return Code::Usage;
        }
    };
    let candidate = match latchkey_common::secret_input::read_stdin_line() {
        Ok(raw) => Secret::new(raw.as_str().to_owned()),
        Err(e) => {
            eprintln!("error: reading the passcode from stdin: {e}");
            return Code::Usage;
        }
    };
    let verdict = policy.check(candidate.expose());
    if args.json {
        let value = serde_json::json!({
            "dialect": policy.dialect(),
            "compliant": verdict.compliant,
            "violations": verdict.violations,
            "metrics": verdict.metrics,
            "notes": verdict.notes,
        });
        println!("{value}");
    } else if verdict.compliant {
        println!("compliant");
        for note in &verdict.notes {
            println!("  note: {note}");
        }
    } else {
        println!("not compliant");
        for v in &verdict.violations {
            println!("  {}: {}", v.code, v.message);
        }
    }
    if verdict.compliant {
        Code::Ok
    } else {
        Code::Failure
    }
}
