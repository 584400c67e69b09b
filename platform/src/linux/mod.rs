//! The real Linux port: the managed account's password lives in `<root>/etc/shadow`, hashed in
//! the system's own crypt format ([`crypt`]); remote lock runs the session-lock command
//! (`loginctl lock-sessions` by default) with a deadline.
//!
//! Changing the password follows shadow-utils (`passwd`, `chpasswd`): take the account-database
//! lock ([`pwdlock`], as `lckpwdf(3)`), keep the previous file as `shadow-`, and replace the file
//! atomically with its mode, owner and group (root:shadow 0640 on Debian) set on the new file
//! before the rename — so under systemd nothing privileged happens after the password changed.
//! Every effect is recorded before it starts ([`effects`]), so "was it applied?" is answered
//! from the shadow entry itself after a crash, and "cannot tell" where nothing can be compared.
//!
//! `root` is `/` on a device and a throw-away copy in tests, so tests never touch the host's
//! accounts.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::action::{LockRequest, ResetFlags, Scope};
use crate::atomic::{self, FileMeta};
use crate::facts::{DeviceFacts, DeviceState, ManagementMode, Platform, ResetTokenState};
use crate::policy::PasscodePolicy;
use crate::port::{DevicePort, EffectId, LockReport, PinReport, PortError, PortSnapshot};
use crate::secret::{Secret, SecretBytes};

pub mod crypt;
pub mod effects;
pub mod pwdlock;
pub mod shadow;

pub use crypt::{crypt, crypt_matches, crypt_method, CryptMethod};
pub use shadow::has_password;

use effects::{Effects, Record, Stage};

/// How long the session-lock command may run before it is killed.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(15);

/// Configuration of the Linux port.
#[derive(Clone, Debug)]
pub struct LinuxConfig {
    /// Filesystem root holding `etc/shadow` and `etc/os-release`.
    pub root: PathBuf,
    /// The managed local account.
    pub user: String,
    /// Passcode policy assigned to this device, if any.
    pub policy: Option<PasscodePolicy>,
    /// Command (argv) that locks every session.
    pub lock_command: Vec<String>,
    /// How long the lock command may run.
    pub lock_timeout: Duration,
    /// Where the port records its effects (for crash recovery).
    pub effects_file: PathBuf,
}

/// The Linux port.
pub struct LinuxPort {
    config: LinuxConfig,
    effects: Effects,
}

/// An OS error before anything changed. Permission refusals (a sandbox without `@chown`, a
/// read-only /etc, a missing capability) do not go away by retrying: they fail the command and
/// say so. Anything else may be passing (a held lock, a full disk): the server delivers the
/// command again.
fn os_error(path: &Path, e: &std::io::Error) -> PortError {
    use std::io::ErrorKind;
    let what = format!("{}: {e}", path.display());
    match e.kind() {
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => PortError::Refused(format!(
            "{what} (the agent is not allowed to change it: check the service's sandbox and capabilities)"
        )),
        _ => PortError::Unavailable(what),
    }
}

/// Why a command run with a deadline did not finish normally.
enum RunError {
    /// It never started.
    Spawn(std::io::Error),
    /// It was still running at the deadline and was killed.
    Timeout,
}

/// Runs `argv` and waits for it, killing it at `timeout`.
fn run_with_deadline(argv: &[String], timeout: Duration) -> Result<std::process::ExitStatus, RunError> {
    let (program, args) = argv.split_first().ok_or_else(|| {
        RunError::Spawn(std::io::Error::new(std::io::ErrorKind::InvalidInput, "no lock command configured"))
    })?;
    let mut child: Child = Command::new(program).args(args).stdin(Stdio::null()).spawn().map_err(RunError::Spawn)?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(RunError::Timeout);
            }
        }
    }
}

impl LinuxPort {
    /// Creates the port; fails when the shadow file or the account is missing.
    pub fn new(config: LinuxConfig) -> Result<Self, PortError> {
        let effects = Effects::at(&config.effects_file);
        let port = Self { config, effects };
        port.password_field()?;
        Ok(port)
    }

    fn shadow_path(&self) -> PathBuf {
        self.config.root.join("etc/shadow")
    }

    fn read_shadow(&self) -> Result<String, PortError> {
        fs::read_to_string(self.shadow_path())
            .map_err(|e| PortError::Unavailable(format!("{}: {e}", self.shadow_path().display())))
    }

    /// The account's password field.
    fn password_field(&self) -> Result<String, PortError> {
        let text = self.read_shadow()?;
        shadow::password_field(&text, &self.config.user)
            .map(str::to_owned)
            .map_err(|e| PortError::Refused(e.to_string()))
    }

    fn write_password_hash(&self, hashed: &str, effect: EffectId<'_>) -> Result<(), PortError> {
        let path = self.shadow_path();
        let unavailable = |e: &std::io::Error| os_error(&path, e);
        let _lock = pwdlock::lock(&self.config.root, pwdlock::WAIT).map_err(|e| unavailable(&e))?;
        let text = self.read_shadow()?;
        let before = shadow::password_field(&text, &self.config.user).map_err(|e| PortError::Refused(e.to_string()))?;
        let days = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() / 86_400).unwrap_or(0);
        let updated = shadow::with_password(&text, &self.config.user, hashed, days)
            .map_err(|e| PortError::Refused(e.to_string()))?;
        let meta = FileMeta::of(&path).map_err(|e| unavailable(&e))?;
        let record = Record {
            command_id: effect.0.to_owned(),
            kind: "reset_passcode".into(),
            stage: Stage::Intent,
            before_sha256: Some(effects::digest(before)),
            after_sha256: Some(effects::digest(hashed)),
            at_unix_ms: latchkey_common::time::now_ms_unsigned(),
        };
        // Everything up to the rename leaves the password as it was.
        self.effects.put(record.clone()).map_err(|e| unavailable(&e))?;
        atomic::write_with(&self.config.root.join("etc/shadow-"), text.as_bytes(), meta)
            .map_err(|e| unavailable(&e.into()))?;
        match atomic::write_with(&path, updated.as_bytes(), meta) {
            Ok(()) => {}
            // The new entry is in place; only its durability is in doubt.
            Err(e) if e.replaced() => {}
            Err(e) => return Err(unavailable(&e.into())),
        }
        // The password has changed: from here on nothing may turn this into a failure. Should the
        // record not be updated, the intent and the entry itself still tell recovery it happened.
        let _ = self.effects.put(Record { stage: Stage::Applied, ..record });
        Ok(())
    }

    fn os_version(&self) -> String {
        let text = fs::read_to_string(self.config.root.join("etc/os-release")).unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix("VERSION_ID="))
            .map(|v| v.trim_matches('"').to_owned())
            .unwrap_or_else(|| "unknown".into())
    }
}

impl DevicePort for LinuxPort {
    fn snapshot(&mut self) -> Result<PortSnapshot, PortError> {
        let field = self.password_field()?;
        let hostname = fs::read_to_string(self.config.root.join("etc/hostname")).unwrap_or_default();
        Ok(PortSnapshot {
            facts: DeviceFacts {
                platform: Platform::Linux,
                os_version: self.os_version(),
                api_level: 0,
                mode: ManagementMode::LinuxSystem,
                model: hostname.trim().to_owned(),
                pin_recovery_enabled: false,
                entra_joined: false,
            },
            state: DeviceState {
                passcode_present: has_password(&field),
                work_profile_passcode_present: false,
                device_policy: self.config.policy.clone(),
                work_profile_policy: None,
                reset_token: ResetTokenState::NotApplicable,
                locked: false,
            },
        })
    }

    fn set_credential(
        &mut self,
        scope: Scope,
        passcode: &Secret,
        _flags: ResetFlags,
        effect: EffectId<'_>,
    ) -> Result<(), PortError> {
        if scope != Scope::Device {
            return Err(PortError::Unsupported("set a work-profile credential"));
        }
        let hashed = crypt(crypt_method(&self.config.root), passcode)?;
        self.write_password_hash(&hashed, effect)
    }

    fn reset_with_token(
        &mut self,
        _: Scope,
        _: &Secret,
        _: &SecretBytes,
        _: ResetFlags,
        _: EffectId<'_>,
    ) -> Result<(), PortError> {
        Err(PortError::Unsupported("reset with a token"))
    }

    fn clear_passcode(&mut self, _: &SecretBytes, _: EffectId<'_>) -> Result<(), PortError> {
        Err(PortError::Unsupported("clear the passcode"))
    }

    fn lock_now(&mut self, _request: &LockRequest, effect: EffectId<'_>) -> Result<LockReport, PortError> {
        let record = Record {
            command_id: effect.0.to_owned(),
            kind: "remote_lock".into(),
            stage: Stage::Intent,
            before_sha256: None,
            after_sha256: None,
            at_unix_ms: latchkey_common::time::now_ms_unsigned(),
        };
        self.effects.put(record.clone()).map_err(|e| PortError::Unavailable(e.to_string()))?;
        let program = self.config.lock_command.first().cloned().unwrap_or_default();
        match run_with_deadline(&self.config.lock_command, self.config.lock_timeout) {
            Ok(status) if status.success() => {
                let _ = self.effects.put(Record { stage: Stage::Applied, ..record });
                Ok(LockReport { locked: true, message_result: None })
            }
            Ok(status) => Err(PortError::Refused(format!("{program} exited with {status}"))),
            Err(RunError::Spawn(e)) => Err(PortError::Unavailable(format!("{program}: {e}"))),
            Err(RunError::Timeout) => Err(PortError::Indeterminate(format!(
                "{program} did not finish within {}s and was stopped",
                self.config.lock_timeout.as_secs()
            ))),
        }
    }

    fn generate_pin(&mut self, _: EffectId<'_>) -> Result<PinReport, PortError> {
        Err(PortError::Unsupported("generate a PIN"))
    }

    fn set_reset_token(&mut self, _: &SecretBytes) -> Result<ResetTokenState, PortError> {
        Err(PortError::Unsupported("register a reset token"))
    }

    fn unlock_token(&mut self) -> Result<Option<SecretBytes>, PortError> {
        Ok(None)
    }

    fn notify(&mut self, _id: &str, _text: Option<&str>) -> Result<(), PortError> {
        // Headless Linux has no notification surface the agent may rely on.
        Ok(())
    }

    fn effect_applied(&mut self, command_id: &str) -> Result<Option<bool>, PortError> {
        let record = self.effects.find(command_id).map_err(|e| PortError::Unavailable(e.to_string()))?;
        Ok(effects::applied(record.as_ref(), self.password_field().ok().as_deref()))
    }
}

/// Path helper for tests and the QEMU image: `<root>/etc/shadow`.
pub fn shadow_file(root: &Path) -> PathBuf {
    root.join("etc/shadow")
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_permission_refusal_fails_and_anything_else_is_retried() {
        let path = Path::new("/etc/shadow");
        for errno in [nix::libc::EPERM, nix::libc::EACCES, nix::libc::EROFS] {
            let e = std::io::Error::from_raw_os_error(errno);
            assert!(matches!(os_error(path, &e), PortError::Refused(why) if why.contains("sandbox")), "{e}");
        }
        for errno in [nix::libc::EAGAIN, nix::libc::ENOSPC, nix::libc::EIO] {
            let e = std::io::Error::from_raw_os_error(errno);
            assert!(matches!(os_error(path, &e), PortError::Unavailable(_)), "{e}");
        }
    }

    fn throwaway_root() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("etc")).expect("etc");
        fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nkiosk:x:1000:1000::/home/kiosk:/bin/sh\n",
        )
        .expect("passwd");
        let shadow = dir.path().join("etc/shadow");
        fs::write(&shadow, "root:*:19000:0:99999:7:::\nkiosk:!:19000:0:99999:7:::\n").expect("shadow");
        fs::set_permissions(&shadow, fs::Permissions::from_mode(0o640)).expect("chmod");
        fs::write(dir.path().join("etc/os-release"), "ID=debian\nVERSION_ID=\"12\"\n").expect("os-release");
        dir
    }

    fn port(root: &Path, lock: Vec<String>) -> LinuxPort {
        LinuxPort::new(LinuxConfig {
            root: root.to_owned(),
            user: "kiosk".into(),
            policy: None,
            lock_command: lock,
            lock_timeout: Duration::from_secs(5),
            effects_file: root.join("effects.json"),
        })
        .expect("port")
    }

    fn kiosk_field(root: &Path) -> String {
        let text = fs::read_to_string(shadow_file(root)).expect("read");
        shadow::password_field(&text, "kiosk").expect("kiosk").to_owned()
    }

    #[test]
    fn resets_the_account_password_in_crypt_format_and_keeps_other_lines() {
        let root = throwaway_root();
        let mut p = port(root.path(), vec!["true".into()]);
        assert!(!p.snapshot().expect("snap").state.passcode_present);
        let secret = Secret::from("Tmp-4821-pass");
        p.set_credential(Scope::Device, &secret, ResetFlags::default(), EffectId("cmd-1")).expect("set");
        let text = fs::read_to_string(shadow_file(root.path())).expect("read");
        let kiosk: Vec<&str> = text.lines().find(|l| l.starts_with("kiosk:")).expect("kiosk").split(':').collect();
        assert!(kiosk[1].starts_with("$6$"), "not a SHA-512 crypt hash");
        assert!(crypt_matches(&secret, kiosk[1]));
        assert!(!text.contains("Tmp-4821-pass"));
        assert!(text.starts_with("root:*:19000:0:99999:7:::\n"), "other accounts changed");
        let mode = fs::metadata(shadow_file(root.path())).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert!(p.snapshot().expect("snap").state.passcode_present);
        assert_eq!(p.effect_applied("cmd-1").expect("effects"), Some(true));
        assert_eq!(p.effect_applied("cmd-2").expect("effects"), Some(false));
    }

    #[test]
    fn writes_the_scheme_login_defs_names() {
        let root = throwaway_root();
        let cases = [
            ("ENCRYPT_METHOD YESCRYPT\n", "$y$"),
            ("# ENCRYPT_METHOD YESCRYPT\nENCRYPT_METHOD SHA256\n", "$5$"),
            ("ENCRYPT_METHOD DES\n", "$6$"),
            ("", "$6$"),
        ];
        for (defs, prefix) in cases {
            fs::write(root.path().join("etc/login.defs"), defs).expect("login.defs");
            let mut p = port(root.path(), vec!["true".into()]);
            let secret = Secret::from("Tmp-4821-pass");
            p.set_credential(Scope::Device, &secret, ResetFlags::default(), EffectId("cmd")).expect("set");
            let text = fs::read_to_string(shadow_file(root.path())).expect("read");
            let hash = text.lines().find(|l| l.starts_with("kiosk:")).and_then(|l| l.split(':').nth(1)).expect("kiosk");
            assert!(hash.starts_with(prefix), "{defs:?} wrote {hash}");
            assert!(crypt_matches(&secret, hash));
        }
    }

    #[test]
    fn lock_runs_the_lock_command_and_reports_its_failure() {
        let root = throwaway_root();
        let marker = root.path().join("locked");
        let mut ok = port(root.path(), vec!["touch".into(), marker.display().to_string()]);
        ok.lock_now(&LockRequest::default(), EffectId("lock-1")).expect("lock");
        assert!(marker.exists());
        let mut failing = port(root.path(), vec!["false".into()]);
        assert!(matches!(failing.lock_now(&LockRequest::default(), EffectId("lock-2")), Err(PortError::Refused(_))));
    }

    #[test]
    fn a_hung_lock_command_is_stopped_and_reported_as_unknown() {
        let root = throwaway_root();
        let mut hung = LinuxPort::new(LinuxConfig {
            lock_timeout: Duration::from_millis(300),
            ..port(root.path(), vec!["sleep".into(), "30".into()]).config
        })
        .expect("port");
        let started = Instant::now();
        let err = hung.lock_now(&LockRequest::default(), EffectId("lock-3")).expect_err("must time out");
        assert!(matches!(err, PortError::Indeterminate(_)), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(10), "the agent waited for the hung command");
        assert_eq!(hung.effect_applied("lock-3").expect("effects"), None, "a lock that may have run cannot be told");
    }

    #[test]
    fn keeps_owner_group_and_mode_and_a_shadow_backup() {
        let root = throwaway_root();
        let before = fs::read(shadow_file(root.path())).expect("read");
        let meta = FileMeta::of(&shadow_file(root.path())).expect("meta");
        let mut p = port(root.path(), vec!["true".into()]);
        p.set_credential(Scope::Device, &Secret::from("Tmp-4821-pass"), ResetFlags::default(), EffectId("c"))
            .expect("set");
        assert_eq!(FileMeta::of(&shadow_file(root.path())).expect("meta"), meta);
        assert_eq!(fs::read(root.path().join("etc/shadow-")).expect("backup"), before, "shadow- holds the old file");
        assert_eq!(FileMeta::of(&root.path().join("etc/shadow-")).expect("meta"), meta);
    }

    #[test]
    fn after_a_crash_the_shadow_entry_itself_says_whether_the_reset_happened() {
        let root = throwaway_root();
        let mut p = port(root.path(), vec!["true".into()]);
        let secret = Secret::from("Tmp-4821-pass");
        p.set_credential(Scope::Device, &secret, ResetFlags::default(), EffectId("done")).expect("set");
        // A crash between the rename and the "applied" record: only the intent remains.
        let mut record = p.effects.find("done").expect("find").expect("record");
        record.stage = Stage::Intent;
        p.effects.put(record.clone()).expect("put");
        assert_eq!(p.effect_applied("done").expect("ask"), Some(true));
        // A crash before the rename: the entry still holds the old hash.
        let old = kiosk_field(root.path());
        p.effects
            .put(Record {
                command_id: "early".into(),
                before_sha256: Some(effects::digest(&old)),
                after_sha256: Some(effects::digest("$y$never-written")),
                ..record
            })
            .expect("put");
        assert_eq!(p.effect_applied("early").expect("ask"), Some(false));
        assert_eq!(p.effect_applied("never-issued").expect("ask"), Some(false));
    }

    #[test]
    fn waits_for_the_account_database_lock_other_tools_hold() {
        let root = throwaway_root();
        let lock_file = root.path().join("etc/.pwd.lock");
        // Another tool (here Python, through fcntl like lckpwdf) holds /etc/.pwd.lock for a while.
        let holder = "import fcntl,sys,time\nf=open(sys.argv[1],'w')\nfcntl.lockf(f,fcntl.LOCK_EX)\nprint('held',flush=True)\ntime.sleep(1.5)\n";
        let mut child = Command::new("python3")
            .args(["-c", holder, lock_file.to_str().expect("utf8")])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 is needed to hold an fcntl lock from another process");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().expect("stdout")), &mut line)
            .expect("read");
        assert_eq!(line.trim(), "held");
        let started = Instant::now();
        let mut p = port(root.path(), vec!["true".into()]);
        p.set_credential(Scope::Device, &Secret::from("Tmp-4821-pass"), ResetFlags::default(), EffectId("c"))
            .expect("set");
        assert!(
            started.elapsed() >= Duration::from_millis(800),
            "wrote the shadow file while another tool held the lock"
        );
        let _ = child.wait();
    }

    #[test]
    fn unknown_account_is_a_clear_error() {
        let root = throwaway_root();
        let err = LinuxPort::new(LinuxConfig {
            root: root.path().to_owned(),
            user: "nobody-here".into(),
            policy: None,
            lock_command: vec![],
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            effects_file: root.path().join("e.json"),
        })
        .err()
        .expect("must fail");
        assert!(err.to_string().contains("nobody-here"));
    }
}
