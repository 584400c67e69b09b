//! Reaching the server with the device identity (a check-in, which changes nothing but
//! freshness — a poll would mark queued commands delivered) and comparing clocks.
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::{Context, Line, Verdict};
use crate::link::CheckIn;

/// How far the clocks may differ before certificates and expiry misbehave.
pub const MAX_SKEW: Duration = Duration::from_secs(300);

/// The server and clock lines.
pub async fn reach(ctx: &Context) -> Vec<Line> {
    let (Some(config), Some(identity)) = (&ctx.config, &ctx.identity) else {
        return vec![Line::new("server", Verdict::Skipped, "needs an identity")];
    };
    let snapshot = match crate::ports::open(config).and_then(|mut p| p.snapshot()) {
        Ok(s) => s,
        Err(_) => return vec![Line::new("server", Verdict::Skipped, "needs the platform port")],
    };
    #[cfg(feature = "apple-mdm")]
    if config.server.protocol == crate::config::Protocol::AppleMdm {
        return reach_apple(config, identity).await;
    }
    let connector = match crate::agent::connector(config, Arc::new(RwLock::new(identity.clone()))) {
        Ok(c) => c,
        Err(e) => return vec![Line::new("server", Verdict::Failed, e.to_string())],
    };
    let probe = async {
        let mut link = connector.connect().await?;
        let report = CheckIn {
            facts: snapshot.facts.clone(),
            state: snapshot.state.clone(),
            hostname: String::new(),
            agent_version: latchkey_common::VERSION.to_owned(),
            unlock_token_escrowed: false,
        };
        link.check_in(&report).await
    };
    match tokio::time::timeout(Duration::from_secs(15), probe).await {
        Ok(Ok(server_ms)) => {
            let mut lines =
                vec![Line::new("server", Verdict::Ok, format!("{} reachable with mTLS", config.server.url))];
            if let Some(server_ms) = server_ms {
                let skew = Duration::from_millis((latchkey_common::time::now_ms() - server_ms).unsigned_abs());
                lines.push(if skew > MAX_SKEW {
                    Line::new(
                        "clock",
                        Verdict::Failed,
                        format!(
                            "{}s off the server's clock: certificates and command expiry will misbehave",
                            skew.as_secs()
                        ),
                    )
                    .fix("fix time synchronisation (NTP)")
                } else {
                    Line::new("clock", Verdict::Ok, format!("within {}s of the server", skew.as_secs() + 1))
                });
            }
            lines
        }
        Ok(Err(e)) => vec![Line::new("server", Verdict::Failed, e.to_string())],
        Err(_) => vec![Line::new("server", Verdict::Failed, "no answer within 15s")],
    }
}

#[cfg(feature = "apple-mdm")]
/// Apple MDM has no message that only looks: a `TokenUpdate` without the unlock token is the
/// mildest (Apple devices send it at any time, and its absence invalidates nothing —
/// tokenupdate.yaml), and it proves the server accepts this identity.
async fn reach_apple(config: &crate::config::Config, identity: &crate::identity::Identity) -> Vec<Line> {
    let connector = match crate::agent::apple_connector(config, Arc::new(RwLock::new(identity.clone()))) {
        Ok(c) => c,
        Err(e) => return vec![Line::new("server", Verdict::Failed, e.to_string())],
    };
    let url = connector.enrollment.checkin_url.clone();
    let probe = async { connector.open().await?.token_update(None).await };
    match tokio::time::timeout(Duration::from_secs(15), probe).await {
        Ok(Ok(())) => {
            vec![Line::new("server", Verdict::Ok, format!("{url} accepts this device's identity (Apple MDM check-in)"))]
        }
        Ok(Err(e)) => vec![Line::new("server", Verdict::Failed, e.to_string())],
        Err(_) => vec![Line::new("server", Verdict::Failed, "no answer within 15s")],
    }
}
