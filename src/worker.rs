//! The command worker: one command at a time, each on a blocking thread (ports do file and
//! process I/O). A command that has started runs to its end even when shutdown arrives.
use std::sync::Arc;

use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use latchkey_proto::v1;

use crate::executor::Executor;
use crate::watchdog::WorkerBeat;

/// Where the worker signals what it did.
pub struct Signals {
    /// A result was journaled.
    pub results_ready: Arc<Notify>,
    /// A command changed (or may have changed) the device.
    pub device_changed: Arc<Notify>,
    /// The watchdog's view of the worker.
    pub beat: WorkerBeat,
}

/// Runs one command to its journaled result.
pub async fn run_one(executor: Arc<Executor>, command: v1::Command, signals: &Signals) {
    signals.beat.busy();
    let done = tokio::task::spawn_blocking(move || {
        let mut command = command;
        let finished = executor.handle(&command);
        latchkey_proto::scrub(&mut command);
        finished
    })
    .await;
    signals.beat.idle();
    match done {
        Ok(true) => {
            signals.results_ready.notify_one();
            signals.device_changed.notify_one();
        }
        Ok(false) => signals.results_ready.notify_one(),
        Err(e) => tracing::error!(error = %e, "command worker failed"),
    }
}

/// Takes commands until shutdown.
pub async fn run(
    executor: Arc<Executor>,
    mut commands: mpsc::UnboundedReceiver<v1::Command>,
    signals: Signals,
    shutdown: CancellationToken,
) {
    loop {
        let command = tokio::select! {
            c = commands.recv() => match c { Some(c) => c, None => return },
            _ = shutdown.cancelled() => return,
        };
        run_one(executor.clone(), command, &signals).await;
    }
}
