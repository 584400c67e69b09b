//! The real Linux port: the managed account's password lives in `<root>/etc/shadow`, hashed in
//! the system's own crypt format — `ENCRYPT_METHOD` of `<root>/etc/login.defs`: YESCRYPT (`$y$`,
//! Debian 11+ default), SHA512 (`$6$`) or SHA256 (`$5$`); SHA512 when unset or weaker (we never
//! write DES or MD5). Remote lock runs the session-lock command (`loginctl lock-sessions`).
//!
//! `root` is `/` on a device and a throw-away copy in tests, so tests never touch the host's
//! accounts. The shadow file is replaced atomically, keeping its mode and owner.
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::action::{LockRequest, Scope};
use crate::facts::{DeviceFacts, DeviceState, ManagementMode, Platform, ResetTokenState};
use crate::policy::PasscodePolicy;
use crate::port::{DevicePort, EffectId, PortError, PortSnapshot};
use crate::secret::{Secret, SecretBytes};

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
    /// Where the port records applied effects (for crash recovery).
    pub effects_file: PathBuf,
}

/// The Linux port.
pub struct LinuxPort {
    config: LinuxConfig,
}

impl LinuxPort {
    /// Creates the port; fails when the shadow file or the account is missing.
    pub fn new(config: LinuxConfig) -> Result<Self, PortError> {
        let port = Self { config };
        port.read_entry()?;
        Ok(port)
    }

    fn shadow_path(&self) -> PathBuf {
        self.config.root.join("etc/shadow")
    }

    /// The account's shadow fields.
    fn read_entry(&self) -> Result<Vec<String>, PortError> {
        let text = fs::read_to_string(self.shadow_path())
            .map_err(|e| PortError::Io(format!("{}: {e}", self.shadow_path().display())))?;
        text.lines()
            .map(|l| l.split(':').map(str::to_owned).collect::<Vec<_>>())
            .find(|fields| fields.first().map(String::as_str) == Some(self.config.user.as_str()))
            .ok_or_else(|| PortError::Refused(format!("no account {:?} in the shadow file", self.config.user)))
    }

    fn write_password_hash(&self, hashed: &str) -> Result<(), PortError> {
        let path = self.shadow_path();
        let io = |e: std::io::Error| PortError::Io(format!("{}: {e}", path.display()));
        let meta = fs::metadata(&path).map_err(io)?;
        let text = fs::read_to_string(&path).map_err(io)?;
        let days = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() / 86_400).unwrap_or(0);
        let mut found = false;
        let mut out = String::with_capacity(text.len() + 128);
        for line in text.lines() {
            let mut fields: Vec<String> = line.split(':').map(str::to_owned).collect();
            if fields.first().map(String::as_str) == Some(self.config.user.as_str()) && fields.len() >= 3 {
                fields[1] = hashed.to_owned();
                fields[2] = days.to_string();
                found = true;
            }
            out.push_str(&fields.join(":"));
            out.push('\n');
        }
        if !found {
            return Err(PortError::Refused(format!("no account {:?} in the shadow file", self.config.user)));
        }
        crate::atomic::write(&path, out.as_bytes(), meta.permissions().mode() & 0o7777).map_err(io)?;
        // Keep the original owner and group (root:shadow on Debian); needs privilege to change.
        if fs::metadata(&path).map(|m| (m.uid(), m.gid())).ok() != Some((meta.uid(), meta.gid())) {
            std::os::unix::fs::chown(&path, Some(meta.uid()), Some(meta.gid())).map_err(io)?;
        }
        Ok(())
    }

    fn record(&self, effect: EffectId<'_>, kind: &str) -> Result<(), PortError> {
        let mut effects: Vec<crate::sim::Effect> =
            fs::read(&self.config.effects_file).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        let at_unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        effects.push(crate::sim::Effect { command_id: effect.0.to_owned(), kind: kind.to_owned(), at_unix_ms });
        let bytes = serde_json::to_vec_pretty(&effects).map_err(|e| PortError::Io(e.to_string()))?;
        crate::atomic::write(&self.config.effects_file, &bytes, 0o600).map_err(|e| PortError::Io(e.to_string()))
    }

    fn os_version(&self) -> String {
        let text = fs::read_to_string(self.config.root.join("etc/os-release")).unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix("VERSION_ID="))
            .map(|v| v.trim_matches('"').to_owned())
            .unwrap_or_else(|| "unknown".into())
    }
}

/// True when a shadow password field holds a usable hash (not empty, locked or disabled).
pub fn has_password(field: &str) -> bool {
    !(field.is_empty() || field.starts_with('!') || field.starts_with('*'))
}

/// A crypt scheme the port can write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CryptMethod {
    /// `$y$`.
    Yescrypt,
    /// `$6$`.
    Sha512,
    /// `$5$`.
    Sha256,
}

/// The system's configured scheme, from `ENCRYPT_METHOD` in `<root>/etc/login.defs`.
pub fn crypt_method(root: &Path) -> CryptMethod {
    let text = fs::read_to_string(root.join("etc/login.defs")).unwrap_or_default();
    let method = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix("ENCRYPT_METHOD"))
        .map(|v| v.trim().to_ascii_uppercase());
    match method.as_deref() {
        Some("YESCRYPT") => CryptMethod::Yescrypt,
        Some("SHA256") => CryptMethod::Sha256,
        _ => CryptMethod::Sha512,
    }
}

/// Hashes a password in the given crypt format (random salt, default cost).
pub fn crypt(method: CryptMethod, password: &Secret) -> Result<String, PortError> {
    let failed = |_| PortError::Io("crypt failed".into());
    match method {
        CryptMethod::Yescrypt => {
            use yescrypt::PasswordHasher;
            yescrypt::Yescrypt::default()
                .hash_password(password.expose().as_bytes())
                .map(|h| h.as_str().to_owned())
                .map_err(|_| PortError::Io("crypt failed".into()))
        }
        CryptMethod::Sha512 => {
            let params = sha_crypt::Sha512Params::new(sha_crypt::ROUNDS_DEFAULT)
                .map_err(|_| PortError::Io("crypt parameters".into()))?;
            sha_crypt::sha512_simple(password.expose(), &params).map_err(failed)
        }
        CryptMethod::Sha256 => {
            let params = sha_crypt::Sha256Params::new(sha_crypt::ROUNDS_DEFAULT)
                .map_err(|_| PortError::Io("crypt parameters".into()))?;
            sha_crypt::sha256_simple(password.expose(), &params).map_err(failed)
        }
    }
}

/// Whether `password` matches a `$y$`, `$6$` or `$5$` shadow hash.
pub fn crypt_matches(password: &Secret, hashed: &str) -> bool {
    if hashed.starts_with("$y$") {
        use yescrypt::PasswordVerifier;
        yescrypt::Yescrypt::default().verify_password(password.expose().as_bytes(), hashed).is_ok()
    } else if hashed.starts_with("$6$") {
        sha_crypt::sha512_check(password.expose(), hashed).is_ok()
    } else if hashed.starts_with("$5$") {
        sha_crypt::sha256_check(password.expose(), hashed).is_ok()
    } else {
        false
    }
}

impl DevicePort for LinuxPort {
    fn snapshot(&mut self) -> Result<PortSnapshot, PortError> {
        let entry = self.read_entry()?;
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
                passcode_present: entry.get(1).is_some_and(|f| has_password(f)),
                work_profile_passcode_present: false,
                device_policy: self.config.policy.clone(),
                work_profile_policy: None,
                reset_token: ResetTokenState::NotApplicable,
                locked: false,
            },
        })
    }

    fn set_credential(&mut self, scope: Scope, passcode: &Secret, effect: EffectId<'_>) -> Result<(), PortError> {
        if scope != Scope::Device {
            return Err(PortError::Unsupported("set a work-profile credential"));
        }
        let hashed = crypt(crypt_method(&self.config.root), passcode)?;
        self.write_password_hash(&hashed)?;
        self.record(effect, "reset_passcode")
    }

    fn reset_with_token(&mut self, _: Scope, _: &Secret, _: &SecretBytes, _: EffectId<'_>) -> Result<(), PortError> {
        Err(PortError::Unsupported("reset with a token"))
    }

    fn clear_passcode(&mut self, _: &SecretBytes, _: EffectId<'_>) -> Result<(), PortError> {
        Err(PortError::Unsupported("clear the passcode"))
    }

    fn lock_now(&mut self, _request: &LockRequest, effect: EffectId<'_>) -> Result<(), PortError> {
        let (program, args) = self
            .config
            .lock_command
            .split_first()
            .ok_or_else(|| PortError::Refused("no lock command configured".into()))?;
        let status = Command::new(program).args(args).status().map_err(|e| PortError::Io(format!("{program}: {e}")))?;
        if !status.success() {
            return Err(PortError::Refused(format!("{program} exited with {status}")));
        }
        self.record(effect, "remote_lock")
    }

    fn generate_pin(&mut self, _: EffectId<'_>) -> Result<Secret, PortError> {
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
        let effects: Vec<crate::sim::Effect> = match fs::read(&self.config.effects_file) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| PortError::Io(e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(PortError::Io(e.to_string())),
        };
        Ok(Some(effects.iter().any(|e| e.command_id == command_id)))
    }
}

/// Path helper for tests and the QEMU image: `<root>/etc/shadow`.
pub fn shadow_file(root: &Path) -> PathBuf {
    root.join("etc/shadow")
}

#[cfg(test)]
mod tests {
    use super::*;

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
            effects_file: root.join("effects.json"),
        })
        .expect("port")
    }

    #[test]
    fn resets_the_account_password_in_crypt_format_and_keeps_other_lines() {
        let root = throwaway_root();
        let mut p = port(root.path(), vec!["true".into()]);
        assert!(!p.snapshot().expect("snap").state.passcode_present);
        let secret = Secret::from("Tmp-4821-pass");
        p.set_credential(Scope::Device, &secret, EffectId("cmd-1")).expect("set");
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

    /// Hashes made by the system's own libxcrypt (Debian 12, `crypt(3)`), password `Tmp-4821x`.
    const SYSTEM_VECTORS: [&str; 3] = [
        "$6$rjUcUYIpu5hlYQcI$H7q0iS6ApkqXS6v7yWu2A9shGBFA8XNAS/1.KEhbUWjCjAWCpGtUNqGoxjAuEQq33Nf4JEHf6LRHi9T9SJ3Za1",
        "$5$x8X7co3YVTeQdUfE$rg1hNNlNJwc/J4.sHSxT7zxkmaNFC3cDgzQPAQRpvl0",
        "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$HW8bPZKZkTQCjO9XVpMPyf7a.Z6HGMKQ/wqUo7EqwD5",
    ];

    #[test]
    fn verifies_hashes_made_by_the_system_crypt() {
        for vector in SYSTEM_VECTORS {
            assert!(crypt_matches(&Secret::from("Tmp-4821x"), vector), "{vector}");
            assert!(!crypt_matches(&Secret::from("Tmp-4821y"), vector), "{vector}");
        }
        assert!(!crypt_matches(&Secret::from(""), "!"));
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
            p.set_credential(Scope::Device, &secret, EffectId("cmd")).expect("set");
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
    fn unknown_account_is_a_clear_error() {
        let root = throwaway_root();
        let err = LinuxPort::new(LinuxConfig {
            root: root.path().to_owned(),
            user: "nobody-here".into(),
            policy: None,
            lock_command: vec![],
            effects_file: root.path().join("e.json"),
        })
        .err()
        .expect("must fail");
        assert!(err.to_string().contains("nobody-here"));
    }
}
