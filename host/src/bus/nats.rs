//! The NATS bus of distributed mode.
//!
//! Tasks are published on `anocast.task.<topic>` with the dispatcher's inbox
//! as reply subject; each plugin subscribes to its patterns in a queue group
//! named after the plugin (replicas of a plugin share the work, distinct
//! plugins each see every task); replies go to the inbox. The wire format is
//! in [`super::wire`].
//!
//! Every task is signed by its dispatcher, and a node runs only tasks whose
//! signature verifies with a key it trusts to dispatch, each once (a task
//! seen again within its deadline is dropped): others are counted, and a
//! trusted signature from an untrusted key is answered `untrusted` so that
//! its dispatcher learns why nothing ran. Settle decisions are signed too,
//! and staging applies one only from the root task's dispatcher.
//!
//! Every reply is an envelope signed with the node's key on its workers'
//! behalf, binding the digest of the task it answers. The reply pump opens the envelopes of the messages that are
//! waiting (verifying their signatures in one batch when there are
//! several), and delivers to a dispatch only replies that a trusted key
//! signed for that dispatch's topic and request id, one acknowledgement and
//! one result per signer; everything else is counted and logged (see
//! [`crate::trust`]).
//!
//! The client reconnects on its own after a server restart and restores its
//! subscriptions; messages published while it is away are lost (core NATS is
//! at-most-once), and the dispatcher's deadline ends any dispatch they
//! belonged to.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use anocast_wire::envelope::Sealed;
use anocast_wire::statement;
use anocast_wire::{Ack, Envelope};
use async_nats::{Client, ConnectOptions, Message};
use async_trait::async_trait;
use futures::{FutureExt, StreamExt};
use rustc_hash::FxHashSet;

use super::wire::{
    Fault, SETTLE_SUBJECT, Verified, decode_settle, decode_task_with, encode_settle, encode_task, task_facts,
    task_subject, unix_ms,
};
use super::{
    Bus, BusError, ErrorKind, Inbox, Interest, Partial, Reply, ReplySink, ReplyTo, SettleReceiver, Subscription, Task,
    TaskReceiver, WorkerId,
};
use super::{Decision, MAX_TIMEOUT, warn_limited};
use crate::credentials::{NatsAuth, UrlCredentials, strip_credentials};
use crate::topic::Pattern;
use crate::trust::{Security, SecurityStats};

/// Most reply messages opened (and verified) together.
const BATCH: usize = 64;

/// Prefix of the subjects on which nodes announce plugin changes
/// (`anocast.lifecycle.<node-id>`).
pub const LIFECYCLE_PREFIX: &str = "anocast.lifecycle.";

/// How long an unsubscribed plugin's pump waits for messages the server had
/// already routed to it.
const DRAIN: Duration = Duration::from_secs(2);

/// The distributed bus over one NATS connection. Cheap to clone.
#[derive(Clone)]
pub struct NatsBus {
    client: Client,
    inboxes: Arc<Inboxes>,
    security: Arc<Security>,
    /// Room for tasks in flight on this node, over all its plugins.
    intake: Arc<tokio::sync::Semaphore>,
    /// The largest task payload: the server's `max_payload` at connection
    /// less room for the headers (read once: `server_info` clones).
    max_payload: usize,
    /// Task signatures verified already, shared by every subscription.
    verified: Arc<Verified>,
}

/// Opens a connection to `url` as `auth` says, waiting at most `timeout`.
async fn open(url: &str, auth: &NatsAuth, name: &str, timeout: Duration) -> Result<Client, BusError> {
    let (addresses, options) = connect_options(url, auth).await?;
    let options =
        options.name(name).connection_timeout(timeout).max_reconnects(None).event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("connected to NATS"),
                async_nats::Event::Disconnected => tracing::warn!("disconnected from NATS; reconnecting"),
                other => tracing::debug!(event = %other, "NATS event"),
            }
        });
    tokio::time::timeout(timeout, options.connect(addresses.as_str()))
        .await
        .map_err(|_| {
            BusError::new(
                ErrorKind::TimedOut,
                format!(
                    "cannot connect to NATS at {addresses}: no answer within {}",
                    humantime::format_duration(timeout)
                ),
            )
        })?
        .map_err(|e| {
            use async_nats::ConnectErrorKind as K;
            let kind = match e.kind() {
                K::TimedOut => ErrorKind::TimedOut,
                K::Authentication | K::AuthorizationViolation => ErrorKind::Refused,
                K::ServerParse => ErrorKind::Malformed,
                K::Tls => ErrorKind::Config,
                _ => ErrorKind::Unreachable,
            };
            let what = match kind {
                ErrorKind::Refused => format!("NATS at {addresses} refused this node's credentials"),
                _ => format!("cannot connect to NATS at {addresses}"),
            };
            BusError::with_source(kind, what, e)
        })
}

/// Most tasks from the mesh a node runs (or waits to run) at once, unless
/// configured otherwise.
pub const DEFAULT_MAX_TASKS: usize = 1024;

/// How far a reply's timestamp may be from this node's clock.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(30);

/// How far a task's deadline may lie beyond [`MAX_TIMEOUT`], for clocks
/// that disagree.
const CLOCK_ALLOWANCE: Duration = Duration::from_secs(60);

/// All of this connection's dispatch inboxes share one wildcard subscription
/// (`<prefix>.*`); replies are routed to each by the last token. That spares
/// a subscribe and an unsubscribe per dispatch.
struct Inboxes {
    prefix: String,
    next: AtomicU64,
    routes: Arc<Routes>,
    _pump: AbortOnDrop,
    _lifecycle: AbortOnDrop,
}

type Routes = parking_lot::Mutex<rustc_hash::FxHashMap<u64, Route>>;

/// One dispatch's inbox as the reply pump sees it.
struct Route {
    tx: tokio::sync::mpsc::UnboundedSender<Reply>,
    topic: String,
    request_id: Arc<str>,
    /// The digest of the task as signed (set when it is broadcast).
    digest: [u8; 32],
    /// Signers (`node/plugin`) whose acknowledgement was delivered.
    acked: FxHashSet<String>,
    /// Signers whose result was delivered.
    answered: FxHashSet<String>,
}

/// Unregisters an inbox when dropped.
struct Unroute(Arc<Inboxes>, u64);

impl Drop for Unroute {
    fn drop(&mut self) {
        self.0.routes.lock().remove(&self.1);
    }
}

impl NatsBus {
    /// Connects to `url` (e.g. `nats://127.0.0.1:4222`, or several
    /// comma-separated), authenticating as `auth` and the URL say, waiting
    /// at most `timeout` for the first connection; later disconnections
    /// are retried for ever. Replies are signed and checked with
    /// `security`. No error or log line shows a password or token.
    pub async fn connect(
        url: &str,
        auth: &NatsAuth,
        name: &str,
        timeout: Duration,
        security: Arc<Security>,
    ) -> Result<Self, BusError> {
        let client = open(url, auth, name, timeout).await?;
        let prefix = client.new_inbox();
        let mut subscriber = client
            .subscribe(format!("{prefix}.*"))
            .await
            .map_err(|e| BusError::with_source(ErrorKind::Unreachable, "cannot subscribe to the reply inboxes", e))?;
        let routes: Arc<Routes> = Arc::default();
        let table = routes.clone();
        let guard = security.clone();
        let pump = tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            while let Some(message) = subscriber.next().await {
                batch.push(message);
                while batch.len() < BATCH {
                    match subscriber.next().now_or_never() {
                        Some(Some(message)) => batch.push(message),
                        _ => break,
                    }
                }
                deliver(&batch, &table, &guard);
                batch.clear();
            }
        });
        // Other nodes' plugin changes, for the log: only those signed by a
        // key trusted for the node they name.
        let mut lifecycle = client
            .subscribe(format!("{LIFECYCLE_PREFIX}>"))
            .await
            .map_err(|e| BusError::with_source(ErrorKind::Unreachable, "cannot subscribe to lifecycle events", e))?;
        let me = name.to_owned();
        let judge = security.clone();
        let watcher = tokio::spawn(async move {
            while let Some(message) = lifecycle.next().await {
                let node = message.subject.trim_start_matches(LIFECYCLE_PREFIX);
                if node == me {
                    continue;
                }
                match lifecycle_event(node, &message.payload, &judge) {
                    Ok(event) => tracing::info!(node, event = %event, "plugin change in the mesh"),
                    Err(err) => {
                        SecurityStats::count(&judge.stats.untrusted_entries);
                        warn_limited!(%err, "ignored a lifecycle event");
                    }
                }
            }
        });
        let inboxes = Arc::new(Inboxes {
            prefix,
            next: AtomicU64::new(0),
            routes,
            _pump: AbortOnDrop(pump),
            _lifecycle: AbortOnDrop(watcher),
        });
        let intake = Arc::new(tokio::sync::Semaphore::new(DEFAULT_MAX_TASKS));
        let max_payload = client.server_info().max_payload.saturating_sub(HEADER_ROOM);
        Ok(NatsBus { client, inboxes, security, intake, max_payload, verified: Arc::default() })
    }
}

impl NatsBus {
    /// Sets the most tasks from the mesh this node runs (or waits to run)
    /// at once; more are answered `busy` at once. Call before subscribing.
    pub fn with_max_tasks(mut self, tasks: usize) -> Self {
        self.intake = Arc::new(tokio::sync::Semaphore::new(tasks.max(1)));
        self
    }
}

/// The client options `url` and `auth` ask for, and the server addresses
/// without their credentials. At most one way to authenticate; files are
/// read here, so that a missing one is named before any connection.
async fn connect_options(url: &str, auth: &NatsAuth) -> Result<(String, ConnectOptions), BusError> {
    let config = |what: String| BusError::new(ErrorKind::Config, what);
    let (addresses, in_url) = strip_credentials(url).map_err(|e| config(format!("--nats: {e}")))?;
    let mut ways: Vec<&str> = Vec::new();
    let mut options = ConnectOptions::new();
    let (user, password) = match (&auth.user, &auth.password, &in_url) {
        (Some(user), Some(password), _) => (Some(user.clone()), Some(password.clone())),
        (None, Some(password), Some(UrlCredentials::User(user, _))) => (Some(user.clone()), Some(password.clone())),
        (Some(user), None, Some(UrlCredentials::User(_, password))) => (Some(user.clone()), Some(password.clone())),
        (None, None, Some(UrlCredentials::User(user, password))) => (Some(user.clone()), Some(password.clone())),
        (Some(_), None, _) => {
            return Err(config("--nats-user needs --nats-password (or ANOCAST_NATS_PASSWORD)".into()));
        }
        (None, Some(_), _) => return Err(config("--nats-password needs --nats-user (or a user in the URL)".into())),
        (None, None, _) => (None, None),
    };
    if let (Some(user), Some(password)) = (user, password) {
        ways.push("user and password");
        options = options.user_and_password(user, password.expose().to_owned());
    }
    let token = auth.token.clone().or(match &in_url {
        Some(UrlCredentials::Token(token)) => Some(token.clone()),
        _ => None,
    });
    if let Some(token) = token {
        ways.push("token");
        options = options.token(token.expose().to_owned());
    }
    if let Some(path) = &auth.nkey {
        ways.push("nkey");
        let text = std::fs::read_to_string(path)
            .map_err(|e| config(format!("cannot read the NATS nkey seed file {}: {e}", path.display())))?;
        let seed = text
            .split_whitespace()
            .find(|word| word.starts_with("SU"))
            .ok_or_else(|| config(format!("{} holds no user nkey seed (a line starting with SU)", path.display())))?;
        options = options.nkey(seed.to_owned());
    }
    if let Some(path) = &auth.creds {
        ways.push("credentials file");
        options = options
            .credentials_file(path)
            .await
            .map_err(|e| config(format!("cannot use the NATS credentials file {}: {e}", path.display())))?;
    }
    if ways.len() > 1 {
        return Err(config(format!("give one way to authenticate to NATS, not {}", ways.join(" and "))));
    }
    let tls = &auth.tls;
    for path in [&tls.ca, &tls.cert, &tls.key].into_iter().flatten() {
        std::fs::metadata(path).map_err(|e| config(format!("cannot read TLS file {}: {e}", path.display())))?;
    }
    if let Some(ca) = &tls.ca {
        options = options.add_root_certificates(ca.clone());
    }
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => options = options.add_client_certificate(cert.clone(), key.clone()),
        (None, None) => {}
        _ => return Err(config("a NATS client certificate needs both --nats-tls-cert and --nats-tls-key".into())),
    }
    if tls.any() {
        options = options.require_tls(true);
    }
    Ok((addresses, options))
}

/// Opens the envelopes of `messages`, keeps those a trusted key signed for
/// the dispatch they are addressed to, and hands their replies over.
fn deliver(messages: &[Message], routes: &Routes, security: &Security) {
    let stats = &security.stats;
    let mut opened: Vec<(u64, Sealed<'_>)> = Vec::with_capacity(messages.len());
    for message in messages {
        let Some(id) = message.subject.rsplit('.').next().and_then(|id| id.parse::<u64>().ok()) else { continue };
        // The server's word that nobody subscribes to a task's topic: not
        // a reply, and not malformed (the interest window settles it).
        if message.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
            tracing::debug!(inbox = id, "no responders for a task");
            continue;
        }
        match Sealed::decode(&message.payload) {
            Ok(sealed) => opened.push((id, sealed)),
            Err(err) => {
                SecurityStats::count(&stats.malformed);
                warn_limited!(%err, "rejected a reply: not a signed envelope");
            }
        }
    }
    // Trust first (cheap), then signatures: all at once when there are
    // several, one by one to find the culprits if the batch fails.
    opened.retain(|(_, sealed)| {
        let trusted = security.trusts(&sealed.envelope.worker);
        if !trusted {
            SecurityStats::count(&stats.untrusted_key);
            warn_limited!(worker = sealed.envelope.worker.id(), key = %sealed.envelope.worker.key, "rejected a reply signed by an untrusted key");
        }
        trusted
    });
    let batch_ok = opened.len() > 1 && {
        let items: Vec<_> = opened.iter().map(|(_, s)| (&s.envelope.worker.key, s.signed, &s.signature)).collect();
        anocast_wire::key::verify_batch(&items).is_ok()
    };
    if !batch_ok {
        opened.retain(|(_, s)| {
            let valid = s.envelope.worker.key.verify(s.signed, &s.signature).is_ok();
            if !valid {
                SecurityStats::count(&stats.bad_signature);
                warn_limited!(worker = s.envelope.worker.id(), "rejected a reply whose signature does not verify");
            }
            valid
        });
    }
    // A reply is signed just before it leaves: a timestamp far from this
    // node's clock means one of the two clocks is off (or the reply was
    // kept to be replayed).
    let now = unix_ms(SystemTime::now());
    opened.retain(|(_, s)| {
        let off = s.envelope.timestamp_ms.abs_diff(now);
        let fits = off <= MAX_CLOCK_SKEW.as_millis() as u64;
        if !fits {
            SecurityStats::count(&stats.clock_skew);
            warn_limited!(
                worker = s.envelope.worker.id(),
                off_ms = off,
                "rejected a reply whose timestamp is further from this node's clock than the allowed skew; \
                 check that both clocks are synchronised (NTP)"
            );
        }
        fits
    });
    let mut routes = routes.lock();
    for (id, sealed) in opened {
        // A reply to a dispatch that has ended is dropped.
        let Some(route) = routes.get_mut(&id) else { continue };
        let envelope = sealed.envelope;
        if envelope.topic != route.topic || *envelope.request_id != *route.request_id {
            SecurityStats::count(&stats.replayed);
            warn_limited!(
                worker = envelope.worker.id(),
                request_id = envelope.request_id,
                "rejected a reply made for another request"
            );
            continue;
        }
        // Same request, another task: an answer to a forged or altered copy.
        if envelope.task_digest != route.digest {
            SecurityStats::count(&stats.replayed);
            warn_limited!(
                worker = envelope.worker.id(),
                request_id = envelope.request_id,
                "rejected a reply made for another task of the same request id (a forged or altered copy)"
            );
            continue;
        }
        let signer = envelope.worker.signer();
        let worker = WorkerId::from(&envelope.worker);
        if (envelope.ack.is_some() && route.acked.contains(&signer))
            || (envelope.result.is_some() && route.answered.contains(&signer))
        {
            SecurityStats::count(&stats.duplicate);
            warn_limited!(worker = %worker, "rejected a second reply from one signer");
            continue;
        }
        if let Some(Ack { interest, closed }) = envelope.ack {
            route.acked.insert(signer.clone());
            let _ = route.tx.send(Reply::Ack { worker: worker.clone(), interest, closed });
        }
        if let Some(result) = envelope.result {
            route.answered.insert(signer);
            let _ = route.tx.send(Reply::Partial(Partial { worker, result, staged: envelope.staged }));
        }
    }
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Where the replies to one received task go.
struct NatsReplyTo {
    client: Client,
    subject: async_nats::Subject,
    task: Arc<Task>,
    security: Arc<Security>,
}

impl ReplyTo for NatsReplyTo {
    fn sink(&self, worker: &WorkerId, digest: [u8; 32]) -> Arc<dyn ReplySink> {
        Arc::new(NatsSink {
            client: self.client.clone(),
            subject: self.subject.clone(),
            task: self.task.clone(),
            signer: worker.signing(self.security.key().public(), digest),
            security: self.security.clone(),
        })
    }
}

/// Replies to one task, signed on the worker's behalf.
struct NatsSink {
    client: Client,
    subject: async_nats::Subject,
    task: Arc<Task>,
    signer: anocast_wire::Worker,
    security: Arc<Security>,
}

#[async_trait]
impl ReplySink for NatsSink {
    async fn send(&self, reply: Reply) {
        match reply {
            Reply::Ack { interest, closed, .. } => {
                self.seal_and_publish(Some(Ack { interest, closed }), None, false).await
            }
            Reply::Partial(partial) => self.seal_and_publish(None, Some(partial.result), partial.staged).await,
        }
    }

    async fn send_declared_with_result(&self, closed: Option<Vec<String>>, partial: Partial) {
        let ack = Ack { interest: anocast_wire::Interest::Declared, closed };
        self.seal_and_publish(Some(ack), Some(partial.result), partial.staged).await;
    }
}

impl NatsSink {
    async fn seal_and_publish(&self, ack: Option<Ack>, result: Option<anocast_wire::Outcome>, staged: bool) {
        let envelope = Envelope {
            timestamp_ms: unix_ms(SystemTime::now()),
            topic: self.task.topic.to_string(),
            request_id: self.task.request_id.to_string(),
            task_digest: self.task.digest(),
            worker: self.signer.clone(),
            ack,
            result,
            staged,
        };
        let bytes = match envelope.seal(self.security.key()) {
            Ok(bytes) => bytes,
            Err(err) => return tracing::warn!(%err, "could not sign a reply"),
        };
        // Publishing queues the message in the client, in order.
        if let Err(err) = self.client.publish(self.subject.clone(), bytes.into()).await {
            tracing::warn!(%err, "could not publish a reply");
        }
    }
}

/// Reads a lifecycle event `node` published: a signed statement whose
/// key is trusted for `node` (the text, cut to 512 characters for the log).
fn lifecycle_event(node: &str, payload: &[u8], security: &Security) -> Result<String, String> {
    let line = std::str::from_utf8(payload).map_err(|_| "not UTF-8".to_owned())?;
    let (key, text) = statement::open(statement::LIFECYCLE, line).map_err(|e| e.to_string())?;
    if anocast_wire::names::check_node_id(node).is_err() || !security.trusts_entry(node, &key) {
        return Err(format!("signed by {key}, which is not trusted for node {node:?}"));
    }
    Ok(text.chars().take(512).collect())
}

/// Why a task received is not run.
enum Refusal {
    /// Counted and logged; nothing is answered.
    Ignore,
    /// Signed by a key not trusted to dispatch: answered `untrusted`,
    /// without its payload.
    Untrusted(Arc<Task>),
}

/// Decodes and checks a task received in `message`: the protocol version,
/// its signature (unless `verified` holds it already), its deadline,
/// whether its dispatcher is trusted, and that it was not run before.
/// Every refusal is counted.
fn admit(
    message: &Message,
    reply: &str,
    security: &Security,
    seen: &parking_lot::Mutex<Seen>,
    verified: &Verified,
) -> Result<Task, Refusal> {
    let stats = &security.stats;
    let (subject, headers) = (message.subject.as_str(), message.headers.as_ref());
    let task = match decode_task_with(subject, reply, headers, &message.payload, Some(verified)) {
        Ok(task) => task,
        Err(err) => {
            SecurityStats::count(match err.fault {
                Fault::Malformed => &stats.malformed_tasks,
                Fault::OldProtocol => &stats.old_protocol,
                Fault::Forged => &stats.forged_tasks,
            });
            warn_limited!(%err, "ignored a task");
            return Err(Refusal::Ignore);
        }
    };
    let now = SystemTime::now();
    if task.deadline > now + MAX_TIMEOUT + CLOCK_ALLOWANCE {
        SecurityStats::count(&stats.far_deadlines);
        warn_limited!(topic = %task.topic, "ignored a task whose deadline lies further ahead than any dispatch may ask");
        return Err(Refusal::Ignore);
    }
    let signed = task.signed.clone().ok_or(Refusal::Ignore)?;
    if !security.may_dispatch(&signed.dispatcher, &signed.key) {
        SecurityStats::count(&stats.untrusted_dispatchers);
        warn_limited!(
            dispatcher = signed.dispatcher,
            key = %signed.key,
            topic = %task.topic,
            "refused a task from a dispatcher this node does not trust to dispatch (trust its key with role dispatch)"
        );
        return Err(Refusal::Untrusted(Arc::new(Task { payload: Vec::new(), ..task })));
    }
    if !seen.lock().first_time(signed.digest, unix_ms(task.deadline), unix_ms(now)) {
        SecurityStats::count(&stats.replayed_tasks);
        warn_limited!(topic = %task.topic, request_id = &*task.request_id, "ignored a task received before (replayed)");
        return Err(Refusal::Ignore);
    }
    Ok(task)
}

/// The digests of the tasks a group has run whose deadline has not passed,
/// so that a task replayed to it is run once. Bounded: when full, the
/// tasks nearest their deadline are forgotten first (a replay that late
/// meets a closed interest window, and its worker does not run).
#[derive(Default)]
struct Seen {
    deadlines: rustc_hash::FxHashMap<[u8; 32], u64>,
}

impl Seen {
    const MOST: usize = 1 << 16;

    /// Remembers `digest` until `deadline_ms`; `false` when it was already
    /// remembered.
    fn first_time(&mut self, digest: [u8; 32], deadline_ms: u64, now_ms: u64) -> bool {
        if self.deadlines.len() >= Self::MOST {
            self.deadlines.retain(|_, deadline| *deadline > now_ms);
        }
        if self.deadlines.len() >= Self::MOST {
            let mut by_deadline: Vec<u64> = self.deadlines.values().copied().collect();
            let (_, cut, _) = by_deadline.select_nth_unstable(Self::MOST / 4);
            let cut = *cut;
            self.deadlines.retain(|_, deadline| *deadline > cut);
        }
        self.deadlines.insert(digest, deadline_ms).is_none()
    }
}

/// Room left in a NATS message for a task's headers (ancestry, expected
/// groups, signature) next to its payload.
const HEADER_ROOM: usize = 64 << 10;

#[async_trait]
impl Bus for NatsBus {
    async fn flush(&self) -> Result<(), BusError> {
        // Replies are published on the main connection; only it carries
        // what must leave before the process does.
        tokio::time::timeout(Duration::from_secs(5), self.client.flush())
            .await
            .map_err(|_| BusError::new(ErrorKind::TimedOut, "NATS did not confirm the last messages within 5s"))?
            .map_err(|e| BusError::with_source(ErrorKind::Unreachable, "cannot flush to NATS", e))
    }

    fn max_payload(&self) -> usize {
        self.max_payload
    }

    async fn open_inbox(&self, task: &Task) -> Result<Inbox, BusError> {
        let id = self.inboxes.next.fetch_add(1, Ordering::Relaxed);
        let inbox = Inbox::new(format!("{}.{id}", self.inboxes.prefix), Box::new(()));
        let route = Route {
            tx: inbox.sender(),
            topic: task.topic.to_string(),
            request_id: task.request_id.clone(),
            digest: [0; 32],
            acked: FxHashSet::default(),
            answered: FxHashSet::default(),
        };
        self.inboxes.routes.lock().insert(id, route);
        Ok(inbox.with_registration(Box::new(Unroute(self.inboxes.clone(), id))))
    }

    async fn announce(&self, node: &str, event: &serde_json::Value) {
        let subject = format!("{LIFECYCLE_PREFIX}{node}");
        let line = match statement::seal(statement::LIFECYCLE, &event.to_string(), self.security.key()) {
            Ok(line) => line,
            Err(err) => return tracing::warn!(%err, "could not sign a plugin change"),
        };
        if let Err(err) = self.client.publish(subject, line.into()).await {
            tracing::warn!(%err, "could not announce a plugin change");
        }
    }

    async fn broadcast(&self, task: Arc<Task>, inbox: &mut Inbox) -> Result<Option<usize>, BusError> {
        let key = self.security.key();
        let facts = task_facts(&task, &inbox.subject, self.security.node_id(), key.public());
        let seal =
            facts.seal(key).map_err(|e| BusError::new(ErrorKind::Malformed, format!("cannot sign the task: {e}")))?;
        inbox.task_digest = seal.digest;
        if let Some(id) = inbox.subject.rsplit('.').next().and_then(|id| id.parse::<u64>().ok())
            && let Some(route) = self.inboxes.routes.lock().get_mut(&id)
        {
            route.digest = seal.digest;
        }
        let (headers, body) = encode_task(&task, &facts, &seal);
        self.client
            .publish_with_reply_and_headers(task_subject(task.topic.as_str()), inbox.subject.clone(), headers, body)
            .await
            .map_err(|e| BusError::with_source(ErrorKind::Unreachable, "cannot publish the task", e))?;
        Ok(None)
    }

    async fn publish_settle(&self, transaction: &str, decision: Decision) -> Result<(), BusError> {
        let headers = encode_settle(transaction, decision, self.security.key())
            .map_err(|e| BusError::new(ErrorKind::Malformed, format!("cannot sign the settle decision: {e}")))?;
        self.client
            .publish_with_headers(SETTLE_SUBJECT, headers, bytes::Bytes::new())
            .await
            .map_err(|e| BusError::with_source(ErrorKind::Unreachable, "cannot publish the settle decision", e))
    }

    async fn subscribe_settle(&self, receiver: Arc<dyn SettleReceiver>) -> Result<Subscription, BusError> {
        let mut subscriber =
            self.client.subscribe(SETTLE_SUBJECT).await.map_err(|e| {
                BusError::with_source(ErrorKind::Unreachable, "cannot subscribe to settle decisions", e)
            })?;
        let security = self.security.clone();
        let pump = tokio::spawn(async move {
            while let Some(message) = subscriber.next().await {
                match decode_settle(message.headers.as_ref()) {
                    Ok(signed) => {
                        tokio::spawn(receiver.settle(signed.transaction, signed.decision, Some(signed.signer)));
                    }
                    Err(err) => {
                        let stats = &security.stats;
                        SecurityStats::count(match err.fault {
                            Fault::OldProtocol => &stats.old_protocol,
                            Fault::Forged | Fault::Malformed => &stats.forged_decisions,
                        });
                        warn_limited!(%err, "ignored a settle message")
                    }
                }
            }
        });
        self.client
            .flush()
            .await
            .map_err(|e| BusError::with_source(ErrorKind::Unreachable, "cannot flush subscriptions", e))?;
        Ok(Subscription::new(Box::new(AbortOnDrop(pump))))
    }

    async fn subscribe(
        &self,
        group: &str,
        patterns: &[Pattern],
        receiver: Arc<dyn TaskReceiver>,
    ) -> Result<Subscription, BusError> {
        let mut stops = Vec::new();
        // The tasks this group has run, shared by its patterns' pumps.
        let seen = Arc::new(parking_lot::Mutex::new(Seen::default()));
        for pattern in patterns {
            let subject = task_subject(pattern.as_str());
            let mut subscriber = self.client.queue_subscribe(subject.clone(), group.to_owned()).await.map_err(|e| {
                BusError::with_source(ErrorKind::Unreachable, format!("cannot subscribe to {subject}"), e)
            })?;
            let (client, receiver, security) = (self.client.clone(), receiver.clone(), self.security.clone());
            let (intake, seen, verified) = (self.intake.clone(), seen.clone(), self.verified.clone());
            let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
            stops.push(stop);
            tokio::spawn(async move {
                // One task at a time runs inside this pump, sparing a hop
                // between threads when the node is lightly loaded; tasks that
                // arrive while it runs are spawned, so that they spread over
                // the executor's threads.
                let mut inline = futures::stream::FuturesUnordered::new();
                let mut stopping = false;
                let drain = tokio::time::sleep(Duration::MAX);
                tokio::pin!(drain);
                loop {
                    let message = tokio::select! {
                        // Unsubscribed (the plugin was unloaded or replaced):
                        // take what the server had already routed here, finish
                        // every task, then end.
                        _ = &mut stopped, if !stopping => {
                            stopping = true;
                            drain.as_mut().reset(tokio::time::Instant::now() + DRAIN);
                            if let Err(err) = subscriber.unsubscribe().await {
                                tracing::debug!(%err, "could not unsubscribe; draining anyway");
                            }
                            continue;
                        }
                        message = subscriber.next() => match message {
                            Some(message) => message,
                            None => break,
                        },
                        Some(()) = inline.next(), if !inline.is_empty() => continue,
                        _ = &mut drain => break,
                    };
                    let Some(reply) = message.reply.clone() else {
                        SecurityStats::count(&security.stats.malformed_tasks);
                        warn_limited!("ignored a task without a reply subject");
                        continue;
                    };
                    let task = match admit(&message, &reply, &security, &seen, &verified) {
                        Ok(task) => task,
                        Err(Refusal::Ignore) => continue,
                        Err(Refusal::Untrusted(bare)) => {
                            let reply_to = NatsReplyTo {
                                client: client.clone(),
                                subject: reply,
                                task: bare.clone(),
                                security: security.clone(),
                            };
                            tokio::spawn(receiver.decline(bare, &reply_to, Interest::Untrusted));
                            continue;
                        }
                    };
                    match intake.clone().try_acquire_owned() {
                        Ok(room) => {
                            let task = Arc::new(task);
                            let reply_to = NatsReplyTo {
                                client: client.clone(),
                                subject: reply,
                                task: task.clone(),
                                security: security.clone(),
                            };
                            let work = receiver.receive(task, &reply_to);
                            let work: super::Work = Box::pin(async move {
                                work.await;
                                drop(room);
                            });
                            if inline.is_empty() {
                                inline.push(work);
                            } else {
                                tokio::spawn(work);
                            }
                        }
                        // No room: the payload is let go at once, and only
                        // the small signed answer waits to leave, so that
                        // the pump keeps reading at the speed of the wire
                        // and a flood is held neither in tasks nor in the
                        // subscription's buffer.
                        Err(_) => {
                            SecurityStats::count(&security.stats.busy);
                            warn_limited!(topic = %task.topic, "answered a task busy: this node has its most tasks in flight");
                            let bare = Arc::new(Task { payload: Vec::new(), ..task });
                            let reply_to = NatsReplyTo {
                                client: client.clone(),
                                subject: reply,
                                task: bare.clone(),
                                security: security.clone(),
                            };
                            tokio::spawn(receiver.decline(bare, &reply_to, Interest::Busy));
                        }
                    }
                }
                while inline.next().await.is_some() {}
            });
        }
        // Make sure the server has the subscriptions before the node says it
        // is ready.
        self.client
            .flush()
            .await
            .map_err(|e| BusError::with_source(ErrorKind::Unreachable, "cannot flush subscriptions", e))?;
        Ok(Subscription::new(Box::new(stops)))
    }
}
