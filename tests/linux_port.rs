//! The real Linux port end to end, against a throw-away root (never the host's accounts):
//! the admin resets the managed account's password and the shadow file holds its SHA-512 crypt.
mod common;

use std::time::Duration;

use common::{Device, DeviceSpec, Server};

#[test]
fn linux_reset_writes_a_crypt_hash_and_lock_runs_the_session_lock() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(root.path());
    let fake_root = root.path().join("rootfs");
    std::fs::create_dir_all(fake_root.join("etc")).expect("etc");
    std::fs::write(fake_root.join("etc/shadow"), "root:*:19000:0:99999:7:::\nkiosk:!:19000:0:99999:7:::\n")
        .expect("shadow");
    std::fs::write(fake_root.join("etc/os-release"), "ID=debian\nVERSION_ID=\"12\"\n").expect("os-release");
    std::fs::write(fake_root.join("etc/login.defs"), "ENCRYPT_METHOD YESCRYPT\n").expect("login.defs");
    let marker = root.path().join("sessions-locked");
    let platform = format!(
        "[platform]\nport = \"linux\"\nlinux_root = \"{}\"\nlinux_user = \"kiosk\"\nlock_command = [\"touch\", \"{}\"]\n",
        fake_root.display(),
        marker.display()
    );
    let mut device = Device::enroll(
        root.path(),
        "linux",
        &server,
        DeviceSpec { platform: Some(platform), ..DeviceSpec::new("linux") },
    );
    device.start();
    device.wait_checked_in(Duration::from_secs(30));
    let (id, passcode) = server.action("reset-passcode", &device.id, &[]);
    let passcode = passcode.expect("a temporary password");
    let row = server.wait_result(&id, Duration::from_secs(30));
    assert_eq!(row["state"], "succeeded", "{row}");
    let shadow = std::fs::read_to_string(fake_root.join("etc/shadow")).expect("shadow");
    let hash = shadow.lines().find(|l| l.starts_with("kiosk:")).and_then(|l| l.split(':').nth(1)).expect("kiosk entry");
    assert!(hash.starts_with("$y$"), "login.defs asks for yescrypt: {hash}");
    assert!(latchkey_platform::linux::crypt_matches(&latchkey_platform::Secret::new(passcode.clone()), hash));
    assert!(system_crypt_accepts(&passcode, hash), "the system's crypt(3) rejects the hash we wrote");
    assert!(!system_crypt_accepts("not-the-password", hash), "the interop check accepts anything");
    assert!(shadow.starts_with("root:*:19000:0:99999:7:::\n"), "another account changed");

    // The server judges a lock by what the device last reported: wait for the check-in that
    // reports the new password, as an admin watching `devices` would.
    common::wait_until("the new password to be reported", Duration::from_secs(30), || {
        server.devices().iter().any(|d| d["device_id"] == device.id && d["passcode_present"] == true)
    });
    let (id, _) = server.action("lock", &device.id, &[]);
    assert_eq!(server.wait_result(&id, Duration::from_secs(30))["state"], "succeeded");
    assert!(marker.exists(), "the lock command did not run");
    assert!(!device.log_text().contains(&passcode));
}

/// Every scheme we write is one the system's crypt(3) accepts for the same password (and
/// refuses for another), with glibc's 16-character SHA-crypt salt.
#[test]
fn every_hash_we_write_is_accepted_by_the_system_crypt() {
    use latchkey_platform::linux::{crypt, CryptMethod};
    use latchkey_platform::Secret;
    for (method, prefix) in [(CryptMethod::Yescrypt, "$y$"), (CryptMethod::Sha512, "$6$"), (CryptMethod::Sha256, "$5$")]
    {
        let hash = crypt(method, &Secret::from("Tmp-4821x")).expect("crypt");
        assert!(hash.starts_with(prefix), "{hash}");
        if prefix != "$y$" {
            let fields: Vec<&str> = hash.split('$').collect();
            let salt = fields[fields.len() - 2];
            assert_eq!(salt.len(), 16, "{hash}");
        }
        assert!(system_crypt_accepts("Tmp-4821x", &hash), "crypt(3) rejects our {prefix} hash {hash}");
        assert!(!system_crypt_accepts("Tmp-4821y", &hash), "crypt(3) accepts a wrong password for {hash}");
    }
}

/// Asks the system's own crypt(3) (libxcrypt on Debian) whether `hash` is the hash of
/// `password`, through Perl's `crypt` builtin — Perl is Essential on Debian, and unlike Python's
/// `crypt` module (removed in 3.13) it is not going away. The password goes on stdin, never argv.
/// Without Perl the test fails: an interop check that cannot run must not pass.
fn system_crypt_accepts(password: &str, hash: &str) -> bool {
    let script = "chomp(my $pw = <STDIN>); chomp(my $h = <STDIN>); exit(crypt($pw, $h) eq $h ? 0 : 1)";
    let out = common::run_with_stdin(
        std::process::Command::new("perl").args(["-e", script]),
        &format!("{password}\n{hash}\n"),
    );
    match out.status.code() {
        Some(0) => true,
        Some(1) => false,
        other => panic!("perl could not run crypt(3) ({other:?}): {}", String::from_utf8_lossy(&out.stderr)),
    }
}
