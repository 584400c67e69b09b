//! The driver with a fake server and a fake device, on paused tokio time: heartbeat silence,
//! backoff after a lost stream, renewal timing, a call that never returns, shutdown with a call
//! in flight.
use std::collections::VecDeque;
use std::sync::Mutex as StdMutex;

use super::*;

const HB: Duration = Duration::from_secs(1);

#[derive(Clone, Copy)]
enum StreamKind {
    /// Never says anything.
    Silent,
    /// Ends after this long.
    EndsAfter(Duration),
    /// Beats every heartbeat.
    Beats,
}

/// How one fake connection behaves.
#[derive(Clone, Copy)]
struct Script {
    stream: StreamKind,
    /// How long a report takes (`Duration::MAX`: forever).
    report_takes: Duration,
}

#[derive(Default)]
struct Log {
    connects: Vec<Instant>,
    reports: Vec<(Instant, String)>,
    renews: Vec<Instant>,
}

struct Server {
    log: StdMutex<Log>,
    scripts: StdMutex<VecDeque<Script>>,
    renewals_to_refuse: StdMutex<usize>,
}

impl Server {
    fn new(scripts: &[Script]) -> Arc<Self> {
        Arc::new(Self {
            log: StdMutex::default(),
            scripts: StdMutex::new(scripts.iter().copied().collect()),
            renewals_to_refuse: StdMutex::new(0),
        })
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().expect("log")
    }
}

struct FakeConnector(Arc<Server>);

#[async_trait::async_trait]
impl Connector for FakeConnector {
    async fn connect(&self) -> Result<Box<dyn ServerLink>, LinkError> {
        self.0.log().connects.push(Instant::now());
        let mut scripts = self.0.scripts.lock().expect("scripts");
        // The last script repeats.
        let script = if scripts.len() > 1 { scripts.pop_front() } else { scripts.front().copied() };
        let script = script.ok_or_else(|| LinkError::Unreachable("no server".into()))?;
        Ok(Box::new(FakeLink { server: self.0.clone(), script }))
    }
}

struct FakeLink {
    server: Arc<Server>,
    script: Script,
}

#[async_trait::async_trait]
impl ServerLink for FakeLink {
    async fn check_in(&mut self, _: &CheckIn) -> Result<Option<i64>, LinkError> {
        Ok(None)
    }
    async fn escrow(&mut self, _: Escrow<'_>) -> Result<(), LinkError> {
        Ok(())
    }
    async fn poll(&mut self) -> Result<Vec<v1::Command>, LinkError> {
        Ok(Vec::new())
    }
    async fn report(&mut self, result: &v1::CommandResult) -> Result<ReportReply, LinkError> {
        if self.script.report_takes == Duration::MAX {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(self.script.report_takes).await;
        self.server.log().reports.push((Instant::now(), result.command_id.clone()));
        Ok(ReportReply::default())
    }
    async fn renew(&mut self, _: &[u8]) -> Result<Option<String>, LinkError> {
        self.server.log().renews.push(Instant::now());
        let mut refuse = self.server.renewals_to_refuse.lock().expect("refuse");
        if *refuse > 0 {
            *refuse -= 1;
            return Err(LinkError::Server("the CA is offline".into()));
        }
        Ok(Some("renewed".into()))
    }
    async fn subscribe(&mut self, _: Duration) -> Result<Option<Box<dyn PushStream>>, LinkError> {
        Ok(Some(Box::new(FakeStream { kind: self.script.stream, ended: false })))
    }
    async fn unenroll(&mut self) -> Result<(), LinkError> {
        Ok(())
    }
}

struct FakeStream {
    kind: StreamKind,
    ended: bool,
}

#[async_trait::async_trait]
impl PushStream for FakeStream {
    async fn next(&mut self) -> Result<Option<Pushed>, LinkError> {
        match self.kind {
            StreamKind::Silent => std::future::pending().await,
            StreamKind::EndsAfter(_) if self.ended => std::future::pending().await,
            StreamKind::EndsAfter(after) => {
                tokio::time::sleep(after).await;
                self.ended = true;
                Ok(None)
            }
            StreamKind::Beats => {
                tokio::time::sleep(HB).await;
                Ok(Some(Pushed::Heartbeat))
            }
        }
    }
    async fn heartbeat(&mut self) -> Result<(), LinkError> {
        Ok(())
    }
}

#[derive(Default)]
struct FakeDevice {
    results: StdMutex<Vec<String>>,
    acked: StdMutex<Vec<String>>,
    renew_at: StdMutex<Option<SystemTime>>,
}

impl FakeDevice {
    fn add_result(&self, id: &str, ready: &Notify) {
        self.results.lock().expect("results").push(id.into());
        ready.notify_one();
    }
}

#[async_trait::async_trait]
impl DeviceSide for FakeDevice {
    async fn check_in(&self, _: &mut dyn ServerLink, _: bool) -> Result<(), LinkError> {
        Ok(())
    }
    async fn unreported(&self) -> Vec<v1::CommandResult> {
        let acked = self.acked.lock().expect("acked").clone();
        self.results
            .lock()
            .expect("results")
            .iter()
            .filter(|id| !acked.contains(id))
            .map(|id| v1::CommandResult { command_id: id.clone(), ..Default::default() })
            .collect()
    }
    async fn acknowledged(&self, command_id: &str) {
        self.acked.lock().expect("acked").push(command_id.into());
    }
    fn deliver(&self, _: v1::Command) {}
    async fn renew(&self, link: &mut dyn ServerLink) -> Result<Renewal, LinkError> {
        link.renew(b"csr").await?;
        *self.renew_at.lock().expect("renew_at") = None;
        Ok(Renewal::Renewed)
    }
    fn renew_at(&self) -> Option<SystemTime> {
        *self.renew_at.lock().expect("renew_at")
    }
}

struct Rig {
    server: Arc<Server>,
    device: Arc<FakeDevice>,
    ready: Arc<Notify>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Stopped>,
    t0: Instant,
}

fn start(scripts: &[Script], jitter: f64, device: FakeDevice) -> Rig {
    let server = Server::new(scripts);
    let device = Arc::new(device);
    let ready = Arc::new(Notify::new());
    let shutdown = CancellationToken::new();
    let driver = Driver {
        config: DriverConfig {
            timing: Timing { heartbeat: HB, backoff_max: Duration::from_secs(60), push: true },
            poll_interval: Duration::from_secs(3600),
            checkin_interval: Duration::from_secs(3600),
            rpc_deadline: DriverConfig::rpc_deadline_for(HB),
        },
        connector: Arc::new(FakeConnector(server.clone())),
        device: device.clone(),
        results_ready: ready.clone(),
        device_changed: Arc::new(Notify::new()),
        status: Arc::default(),
        watchdog: Watchdog::with_period(None),
    };
    let t0 = Instant::now();
    let task = tokio::spawn(driver.run(move || jitter, shutdown.clone()));
    Rig { server, device, ready, shutdown, task, t0 }
}

async fn at(rig: &Rig, offset: Duration) {
    tokio::time::sleep_until(rig.t0 + offset).await;
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test(start_paused = true)]
async fn three_silent_heartbeats_end_the_stream() {
    let rig = start(&[Script { stream: StreamKind::Silent, report_takes: Duration::ZERO }], 0.0, FakeDevice::default());
    at(&rig, ms(3_500)).await;
    assert_eq!(rig.server.log().connects.len(), 1, "cut before three periods of silence");
    at(&rig, ms(4_500)).await;
    assert_eq!(rig.server.log().connects.len(), 2, "a silent stream was kept");
}

#[tokio::test(start_paused = true)]
async fn a_lost_stream_reconnects_after_a_jittered_share_of_the_heartbeat() {
    let scripts = [Script { stream: StreamKind::EndsAfter(ms(500)), report_takes: Duration::ZERO }];
    let rig = start(&scripts, 0.5, FakeDevice::default());
    at(&rig, ms(2_000)).await;
    let connects = rig.server.log().connects.clone();
    assert!(connects.len() >= 2);
    assert_eq!(connects[1] - connects[0], ms(1_000), "lost at 0.5 s, then half of the one-second window");
}

#[tokio::test(start_paused = true)]
async fn a_refused_renewal_is_retried_and_results_keep_flowing() {
    let device = FakeDevice::default();
    *device.renew_at.lock().expect("renew_at") = Some(SystemTime::now() + Duration::from_secs(10));
    let rig = start(&[Script { stream: StreamKind::Beats, report_takes: Duration::ZERO }], 0.0, device);
    *rig.server.renewals_to_refuse.lock().expect("refuse") = 2;
    at(&rig, ms(2_000)).await;
    rig.device.add_result("early", &rig.ready);
    at(&rig, ms(10_500)).await;
    assert_eq!(rig.server.log().renews.len(), 1, "renewal did not start on time");
    rig.device.add_result("during-renewal-trouble", &rig.ready);
    at(&rig, ms(12_000)).await;
    {
        let log = rig.server.log();
        let reported: Vec<&str> = log.reports.iter().map(|(_, id)| id.as_str()).collect();
        assert_eq!(reported, ["early", "during-renewal-trouble"], "a failing renewal held up results");
        assert_eq!(log.connects.len(), 1, "a failing renewal dropped the link");
    }
    at(&rig, ms(14_000)).await;
    let log = rig.server.log();
    let offsets: Vec<Duration> = log.renews.iter().map(|t| *t - rig.t0).collect();
    // 10 s, then one heartbeat later, then two.
    assert_eq!(offsets.len(), 3, "{offsets:?}");
    assert!(offsets[1] - offsets[0] >= HB && offsets[2] - offsets[1] >= HB * 2, "{offsets:?}");
    assert_eq!(log.connects.len(), 2, "a renewed identity must reconnect to be used");
}

#[tokio::test(start_paused = true)]
async fn a_call_that_never_returns_times_out_and_the_next_session_reports() {
    let scripts = [
        Script { stream: StreamKind::Beats, report_takes: Duration::MAX },
        Script { stream: StreamKind::Beats, report_takes: Duration::ZERO },
    ];
    let device = FakeDevice::default();
    device.results.lock().expect("results").push("stuck".into());
    let rig = start(&scripts, 0.0, device);
    at(&rig, ms(1_900)).await;
    assert!(rig.server.log().reports.is_empty());
    at(&rig, ms(2_500)).await;
    let log = rig.server.log();
    assert_eq!(log.connects.len(), 2, "the hung report was not given up");
    assert_eq!(log.reports.len(), 1);
    assert!(log.reports[0].0 - rig.t0 <= ms(2_100), "reported late: {:?}", log.reports[0].0 - rig.t0);
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_a_call_in_flight_finish() {
    let rig = start(&[Script { stream: StreamKind::Beats, report_takes: ms(1_500) }], 0.0, FakeDevice::default());
    at(&rig, ms(100)).await;
    rig.device.add_result("in-flight", &rig.ready);
    at(&rig, ms(300)).await;
    rig.shutdown.cancel();
    let stopped = rig.task.await.expect("driver");
    assert_eq!(stopped, Stopped::Shutdown);
    assert!(Instant::now() - rig.t0 >= ms(1_600), "stopped before the report finished");
    assert_eq!(rig.device.acked.lock().expect("acked").as_slice(), ["in-flight"]);
}
