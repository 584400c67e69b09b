//! Which devices hold a push stream right now, and a way to wake their stream task when work
//! is queued for them. A wake for a device with no stream is dropped: it will poll or
//! resubscribe, and both read the queue.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// The registry of live streams.
#[derive(Default)]
pub struct Hub {
    streams: Mutex<HashMap<String, (u64, Arc<Notify>)>>,
    next_generation: std::sync::atomic::AtomicU64,
}

/// A registration; unregisters only itself (a newer stream for the same device survives).
pub struct Registration {
    /// The device.
    pub device_id: String,
    generation: u64,
    /// Fires when work is queued for the device.
    pub notify: Arc<Notify>,
}

impl Hub {
    /// Registers a new stream for a device, replacing an older one.
    pub fn register(&self, device_id: &str) -> Registration {
        let generation = self.next_generation.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let notify = Arc::new(Notify::new());
        self.lock().insert(device_id.to_owned(), (generation, notify.clone()));
        Registration { device_id: device_id.to_owned(), generation, notify }
    }

    /// Removes a registration if it is still the current one.
    pub fn unregister(&self, registration: &Registration) {
        let mut streams = self.lock();
        if streams.get(&registration.device_id).is_some_and(|(g, _)| *g == registration.generation) {
            streams.remove(&registration.device_id);
        }
    }

    /// Wakes the device's stream task; returns whether the device has a stream.
    pub fn wake(&self, device_id: &str) -> bool {
        match self.lock().get(device_id) {
            Some((_, notify)) => {
                notify.notify_one();
                true
            }
            None => false,
        }
    }

    /// Number of live streams.
    pub fn connected(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, Arc<Notify>)>> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }
}
