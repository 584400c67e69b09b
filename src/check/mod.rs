//! `latchkey check`: offline diagnostics, one line per check, each Ok / Warning / Skipped /
//! Failed with a one-line reason and, when something needs doing, the way out. Non-zero exit
//! when any check failed. Checks only look (the journal is opened read-only); the server probe
//! is a check-in, which changes nothing but freshness.
//!
//! - [`local`]: configuration, state directory, identity, journal, secret store, platform port.
//! - [`server`]: reaching the server with the device identity, and the clock against it.
use std::path::Path;

use serde::Serialize;

use crate::config::Config;
use crate::identity::Identity;

pub mod local;
pub mod server;

/// How a check ended.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Fine.
    Ok,
    /// Works, but needs attention.
    Warning,
    /// Not applicable.
    Skipped,
    /// Broken.
    Failed,
}

impl Verdict {
    /// Stable text form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warning => "warning",
            Self::Skipped => "skipped",
            Self::Failed => "failed",
        }
    }
}

/// One check's result.
#[derive(Debug, Serialize)]
pub struct Line {
    /// Check name.
    pub check: &'static str,
    /// Verdict.
    pub verdict: Verdict,
    /// One-line reason.
    pub detail: String,
    /// What to do, when something needs doing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Line {
    /// A line.
    pub fn new(check: &'static str, verdict: Verdict, detail: impl Into<String>) -> Self {
        Self { check, verdict, detail: detail.into(), fix: None }
    }

    /// With the way out.
    pub fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// What the checks found so far.
pub struct Context {
    /// The configuration, when it loaded.
    pub config: Option<Config>,
    /// The identity, when it loaded.
    pub identity: Option<Identity>,
}

/// Runs every check.
pub async fn run(config_path: &Path) -> Vec<Line> {
    let mut lines = Vec::new();
    let mut ctx = Context { config: None, identity: None };
    lines.push(local::config(config_path, &mut ctx));
    if ctx.config.is_none() {
        return lines;
    }
    lines.push(local::state_dir(&ctx));
    lines.push(local::identity(&mut ctx));
    lines.push(local::journal(&ctx));
    lines.push(local::secrets(&ctx));
    lines.push(local::port(&ctx));
    lines.extend(server::reach(&ctx).await);
    lines
}

/// The lines for people.
pub fn render(lines: &[Line]) -> String {
    let mut out = String::new();
    for l in lines {
        out.push_str(&format!("{:<8} {:<14} {}\n", l.verdict.as_str(), l.check, l.detail));
        if let Some(fix) = &l.fix {
            out.push_str(&format!("{:<8} {:<14} fix: {fix}\n", "", ""));
        }
    }
    out
}
