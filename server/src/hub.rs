//! Which devices hold a push stream right now, a way to wake their stream task when work is
//! queued for them, and the heartbeats seen since the last flush to storage (last-seen times
//! are written in batches, not once per heartbeat). A wake for a device with no stream is
//! dropped: it will poll or resubscribe, and both read the queue.
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use latchkey_proto::v1;

use crate::records::ActionRecord;

/// One device's live stream, as the hub holds it.
struct Stream {
    generation: u64,
    notify: Arc<Notify>,
    closed: CancellationToken,
}

/// The registry of live streams.
#[derive(Default)]
pub struct Hub {
    streams: Mutex<HashMap<String, Stream>>,
    next_generation: AtomicU64,
    seen: Mutex<HashMap<String, i64>>,
    /// Certificates verified recently; forgotten when the device's stream is closed.
    pub certs: crate::known_certs::KnownCerts,
    /// Commands an admin waits on (`wait ID` on the admin socket), signalled whenever the
    /// command may have reached a final state: with its final record when a result was just
    /// stored, `None` when the waiter must look for itself.
    results: Mutex<HashMap<String, watch::Sender<Option<Arc<ActionRecord>>>>>,
    /// Commands the admin handed over with the wake-up, by device, until its stream task takes
    /// them: pushed without being read back from storage. Empty while nothing is in flight, so
    /// an idle stream costs nothing here.
    handed: Mutex<HashMap<String, Vec<v1::Command>>>,
}

/// A registration; unregisters only itself (a newer stream for the same device survives).
pub struct Registration {
    /// The device.
    pub device_id: String,
    generation: u64,
    /// Fires when work is queued for the device.
    pub notify: Arc<Notify>,
    /// Fires when the stream must end (the device was retired).
    pub closed: CancellationToken,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hub {
    /// Registers a new stream for a device, replacing an older one.
    pub fn register(&self, device_id: &str) -> Registration {
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let notify = Arc::new(Notify::new());
        let closed = CancellationToken::new();
        let stream = Stream { generation, notify: notify.clone(), closed: closed.clone() };
        let old = lock(&self.streams).insert(device_id.to_owned(), stream);
        // A device has one stream: a reconnect replaces (and ends) the one it left behind.
        if let Some(old) = old {
            old.closed.cancel();
        }
        Registration { device_id: device_id.to_owned(), generation, notify, closed }
    }

    /// Removes a registration if it is still the current one; true when it was.
    pub fn unregister(&self, registration: &Registration) -> bool {
        let mut streams = lock(&self.streams);
        if streams.get(&registration.device_id).is_some_and(|s| s.generation == registration.generation) {
            streams.remove(&registration.device_id);
            // Still in storage: the next stream or poll reads them. They may carry a passcode.
            if let Some(mut left) = lock(&self.handed).remove(&registration.device_id) {
                left.iter_mut().for_each(latchkey_proto::scrub);
            }
            return true;
        }
        false
    }

    /// Wakes the device's stream task with a command just queued, which it pushes without
    /// reading storage; returns whether the device has a stream (if not, the command waits in
    /// storage as after [`Hub::wake`]).
    pub fn hand_over(&self, command: v1::Command) -> bool {
        let streams = lock(&self.streams);
        let Some(stream) = streams.get(&command.device_id) else { return false };
        let notify = stream.notify.clone();
        // Under the streams lock, so `unregister` cannot drop the stream in between and leave
        // the command here.
        lock(&self.handed).entry(command.device_id.clone()).or_default().push(command);
        drop(streams);
        notify.notify_one();
        true
    }

    /// The commands handed over for the device since the last call, oldest first.
    pub fn take_handed(&self, device_id: &str) -> Vec<v1::Command> {
        lock(&self.handed).remove(device_id).unwrap_or_default()
    }

    /// Wakes the device's stream task; returns whether the device has a stream.
    pub fn wake(&self, device_id: &str) -> bool {
        match lock(&self.streams).get(device_id) {
            Some(stream) => {
                stream.notify.notify_one();
                true
            }
            None => false,
        }
    }

    /// Watches a command for a stored result. The receiver sees every bump after this call;
    /// call [`Hub::unwatch`] once it is dropped.
    pub fn watch_result(&self, command_id: &str) -> watch::Receiver<Option<Arc<ActionRecord>>> {
        lock(&self.results).entry(command_id.to_owned()).or_insert_with(|| watch::channel(None).0).subscribe()
    }

    /// Forgets a command nobody watches any more.
    pub fn unwatch(&self, command_id: &str) {
        let mut results = lock(&self.results);
        if results.get(command_id).is_some_and(|s| s.receiver_count() == 0) {
            results.remove(command_id);
        }
    }

    /// A result was stored for the command; `record` is the command as it now stands, if the
    /// result made it final.
    pub fn result_stored(&self, command_id: &str, record: Option<Arc<ActionRecord>>) {
        if let Some(sender) = lock(&self.results).get(command_id) {
            sender.send_replace(record);
        }
    }

    /// Commands may have ended without a result (a device retired or unenrolled).
    pub fn results_changed(&self) {
        for sender in lock(&self.results).values() {
            sender.send_replace(None);
        }
    }

    /// Ends the device's stream (it was retired) and forgets its certificates; returns whether
    /// it had a stream.
    pub fn close(&self, device_id: &str) -> bool {
        self.certs.forget(device_id);
        // Its queue was cancelled.
        self.results_changed();
        match lock(&self.streams).get(device_id) {
            Some(stream) => {
                stream.closed.cancel();
                true
            }
            None => false,
        }
    }

    /// Number of live streams.
    pub fn connected(&self) -> usize {
        lock(&self.streams).len()
    }

    /// Records a sign of life.
    pub fn saw(&self, device_id: &str, at: i64) {
        let mut seen = lock(&self.seen);
        let entry = seen.entry(device_id.to_owned()).or_insert(at);
        *entry = (*entry).max(at);
    }

    /// The signs of life since the last call.
    pub fn take_seen(&self) -> Vec<(String, i64)> {
        std::mem::take(&mut *lock(&self.seen)).into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(id: &str, device: &str) -> v1::Command {
        v1::Command { command_id: id.into(), device_id: device.into(), ..Default::default() }
    }

    #[test]
    fn a_handed_over_command_reaches_only_a_live_stream_once_and_never_outlives_it() {
        let hub = Hub::default();
        assert!(!hub.hand_over(command("c0", "d")), "no stream: the command waits in storage");
        assert!(hub.take_handed("d").is_empty(), "nothing kept for a device without a stream");

        let first = hub.register("d");
        assert!(hub.hand_over(command("c1", "d")));
        assert!(hub.hand_over(command("c2", "d")));
        assert!(!hub.hand_over(command("x", "other")));
        let taken: Vec<String> = hub.take_handed("d").into_iter().map(|c| c.command_id).collect();
        assert_eq!(taken, ["c1", "c2"], "oldest first");
        assert!(hub.take_handed("d").is_empty(), "taken once");

        // Left over when the stream ends: dropped (storage still has it); a replaced stream's
        // unregistration leaves the new stream's commands alone.
        assert!(hub.hand_over(command("c3", "d")));
        let second = hub.register("d");
        assert!(!hub.unregister(&first));
        assert_eq!(hub.take_handed("d").len(), 1, "the newer stream still gets it");
        assert!(hub.hand_over(command("c4", "d")));
        assert!(hub.unregister(&second));
        assert!(hub.take_handed("d").is_empty());
        assert!(lock(&hub.handed).is_empty(), "nothing left behind");
    }
}
