//! The agent speaking Apple's MDM protocol to a server no one here wrote: NanoMDM behind nginx
//! (mutual TLS 1.3), real `latchkey` agents with simulated iOS, iOS User Enrollment and macOS
//! devices, enrolled from generated `.mobileconfig` profiles. Both sides are checked: the
//! status NanoMDM recorded for each CommandUUID (from its webhook) and the simulated device's
//! state and effects.
//!
//! Needs nginx (`apt-get install nginx-light`): `.ci/apple-mdm` installs it and runs these.
mod common;

use std::time::Duration;

use plist::{Dictionary, Value};

use common::apple::{error_code, text, NanoMdm, Password};

fn fields(pairs: &[(&str, Value)]) -> Dictionary {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
}

fn passcode_present(device: &common::Device) -> bool {
    device.sim_show()["passcode_present"].as_bool().expect("passcode_present")
}

fn locked(device: &common::Device) -> bool {
    device.sim_show()["locked"].as_bool().expect("locked")
}

#[test]
#[ignore = "needs nginx and NanoMDM: run .ci/apple-mdm"]
fn an_ios_device_escrows_its_unlock_token_and_nanomdm_clears_the_passcode_with_it() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = NanoMdm::start(root.path());
    let mut ios = server.device(root.path(), "ios", "ios", Password::Separate);
    let out = ios.enroll();
    assert!(out.status.success(), "enroll: {}\n{}", String::from_utf8_lossy(&out.stderr), server.logs());
    let id = ios.device.id.clone();

    // Authenticate, then TokenUpdate with the UnlockToken: NanoMDM's events carry the device's plists.
    let authenticate = server.events.wait_checkins("mdm.Authenticate", &id);
    assert_eq!(authenticate.len(), 1, "one Authenticate");
    assert_eq!(text(&authenticate[0], "Topic"), common::apple::TOPIC);
    let updates = server.events.wait_checkins("mdm.TokenUpdate", &id);
    assert_eq!(updates.len(), 1, "one TokenUpdate at enrollment");
    let token = updates[0].get("UnlockToken").and_then(Value::as_data).expect("UnlockToken escrowed").to_vec();
    assert!(!token.is_empty());
    assert!(passcode_present(&ios.device));

    ios.device.start();
    // A wrong token: Error with Latchkey's code, the passcode untouched.
    let wrong = server.enqueue(&id, "ClearPasscode", fields(&[("UnlockToken", Value::Data(vec![0x5a; 32]))]));
    let (status, report) = server.events.wait_report(&wrong);
    assert_eq!(status, "Error", "{report:?}");
    assert_eq!(error_code(&report), "UNLOCK_TOKEN_MISMATCH");
    assert!(passcode_present(&ios.device), "a wrong token must not clear the passcode");
    assert_eq!(ios.device.effects_for(&wrong), 0);

    // A RequestType this agent does not carry out: a clear Error, never a silent drop.
    let erase = server.enqueue(&id, "EraseDevice", Dictionary::new());
    let (status, report) = server.events.wait_report(&erase);
    assert_eq!((status.as_str(), error_code(&report).as_str()), ("Error", "PLATFORM_UNSUPPORTED"));
    let chain = report.get("ErrorChain").and_then(Value::as_array).expect("chain");
    let entry = chain[0].as_dictionary().expect("entry");
    assert!(text(entry, "LocalizedDescription").contains("EraseDevice"), "{entry:?}");

    // The escrowed token: Acknowledged, the passcode gone, one effect.
    let clear = server.enqueue(&id, "ClearPasscode", fields(&[("UnlockToken", Value::Data(token.clone()))]));
    let (status, _) = server.events.wait_report(&clear);
    assert_eq!(status, "Acknowledged");
    assert!(!passcode_present(&ios.device), "the passcode is removed");
    assert_eq!(ios.device.effects_for(&clear), 1);

    // Each command reported exactly once.
    for uuid in [&wrong, &erase, &clear] {
        assert_eq!(server.events.reports(uuid).len(), 1, "{uuid} reported once");
    }
    // The unlock token never reaches a log.
    let hex: String = token.iter().map(|b| format!("{b:02x}")).collect();
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &token);
    let log = ios.device.log_text();
    assert!(!log.contains(&hex) && !log.contains(&b64), "the unlock token leaked into the agent's log");

    // Leaving management tells NanoMDM (the profile asks for CheckOut).
    assert!(ios.device.terminate().success());
    let out = std::process::Command::new(common::agent_bin())
        .args(["unenroll", "--config", ios.device.config.to_str().expect("utf8")])
        .output()
        .expect("unenroll");
    assert!(out.status.success(), "unenroll: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(server.events.wait_checkins("mdm.CheckOut", &id).len(), 1, "CheckOut sent");
}

#[test]
#[ignore = "needs nginx and NanoMDM: run .ci/apple-mdm"]
fn a_user_enrollment_is_named_by_enrollment_id_escrows_nothing_and_refuses_passcode_removal() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = NanoMdm::start(root.path());
    let mut byod = server.device(root.path(), "byod", "ios-user-enrollment", Password::InProfile);
    let out = byod.enroll();
    assert!(out.status.success(), "enroll: {}\n{}", String::from_utf8_lossy(&out.stderr), server.logs());
    let id = byod.device.id.clone();
    let updates = server.events.wait_checkins("mdm.TokenUpdate", &id);
    assert_eq!(updates.len(), 1);
    assert_eq!(text(&updates[0], "EnrollmentID"), id);
    assert!(updates[0].get("UDID").is_none(), "UDID is forbidden in User Enrollment");
    assert!(updates[0].get("UnlockToken").is_none(), "no UnlockToken in User Enrollment");

    byod.device.start();
    let clear = server.enqueue(&id, "ClearPasscode", fields(&[("UnlockToken", Value::Data(vec![1; 32]))]));
    let (status, report) = server.events.wait_report(&clear);
    assert_eq!((status.as_str(), error_code(&report).as_str()), ("Error", "USER_ENROLLMENT"));
    assert!(passcode_present(&byod.device));
    // DeviceLock is allowed in User Enrollment (device.lock.yaml).
    let lock = server.enqueue(&id, "DeviceLock", Dictionary::new());
    assert_eq!(server.events.wait_report(&lock).0, "Acknowledged");
    assert!(locked(&byod.device));
}

#[test]
#[ignore = "needs nginx and NanoMDM: run .ci/apple-mdm"]
fn device_lock_on_ios_with_a_message_and_on_macos_only_with_its_pin() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = NanoMdm::start(root.path());
    let mut ios = server.device(root.path(), "ios", "ios", Password::Separate);
    let mut mac = server.device(root.path(), "mac", "macos", Password::Separate);
    for d in [&mut ios, &mut mac] {
        let out = d.enroll();
        assert!(out.status.success(), "enroll: {}\n{}", String::from_utf8_lossy(&out.stderr), server.logs());
        d.device.start();
    }
    let lock = server.enqueue(
        &ios.device.id,
        "DeviceLock",
        fields(&[("Message", "Lost? Call IT".into()), ("PhoneNumber", "+1 555 0100".into())]),
    );
    let (status, report) = server.events.wait_report(&lock);
    assert_eq!(status, "Acknowledged");
    assert_eq!(text(&report, "MessageResult"), "Success");
    assert!(locked(&ios.device));

    // macOS: the lock needs the six-digit Find My PIN; without one it is refused, unapplied.
    let no_pin = server.enqueue(&mac.device.id, "DeviceLock", Dictionary::new());
    let (status, report) = server.events.wait_report(&no_pin);
    assert_eq!((status.as_str(), error_code(&report).as_str()), ("Error", "MALFORMED"));
    assert!(!locked(&mac.device));
    let with_pin = server.enqueue(&mac.device.id, "DeviceLock", fields(&[("PIN", "482913".into())]));
    assert_eq!(server.events.wait_report(&with_pin).0, "Acknowledged");
    assert!(locked(&mac.device));
    assert_eq!(mac.device.effects_for(&with_pin), 1);
    assert!(!mac.device.log_text().contains("482913"), "the lock PIN leaked into the log");
    // macOS has no passcode removal.
    let clear = server.enqueue(&mac.device.id, "ClearPasscode", fields(&[("UnlockToken", Value::Data(vec![1; 32]))]));
    assert_eq!(error_code(&server.events.wait_report(&clear).1), "PLATFORM_UNSUPPORTED");
}

#[test]
#[ignore = "needs nginx and NanoMDM: run .ci/apple-mdm"]
fn a_crash_between_receipt_and_report_gives_nanomdm_one_status_and_the_device_one_effect() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = NanoMdm::start(root.path());
    for (name, fault) in [("after-apply", "crash-after-apply"), ("before-report", "crash-before-report")] {
        let mut ios = server.device(root.path(), name, "ios", Password::Separate);
        assert!(ios.enroll().status.success());
        let id = ios.device.id.clone();
        ios.device.start_with_env(&[("LATCHKEY_FAULT", fault)]);
        let lock = server.enqueue(&id, "DeviceLock", fields(&[("Message", "crash test".into())]));
        let status = ios.device.wait_exit(Duration::from_secs(30));
        assert!(!status.success(), "{fault}: the agent must die mid-command");
        assert!(server.events.reports(&lock).is_empty(), "{fault}: nothing reported before the crash");
        assert_eq!(ios.device.effects_for(&lock), 1, "{fault}: the lock happened before the crash");

        ios.device.start();
        let (status, _) = server.events.wait_report(&lock);
        assert_eq!(status, "Acknowledged", "{fault}");
        // Later polls (Idle) must not bring it back or apply it again.
        let marker = server.enqueue(&id, "DeviceLock", Dictionary::new());
        server.events.wait_report(&marker);
        assert_eq!(server.events.reports(&lock).len(), 1, "{fault}: one status at NanoMDM");
        assert_eq!(ios.device.effects_for(&lock), 1, "{fault}: one effect on the device");
    }
}

#[test]
#[ignore = "needs nginx and NanoMDM: run .ci/apple-mdm"]
fn an_identity_from_another_ca_is_refused_at_the_tls_front_and_nothing_is_stored() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = NanoMdm::start(root.path());
    let mut stranger = server.device(root.path(), "stranger", "ios", Password::Separate);
    let foreign = common::apple::Ca::new("Someone else's CA");
    stranger.password =
        common::apple::write_profile(&stranger.profile, &server.server_url, &foreign, Password::Separate, false);
    let out = stranger.enroll();
    assert!(!out.status.success(), "a foreign identity must not enroll");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refused") && stderr.contains("certificate"), "{stderr}");
    assert!(server.events.topic("mdm.Authenticate").is_empty(), "NanoMDM never saw it");
    assert!(!stranger.device.dir.join("state/identity.json").exists(), "nothing stored");

    // A wrong PKCS#12 password is named, and nothing is sent.
    let mut careless = server.device(root.path(), "careless", "ios", Password::Separate);
    careless.password = "not-the-password".into();
    let out = careless.enroll();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("password is wrong"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(server.events.topic("mdm.Authenticate").is_empty(), "nothing was sent with a wrong password");
}
