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
//!    (DESIGN.md invariant 1): `complete`, or `no_interest` if nobody
//!    declared;
//! 4. at the deadline, whatever is left: `timed_out`, naming the missing
//!    workers.

mod outcome;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::time::sleep_until;

pub use outcome::{Outcome, Status};

use crate::bus::{Bus, Interest, Partial, Reply, Task};
use crate::ledger::Ledger;
use crate::topic::Topic;

/// Longest deadline a dispatch may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// How long a ledger list may outlive its deadline if a dispatcher vanishes.
const LIST_TTL_MARGIN: Duration = Duration::from_secs(30);

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
}

impl Default for DispatchOptions {
    fn default() -> Self {
        DispatchOptions {
            grace: Duration::from_millis(500),
            timeout: Duration::from_secs(30),
            content_type: "application/octet-stream".into(),
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
}

impl Dispatcher {
    /// A dispatcher over `bus` and `ledger`.
    pub fn new(bus: Arc<dyn Bus>, ledger: Arc<dyn Ledger>) -> Self {
        Dispatcher { bus, ledger }
    }

    /// Dispatches `payload` on `topic` and waits for the outcome.
    #[tracing::instrument(level = "debug", skip(self, payload, options), fields(request_id))]
    pub async fn dispatch(
        &self,
        topic: Topic,
        payload: Vec<u8>,
        options: &DispatchOptions,
    ) -> Result<Outcome, DispatchError> {
        if options.timeout.is_zero() || options.timeout > MAX_TIMEOUT {
            return Err(DispatchError::InvalidOptions(format!(
                "timeout must be between 1 ms and {}",
                humantime::format_duration(MAX_TIMEOUT)
            )));
        }
        let started = Instant::now();
        let deadline = started + options.timeout;
        let grace_ends = started + options.grace.min(options.timeout);
        let task = Arc::new(Task {
            request_id: Arc::from(uuid::Uuid::now_v7().to_string()),
            topic,
            payload,
            content_type: options.content_type.clone(),
            deadline: SystemTime::now() + options.timeout,
            depth: 0,
            ancestry: Vec::new(),
        });
        tracing::Span::current().record("request_id", &*task.request_id);
        let key = task.interest_key();
        self.ledger.open(&key, options.timeout + LIST_TTL_MARGIN).await?;
        let mut finish = FinishList { ledger: self.ledger.clone(), key: Some(key.clone()) };
        let mut inbox = self.bus.open_inbox().await?;
        let receivers = self.bus.broadcast(task.clone(), &mut inbox).await?;

        let mut gather = Gather::default();
        if receivers == Some(0) {
            gather.close(&*self.ledger, &key).await?;
        }
        while !gather.is_final() {
            tokio::select! {
                reply = inbox.recv() => match reply {
                    Some(Reply::Ack { worker, interest }) => {
                        gather.acks += 1;
                        if interest == Interest::Declared {
                            gather.declared.insert(worker.to_string());
                        }
                        if gather.open && Some(gather.acks) == receivers {
                            gather.close(&*self.ledger, &key).await?;
                        }
                    }
                    Some(Reply::Partial(partial)) => gather.partial(&*self.ledger, &key, partial).await?,
                    None => break,
                },
                _ = sleep_until(grace_ends.into()), if gather.open => gather.close(&*self.ledger, &key).await?,
                _ = sleep_until(deadline.into()) => break,
            }
        }
        let status = match (gather.is_final(), gather.partials.is_empty()) {
            (true, true) => Status::NoInterest,
            (true, false) => Status::Complete,
            (false, _) => Status::TimedOut,
        };
        let missing = if status == Status::TimedOut {
            let mut missing =
                if gather.open { self.ledger.close(&key).await? } else { gather.waiting.into_iter().collect() };
            missing.sort();
            missing
        } else {
            Vec::new()
        };
        finish.key = None;
        self.ledger.finish(&key).await?;
        let mut partials = gather.partials;
        partials.sort_by(|a, b| a.worker.cmp(&b.worker));
        Ok(Outcome {
            request_id: task.request_id.to_string(),
            topic: task.topic.to_string(),
            status,
            partials,
            missing,
            elapsed: started.elapsed(),
        })
    }
}

/// The state of one dispatch's gathering.
struct Gather {
    /// Whether the interest window is still open.
    open: bool,
    /// Acknowledgements received.
    acks: usize,
    /// Workers that acknowledged a declaration.
    declared: HashSet<String>,
    /// After the window closed: declared workers still to reply.
    waiting: HashSet<String>,
    /// Partials kept, one per worker.
    partials: Vec<Partial>,
}

impl Default for Gather {
    fn default() -> Self {
        Gather { open: true, acks: 0, declared: HashSet::new(), waiting: HashSet::new(), partials: Vec::new() }
    }
}

impl Gather {
    fn is_final(&self) -> bool {
        !self.open && self.waiting.is_empty()
    }

    async fn close(&mut self, ledger: &dyn Ledger, key: &str) -> Result<(), DispatchError> {
        self.open = false;
        self.waiting = ledger.close(key).await?.into_iter().collect();
        Ok(())
    }

    async fn partial(&mut self, ledger: &dyn Ledger, key: &str, partial: Partial) -> Result<(), DispatchError> {
        let worker = partial.worker.to_string();
        // Only a declared worker's first partial counts.
        if !self.declared.remove(&worker) {
            tracing::warn!(worker, "ignored a partial from a worker that has not declared, or a second one");
            return Ok(());
        }
        ledger.settle(key, &worker).await?;
        self.waiting.remove(&worker);
        self.partials.push(partial);
        Ok(())
    }
}

/// Forgets a dispatch's list however the dispatch ends, including when its
/// future is dropped (a client hung up).
struct FinishList {
    ledger: Arc<dyn Ledger>,
    key: Option<String>,
}

impl Drop for FinishList {
    fn drop(&mut self) {
        let (Some(key), Ok(handle)) = (self.key.take(), tokio::runtime::Handle::try_current()) else { return };
        let ledger = self.ledger.clone();
        handle.spawn(async move {
            if let Err(err) = ledger.finish(&key).await {
                tracing::warn!(%err, key, "could not forget an interest list");
            }
        });
    }
}
