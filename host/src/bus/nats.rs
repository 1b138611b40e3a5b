//! The NATS bus of distributed mode.
//!
//! Tasks are published on `anocast.task.<topic>` with the dispatcher's inbox
//! as reply subject; each plugin subscribes to its patterns in a queue group
//! named after the plugin (replicas of a plugin share the work, distinct
//! plugins each see every task); replies go to the inbox. The wire format is
//! in [`super::wire`].
//!
//! The client reconnects on its own after a server restart and restores its
//! subscriptions; messages published while it is away are lost (core NATS is
//! at-most-once), and the dispatcher's deadline ends any dispatch they
//! belonged to.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::Client;
use async_trait::async_trait;
use futures::StreamExt;

use super::wire::{decode_reply, decode_task, encode_reply, encode_task, task_subject};
use super::{Bus, BusError, Inbox, Reply, ReplySink, Subscription, Task, TaskReceiver};
use crate::topic::Pattern;

/// The distributed bus over one NATS connection. Cheap to clone.
#[derive(Clone)]
pub struct NatsBus {
    client: Client,
    inboxes: Arc<Inboxes>,
}

/// All of this connection's dispatch inboxes share one wildcard subscription
/// (`<prefix>.*`); replies are routed to each by the last token. That spares
/// a subscribe and an unsubscribe per dispatch.
struct Inboxes {
    prefix: String,
    next: AtomicU64,
    routes: Arc<Routes>,
    _pump: AbortOnDrop,
}

type Routes = parking_lot::Mutex<rustc_hash::FxHashMap<u64, tokio::sync::mpsc::UnboundedSender<Reply>>>;

/// Unregisters an inbox when dropped.
struct Unroute(Arc<Inboxes>, u64);

impl Drop for Unroute {
    fn drop(&mut self) {
        self.0.routes.lock().remove(&self.1);
    }
}

impl NatsBus {
    /// Connects to `url` (e.g. `nats://127.0.0.1:4222`), waiting at most
    /// `timeout` for the first connection; later disconnections are retried
    /// for ever.
    pub async fn connect(url: &str, name: &str, timeout: Duration) -> Result<Self, BusError> {
        let options = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(timeout)
            .max_reconnects(None)
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => tracing::info!("connected to NATS"),
                    async_nats::Event::Disconnected => tracing::warn!("disconnected from NATS; reconnecting"),
                    other => tracing::debug!(event = %other, "NATS event"),
                }
            });
        let client = tokio::time::timeout(timeout, options.connect(url))
            .await
            .map_err(|_| {
                BusError(format!(
                    "cannot connect to NATS at {url}: no answer within {}",
                    humantime::format_duration(timeout)
                ))
            })?
            .map_err(|e| BusError(format!("cannot connect to NATS at {url}: {e}")))?;
        let prefix = client.new_inbox();
        let mut subscriber = client
            .subscribe(format!("{prefix}.*"))
            .await
            .map_err(|e| BusError(format!("cannot subscribe to the reply inboxes: {e}")))?;
        let routes: Arc<Routes> = Arc::default();
        let table = routes.clone();
        let pump = tokio::spawn(async move {
            while let Some(message) = subscriber.next().await {
                let id = message.subject.rsplit('.').next().and_then(|id| id.parse::<u64>().ok());
                let Some(tx) = id.and_then(|id| table.lock().get(&id).cloned()) else {
                    continue; // a reply to a dispatch that has ended
                };
                match decode_reply(message.headers.as_ref(), &message.payload) {
                    Ok(reply) => {
                        let _ = tx.send(reply);
                    }
                    Err(err) => {
                        tracing::warn!(%err, "ignored a reply");
                    }
                }
            }
        });
        let inboxes = Arc::new(Inboxes { prefix, next: AtomicU64::new(0), routes, _pump: AbortOnDrop(pump) });
        Ok(NatsBus { client, inboxes })
    }

    /// The underlying client.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct NatsSink {
    client: Client,
    subject: async_nats::Subject,
}

#[async_trait]
impl ReplySink for NatsSink {
    async fn send(&self, reply: Reply) {
        let (headers, body) = encode_reply(&reply);
        // Publishing queues the message in the client, in order.
        if let Err(err) = self.client.publish_with_headers(self.subject.clone(), headers, body).await {
            tracing::warn!(%err, "could not publish a reply");
        }
    }
}

#[async_trait]
impl Bus for NatsBus {
    async fn open_inbox(&self) -> Result<Inbox, BusError> {
        let id = self.inboxes.next.fetch_add(1, Ordering::Relaxed);
        let inbox = Inbox::new(format!("{}.{id}", self.inboxes.prefix), Box::new(()));
        self.inboxes.routes.lock().insert(id, inbox.sender());
        Ok(inbox.with_registration(Box::new(Unroute(self.inboxes.clone(), id))))
    }

    async fn broadcast(&self, task: Arc<Task>, inbox: &mut Inbox) -> Result<Option<usize>, BusError> {
        let (headers, body) = encode_task(&task);
        self.client
            .publish_with_reply_and_headers(task_subject(task.topic.as_str()), inbox.subject.clone(), headers, body)
            .await
            .map_err(|e| BusError(format!("cannot publish the task: {e}")))?;
        Ok(None)
    }

    async fn subscribe(
        &self,
        group: &str,
        patterns: &[Pattern],
        receiver: Arc<dyn TaskReceiver>,
    ) -> Result<Subscription, BusError> {
        let mut pumps = Vec::new();
        for pattern in patterns {
            let subject = task_subject(pattern.as_str());
            let mut subscriber = self
                .client
                .queue_subscribe(subject.clone(), group.to_owned())
                .await
                .map_err(|e| BusError(format!("cannot subscribe to {subject}: {e}")))?;
            let (client, receiver) = (self.client.clone(), receiver.clone());
            pumps.push(AbortOnDrop(tokio::spawn(async move {
                // One task at a time runs inside this pump, sparing a hop
                // between threads when the node is lightly loaded; tasks that
                // arrive while it runs are spawned, so that they spread over
                // the executor's threads.
                let mut inline = futures::stream::FuturesUnordered::new();
                loop {
                    let message = tokio::select! {
                        message = subscriber.next() => match message {
                            Some(message) => message,
                            None => break,
                        },
                        Some(()) = inline.next(), if !inline.is_empty() => continue,
                    };
                    let task = decode_task(&message.subject, message.headers.as_ref(), &message.payload);
                    match (task, message.reply) {
                        (Ok(task), Some(reply)) => {
                            let sink = Arc::new(NatsSink { client: client.clone(), subject: reply });
                            let work = receiver.receive(Arc::new(task), sink);
                            if inline.is_empty() {
                                inline.push(work);
                            } else {
                                tokio::spawn(work);
                            }
                        }
                        (Err(err), _) => {
                            tracing::warn!(%err, "ignored a task");
                        }
                        (Ok(_), None) => {
                            tracing::warn!("ignored a task without a reply subject");
                        }
                    }
                }
            })));
        }
        // Make sure the server has the subscriptions before the node says it
        // is ready.
        self.client.flush().await.map_err(|e| BusError(format!("cannot flush subscriptions: {e}")))?;
        Ok(Subscription::new(Box::new(pumps)))
    }
}
