//! Checks of what is on the device: configuration, state directory, identity, journal, secret
//! store, platform port.
use std::path::Path;

use super::{Context, Line, Verdict};
use crate::config::Config;
use crate::identity::{Identity, IdentityError};
use crate::journal::{Journal, JournalError};

/// The configuration loads and is valid.
pub fn config(path: &Path, ctx: &mut Context) -> Line {
    if !path.exists() {
        return Line::new("config", Verdict::Failed, format!("{} does not exist", path.display()))
            .fix("create it (packaging/config.toml lists every key), or pass --config / set LATCHKEY_CONFIG");
    }
    match Config::load(path).and_then(|c| c.check().map(|()| c)) {
        Ok(c) => {
            ctx.config = Some(c);
            Line::new("config", Verdict::Ok, format!("{} is valid", path.display()))
        }
        Err(e) => Line::new("config", Verdict::Failed, e.to_string()).fix("correct the named key"),
    }
}

/// The state directory can be used by this user.
pub fn state_dir(ctx: &Context) -> Line {
    let Some(config) = &ctx.config else { return Line::new("state", Verdict::Skipped, "needs a configuration") };
    let dir = &config.state.dir;
    match std::fs::read_dir(dir) {
        Ok(_) => Line::new("state", Verdict::Ok, format!("{} is readable", dir.display())),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            Line::new("state", Verdict::Failed, format!("permission denied on the state directory {}", dir.display()))
                .fix("run `latchkey check` as root (the agent's state is private to it)")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Line::new("state", Verdict::Failed, format!("{} does not exist", dir.display()))
                .fix("run `latchkey enroll`")
        }
        Err(e) => Line::new("state", Verdict::Failed, format!("{}: {e}", dir.display())),
    }
}

/// The identity is present, usable and not near expiry.
pub fn identity(ctx: &mut Context) -> Line {
    let Some(config) = &ctx.config else { return Line::new("identity", Verdict::Skipped, "needs a configuration") };
    match Identity::load(&config.state.dir) {
        Ok(Some(id)) => {
            let now = latchkey_common::time::now_ms() / 1000;
            let renew_before = config.identity.renew_before;
            let line = match id.not_after() {
                Some(t) if t <= now => Line::new("identity", Verdict::Failed, "the device certificate has expired")
                    .fix("enroll the device again (`latchkey unenroll --local`, then `latchkey enroll`)"),
                Some(t) if t - now < i64::try_from(renew_before.as_secs()).unwrap_or(i64::MAX) => Line::new(
                    "identity",
                    Verdict::Warning,
                    format!(
                        "the certificate expires in {}; the agent renews it within {} of expiry while connected",
                        humantime::format_duration(std::time::Duration::from_secs(u64::try_from(t - now).unwrap_or(0))),
                        humantime::format_duration(renew_before)
                    ),
                ),
                Some(_) => Line::new("identity", Verdict::Ok, format!("enrolled as {}", id.device_id)),
                None => {
                    Line::new("identity", Verdict::Failed, "the device certificate is unreadable").fix("enroll again")
                }
            };
            ctx.identity = Some(id);
            line
        }
        Ok(None) => Line::new("identity", Verdict::Failed, "not enrolled").fix("run `latchkey enroll`"),
        Err(IdentityError::Io { path, source }) if source.kind() == std::io::ErrorKind::PermissionDenied => {
            Line::new("identity", Verdict::Failed, format!("permission denied reading {path}")).fix("run as root")
        }
        Err(e) => Line::new("identity", Verdict::Failed, e.to_string()),
    }
}

/// The journal exists and belongs to this enrollment.
pub fn journal(ctx: &Context) -> Line {
    let (Some(config), Some(identity)) = (&ctx.config, &ctx.identity) else {
        return Line::new("journal", Verdict::Skipped, "needs an identity");
    };
    let path = config.state.dir.join("journal.db");
    match Journal::inspect(&path, &identity.journal_id) {
        Ok(counts) => Line::new(
            "journal",
            Verdict::Ok,
            format!("{} pending, {} unreported, {} reported", counts.pending, counts.unreported, counts.reported),
        ),
        Err(JournalError::Io(_, e)) if e.kind() == std::io::ErrorKind::NotFound => Line::new(
            "journal",
            Verdict::Warning,
            format!(
                "{} is missing: the agent starts a new one and checks older commands against the device",
                path.display()
            ),
        ),
        Err(e) => Line::new("journal", Verdict::Failed, e.to_string()),
    }
}

/// The secret store works and every secret in it reads back.
pub fn secrets(ctx: &Context) -> Line {
    let Some(config) = &ctx.config else { return Line::new("secret store", Verdict::Skipped, "needs a configuration") };
    let store = match crate::secrets::SecretStore::open(&config.state.dir) {
        Ok(s) => s,
        Err(e) => return Line::new("secret store", Verdict::Failed, e.to_string()),
    };
    match store.verify().and_then(|n| store.usable().map(|()| n)) {
        Ok(n) => Line::new("secret store", Verdict::Ok, format!("0600 file store usable, {n} secret(s) readable")),
        Err(e) => Line::new("secret store", Verdict::Failed, e.to_string()),
    }
}

/// The platform port answers.
pub fn port(ctx: &Context) -> Line {
    let Some(config) = &ctx.config else {
        return Line::new("platform port", Verdict::Skipped, "needs a configuration");
    };
    match crate::ports::open(config).and_then(|mut p| p.snapshot()) {
        Ok(s) => Line::new(
            "platform port",
            Verdict::Ok,
            format!("{} {} ({})", s.facts.platform.as_str(), s.facts.os_version, s.facts.mode.as_str()),
        ),
        Err(e) => Line::new("platform port", Verdict::Failed, e.to_string()),
    }
}
