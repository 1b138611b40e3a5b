//! The version swap, with paused time, on the embedded bus and ledger:
//! versions here are scripted (they declare, then reply with their own
//! label once let go), so that which version handled which task, and when
//! an old version is freed, can be checked exactly.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;

use super::{Pinned, Versions};
use crate::bus::{Interest, LocalBus, Partial, Reply, ReplySink, Task, WorkerId};
use crate::dispatch::{DispatchOptions, Dispatcher, Outcome, Status};
use crate::ledger::{Ledger, MemoryLedger};
use crate::topic::{Pattern, Topic};

/// A version that replies with its label, each reply once `gate` lets it.
struct Scripted {
    worker: WorkerId,
    ledger: Arc<dyn Ledger>,
    gate: Arc<Semaphore>,
    in_flight: AtomicUsize,
}

impl Pinned for Scripted {
    fn signs_as(&self) -> (&WorkerId, [u8; 32]) {
        (&self.worker, [0; 32])
    }

    fn in_flight(&self) -> &AtomicUsize {
        &self.in_flight
    }

    async fn handle(self: Arc<Self>, task: Arc<Task>, replies: Arc<dyn ReplySink>) {
        let worker = self.worker.clone();
        let key = task.interest_key();
        let declared = self.ledger.declare(&key, &worker.to_string(), Duration::from_secs(60), 0).await;
        assert!(declared.is_ok_and(|d| d.accepted), "declared");
        replies.send(Reply::Ack { worker: worker.clone(), interest: Interest::Declared, closed: None }).await;
        let _go = self.gate.acquire().await.expect("gate open");
        let result = Ok(worker.version.as_bytes().to_vec());
        replies.send(Reply::Partial(Partial { worker, result, staged: false })).await;
    }
}

struct Fixture {
    bus: Arc<LocalBus>,
    ledger: Arc<dyn Ledger>,
    dispatcher: Dispatcher,
    versions: Versions<Scripted>,
}

impl Fixture {
    fn new() -> Self {
        let bus = Arc::new(LocalBus::new());
        let ledger: Arc<dyn Ledger> = Arc::new(MemoryLedger::new());
        let dispatcher = Dispatcher::new(bus.clone(), ledger.clone());
        Fixture { bus, ledger, dispatcher, versions: Versions::default() }
    }

    /// A version `version` of plugin `p`, replying as soon as `gate` has
    /// permits.
    fn version(&self, version: &str, gate: &Arc<Semaphore>) -> Arc<Scripted> {
        let worker = WorkerId { node: "n".into(), plugin: "p".into(), version: version.into() };
        Arc::new(Scripted { worker, ledger: self.ledger.clone(), gate: gate.clone(), in_flight: AtomicUsize::new(0) })
    }

    async fn install(&self, version: &Arc<Scripted>, pattern: &str) {
        let patterns = vec![Pattern::parse(pattern).expect("pattern")];
        self.versions.install(&*self.bus, "p", patterns, version.clone()).await.expect("installed");
    }

    async fn dispatch(&self, topic: &str) -> Outcome {
        let options = DispatchOptions { timeout: Duration::from_secs(10), ..DispatchOptions::default() };
        self.dispatcher.dispatch(Topic::parse(topic).expect("topic"), Vec::new(), &options).await.expect("dispatched")
    }
}

fn answered_by(outcome: &Outcome) -> Vec<String> {
    outcome.partials.iter().map(|p| String::from_utf8_lossy(p.result.as_deref().unwrap_or(b"?")).into_owned()).collect()
}

#[tokio::test(start_paused = true)]
async fn a_swap_sends_new_tasks_to_the_new_version_while_old_ones_finish_on_theirs() {
    let f = Fixture::new();
    let held = Arc::new(Semaphore::new(0));
    let open = Arc::new(Semaphore::new(Semaphore::MAX_PERMITS));
    let v1 = f.version("1", &held);
    f.install(&v1, "t.>").await;

    // A task on version 1 that waits for the gate.
    let first = {
        let dispatcher = f.dispatcher.clone();
        tokio::spawn(async move {
            let options = DispatchOptions { timeout: Duration::from_secs(10), ..DispatchOptions::default() };
            dispatcher.dispatch(Topic::parse("t.a").expect("topic"), Vec::new(), &options).await
        })
    };
    while v1.in_flight.load(Ordering::Relaxed) == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    // Version 2 takes over the same patterns: the next task meets it.
    let v2 = f.version("2", &open);
    f.install(&v2, "t.>").await;
    assert!(Arc::ptr_eq(&f.versions.current()[0].1, &v2));
    let second = f.dispatch("t.b").await;
    assert_eq!(second.status, Status::Complete);
    assert_eq!(answered_by(&second), ["2"]);

    // Version 1 still exists, with its task under way, until it ends.
    assert_eq!(f.versions.alive().len(), 2);
    assert_eq!(v1.in_flight.load(Ordering::Relaxed), 1);
    held.add_permits(1);
    let first = first.await.expect("joined").expect("dispatched");
    assert_eq!(answered_by(&first), ["1"], "the task finished on the version it started with");
    assert_eq!(v1.in_flight.load(Ordering::Relaxed), 0);
    let weak = Arc::downgrade(&v1);
    drop(v1);
    assert!(weak.upgrade().is_none(), "the old version is freed with its last task");
    assert_eq!(f.versions.alive().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_version_with_other_patterns_is_subscribed_anew() {
    let f = Fixture::new();
    let open = Arc::new(Semaphore::new(Semaphore::MAX_PERMITS));
    f.install(&f.version("1", &open), "t.>").await;
    assert_eq!(answered_by(&f.dispatch("t.a").await), ["1"]);
    f.install(&f.version("2", &open), "u.>").await;
    assert_eq!(f.dispatch("t.a").await.status, Status::NoInterest, "the old patterns are dropped");
    assert_eq!(answered_by(&f.dispatch("u.a").await), ["2"]);
}

#[tokio::test(start_paused = true)]
async fn a_withdrawn_plugin_gets_no_more_tasks() {
    let f = Fixture::new();
    let open = Arc::new(Semaphore::new(Semaphore::MAX_PERMITS));
    f.install(&f.version("1", &open), "t.>").await;
    assert!(f.versions.withdraw("p").await);
    assert!(!f.versions.withdraw("p").await, "withdrawn once");
    assert_eq!(f.dispatch("t.a").await.status, Status::NoInterest);
    assert!(f.versions.current().is_empty());
}
