//! `latchkey policy check` as scripts use it: passcode on stdin, exit 0 / 1 / 2, `--json`.
mod common;

use std::process::Command;

use common::{agent_bin, run_with_stdin};

fn check(args: &[&str], passcode: &str) -> (i32, String, String) {
    let out = run_with_stdin(Command::new(agent_bin()).args(["policy", "check"]).args(args), passcode);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn exit_codes_follow_the_verdict_for_every_dialect() {
    let table: &[(&[&str], &str, i32)] = &[
        (&["--dialect", "android", "--quality", "numeric-complex", "--min-length", "6"], "159263\n", 0),
        (&["--dialect", "android", "--quality", "numeric-complex", "--min-length", "6"], "123456\n", 1),
        (&["--dialect", "android", "--complexity", "high"], "1592637\n", 1),
        (&["--dialect", "android", "--quality", "complex", "--min-symbols", "2"], "ab1!cd?e", 0),
        (&["--dialect", "ios", "--min-length", "6", "--allow-simple", "false"], "111111\n", 1),
        (&["--dialect", "ios", "--min-length", "6", "--require-alphanumeric"], "a81x93\r\n", 0),
        (&["--dialect", "windows", "--min-length", "6", "--lowercase", "allowed"], "ab1234\n", 0),
        (&["--dialect", "windows"], "ab1234\n", 1),
        (&["--dialect", "windows", "--special", "required", "--digits", "allowed"], "12345", 1),
        // Usage errors: a flag of another dialect, a bad value, an impossible policy.
        (&["--dialect", "ios", "--quality", "numeric"], "1234", 2),
        (&["--dialect", "android", "--quality", "bogus"], "1234", 2),
        (
            &[
                "--dialect",
                "windows",
                "--uppercase",
                "disallowed",
                "--lowercase",
                "disallowed",
                "--digits",
                "disallowed",
                "--special",
                "disallowed",
            ],
            "1234",
            2,
        ),
        (&["--dialect", "ios", "--min-length", "17"], "1234", 2),
    ];
    for (args, passcode, expected) in table {
        let (code, stdout, stderr) = check(args, passcode);
        assert_eq!(code, *expected, "{args:?}: stdout {stdout} stderr {stderr}");
    }
}

#[test]
fn json_names_every_violation_and_never_echoes_the_passcode() {
    let (code, stdout, _) = check(
        &["--dialect", "android", "--quality", "complex", "--min-length", "10", "--min-uppercase", "2", "--json"],
        "abcdefgh\n",
    );
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(v["compliant"], false);
    let codes: Vec<&str> =
        v["violations"].as_array().expect("array").iter().map(|x| x["code"].as_str().expect("code")).collect();
    assert_eq!(codes, ["TOO_SHORT", "NOT_ENOUGH_UPPER_CASE", "NOT_ENOUGH_DIGITS", "NOT_ENOUGH_SYMBOLS"]);
    assert!(v["violations"].as_array().expect("array").iter().all(|x| !x["message"].as_str().unwrap_or("").is_empty()));
    assert_eq!(v["metrics"]["length"], 8);
    assert_eq!(v["metrics"]["extra"]["credential_type"], "password");
    assert!(!stdout.contains("abcdefgh"), "the passcode was echoed");
}

#[test]
fn policies_come_from_platform_documents() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plist = dir.path().join("passcode.mobileconfig");
    std::fs::write(
        &plist,
        r#"<?xml version="1.0" encoding="UTF-8"?><plist version="1.0"><dict>
<key>PayloadContent</key><array><dict>
<key>PayloadType</key><string>com.apple.mobiledevice.passwordpolicy</string>
<key>minLength</key><integer>8</integer><key>minComplexChars</key><integer>1</integer>
</dict></array></dict></plist>"#,
    )
    .expect("plist");
    let p = plist.to_str().expect("utf8");
    assert_eq!(check(&["--dialect", "ios", "--profile", p], "abcd123!").0, 0);
    assert_eq!(check(&["--dialect", "ios", "--profile", p], "abcd1234").0, 1);
    assert_eq!(check(&["--dialect", "android", "--profile", p], "abcd1234").0, 2, "dialect mismatch is a usage error");

    let oma = dir.path().join("pin.txt");
    std::fs::write(&oma, "./Device/Vendor/MSFT/PassportForWork/t/Policies/PINComplexity/MinimumPINLength = 8\n")
        .expect("oma");
    let o = oma.to_str().expect("utf8");
    assert_eq!(check(&["--dialect", "windows", "--profile", o], "12345678").0, 0);
    assert_eq!(check(&["--dialect", "windows", "--profile", o], "1234567").0, 1);

    let dpm = dir.path().join("dpm.json");
    std::fs::write(&dpm, r#"{"passwordQuality":"PASSWORD_QUALITY_NUMERIC_COMPLEX","passwordMinimumLength":6}"#)
        .expect("dpm");
    let d = dpm.to_str().expect("utf8");
    assert_eq!(
        check(&["--dialect", "android", "--profile", d], "975318").0,
        1,
        "9753 is an ordered run of 4 with step -2"
    );
    assert_eq!(check(&["--dialect", "android", "--profile", d], "904618").0, 0);
    std::fs::write(&dpm, "{not json").expect("dpm");
    assert_eq!(check(&["--dialect", "android", "--profile", d], "1234").0, 2);
}
