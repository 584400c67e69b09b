//! The local control socket behind `latchkey status`: one JSON [`Status`] per connection, only
//! to root or the agent's own user (checked by peer credentials). The socket is 0600 from the
//! moment it appears (bound in a private staging directory, then renamed into place).
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;

use crate::status::Status;

/// Produces the status document.
pub type StatusSource = Arc<dyn Fn() -> Status + Send + Sync>;

/// Control socket failures.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No agent answers.
    #[error("no agent answering on {path} ({source}); is `latchkey run` running (systemctl status latchkey)?")]
    Unreachable {
        /// The socket.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The agent refused (not root).
    #[error("{0}")]
    Refused(String),
    /// The answer was not a status.
    #[error("the agent sent an unreadable status: {0}")]
    Unreadable(String),
}

/// Serves the control socket until shutdown.
pub async fn serve(path: PathBuf, source: StatusSource, shutdown: CancellationToken) {
    let listener = match latchkey_common::socket::bind_private(&path) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "control socket unavailable; `latchkey status` will not answer");
            return;
        }
    };
    let me = nix::unistd::getuid().as_raw();
    let mut pause = Duration::from_millis(5);
    loop {
        let (mut stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => { pause = Duration::from_millis(5); pair }
                Err(e) => {
                    // Out of descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let allowed = stream.peer_cred().map(|c| c.uid() == 0 || c.uid() == me).unwrap_or(false);
        let source = source.clone();
        tokio::spawn(async move {
            let body = if allowed {
                match tokio::task::spawn_blocking(move || serde_json::to_string(&source())).await {
                    Ok(Ok(json)) => json,
                    _ => serde_json::json!({"error": "the agent could not build its status"}).to_string(),
                }
            } else {
                serde_json::json!({"error": "permission denied: latchkey status is for root"}).to_string()
            };
            let _ = stream.write_all(body.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
    let _ = std::fs::remove_file(&path);
}

/// Asks a running agent for its status.
pub async fn query(path: &Path) -> Result<Status, ControlError> {
    let unreachable = |source| ControlError::Unreachable { path: path.display().to_string(), source };
    let mut stream = UnixStream::connect(path).await.map_err(unreachable)?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await.map_err(unreachable)?;
    let value: serde_json::Value = serde_json::from_str(&body).map_err(|e| ControlError::Unreadable(e.to_string()))?;
    if let Some(error) = value.get("error").and_then(|e| e.as_str()) {
        return Err(ControlError::Refused(error.to_owned()));
    }
    serde_json::from_value(value).map_err(|e| ControlError::Unreadable(e.to_string()))
}
