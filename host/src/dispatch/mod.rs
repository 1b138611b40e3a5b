//! The dispatcher: broadcast a task, keep the interest window, gather the
//! partials, and join them into one [`Outcome`].
//!
//! One dispatch, as the dispatcher sees it:
//!
//! 1. make a request id and open the list `{topic}-{request-id}` in the
//!    ledger, open an inbox, broadcast;
//! 2. count acknowledgements; the interest window closes at the grace period,
//!    or as soon as every receiver the bus knows of has acknowledged;
//!    closing is atomic in the ledger and returns who declared;
//! 3. for each partial from a declared worker, settle its entry; the outcome
//!    is final only when the window is closed and no declared worker is left
//!    (no premature answer): `complete`, or `no_interest` if nobody
//!    declared;
//! 4. at the deadline, whatever is left: `timed_out`, naming the missing
//!    workers. In distributed mode, a declared worker whose node stops
//!    renewing its registration is moved to `missing` early; once nobody
//!    else is awaited the outcome is `incomplete`.

mod nested;
mod outcome;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::time::sleep_until;

pub use nested::NestingConfig;
pub(crate) use nested::{NestError, Nesting, SubOptions};
pub use outcome::{Outcome, Status};

use crate::bus::Decision;
use crate::bus::{Ancestor, Bus, Interest, Partial, Reply, Task};
use crate::ledger::{LIST_TTL_MARGIN, Ledger, Registry};
use crate::settle::SettlePolicy;
use crate::topic::Topic;
use crate::trust::{Security, SecurityStats};

pub use crate::bus::MAX_TIMEOUT;

/// Per-dispatch settings.
#[derive(Debug, Clone)]
pub struct DispatchOptions {
    /// The interest window: nobody declared by then means `no_interest`
    /// (default 500 ms).
    pub grace: Duration,
    /// The overall deadline (default 30 s).
    pub timeout: Duration,
    /// MIME type of the payload (default `application/octet-stream`).
    pub content_type: String,
    /// How to settle what the workers staged (default: commit when every
    /// partial is ok). Sub-tasks' writes follow their root dispatch's.
    pub settle: SettlePolicy,
}

impl Default for DispatchOptions {
    fn default() -> Self {
        DispatchOptions {
            grace: Duration::from_millis(500),
            timeout: Duration::from_secs(30),
            content_type: "application/octet-stream".into(),
            settle: SettlePolicy::default(),
        }
    }
}

/// Why a dispatch could not be made (a dispatch that was made always ends
/// with an [`Outcome`]).
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// The options are out of range.
    #[error("{0}")]
    InvalidOptions(String),
    /// The payload is larger than the bus carries.
    #[error("{0}")]
    TooLarge(String),
    /// The bus failed.
    #[error(transparent)]
    Bus(#[from] crate::bus::BusError),
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] crate::ledger::LedgerError),
}

/// Sends tasks and gathers their outcomes. Cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    bus: Arc<dyn Bus>,
    ledger: Arc<dyn Ledger>,
    registry: Option<Arc<dyn Registry>>,
    security: Option<Arc<Security>>,
}

impl Dispatcher {
    /// A dispatcher over `bus` and `ledger`.
    pub(crate) fn new(bus: Arc<dyn Bus>, ledger: Arc<dyn Ledger>) -> Self {
        Dispatcher { bus, ledger, registry: None, security: None }
    }

    /// Waits only for interest list entries that a key trusted by
    /// `security` signed for the dispatch (distributed mode).
    pub(crate) fn with_security(mut self, security: Arc<Security>) -> Self {
        self.security = Some(security);
        self
    }

    /// Uses `registry` to know how many receivers to expect (when the bus
    /// cannot tell) and to notice declared workers whose node died.
    pub(crate) fn with_registry(mut self, registry: Arc<dyn Registry>) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Dispatches `payload` on `topic` and waits for the outcome.
    pub async fn dispatch(
        &self,
        topic: Topic,
        payload: Vec<u8>,
        options: &DispatchOptions,
    ) -> Result<Outcome, DispatchError> {
        self.run(topic, payload, options, Vec::new(), None).await
    }

    /// Dispatches a task descending from `ancestry` (at depth
    /// `ancestry.len()`); see [`Nesting`] for the checks made before.
    ///
    /// It stays one function on purpose: one dispatch reads here from top
    /// to bottom (open the list, broadcast, the gather loop, the outcome,
    /// the settle decision), and every step shares the task, the ledger key,
    /// its TTL and the guard that forgets the list however the dispatch
    /// ends (also when this future is dropped). The state of the gather
    /// itself lives in [`Gather`].
    #[tracing::instrument(level = "debug", skip(self, payload, options, ancestry, root), fields(request_id, depth = ancestry.len()))]
    async fn run(
        &self,
        topic: Topic,
        payload: Vec<u8>,
        options: &DispatchOptions,
        ancestry: Vec<Ancestor>,
        root: Option<anocast_wire::PublicKey>,
    ) -> Result<Outcome, DispatchError> {
        if options.timeout.is_zero() || options.timeout > MAX_TIMEOUT {
            return Err(DispatchError::InvalidOptions(format!(
                "timeout must be between 1 ms and {}",
                humantime::format_duration(MAX_TIMEOUT)
            )));
        }
        let most = self.bus.max_payload();
        if payload.len() > most {
            return Err(DispatchError::TooLarge(format!(
                "the payload is {} bytes; the bus carries at most {most}",
                payload.len()
            )));
        }
        let started = Instant::now();
        let deadline = started + options.timeout;
        let grace_ends = started + options.grace.min(options.timeout);
        // How many receivers the registry (distributed mode) expects; the
        // last of them to answer closes the window in the ledger.
        let expected = self.registry.as_ref().and_then(|r| r.expected_groups(topic.as_str()));
        let task = Arc::new(Task {
            request_id: Arc::from(uuid::Uuid::now_v7().to_string()),
            topic,
            payload,
            content_type: options.content_type.clone(),
            deadline: SystemTime::now() + options.timeout,
            depth: ancestry.len() as u32,
            ancestry,
            expected: expected.clone().unwrap_or_default(),
            signed: None,
            root,
        });
        tracing::Span::current().record("request_id", &*task.request_id);
        let key = task.interest_key();
        let ttl = options.timeout + LIST_TTL_MARGIN;
        self.ledger.open(&key, ttl).await?;
        let mut finish = FinishList { ledger: self.ledger.clone(), key: Some(key.clone()), ttl, closed: false };
        let mut inbox = self.bus.open_inbox(&task).await?;
        let receivers = self.bus.broadcast(task.clone(), &mut inbox).await?.or(expected.map(|groups| groups.len()));
        let check_every = self.registry.as_ref().map_or(options.timeout, |r| r.check_interval());
        let mut liveness = tokio::time::interval_at((started + check_every).into(), check_every);

        let mut gather = Gather::new(&self.ledger, &key, ttl, &task, inbox.task_digest, self.security.as_deref());
        if receivers == Some(0) {
            gather.close().await;
        }
        let grace = sleep_until(grace_ends.into());
        let expiry = sleep_until(deadline.into());
        tokio::pin!(grace, expiry);
        while !gather.is_final() {
            tokio::select! {
                reply = inbox.recv() => match reply {
                    Some(Reply::Ack { worker, interest, closed }) => {
                        // Over the network, only the expected groups count
                        // towards closing the window.
                        if task.expected.is_empty() || task.expected.contains(&worker.plugin) {
                            gather.acks += 1;
                        }
                        match interest {
                            Interest::Declared => gather.declared_ack(worker.to_string()),
                            Interest::Busy => gather.busy.push(worker.to_string()),
                            Interest::Untrusted => gather.refused.push(worker.to_string()),
                            Interest::NotInterested | Interest::Refused => {}
                        }
                        match closed {
                            // The last expected answer closed the window.
                            Some(list) if gather.open => gather.closed(list),
                            _ if gather.open && Some(gather.acks) == receivers => gather.close().await,
                            _ => {}
                        }
                    }
                    Some(Reply::Partial(partial)) => gather.partial(partial).await,
                    None => break,
                },
                _ = &mut grace, if gather.open => gather.close().await,
                _ = liveness.tick(), if self.registry.is_some() => {
                    if let Some(registry) = &self.registry {
                        gather.drop_lost(&**registry);
                    }
                }
                _ = &mut expiry => break,
            }
        }
        let status = match (gather.is_final(), gather.partials.is_empty(), gather.lost.is_empty()) {
            (true, true, true) if !gather.busy.is_empty() => Status::Overloaded,
            (true, true, true) if !gather.refused.is_empty() => Status::Unauthorized,
            (true, true, true) => Status::NoInterest,
            (true, _, true) => Status::Complete,
            (true, _, false) => Status::Incomplete,
            (false, _, _) => Status::TimedOut,
        };
        if gather.open {
            gather.close().await;
        }
        let mut missing: Vec<String> = gather.waiting.drain().chain(gather.lost.drain(..)).collect();
        missing.sort();
        // Forgetting the list is not awaited (the outcome is final already)
        // unless the ledger is in-process.
        finish.closed = gather.closed_in_ledger;
        if self.ledger.in_process() {
            finish.key = None;
            if let Err(err) = self.ledger.finish(&key, ttl).await {
                tracing::warn!(%err, key, "could not forget an interest list");
            }
        }
        drop(finish);
        let mut partials = std::mem::take(&mut gather.partials);
        partials.sort_by(|a, b| a.worker.cmp(&b.worker));
        let mut untrusted = std::mem::take(&mut gather.untrusted);
        untrusted.sort();
        let mut busy = std::mem::take(&mut gather.busy);
        busy.sort();
        let mut refused = std::mem::take(&mut gather.refused);
        refused.sort();
        // A dispatch from outside settles its transaction, which its
        // sub-tasks' writes belong to.
        let settle = match task.depth {
            0 => options.settle.decide(status == Status::Complete, partials.iter().map(|p| p.result.is_ok())),
            _ => None,
        };
        // Published only when there may be something to settle: a worker
        // said it staged, or a declared worker did not reply.
        let staged = partials.iter().any(|p| p.staged);
        if let Some(decision) = settle
            && (staged || !missing.is_empty())
        {
            self.settle(&task.request_id, decision).await;
        }
        Ok(Outcome {
            request_id: task.request_id.to_string(),
            topic: task.topic.to_string(),
            status,
            partials,
            missing,
            untrusted,
            busy,
            refused,
            staged,
            settle,
            elapsed: started.elapsed(),
        })
    }
}

impl Dispatcher {
    /// Publishes `decision` for the writes staged for `transaction` (a
    /// dispatch from outside's request id): every node applies or drops
    /// its workers' writes, once. A failure to publish is logged: the
    /// writes then expire, as after an abort.
    pub async fn settle(&self, transaction: &str, decision: Decision) {
        if let Err(err) = self.bus.publish_settle(transaction, decision).await {
            tracing::warn!(%err, transaction, "could not publish the settle decision; the staged writes will expire");
        }
    }
}

/// The state of one dispatch's gathering.
///
/// A ledger failure in the middle of a dispatch (Redis restarting) does not
/// abort it: the dispatcher goes on with what it has seen itself (the
/// acknowledged declarations) and the deadline still ends it.
struct Gather<'a> {
    ledger: &'a Arc<dyn Ledger>,
    key: &'a str,
    ttl: Duration,
    task: &'a Task,
    /// The task's digest as signed, which declarations bind.
    digest: [u8; 32],
    /// Distributed mode: list entries must be trusted signed declarations.
    security: Option<&'a Security>,
    /// Whether the interest window is still open.
    open: bool,
    /// Whether the ledger said the window is closed (so that forgetting
    /// the list need not close it).
    closed_in_ledger: bool,
    /// Acknowledgements received.
    acks: usize,
    /// Workers that acknowledged a declaration and have not replied.
    declared: HashSet<String>,
    /// Workers whose partial was kept.
    replied: HashSet<String>,
    /// After the window closed: declared workers still to reply.
    waiting: HashSet<String>,
    /// Declared workers whose node was found dead.
    lost: Vec<String>,
    /// List entries that are not a trusted signer's declaration for this
    /// dispatch: reported, never waited for.
    untrusted: Vec<String>,
    /// Partials kept, one per worker.
    partials: Vec<Partial>,
    /// Receivers that answered busy.
    busy: Vec<String>,
    /// Receivers whose node does not trust this dispatcher.
    refused: Vec<String>,
}

impl<'a> Gather<'a> {
    fn new(
        ledger: &'a Arc<dyn Ledger>,
        key: &'a str,
        ttl: Duration,
        task: &'a Task,
        digest: [u8; 32],
        security: Option<&'a Security>,
    ) -> Self {
        Gather {
            ledger,
            key,
            ttl,
            task,
            digest,
            refused: Vec::new(),
            security,
            untrusted: Vec::new(),
            open: true,
            closed_in_ledger: false,
            acks: 0,
            declared: HashSet::new(),
            replied: HashSet::new(),
            waiting: HashSet::new(),
            lost: Vec::new(),
            partials: Vec::new(),
            busy: Vec::new(),
        }
    }

    fn is_final(&self) -> bool {
        !self.open && self.waiting.is_empty()
    }

    async fn close(&mut self) {
        match self.ledger.close(self.key, self.ttl).await {
            Ok(list) => self.closed(list),
            Err(err) => {
                tracing::warn!(%err, "could not close the interest window in the ledger; waiting for the declarations seen");
                self.open = false;
                self.waiting = self.declared.clone();
            }
        }
    }

    /// The window is closed; `list` holds the entries of who had declared
    /// by then.
    fn closed(&mut self, list: Vec<String>) {
        use anocast_wire::declaration::{Declaration, worker_id};
        self.open = false;
        self.closed_in_ledger = true;
        self.waiting.clear();
        for entry in list {
            let worker = worker_id(&entry);
            // Workers that already replied may still be listed: their
            // settling is not awaited.
            if self.replied.contains(worker) {
                continue;
            }
            // A worker whose signed acknowledgement said it declared for
            // this task has proved so already: its entry need not be
            // verified again (saving a verification per worker).
            if let Some(security) = self.security.filter(|_| !self.declared.contains(worker)) {
                let checked = Declaration::parse(&entry).and_then(|d| {
                    d.verify(self.task.topic.as_str(), &self.task.request_id, &self.digest)?;
                    Ok(d)
                });
                match checked {
                    Ok(d) if security.trusts(&d.worker) => {}
                    outcome => {
                        let why = outcome.err().map_or_else(|| "untrusted key".to_owned(), |e| e.to_string());
                        SecurityStats::count(&security.stats.untrusted_declarations);
                        tracing::warn!(worker, why, "ignored an interest list entry that is not a trusted declaration");
                        self.untrusted.push(worker.to_owned());
                        continue;
                    }
                }
            }
            self.waiting.insert(worker.to_owned());
        }
        // Invariant 3 does not rest on the list alone: a worker whose
        // signed acknowledgement said it declared is awaited even when its
        // entry has gone (someone with write access to the ledger removed
        // it).
        let vanished: Vec<String> = self.declared.iter().filter(|w| !self.waiting.contains(*w)).cloned().collect();
        for worker in vanished {
            self.vanished(&worker);
            self.waiting.insert(worker);
        }
    }

    /// A worker acknowledged its declaration. Once the window is closed,
    /// it must have been on the list: if it was not, its entry vanished.
    fn declared_ack(&mut self, worker: String) {
        if !self.open && !self.waiting.contains(&worker) && !self.replied.contains(&worker) {
            self.vanished(&worker);
            self.waiting.insert(worker.clone());
        }
        self.declared.insert(worker);
    }

    /// Reports a declaration missing from the list.
    fn vanished(&self, worker: &str) {
        if let Some(security) = self.security {
            SecurityStats::count(&security.stats.vanished_declarations);
        }
        tracing::warn!(worker, "a declared worker's entry is missing from the interest list; awaiting it anyway");
    }

    async fn partial(&mut self, partial: Partial) {
        let worker = partial.worker.to_string();
        // Only a declared worker's first partial counts.
        if !self.declared.remove(&worker) {
            tracing::warn!(worker, "ignored a partial from a worker that has not declared, or a second one");
            return;
        }
        self.waiting.remove(&worker);
        // Settle the worker's entry without waiting: the outcome depends on
        // what this dispatcher has seen, and the entry only matters to the
        // ledger until `finish` drops the whole list, which makes settling
        // the last one unnecessary.
        if self.open || !self.waiting.is_empty() {
            let (ledger, key, worker) = (self.ledger.clone(), self.key.to_owned(), worker.clone());
            let settle = async move {
                if let Err(err) = ledger.settle(&key, &worker).await {
                    tracing::warn!(%err, worker, "could not settle in the ledger");
                }
            };
            if self.ledger.in_process() {
                settle.await;
            } else {
                tokio::spawn(settle);
            }
        }
        self.replied.insert(worker);
        self.partials.push(partial);
    }

    /// Moves declared workers whose node is gone from `waiting` to `lost`.
    fn drop_lost(&mut self, registry: &dyn Registry) {
        let lost: Vec<String> = self
            .waiting
            .iter()
            .filter(|w| w.split_once('/').is_some_and(|(node, _)| !registry.is_alive(node)))
            .cloned()
            .collect();
        for worker in lost {
            tracing::warn!(worker, "declared worker lost: its node stopped renewing its registration");
            self.waiting.remove(&worker);
            self.lost.push(worker);
        }
    }
}

/// Forgets a dispatch's list, in the background, however the dispatch ends,
/// including when its future is dropped (a client hung up).
struct FinishList {
    ledger: Arc<dyn Ledger>,
    key: Option<String>,
    ttl: Duration,
    /// The ledger said the window is closed: forgetting is enough.
    closed: bool,
}

impl Drop for FinishList {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        if self.closed {
            return self.ledger.forget_later(key);
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else { return };
        let (ledger, ttl) = (self.ledger.clone(), self.ttl);
        handle.spawn(async move {
            if let Err(err) = ledger.finish(&key, ttl).await {
                tracing::warn!(%err, key, "could not forget an interest list");
            }
        });
    }
}

#[cfg(test)]
mod tests;
