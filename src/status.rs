//! What `latchkey status` shows: one type, built by the daemon, sent as JSON over the control
//! socket, read back by the CLI and rendered for people from the same fields.
use serde::{Deserialize, Serialize};

use latchkey_platform::{ManagementMode, Platform, ResetTokenState};

use crate::journal::Counts;
use crate::link::machine::Phase;

/// The link, as the driver last recorded it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LinkStatus {
    /// Where the link is.
    pub phase: Phase,
    /// Since when, Unix ms.
    pub since_unix_ms: i64,
    /// Last successful check-in, Unix ms (0 = never).
    pub last_checkin_unix_ms: i64,
    /// The last failure since the link was last up.
    pub last_error: Option<String>,
    /// The server refuses this device's certificate.
    pub identity_refused: bool,
    /// The last renewal failure, while renewal keeps failing.
    pub renewal_error: Option<String>,
}

impl LinkStatus {
    /// Records a phase change.
    pub fn set_phase(&mut self, phase: Phase) {
        if phase != self.phase {
            self.phase = phase;
            self.since_unix_ms = latchkey_common::time::now_ms();
        }
    }
}

/// The device as its port reports it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlatformView {
    /// Platform.
    pub platform: Platform,
    /// OS version.
    pub os_version: String,
    /// Management mode.
    pub mode: ManagementMode,
    /// A passcode is set.
    pub passcode_present: bool,
    /// Reset-token state.
    pub reset_token: ResetTokenState,
    /// Locked.
    pub locked: bool,
}

/// Everything `latchkey status` shows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    /// This device.
    pub device_id: String,
    /// The server.
    pub server: String,
    /// Agent version.
    pub agent_version: String,
    /// The link.
    pub link: LinkStatus,
    /// The certificate expires, Unix seconds.
    pub certificate_not_after: Option<i64>,
    /// The journal.
    pub journal: Counts,
    /// The journal was found lost and commands issued before then are checked before acting.
    pub journal_recovering: bool,
    /// The device, when the port answers.
    pub platform: Option<PlatformView>,
    /// Problems that do not stop the agent but need a person (a corrupt secret, …).
    pub problems: Vec<String>,
}

impl Status {
    /// The view for people.
    pub fn render(&self) -> String {
        use latchkey_common::time::rfc3339;
        let mut out = String::new();
        let mut line = |label: &str, value: String| out.push_str(&format!("{label:<15}{value}\n"));
        line("device:", self.device_id.clone());
        line("server:", self.server.clone());
        line("agent:", self.agent_version.clone());
        let mut link = format!("{} since {}", self.link.phase.as_str(), rfc3339(self.link.since_unix_ms));
        if let Some(e) = &self.link.last_error {
            link.push_str(&format!(" (last error: {e})"));
        }
        line("link:", link);
        line(
            "last check-in:",
            if self.link.last_checkin_unix_ms == 0 { "never".into() } else { rfc3339(self.link.last_checkin_unix_ms) },
        );
        line(
            "certificate:",
            self.certificate_not_after
                .map(|t| format!("valid until {}", rfc3339(t * 1000)))
                .unwrap_or_else(|| "-".into()),
        );
        if let Some(e) = &self.link.renewal_error {
            line("renewal:", format!("failing: {e}"));
        }
        line(
            "journal:",
            format!(
                "{} pending, {} unreported, {} reported{}",
                self.journal.pending,
                self.journal.unreported,
                self.journal.reported,
                if self.journal_recovering { " (recovering from a lost journal)" } else { "" }
            ),
        );
        match &self.platform {
            Some(p) => line(
                "platform:",
                format!(
                    "{} {} ({}), passcode {}, reset token {}, {}",
                    p.platform.as_str(),
                    p.os_version,
                    p.mode.as_str(),
                    if p.passcode_present { "set" } else { "not set" },
                    p.reset_token.as_str(),
                    if p.locked { "locked" } else { "unlocked" }
                ),
            ),
            None => line("platform:", "the platform port does not answer".into()),
        }
        for problem in &self.problems {
            line("problem:", problem.clone());
        }
        out
    }
}
