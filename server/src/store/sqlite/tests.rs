//! The SQLite store against the storage contract.
use std::sync::Arc;

use latchkey_platform::sim::profile;
use latchkey_platform::Status;
use latchkey_proto::v1;

use super::SqliteStore;
use crate::records::{
    ActionFilter, CertInfo, CommandState, DeviceStatus, EscrowKind, NewDevice, PasscodeKind, QueueStats, ReportOutcome,
};
use crate::store::{NewCommand, NewResult, RetryPolicy, Store, StoreError};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().expect("runtime")
}

fn device(id: &str) -> NewDevice {
    NewDevice {
        device_id: id.into(),
        facts: profile::build("android-do", &Default::default()).expect("profile").facts,
        hostname: "host".into(),
        cert: CertInfo { sha256: format!("cert-{id}"), not_after: i64::MAX },
    }
}

async fn enrolled(store: &SqliteStore, id: &str) {
    store.insert_token(&format!("tok-{id}"), 0, i64::MAX).await.expect("token");
    store.enroll(&format!("tok-{id}"), 1, device(id)).await.expect("enroll");
    store.device_by_cert(&format!("cert-{id}")).await.expect("cert").expect("found");
}

/// A store in a temporary directory with device `id` enrolled, and a current-thread runtime
/// (on one thread, a spawned task has run once the test yields to it).
pub(crate) fn one_device(id: &str) -> (tempfile::TempDir, tokio::runtime::Runtime, Arc<dyn Store>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let sqlite = SqliteStore::open(&dir.path().join("server.db")).expect("open");
    rt.block_on(enrolled(&sqlite, id));
    (dir, rt, Arc::new(sqlite))
}

fn command(id: &str, device: &str, expires: i64) -> NewCommand {
    NewCommand {
        command: v1::Command {
            command_id: id.into(),
            device_id: device.into(),
            issued_at_unix_ms: 10,
            expires_at_unix_ms: expires,
            action: Some(v1::command::Action::RemoteLock(v1::RemoteLock::default())),
        },
        requested: "remote_lock".into(),
        action: "remote_lock".into(),
        warning: String::new(),
        passcode: None,
    }
}

fn result(id: &str, status: Status, finished_at: i64) -> NewResult {
    NewResult {
        command_id: id.into(),
        status,
        error_code: String::new(),
        message: "m".into(),
        outputs: Default::default(),
        finished_at,
        generated_pin: None,
    }
}

#[test]
fn tokens_are_stored_hashed_in_the_database_and_its_wal() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = SqliteStore::open(&dir.path().join("t.db")).expect("open");
        let hash = crate::service::token_hash("lk1-CANARY-TOKEN");
        store.insert_token(&hash, 0, i64::MAX).await.expect("token");
    });
    // The rows may still be in the WAL: read both files.
    for name in ["t.db", "t.db-wal"] {
        let bytes = std::fs::read(dir.path().join(name)).unwrap_or_default();
        assert!(!String::from_utf8_lossy(&bytes).contains("CANARY-TOKEN"), "token in clear in {name}");
    }
    let wal = std::fs::read(dir.path().join("t.db-wal")).unwrap_or_default();
    let db = std::fs::read(dir.path().join("t.db")).unwrap_or_default();
    let hash = crate::service::token_hash("lk1-CANARY-TOKEN");
    let found = [db, wal].iter().any(|b| String::from_utf8_lossy(b).contains(&hash));
    assert!(found, "the test looked in the wrong files: the hash itself is in neither");
}

#[test]
fn a_token_is_spent_only_when_the_device_uses_its_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = SqliteStore::open(&dir.path().join("t.db")).expect("open");
        store.insert_token("tok", 0, i64::MAX).await.expect("token");
        // The first enrollment never came back (the device died before storing its certificate).
        store.enroll("tok", 1, device("orphan")).await.expect("enroll");
        store.enroll("tok", 2, device("retry")).await.expect("the retry is allowed");
        assert!(matches!(store.device("orphan").await, Err(StoreError::UnknownDevice(_))), "orphan left behind");
        assert_eq!(store.device("retry").await.expect("device").status, DeviceStatus::Enrolling);
        let found = store.device_by_cert("cert-retry").await.expect("cert").expect("found");
        assert_eq!(found.status, DeviceStatus::Active);
        assert!(matches!(store.enroll("tok", 3, device("third")).await, Err(StoreError::TokenUsed)));
    });
}

#[test]
fn concurrent_writers_in_two_processes_lose_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.db");
    rt().block_on(async {
        // Two stores on one file: the serving process and an admin CLI, each with its own writer.
        let server = Arc::new(SqliteStore::open(&path).expect("open"));
        let admin = Arc::new(SqliteStore::open(&path).expect("open"));
        for d in 0..6 {
            enrolled(&server, &format!("d{d}")).await;
        }
        let mut tasks = Vec::new();
        for d in 0..6 {
            let (server, admin) = (server.clone(), admin.clone());
            tasks.push(tokio::spawn(async move {
                let device = format!("d{d}");
                for n in 0..30 {
                    let id = format!("c{d}-{n}");
                    admin.queue(command(&id, &device, i64::MAX)).await?;
                    server.mark_sent(vec![id.clone()], 20).await?;
                    let reported = crate::records::Reported {
                        facts: device_facts(),
                        state: Default::default(),
                        hostname: "h".into(),
                        agent_version: "t".into(),
                    };
                    server.check_in(&device, 30, reported).await?;
                    server
                        .record_result(&device, result(&id, Status::Succeeded, 40), 50, RetryPolicy::default())
                        .await?;
                }
                Ok::<_, StoreError>(())
            }));
        }
        for t in tasks {
            t.await.expect("join").expect("no storage error under concurrent writers");
        }
        let done = server.actions(ActionFilter::default(), 100).await.expect("actions");
        assert_eq!(done.len(), 180);
        assert!(done.iter().all(|a| a.state == CommandState::Done(Status::Succeeded)));
    });
}

fn device_facts() -> latchkey_platform::DeviceFacts {
    profile::build("android-do", &Default::default()).expect("profile").facts
}

#[test]
fn results_are_idempotent_and_not_now_is_redelivered_a_bounded_number_of_times() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = SqliteStore::open(&dir.path().join("t.db")).expect("open");
        enrolled(&store, "d").await;
        store.queue(command("c", "d", i64::MAX)).await.expect("queue");
        let retry = RetryPolicy { max_attempts: 3, first_delay_ms: 1_000, max_delay_ms: 10_000 };
        assert_eq!(store.deliverable("d", 100).await.expect("q").len(), 1);
        let first = store.record_result("d", result("c", Status::NotNow, 101), 100, retry).await.expect("r");
        assert_eq!(first, ReportOutcome::Requeued(1_100));
        // Re-sent report of the same answer: not a second not_now.
        let again = store.record_result("d", result("c", Status::NotNow, 101), 150, retry).await.expect("r");
        assert_eq!(again, ReportOutcome::Duplicate);
        assert!(store.deliverable("d", 1_000).await.expect("q").is_empty(), "delivered before its retry time");
        assert_eq!(store.deliverable("d", 1_100).await.expect("q").len(), 1);
        assert_eq!(
            store.record_result("d", result("c", Status::NotNow, 1_200), 1_200, retry).await.expect("r"),
            ReportOutcome::Requeued(3_200)
        );
        // The third not_now is final.
        let outcome = store.record_result("d", result("c", Status::NotNow, 3_300), 3_300, retry).await.expect("r");
        let ReportOutcome::Recorded(record) = outcome else { panic!("recorded: {outcome:?}") };
        // The record handed back is the one `actions` shows.
        let shown = store.actions(ActionFilter::default(), 3_300).await.expect("actions");
        assert_eq!(*record, shown[0]);
        assert_eq!((record.issued_at, record.reported_at), (10, 3_300));
        let rows = store.actions(ActionFilter::default(), 4_000).await.expect("actions");
        assert_eq!(rows[0].state, CommandState::Done(Status::NotNow));
        assert!(store.deliverable("d", 10_000).await.expect("q").is_empty());
        assert_eq!(
            store.record_result("d", result("c", Status::Succeeded, 9), 9_000, retry).await.expect("r"),
            ReportOutcome::Duplicate
        );
        assert!(matches!(
            store.record_result("other", result("c", Status::Succeeded, 9), 9_000, retry).await,
            Err(StoreError::WrongDevice(_))
        ));
    });
}

#[test]
fn commands_expire_in_every_view_and_on_the_sweep() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = SqliteStore::open(&dir.path().join("t.db")).expect("open");
        enrolled(&store, "d").await;
        let mut with_pin = command("c", "d", 1_000);
        with_pin.passcode = Some((PasscodeKind::Temporary, vec![1, 2, 3]));
        store.queue(with_pin).await.expect("queue");
        let view = store.actions(ActionFilter::default(), 999).await.expect("actions");
        assert_eq!(view[0].state, CommandState::Pending);
        let view = store.actions(ActionFilter::default(), 1_000).await.expect("actions");
        assert_eq!(view[0].state, CommandState::Expired, "the view must not wait for the sweep");
        assert!(store.deliverable("d", 1_000).await.expect("q").is_empty());
        assert_eq!(store.expire_due(1_000).await.expect("sweep"), 1);
        assert!(store.passcodes("d", 1_000).await.expect("passcodes").is_empty(), "passcode of an expired reset kept");
        let filter = ActionFilter { state: Some(CommandState::Expired), ..ActionFilter::default() };
        assert_eq!(store.actions(filter, 2_000).await.expect("actions").len(), 1);
    });
}

#[test]
fn the_open_count_agrees_with_the_stats_as_commands_move_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = SqliteStore::open(&dir.path().join("t.db")).expect("open");
        enrolled(&store, "d").await;
        let open_in_stats = |stats: QueueStats| {
            stats
                .by_action_state
                .iter()
                .filter(|((_, state), _)| state == "pending" || state == "sent")
                .map(|(_, n)| n)
                .sum::<u64>()
        };
        for (id, expires) in [("a", 10_000), ("b", 10_000), ("c", 10_000), ("short", 500)] {
            store.queue(command(id, "d", expires)).await.expect("queue");
        }
        store.mark_sent(vec!["b".into(), "c".into()], 20).await.expect("sent");
        store.record_result("d", result("c", Status::Succeeded, 40), 50, RetryPolicy::default()).await.expect("result");
        for (now, open) in [(100, 3), (500, 2)] {
            // a (pending) and b (sent) are open throughout; "short" until it expires at 500.
            assert_eq!(store.open_commands(now).await.expect("open"), open, "at {now}");
            assert_eq!(open_in_stats(store.stats(now).await.expect("stats")), open, "stats at {now}");
        }
    });
}

#[test]
fn ending_management_cancels_the_queue_and_deletes_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = SqliteStore::open(&dir.path().join("t.db")).expect("open");
        enrolled(&store, "d").await;
        store.set_escrow("d", EscrowKind::Unlock, vec![9; 40], 5).await.expect("escrow");
        store.queue(command("c", "d", i64::MAX)).await.expect("queue");
        assert_eq!(store.end_management("d", DeviceStatus::Retired, 6).await.expect("retire"), 1);
        assert!(store.escrow("d", EscrowKind::Unlock).await.expect("escrow").is_none());
        let found = store.device_by_cert("cert-d").await.expect("cert").expect("found");
        assert_eq!(found.status, DeviceStatus::Retired);
        assert!(matches!(store.queue(command("c2", "d", i64::MAX)).await, Err(StoreError::NotActive(..))));
        let rows = store.actions(ActionFilter::default(), 7).await.expect("actions");
        assert_eq!(rows[0].state, CommandState::Cancelled);
    });
}

#[test]
fn a_renewed_certificate_replaces_the_old_one_on_first_use() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = SqliteStore::open(&dir.path().join("t.db")).expect("open");
        enrolled(&store, "d").await;
        store.set_renewed_cert("d", CertInfo { sha256: "new".into(), not_after: 99 }).await.expect("renew");
        // Until the new one is used, the old one still works (the device may not have stored it).
        assert!(store.device_by_cert("cert-d").await.expect("old").is_some());
        let new = store.device_by_cert("new").await.expect("new").expect("found");
        assert!(new.renewed);
        store.promote_renewed_cert("d", "new").await.expect("promote");
        assert!(store.device_by_cert("cert-d").await.expect("old").is_none(), "the replaced certificate still works");
        assert!(!store.device_by_cert("new").await.expect("new").expect("found").renewed);
    });
}

#[test]
fn every_action_filter_narrows_and_they_combine() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = SqliteStore::open(&dir.path().join("t.db")).expect("open");
        enrolled(&store, "a").await;
        enrolled(&store, "b").await;
        for (id, device, issued) in [("a1", "a", 10), ("a2", "a", 20), ("a3", "a", 30), ("b1", "b", 25)] {
            let mut new = command(id, device, 1_000_000);
            new.command.issued_at_unix_ms = issued;
            store.queue(new).await.expect("queue");
        }
        let ids = |rows: Vec<crate::records::ActionRecord>| rows.into_iter().map(|r| r.command_id).collect::<Vec<_>>();
        let query = |filter: ActionFilter| {
            let store = &store;
            async move { ids(store.actions(filter, 100).await.expect("actions")) }
        };
        assert_eq!(query(ActionFilter::default()).await, ["a1", "a2", "b1", "a3"], "oldest first");
        let one = ActionFilter { command_id: Some("a2".into()), ..ActionFilter::default() };
        assert_eq!(query(one).await, ["a2"]);
        let device = ActionFilter { device_id: Some("b".into()), ..ActionFilter::default() };
        assert_eq!(query(device).await, ["b1"]);
        let since = ActionFilter { since: Some(20), ..ActionFilter::default() };
        assert_eq!(query(since).await, ["a2", "b1", "a3"]);
        let newest = ActionFilter { limit: Some(2), ..ActionFilter::default() };
        assert_eq!(query(newest).await, ["b1", "a3"], "the limit keeps the newest");
        let combined = ActionFilter {
            device_id: Some("a".into()),
            state: Some(CommandState::Pending),
            since: Some(15),
            limit: Some(1),
            command_id: None,
        };
        assert_eq!(query(combined).await, ["a3"]);
        let mismatch =
            ActionFilter { command_id: Some("a1".into()), device_id: Some("b".into()), ..ActionFilter::default() };
        assert!(query(mismatch).await.is_empty());
    });
}

#[test]
fn a_waiting_admin_is_woken_by_the_result_by_expiry_and_by_cancellation() {
    use crate::admin::wait_final;
    use crate::hub::Hub;
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let sqlite = SqliteStore::open(&dir.path().join("t.db")).expect("open");
        enrolled(&sqlite, "d").await;
        let store: Arc<dyn Store> = Arc::new(sqlite);
        let hub = Arc::new(Hub::default());
        let far = crate::now_ms() + 3_600_000;
        let wait = |id: &'static str| {
            let (hub, store) = (hub.clone(), store.clone());
            tokio::spawn(async move { wait_final(&hub, store.as_ref(), id).await })
        };
        let in_time = |task| tokio::time::timeout(std::time::Duration::from_secs(10), task);

        // A result: stored, announced, answered.
        store.queue(command("c1", "d", far)).await.expect("queue");
        let waiting = wait("c1");
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "answered before any result");
        let now = crate::now_ms();
        store.record_result("d", result("c1", Status::Succeeded, now), now, RetryPolicy::default()).await.expect("r");
        hub.result_stored("c1", None);
        let got = in_time(waiting).await.expect("woken").expect("task").expect("store").expect("known");
        assert_eq!(got.state, CommandState::Done(Status::Succeeded));

        // Expiry: nothing announces it; the waiter wakes at the expiry time.
        store.queue(command("c2", "d", crate::now_ms() + 200)).await.expect("queue");
        let got = in_time(wait("c2")).await.expect("woken at expiry").expect("task").expect("store").expect("known");
        assert_eq!(got.state, CommandState::Expired);

        // Cancellation: the device is retired.
        store.queue(command("c3", "d", far)).await.expect("queue");
        let waiting = wait("c3");
        tokio::task::yield_now().await;
        store.end_management("d", DeviceStatus::Retired, crate::now_ms()).await.expect("retire");
        hub.close("d");
        let got = in_time(waiting).await.expect("woken").expect("task").expect("store").expect("known");
        assert_eq!(got.state, CommandState::Cancelled);

        // Unknown commands are answered at once; nobody is left watching.
        assert!(wait_final(&hub, store.as_ref(), "nope").await.expect("store").is_none());
    });
}

#[test]
fn a_waiting_admin_gets_the_stored_record_without_reading_it_back() {
    use crate::admin::wait_final;
    use crate::hub::Hub;
    // One thread: the waiter has subscribed once it yields to us.
    let (_dir, rt, store) = one_device("d");
    rt.block_on(async {
        let hub = Arc::new(Hub::default());
        store.queue(command("c0", "d", crate::now_ms() + 3_600_000)).await.expect("queue");
        let waiting = {
            let (hub, store) = (hub.clone(), store.clone());
            tokio::spawn(async move { wait_final(&hub, store.as_ref(), "c0").await })
        };
        tokio::task::yield_now().await;
        // Storage still says `pending`: only the handed-over record can end this wait.
        let mut handed = crate::records::ActionRecord::example("c0", CommandState::Done(Status::Succeeded));
        handed.message = "handed over".into();
        hub.result_stored("c0", Some(Arc::new(handed.clone())));
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
            .await
            .expect("woken")
            .expect("task")
            .expect("store")
            .expect("known");
        assert_eq!(got, handed);
    });
}
