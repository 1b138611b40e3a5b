//! The worker's protocol for one task on one version of a plugin: ask
//! `interested`, declare in the ledger before acknowledging, run `handle`,
//! keep what it staged, reply.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt;

use super::services::TaskLink;
use crate::bus::{Interest, Partial, Reply, ReplySink, Task, WorkerId};
use crate::dispatch::Nesting;
use crate::ledger::{LIST_TTL_MARGIN, Ledger};
use crate::runtime::{CallError, Op, Plugin, WitTask};
use crate::settle::{SettleHook, Staging};
use crate::trust::Security;

/// How long an instance may outlive its dispatch's deadline.
const DEADLINE_MARGIN: Duration = Duration::from_millis(100);

/// What one plugin of a node has done since the node started.
#[derive(Debug, Default, serde::Serialize)]
pub struct WorkerStats {
    /// Tasks that reached it.
    pub received: AtomicU64,
    /// Tasks it was not interested in.
    pub not_interested: AtomicU64,
    /// Declarations accepted (the worker ran).
    pub declared: AtomicU64,
    /// Declarations refused because the interest window had closed.
    pub refused: AtomicU64,
    /// Error partials it sent.
    pub failed: AtomicU64,
    /// Tasks turned away unasked because the node had no room for them.
    pub busy: AtomicU64,
    /// Tasks turned away unasked because the node does not trust their
    /// dispatcher.
    pub untrusted: AtomicU64,
}

impl WorkerStats {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// One version of a plugin, as each of its tasks sees it from start to end.
pub(super) struct Version {
    pub(super) worker: WorkerId,
    pub(super) label: Arc<str>,
    /// SHA-256 of the component file.
    pub(super) digest: [u8; 32],
    /// Distributed mode: the key that signs declarations, and the worker as
    /// it signs.
    pub(super) signer: Option<(Arc<Security>, anocast_wire::Worker)>,
    pub(super) plugin: Arc<Plugin>,
    pub(super) ledger: Arc<dyn Ledger>,
    pub(super) nesting: Option<Arc<Nesting>>,
    pub(super) staging: Arc<Staging>,
    pub(super) stats: Arc<WorkerStats>,
    /// Tasks under way on this version.
    pub(super) in_flight: AtomicUsize,
}

impl Version {
    #[tracing::instrument(level = "debug", skip_all, fields(worker = &*self.label, request_id = &*task.request_id))]
    pub(super) async fn serve(self: Arc<Self>, task: Arc<Task>, replies: Arc<dyn ReplySink>) {
        WorkerStats::bump(&self.stats.received);
        let remaining = task.remaining();
        if remaining.is_zero() {
            tracing::debug!("task arrived after its deadline; ignored");
            return;
        }
        let wit_task = WitTask {
            topic: task.topic.to_string(),
            request_id: task.request_id.to_string(),
            payload: task.payload.clone(),
            content_type: task.content_type.clone(),
            deadline_ms: remaining.as_millis() as u64,
            depth: task.depth,
            ancestry: task.ancestry.iter().map(|a| a.request_id.to_string()).collect(),
        };
        // The dispatcher owns the dispatch's deadline and reports a worker
        // still running then as missing; the instance is stopped a little
        // later, so that the two never race.
        let deadline = Instant::now() + remaining + DEADLINE_MARGIN;
        let services = self.nesting.as_ref().map(|nesting| -> crate::runtime::Services {
            Arc::new(TaskLink { nesting: nesting.clone(), task: task.clone(), store: self.staging.store().clone() })
        });
        let instance = self.plugin.instantiate(self.label.clone(), task.request_id.clone(), deadline, services).await;
        let mut instance = match instance {
            Ok(instance) => instance,
            Err(err) => return self.fail_before_declaring(&task, &*replies, "could not start", err).await,
        };
        match instance.interested(&wit_task).await {
            Ok(false) => {
                WorkerStats::bump(&self.stats.not_interested);
                // Counted in the ledger only when the dispatcher said how
                // many answers to expect.
                let expected = task.expected_count(&self.worker.plugin);
                let closed = if expected > 0 {
                    let ttl = task.remaining() + LIST_TTL_MARGIN;
                    self.ledger.decline(&task.interest_key(), ttl, expected).await.unwrap_or_else(|err| {
                        tracing::warn!(%err, "could not count this answer in the ledger");
                        None
                    })
                } else {
                    None
                };
                self.ack(&*replies, Interest::NotInterested, closed).await;
            }
            Ok(true) => {
                let Some(closed) = self.declare_in_ledger(&task).await else {
                    return self.ack(&*replies, Interest::Refused, None).await;
                };
                // A worker that answers on its first poll (no yield, no
                // waiting host call) sends its acknowledgement and partial
                // as one reply; otherwise the acknowledgement goes first.
                let (result, closed) = {
                    let mut handle = std::pin::pin!(instance.handle(&wit_task));
                    match (&mut handle).now_or_never() {
                        Some(result) => (result, Some(closed)),
                        None => {
                            self.ack(&*replies, Interest::Declared, closed).await;
                            (handle.await, None)
                        }
                    }
                };
                // What it staged is kept before its partial leaves, so that
                // the decision can never arrive first.
                let (ops, nested_staged) = instance.take_staged();
                let staged = nested_staged || !ops.is_empty();
                let result = self.keep_staged(&task, ops, result);
                let partial = Partial { staged, ..self.partial(result) };
                match closed {
                    Some(closed) => replies.send_declared_with_result(closed, partial).await,
                    None => replies.send(Reply::Partial(partial)).await,
                }
            }
            Err(err) => self.fail_before_declaring(&task, &*replies, "interested()", err).await,
        }
    }

    async fn ack(&self, replies: &dyn ReplySink, interest: Interest, closed: Option<Vec<String>>) {
        replies.send(Reply::Ack { worker: self.worker.clone(), interest, closed }).await;
    }

    /// Keeps the writes `handle` staged for the task's transaction; a
    /// worker whose writes cannot be kept fails.
    fn keep_staged(
        &self,
        task: &Task,
        ops: Vec<Op>,
        result: Result<Result<Vec<u8>, String>, CallError>,
    ) -> Result<Result<Vec<u8>, String>, CallError> {
        if ops.is_empty() {
            return result;
        }
        let transaction = task.ancestry.first().map_or(&task.request_id, |root| &root.request_id);
        let deadline = tokio::time::Instant::now() + task.remaining();
        let hook: Arc<dyn SettleHook> = self.plugin.clone();
        let settler = task.settler();
        match self.staging.keep(transaction, settler, &hook, &self.label, &task.request_id, deadline, ops) {
            Ok(()) => result,
            Err(err) => Ok(Err(format!("could not stage its writes: {err}"))),
        }
    }

    /// The partial of a `handle` call.
    fn partial(&self, result: Result<Result<Vec<u8>, String>, CallError>) -> Partial {
        let result = result.unwrap_or_else(|err| Err(format!("handle() {err}")));
        if let Err(error) = &result {
            WorkerStats::bump(&self.stats.failed);
            tracing::debug!(error, "worker failed");
        }
        Partial { worker: self.worker.clone(), result, staged: false }
    }

    /// Declares in the ledger, then acknowledges. `false`: refused.
    async fn declare(&self, task: &Task, replies: &dyn ReplySink) -> bool {
        match self.declare_in_ledger(task).await {
            Some(closed) => {
                self.ack(replies, Interest::Declared, closed).await;
                true
            }
            None => {
                self.ack(replies, Interest::Refused, None).await;
                false
            }
        }
    }

    /// Declares in the ledger. `None`: refused (the window had closed, or
    /// the ledger failed); otherwise the list's entries when this answer
    /// closed the window.
    async fn declare_in_ledger(&self, task: &Task) -> Option<Option<Vec<String>>> {
        let ttl = task.remaining() + LIST_TTL_MARGIN;
        let entry = match &self.signer {
            None => self.label.to_string(),
            Some((security, worker)) => {
                let (topic, digest) = (task.topic.as_str(), task.digest());
                match anocast_wire::Declaration::entry(topic, &task.request_id, &digest, worker, security.key()) {
                    Ok(entry) => entry,
                    Err(err) => {
                        tracing::error!(%err, "cannot sign the declaration; the worker will not run");
                        WorkerStats::bump(&self.stats.refused);
                        return None;
                    }
                }
            }
        };
        let expected = task.expected_count(&self.worker.plugin);
        let (accepted, closed) = match self.ledger.declare(&task.interest_key(), &entry, ttl, expected).await {
            Ok(declaration) => (declaration.accepted, declaration.closed),
            Err(err) => {
                tracing::warn!(%err, kind = %err.kind(), "could not declare; the worker will not run");
                (false, None)
            }
        };
        if accepted {
            WorkerStats::bump(&self.stats.declared);
            Some(closed)
        } else {
            WorkerStats::bump(&self.stats.refused);
            tracing::debug!("declaration refused: the interest window had closed");
            None
        }
    }

    /// A failure before the worker could say whether it is interested is
    /// reported as that worker's error partial, so that it is not lost.
    async fn fail_before_declaring(&self, task: &Task, replies: &dyn ReplySink, what: &str, err: CallError) {
        tracing::warn!(%err, "{what} failed");
        if self.declare(task, replies).await {
            WorkerStats::bump(&self.stats.failed);
            let result = Err(format!("{what} {err}"));
            replies.send(Reply::Partial(Partial { worker: self.worker.clone(), result, staged: false })).await;
        }
    }
}
