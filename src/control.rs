//! The local control socket behind `latchkey status`: one JSON document per connection, only to
//! root or the agent's own user (checked by peer credentials).
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

/// Produces the status document.
pub type StatusSource = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// Serves the control socket until shutdown.
pub async fn serve(path: PathBuf, source: StatusSource, shutdown: CancellationToken) {
    if let Some(parent) = path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let _ = std::fs::remove_file(&path);
    let listener = match UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "control socket unavailable; `latchkey status` will not answer");
            return;
        }
    };
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
    let me = nix::unistd::getuid().as_raw();
    loop {
        let (mut stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted { Ok(pair) => pair, Err(_) => continue },
            _ = shutdown.cancelled() => break,
        };
        let allowed = stream.peer_cred().map(|c| c.uid() == 0 || c.uid() == me).unwrap_or(false);
        let source = source.clone();
        tokio::spawn(async move {
            let body = if allowed {
                let value = tokio::task::spawn_blocking(move || source()).await.unwrap_or_default();
                value.to_string()
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
pub async fn query(path: &Path) -> Result<serde_json::Value> {
    let mut stream =
        UnixStream::connect(path).await.with_context(|| format!("no agent answering on {}", path.display()))?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await?;
    let value: serde_json::Value = serde_json::from_str(&body).context("agent sent an unreadable status")?;
    if let Some(error) = value.get("error").and_then(|e| e.as_str()) {
        anyhow::bail!("{error}");
    }
    Ok(value)
}
