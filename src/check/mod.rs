//! `latchkey check`: offline diagnostics, one line per check, each Ok / Warning / Skipped /
//! Failed with a reason and, on failure, a fix. Non-zero exit when any check failed.
use serde::Serialize;

use crate::config::{Config, DEFAULT_CONFIG};
use crate::identity::Identity;

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

/// One check's result.
#[derive(Debug, Serialize)]
pub struct Line {
    /// Check name.
    pub check: &'static str,
    /// Verdict.
    pub verdict: Verdict,
    /// One-line reason.
    pub detail: String,
}

fn line(check: &'static str, verdict: Verdict, detail: impl Into<String>) -> Line {
    Line { check, verdict, detail: detail.into() }
}

/// Runs every check.
pub async fn run(config_path: &std::path::Path) -> Vec<Line> {
    let mut lines = Vec::new();
    let config = match Config::load(config_path).and_then(|c| c.check().map(|()| c)) {
        Ok(c) => {
            lines.push(line("config", Verdict::Ok, format!("{} is valid", config_path.display())));
            c
        }
        Err(e) => {
            let hint = if config_path == std::path::Path::new(DEFAULT_CONFIG) {
                " (fix the file or pass --config)"
            } else {
                ""
            };
            lines.push(line("config", Verdict::Failed, format!("{e}{hint}")));
            return lines;
        }
    };
    let identity = match Identity::load(&config.state.dir) {
        Ok(Some(id)) => {
            let now = crate::now_ms() / 1000;
            match id.not_after() {
                Some(t) if t <= now => lines.push(line(
                    "identity",
                    Verdict::Failed,
                    "device certificate has expired: re-enroll the device",
                )),
                Some(_) if id.needs_renewal(now, config.identity.renew_before) => lines.push(line(
                    "identity",
                    Verdict::Warning,
                    "certificate expires within 10 days; the agent renews it on its next connection",
                )),
                Some(_) => lines.push(line("identity", Verdict::Ok, format!("enrolled as {}", id.device_id))),
                None => lines.push(line(
                    "identity",
                    Verdict::Failed,
                    "device certificate is unreadable: re-enroll the device",
                )),
            }
            Some(id)
        }
        Ok(None) => {
            lines.push(line("identity", Verdict::Failed, "not enrolled: run `latchkey enroll`"));
            None
        }
        Err(e) => {
            lines.push(line("identity", Verdict::Failed, format!("{e:#}")));
            None
        }
    };
    match crate::secrets::SecretStore::open(&config.state.dir).and_then(|s| s.usable()) {
        Ok(()) => lines.push(line("secret store", Verdict::Ok, "0600 file store writable and readable")),
        Err(e) => lines.push(line("secret store", Verdict::Failed, format!("{e:#}"))),
    }
    match crate::ports::open(&config).and_then(|mut p| p.snapshot().map_err(anyhow::Error::from)) {
        Ok(s) => lines.push(line(
            "platform port",
            Verdict::Ok,
            format!("{:?} {} {:?}", s.facts.platform, s.facts.os_version, s.facts.mode),
        )),
        Err(e) => lines.push(line("platform port", Verdict::Failed, format!("{e:#}"))),
    }
    let Some(identity) = identity else {
        lines.push(line("server", Verdict::Skipped, "needs an identity"));
        return lines;
    };
    // A check-in is the probe: it proves mTLS and identity and changes nothing but freshness
    // (a poll would mark queued commands as delivered).
    let snapshot = crate::ports::open(&config).and_then(|mut p| p.snapshot().map_err(anyhow::Error::from));
    let reach = async {
        let snapshot = snapshot?;
        let ca = std::fs::read_to_string(&config.server.ca)?;
        let tls = crate::transport::tls::client_config(&ca, Some((&identity.cert_pem, &identity.key_pem)))?;
        let mut client = crate::transport::connect(&config.server.url, tls).await?;
        let facts = latchkey_proto::convert::facts_to_wire(&snapshot.facts, "");
        let state = latchkey_proto::convert::state_to_wire(facts, &snapshot.state, env!("CARGO_PKG_VERSION"), false);
        let ack = client.check_in(state).await.map_err(|s| anyhow::anyhow!("{}", s.message()))?.into_inner();
        anyhow::Ok(ack.server_time_unix_ms)
    };
    match tokio::time::timeout(std::time::Duration::from_secs(15), reach).await {
        Ok(Ok(server_ms)) => {
            lines.push(line("server", Verdict::Ok, format!("{} reachable with mTLS", config.server.url)));
            let skew_s = (crate::now_ms() - server_ms).abs() / 1000;
            if skew_s > 300 {
                let detail = format!(
                    "{skew_s}s off the server's clock: certificates and command expiry will misbehave; fix NTP"
                );
                lines.push(line("clock", Verdict::Failed, detail));
            } else {
                lines.push(line("clock", Verdict::Ok, format!("within {}s of the server", skew_s + 1)));
            }
        }
        Ok(Err(e)) => lines.push(line("server", Verdict::Failed, format!("{e:#}"))),
        Err(_) => lines.push(line("server", Verdict::Failed, "timed out after 15s")),
    }
    lines
}
