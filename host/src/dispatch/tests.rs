//! The dispatcher's gather as a state machine, on the embedded bus and
//! ledger, with tokio's paused time: workers here are scripted receivers
//! that declare, acknowledge and reply when told, so that the window, the
//! declarations, the partials and the deadline can be checked exactly.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{DispatchOptions, Dispatcher, Status};
use crate::bus::{Bus, Interest, LocalBus, Partial, Reply, ReplyTo, Subscription, Task, TaskReceiver, Work, WorkerId};
use crate::ledger::{Ledger, MemoryLedger};
use crate::topic::{Pattern, Topic};

/// What a scripted worker does with each task.
#[derive(Clone, Copy)]
struct Script {
    /// Waits this long before answering.
    think: Duration,
    /// Declares (else says it is not interested).
    interested: bool,
    /// After declaring, replies this much later; `None`: never.
    reply_after: Option<Duration>,
}

struct Scripted {
    ledger: Arc<dyn Ledger>,
    worker: WorkerId,
    script: Script,
}

impl TaskReceiver for Scripted {
    fn receive(&self, task: Arc<Task>, reply_to: &dyn ReplyTo) -> Work {
        let sink = reply_to.sink(&self.worker, [0; 32]);
        let (ledger, worker, script) = (self.ledger.clone(), self.worker.clone(), self.script);
        Box::pin(async move {
            tokio::time::sleep(script.think).await;
            if !script.interested {
                let ack = Reply::Ack { worker, interest: Interest::NotInterested, closed: None };
                return sink.send(ack).await;
            }
            let ttl = Duration::from_secs(60);
            let declared = ledger.declare(&task.interest_key(), &worker.to_string(), ttl, 0).await;
            if !declared.is_ok_and(|d| d.accepted) {
                let ack = Reply::Ack { worker, interest: Interest::Refused, closed: None };
                return sink.send(ack).await;
            }
            sink.send(Reply::Ack { worker: worker.clone(), interest: Interest::Declared, closed: None }).await;
            let Some(after) = script.reply_after else { return std::future::pending().await };
            tokio::time::sleep(after).await;
            let result = Ok(worker.plugin.as_bytes().to_vec());
            sink.send(Reply::Partial(Partial { worker, result, staged: false })).await;
        })
    }

    fn decline(&self, _task: Arc<Task>, reply_to: &dyn ReplyTo, _interest: Interest) -> Work {
        answer_busy(&self.worker, reply_to)
    }
}

/// A receiver's answer when its node has no room: busy, at once.
fn answer_busy(worker: &WorkerId, reply_to: &dyn ReplyTo) -> Work {
    let (sink, worker) = (reply_to.sink(worker, [0; 32]), worker.clone());
    Box::pin(async move { sink.send(Reply::Ack { worker, interest: Interest::Busy, closed: None }).await })
}

/// A receiver whose node is always full.
struct Full(WorkerId);

impl TaskReceiver for Full {
    fn receive(&self, task: Arc<Task>, reply_to: &dyn ReplyTo) -> Work {
        self.decline(task, reply_to, Interest::Busy)
    }

    fn decline(&self, _task: Arc<Task>, reply_to: &dyn ReplyTo, _interest: Interest) -> Work {
        answer_busy(&self.0, reply_to)
    }
}

struct Mesh {
    bus: Arc<LocalBus>,
    ledger: Arc<dyn Ledger>,
    dispatcher: Dispatcher,
    _subscriptions: Vec<Subscription>,
}

impl Mesh {
    async fn new(workers: &[(&str, Script)]) -> Self {
        let bus = Arc::new(LocalBus::new());
        let ledger: Arc<dyn Ledger> = Arc::new(MemoryLedger::new());
        let mut subscriptions = Vec::new();
        for (name, script) in workers {
            let worker = WorkerId { node: "n".into(), plugin: (*name).into(), version: "1".into() };
            let receiver = Arc::new(Scripted { ledger: ledger.clone(), worker, script: *script });
            let patterns = [Pattern::parse("t.>").expect("pattern")];
            subscriptions.push(bus.subscribe(name, &patterns, receiver).await.expect("subscribed"));
        }
        let dispatcher = Dispatcher::new(bus.clone(), ledger.clone());
        Mesh { bus, ledger, dispatcher, _subscriptions: subscriptions }
    }
}

fn options(grace_ms: u64, timeout_ms: u64) -> DispatchOptions {
    DispatchOptions {
        grace: Duration::from_millis(grace_ms),
        timeout: Duration::from_millis(timeout_ms),
        ..DispatchOptions::default()
    }
}

fn replies(after_ms: u64) -> Script {
    Script { think: Duration::ZERO, interested: true, reply_after: Some(Duration::from_millis(after_ms)) }
}

fn workers(outcome: &super::Outcome) -> Vec<String> {
    outcome.partials.iter().map(|p| p.worker.plugin.clone()).collect()
}

#[tokio::test(start_paused = true)]
async fn nobody_subscribed_is_no_interest_at_once() {
    let mesh = Mesh::new(&[]).await;
    let start = Instant::now();
    let outcome = mesh.dispatcher.dispatch(Topic::parse("t.a").expect("topic"), vec![], &options(500, 5000)).await;
    let outcome = outcome.expect("dispatched");
    assert_eq!(outcome.status, Status::NoInterest);
    assert!(start.elapsed() < Duration::from_millis(500), "did not wait for the grace period");
}

#[tokio::test(start_paused = true)]
async fn a_declaration_removed_from_the_list_is_still_awaited() {
    // A worker declares, and its entry is removed at once (as by someone
    // with write access to Redis) before it acknowledges; it replies only
    // after the window closed. The dispatch waits for it.
    struct Erased(Arc<dyn Ledger>);
    impl TaskReceiver for Erased {
        fn receive(&self, task: Arc<Task>, reply_to: &dyn ReplyTo) -> Work {
            let worker = WorkerId { node: "n".into(), plugin: "erased".into(), version: "1".into() };
            let sink = reply_to.sink(&worker, [0; 32]);
            let ledger = self.0.clone();
            Box::pin(async move {
                let (key, ttl) = (task.interest_key(), Duration::from_secs(60));
                ledger.declare(&key, &worker.to_string(), ttl, 0).await.expect("declared");
                ledger.settle(&key, &worker.to_string()).await.expect("removed");
                sink.send(Reply::Ack { worker: worker.clone(), interest: Interest::Declared, closed: None }).await;
                tokio::time::sleep(Duration::from_millis(2000)).await;
                sink.send(Reply::Partial(Partial { worker, result: Ok(b"late".to_vec()), staged: false })).await;
            })
        }

        fn decline(&self, _task: Arc<Task>, _reply_to: &dyn ReplyTo, _interest: Interest) -> Work {
            unreachable!("the in-process bus never turns tasks away")
        }
    }
    let mesh = Mesh::new(&[("fast", replies(1))]).await;
    let patterns = [Pattern::parse("t.>").expect("pattern")];
    let _erased =
        mesh.bus.subscribe("erased", &patterns, Arc::new(Erased(mesh.ledger.clone()))).await.expect("subscribed");
    let outcome = mesh.dispatcher.dispatch(Topic::parse("t.a").expect("topic"), vec![], &options(500, 5000)).await;
    let outcome = outcome.expect("dispatched");
    assert_eq!(outcome.status, Status::Complete);
    assert_eq!(workers(&outcome), vec!["erased".to_owned(), "fast".to_owned()]);
}

#[tokio::test(start_paused = true)]
async fn busy_receivers_make_overloaded_not_no_interest() {
    // Only a full node answered: overloaded, naming it.
    let mesh = Mesh::new(&[]).await;
    let full = WorkerId { node: "n2".into(), plugin: "full".into(), version: "1".into() };
    let patterns = [Pattern::parse("t.>").expect("pattern")];
    let _full = mesh.bus.subscribe("full", &patterns, Arc::new(Full(full))).await.expect("subscribed");
    let outcome = mesh.dispatcher.dispatch(Topic::parse("t.a").expect("topic"), vec![], &options(500, 5000)).await;
    let outcome = outcome.expect("dispatched");
    assert_eq!(outcome.status, Status::Overloaded);
    assert_eq!(outcome.busy, vec!["n2/full@1".to_owned()]);

    // Beside a worker that answered, the dispatch completes and still
    // names the busy one.
    let mesh = Mesh::new(&[("fast", replies(1))]).await;
    let full = WorkerId { node: "n2".into(), plugin: "full".into(), version: "1".into() };
    let _full = mesh.bus.subscribe("full", &patterns, Arc::new(Full(full))).await.expect("subscribed");
    let outcome = mesh.dispatcher.dispatch(Topic::parse("t.a").expect("topic"), vec![], &options(500, 5000)).await;
    let outcome = outcome.expect("dispatched");
    assert_eq!((outcome.status, workers(&outcome)), (Status::Complete, vec!["fast".to_owned()]));
    assert_eq!(outcome.busy, vec!["n2/full@1".to_owned()]);
}

#[tokio::test(start_paused = true)]
async fn every_declared_worker_is_awaited_and_nobody_else() {
    let mesh = Mesh::new(&[
        ("fast", replies(1)),
        ("slow", replies(2000)),
        ("bored", Script { think: Duration::from_millis(5), interested: false, reply_after: None }),
    ])
    .await;
    let start = Instant::now();
    let outcome = mesh.dispatcher.dispatch(Topic::parse("t.a").expect("topic"), vec![], &options(500, 5000)).await;
    let outcome = outcome.expect("dispatched");
    assert_eq!(outcome.status, Status::Complete);
    assert_eq!(workers(&outcome), ["fast", "slow"]);
    assert!(outcome.missing.is_empty());
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(2000) && took < Duration::from_millis(2100), "ended after {took:?}");
}

#[tokio::test(start_paused = true)]
async fn a_fast_reply_does_not_close_a_window_a_slower_worker_declares_in() {
    // "slow" thinks 300 ms, inside the 500 ms grace period, before it
    // declares: the fast worker's reply at 1 ms must not end the dispatch.
    let slow =
        Script { think: Duration::from_millis(300), interested: true, reply_after: Some(Duration::from_millis(10)) };
    let mesh = Mesh::new(&[("fast", replies(1)), ("slow", slow)]).await;
    let outcome = mesh.dispatcher.dispatch(Topic::parse("t.a").expect("topic"), vec![], &options(500, 5000)).await;
    let outcome = outcome.expect("dispatched");
    assert_eq!(outcome.status, Status::Complete);
    assert_eq!(workers(&outcome), ["fast", "slow"]);
}

#[tokio::test(start_paused = true)]
async fn a_declaration_after_the_grace_period_is_refused() {
    let late = Script { think: Duration::from_millis(800), interested: true, reply_after: Some(Duration::ZERO) };
    let mesh = Mesh::new(&[("late", late)]).await;
    let start = Instant::now();
    let outcome = mesh.dispatcher.dispatch(Topic::parse("t.a").expect("topic"), vec![], &options(500, 5000)).await;
    let outcome = outcome.expect("dispatched");
    assert_eq!(outcome.status, Status::NoInterest);
    assert!(outcome.partials.is_empty());
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(500) && took < Duration::from_millis(800), "ended after {took:?}");
}

#[tokio::test(start_paused = true)]
async fn a_declared_worker_that_never_replies_is_missing_at_the_deadline() {
    let silent = Script { think: Duration::ZERO, interested: true, reply_after: None };
    let mesh = Mesh::new(&[("ok", replies(5)), ("silent", silent)]).await;
    let start = Instant::now();
    let outcome = mesh.dispatcher.dispatch(Topic::parse("t.a").expect("topic"), vec![], &options(500, 3000)).await;
    let outcome = outcome.expect("dispatched");
    assert_eq!(outcome.status, Status::TimedOut);
    assert_eq!(workers(&outcome), ["ok"]);
    assert_eq!(outcome.missing, ["n/silent@1"]);
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(3000) && took < Duration::from_millis(3100), "ended after {took:?}");
}

#[tokio::test(start_paused = true)]
async fn the_window_closes_when_every_receiver_has_answered() {
    // Both answer within 20 ms; the outcome does not wait for the grace
    // period of 10 s.
    let mesh = Mesh::new(&[
        ("a", replies(20)),
        ("b", Script { think: Duration::from_millis(10), interested: false, reply_after: None }),
    ])
    .await;
    let start = Instant::now();
    let outcome = mesh.dispatcher.dispatch(Topic::parse("t.a").expect("topic"), vec![], &options(10_000, 20_000)).await;
    assert_eq!(outcome.expect("dispatched").status, Status::Complete);
    assert!(start.elapsed() < Duration::from_millis(100), "waited {:?}", start.elapsed());
}

#[tokio::test(start_paused = true)]
async fn a_second_partial_from_the_same_worker_is_ignored() {
    struct Twice(Arc<dyn Ledger>);
    impl TaskReceiver for Twice {
        fn receive(&self, task: Arc<Task>, reply_to: &dyn ReplyTo) -> Work {
            let worker = WorkerId { node: "n".into(), plugin: "twice".into(), version: "1".into() };
            let sink = reply_to.sink(&worker, [0; 32]);
            let ledger = self.0.clone();
            Box::pin(async move {
                let ttl = Duration::from_secs(60);
                ledger.declare(&task.interest_key(), &worker.to_string(), ttl, 0).await.expect("declared");
                sink.send(Reply::Ack { worker: worker.clone(), interest: Interest::Declared, closed: None }).await;
                for n in [1u8, 2] {
                    let partial = Partial { worker: worker.clone(), result: Ok(vec![n]), staged: false };
                    sink.send(Reply::Partial(partial)).await;
                }
            })
        }

        fn decline(&self, _task: Arc<Task>, _reply_to: &dyn ReplyTo, _interest: Interest) -> Work {
            unreachable!("the in-process bus never turns tasks away")
        }
    }
    let mesh = Mesh::new(&[]).await;
    let patterns = [Pattern::parse("t.>").expect("pattern")];
    let _sub = mesh.bus.subscribe("twice", &patterns, Arc::new(Twice(mesh.ledger.clone()))).await.expect("subscribed");
    let outcome = mesh.dispatcher.dispatch(Topic::parse("t.a").expect("topic"), vec![], &options(500, 5000)).await;
    let outcome = outcome.expect("dispatched");
    assert_eq!(outcome.status, Status::Complete);
    assert_eq!(outcome.partials.len(), 1);
    assert_eq!(outcome.partials[0].result, Ok(vec![1]));
}
