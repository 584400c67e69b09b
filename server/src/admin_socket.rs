//! The admin socket's client side: one request line, one answer line, on a connection kept for
//! the next request (an admin tool issuing many commands does not connect once per command).
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// Connections kept for reuse; more run at once only while requests overlap.
const KEPT: usize = 4;

/// Why a request got no answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoAnswer {
    /// Nothing listens on the socket, or the request could not be sent.
    Unreachable,
    /// Sent, but not answered in time (or the connection ended first).
    Silent,
}

/// The serving process's admin socket (clones share the kept connections).
#[derive(Clone, Debug)]
pub struct AdminSocket {
    path: PathBuf,
    idle: Arc<Mutex<Vec<BufReader<UnixStream>>>>,
}

enum Exchange {
    Answered(String),
    /// The connection was closed (a kept one the server has since dropped: nothing was done).
    Closed,
    Unanswered,
}

async fn exchange(conn: &mut BufReader<UnixStream>, line: &str, timeout: Duration) -> Exchange {
    if conn.get_mut().write_all(line.as_bytes()).await.is_err() {
        return Exchange::Closed;
    }
    let mut answer = String::new();
    match tokio::time::timeout(timeout, conn.read_line(&mut answer)).await {
        Ok(Ok(0)) => Exchange::Closed,
        Ok(Ok(_)) => {
            answer.truncate(answer.trim_end().len());
            Exchange::Answered(answer)
        }
        Ok(Err(_)) | Err(_) => Exchange::Unanswered,
    }
}

impl AdminSocket {
    /// The socket at `path` (nothing is connected yet).
    pub fn new(path: PathBuf) -> Self {
        Self { path, idle: Arc::default() }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<BufReader<UnixStream>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn connect(&self) -> Result<BufReader<UnixStream>, NoAnswer> {
        UnixStream::connect(&self.path).await.map(BufReader::new).map_err(|_| NoAnswer::Unreachable)
    }

    /// Sends `line` (one request, ending in a newline) and returns the answer line.
    pub async fn ask(&self, line: &str, timeout: Duration) -> Result<String, NoAnswer> {
        let kept = self.idle().pop();
        let was_kept = kept.is_some();
        let mut conn = match kept {
            Some(conn) => conn,
            None => self.connect().await?,
        };
        let mut outcome = exchange(&mut conn, line, timeout).await;
        if matches!(outcome, Exchange::Closed) && was_kept {
            // The server ended the kept connection (it restarted): once more on a new one.
            conn = self.connect().await?;
            outcome = exchange(&mut conn, line, timeout).await;
        }
        match outcome {
            Exchange::Answered(answer) => {
                let mut idle = self.idle();
                if idle.len() < KEPT {
                    idle.push(conn);
                }
                Ok(answer)
            }
            Exchange::Closed => Err(NoAnswer::Unreachable),
            // A late answer would be read as the next request's: the connection is dropped.
            Exchange::Unanswered => Err(NoAnswer::Silent),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    /// A server answering each line with `N:line`, N counting connections; it closes every
    /// connection after `per_conn` answers.
    fn serve(listener: UnixListener, per_conn: usize) {
        tokio::spawn(async move {
            let mut n = 0;
            while let Ok((stream, _)) = listener.accept().await {
                n += 1;
                tokio::spawn(async move {
                    let (reader, mut writer) = stream.into_split();
                    let mut lines = BufReader::new(reader).lines();
                    for _ in 0..per_conn {
                        let Ok(Some(line)) = lines.next_line().await else { return };
                        if writer.write_all(format!("{n}:{line}\n").as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
    }

    #[tokio::test]
    async fn requests_share_a_kept_connection_and_survive_its_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("admin.sock");
        let socket = AdminSocket::new(path.clone());
        let t = Duration::from_secs(10);
        assert_eq!(socket.ask("wake d\n", t).await, Err(NoAnswer::Unreachable), "nobody listens");
        serve(UnixListener::bind(&path).expect("bind"), 2);
        assert_eq!(socket.ask("wake a\n", t).await.as_deref(), Ok("1:wake a"));
        assert_eq!(socket.ask("wake b\n", t).await.as_deref(), Ok("1:wake b"), "the same connection");
        // The server closed that connection after two answers: the next request moves on.
        assert_eq!(socket.ask("wake c\n", t).await.as_deref(), Ok("2:wake c"));
    }

    #[tokio::test]
    async fn a_silent_server_times_out_and_its_connection_is_not_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("admin.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let socket = AdminSocket::new(path.clone());
        let (_held, _) = tokio::join!(listener.accept(), async {
            assert_eq!(socket.ask("wait c\n", Duration::from_millis(50)).await, Err(NoAnswer::Silent));
        });
        assert!(socket.idle().is_empty(), "a connection with an answer still due is dropped");
    }
}
