//! Prometheus metrics, served as text on an optional plain-HTTP listen address (`/metrics`).
//! Counters and histograms are updated where things happen; queue and device counts are read
//! from storage at scrape time.
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::store::Store;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabels {
    action: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    /// Devices holding a push stream.
    pub streams: Gauge,
    /// Enrollments since start.
    pub enrollments: Counter,
    /// Storage errors since start.
    pub storage_errors: Counter,
    /// TLS handshakes refused or timed out since start.
    pub tls_failures: Counter,
    /// TCP connections accepted since start (a reconnect storm shows here first).
    pub connections: Counter,
    /// From issue to result, seconds.
    pub report_latency: Histogram,
    commands: Family<CommandLabels, Gauge>,
    devices: Family<StatusLabels, Gauge>,
    oldest_open: Gauge<f64, AtomicU64>,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("latchkey");
        let streams = Gauge::default();
        let enrollments = Counter::default();
        let storage_errors = Counter::default();
        let tls_failures = Counter::default();
        let connections = Counter::default();
        let report_latency =
            Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 600.0]);
        let commands = Family::<CommandLabels, Gauge>::default();
        let devices = Family::<StatusLabels, Gauge>::default();
        let oldest_open = Gauge::<f64, AtomicU64>::default();
        registry.register("streams_connected", "Devices holding a push stream", streams.clone());
        registry.register("enrollments", "Devices enrolled since the server started", enrollments.clone());
        registry.register("storage_errors", "Storage operations that failed", storage_errors.clone());
        registry.register("tls_handshake_failures", "TLS handshakes refused or timed out", tls_failures.clone());
        registry.register("connections_accepted", "TCP connections accepted", connections.clone());
        registry.register("report_latency_seconds", "From an action's issue to its result", report_latency.clone());
        registry.register("commands", "Commands by action and state", commands.clone());
        registry.register("devices", "Devices by status", devices.clone());
        registry.register(
            "command_oldest_open_seconds",
            "Age of the oldest command without a result",
            oldest_open.clone(),
        );
        Arc::new(Self {
            registry,
            streams,
            enrollments,
            storage_errors,
            tls_failures,
            connections,
            report_latency,
            commands,
            devices,
            oldest_open,
        })
    }

    /// The text exposition, with queue and device counts read now.
    pub async fn render(&self, store: &dyn Store, now: i64) -> Result<String, String> {
        let stats = store.stats(now).await.map_err(|e| e.to_string())?;
        self.commands.clear();
        for ((action, state), n) in stats.by_action_state {
            self.commands.get_or_create(&CommandLabels { action, state }).set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        self.devices.clear();
        for (status, n) in stats.devices_by_status {
            self.devices.get_or_create(&StatusLabels { status }).set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        self.oldest_open.set(stats.oldest_open_ms as f64 / 1000.0);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).map_err(|e| e.to_string())?;
        Ok(out)
    }
}
