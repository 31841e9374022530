//! The outbox relay and the live feeds it drives.
//!
//! [`Relay`]: one instance at a time (a Postgres advisory lock) reads what is not published
//! yet — messages after its mark, unsent `outbox` rows — in position order, publishes each
//! to JetStream with `Nats-Msg-Id = <epoch>:<position>`, waits for the acknowledgements,
//! then marks them. A crash between the publish and the mark publishes again, and
//! JetStream drops the duplicate. Without NATS it publishes in-process. The new messages
//! this instance's indexer wrote are handed to it as written, and only their positions are
//! read to check them (`Store::pending`).
//!
//! [`feed_channels`]: every instance (receiver or API-only) feeds its channel WebSockets
//! from the bus, so a client sees the same events wherever it is connected.

use std::{collections::HashMap, sync::Arc, time::Duration};

use axum::extract::ws::Utf8Bytes;
use bytes::{BufMut as _, Bytes, BytesMut};
use serde::Serialize;
use serde_json::json;
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::{
    bus::Bus,
    config::StreamConfig,
    domain::events::{
        ChangeDetail, MessageChanged, MessageCreated, MessageTruncated,
        subjects::{self, TYPING_PREFIX},
    },
    ingest::{Committed, Subscription},
    messaging::ChannelHub,
    store::{Handed, MessageView, Pending, Store},
};

/// Events read and published per round: a round costs about ten round trips to Postgres
/// and one to JetStream whatever its size, so a relay that fell behind catches up in
/// large rounds (under load it rounds about every 15 ms, far fewer than this).
const BATCH: i64 = 2_000;

/// The most new messages kept as the indexer handed them; the relay reads the rest back.
const HANDED_MAX: usize = 8_000;

/// New messages the indexer of this instance wrote, kept for the relay until it takes
/// them: at most [`HANDED_MAX`] (what does not fit is read back), whether the relay is
/// publishing, waiting for JetStream or standing by.
#[derive(Debug, Default)]
pub struct Handoff(std::sync::Mutex<Handed>);

impl Handoff {
    fn lock(&self) -> std::sync::MutexGuard<'_, Handed> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps the new messages of `committed`, as many as fit.
    fn keep(&self, committed: &Committed) {
        let mut kept = self.lock();
        let room = HANDED_MAX.saturating_sub(kept.len());
        kept.extend(committed.messages.iter().take(room).cloned());
    }

    /// Moves what is kept to the end of `handed`, as much as fits there.
    fn take_into(&self, handed: &mut Handed) {
        let mut kept = self.lock();
        let room = HANDED_MAX.saturating_sub(handed.len()).min(kept.len());
        handed.extend(kept.drain(..room));
    }
}

/// Follows the index: keeps each committed batch's new messages for the relay, and wakes
/// it for whatever the batch changed.
pub async fn hand_over(mut commits: Subscription, handoff: Arc<Handoff>, due: Arc<Notify>) {
    while let Some(committed) = commits.recv().await {
        handoff.keep(&committed);
        if !committed.effects.is_empty() {
            due.notify_one();
        }
    }
}

/// The outbox relay: what it reads and publishes with, and what wakes it.
#[derive(Debug)]
pub struct Relay {
    store: Store,
    bus: Bus,
    stream: StreamConfig,
    due: Arc<Notify>,
    handoff: Arc<Handoff>,
    handed: Handed,
}

impl Relay {
    /// A relay publishing `store`'s outbox on `bus` into `stream`, woken by `due`, taking
    /// the new messages the indexer wrote from `handoff`.
    pub fn new(
        store: Store,
        bus: Bus,
        stream: StreamConfig,
        due: Arc<Notify>,
        handoff: Arc<Handoff>,
    ) -> Self {
        Self {
            store,
            bus,
            stream,
            due,
            handoff,
            handed: Handed::new(),
        }
    }

    /// Runs the relay while this instance holds the lease; stands by otherwise.
    pub async fn run(mut self) {
        if let Err(error) = self.ensure_stream().await {
            // Publishing retries until the stream exists (NATS may be down at start).
            warn!(%error, "cannot create the JetStream stream yet");
        }
        loop {
            match self.store.relay_lease().await {
                Ok(Some(lease)) => {
                    info!("this instance relays the outbox");
                    self.lead(lease).await;
                }
                Ok(None) => {
                    // Another instance relays: what this one's indexer wrote is not kept.
                    self.handed.clear();
                    self.handoff.lock().clear();
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                Err(error) => {
                    warn!(%error, "cannot take the relay lease");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn ensure_stream(&self) -> Result<(), String> {
        self.bus
            .ensure_stream(
                &self.stream.name,
                subjects::STREAM,
                self.stream.max_age,
                self.stream.duplicate_window,
            )
            .await
    }

    /// Publishes while the lease holds (its connection answers).
    async fn lead(&mut self, mut lease: sqlx::PgConnection) {
        let epoch = loop {
            match self.store.outbox_epoch().await {
                Ok(epoch) => break epoch,
                Err(error) => {
                    warn!(%error, "cannot read the outbox epoch");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        let mut backoff = Duration::from_millis(100);
        let mut stream_ready = false;
        let mut last_check = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = self.due.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            if last_check.elapsed() > Duration::from_secs(15) {
                last_check = tokio::time::Instant::now();
                if let Ok(lag) = self.store.outbox_lag().await {
                    crate::metrics::metrics().outbox_lag.set(lag);
                }
                if !Store::lease_alive(&mut lease).await {
                    warn!("the relay lease was lost; standing by");
                    return;
                }
            }
            loop {
                self.handoff.take_into(&mut self.handed);
                let pending = match self.store.pending(BATCH, &mut self.handed).await {
                    Ok(pending) => pending,
                    Err(error) => {
                        warn!(%error, "cannot read the outbox");
                        break;
                    }
                };
                if pending.is_empty() {
                    crate::metrics::metrics().outbox_lag.set(0);
                    break;
                }
                let events = match payloads(&self.store, &epoch, &pending).await {
                    Ok(events) => events,
                    Err(error) => {
                        warn!(%error, "cannot read the outbox's messages");
                        break;
                    }
                };
                // Published up to the first event that cannot be; that one is set aside.
                let publishable = events.iter().take_while(|e| e.payload.is_ok()).count();
                let ready: Vec<(&str, &str, Bytes)> = events[..publishable]
                    .iter()
                    .filter_map(|e| {
                        let payload = e.payload.as_ref().ok()?.clone();
                        Some((e.subject, e.id.as_str(), payload))
                    })
                    .collect();
                let published = self.bus.publish_acked(&ready).await;
                let mut done = published.stored;
                let poison = match (published.refused, events.get(done)) {
                    (Some(reason), Some(event)) => Some((event, reason)),
                    (None, Some(event)) if done == publishable => match &event.payload {
                        Err(reason) => Some((event, reason.clone())),
                        Ok(_) => None,
                    },
                    _ => None,
                };
                let mut set_aside = false;
                if let Some((event, reason)) = poison {
                    match self
                        .store
                        .outbox_dead_letter(&pending[done], event.subject, &reason, event.size)
                        .await
                    {
                        Ok(()) => {
                            crate::metrics::metrics().outbox_dead_letters.inc();
                            warn!(
                                subject = %event.subject,
                                position = pending[done].position(),
                                %reason,
                                "an event cannot be published; recorded as a dead letter and skipped"
                            );
                            done += 1;
                            set_aside = true;
                        }
                        Err(error) => warn!(%error, "cannot record an outbox dead letter"),
                    }
                }
                if done == 0 && !stream_ready {
                    // The stream may not exist yet (NATS was down at start).
                    stream_ready = self.ensure_stream().await.is_ok();
                }
                if done > 0
                    && let Err(error) = self.store.mark_published(&pending[..done]).await
                {
                    // Published but not marked: published again later, dropped as duplicates.
                    warn!(%error, "cannot mark published events");
                    break;
                }
                if done < pending.len() {
                    if !set_aside {
                        crate::metrics::metrics()
                            .outbox_lag
                            .set(i64::try_from(pending.len() - done).unwrap_or(i64::MAX));
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        break;
                    }
                    // The rest of the round, after the one set aside: read again.
                    continue;
                }
                backoff = Duration::from_millis(100);
                stream_ready = true;
                if i64::try_from(pending.len()).unwrap_or(0) < BATCH {
                    break;
                }
            }
        }
    }
}

/// The largest payload the relay publishes: a message view is bounded (its text, at most
/// [`crate::store::MAX_REACTION_KEYS`] reaction keys), and a payload that is larger even
/// so (text of control characters, escaped six-fold) goes out without the message view.
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// One pending event, ready for the bus: its payload, or why it cannot be published.
struct Outgoing<'a> {
    subject: &'a str,
    id: String,
    payload: Result<Bytes, String>,
    /// The payload's size in bytes, as first written.
    size: usize,
}

/// Subject, message id and payload of each pending event. Changes of a message carry the
/// message as it is now, and so does a new message changed in the same round. Payloads are
/// written straight from the views (no JSON tree).
async fn payloads<'a>(
    store: &Store,
    epoch: &str,
    pending: &'a [Pending],
) -> crate::Result<Vec<Outgoing<'a>>> {
    let changed: Vec<&str> = pending
        .iter()
        .filter_map(|p| match p {
            Pending::Row(row) => row.event_id.as_deref(),
            Pending::Created(..) => None,
        })
        .collect();
    let views: HashMap<String, MessageView> = if changed.is_empty() {
        HashMap::new()
    } else {
        store
            .messages(&changed, "")
            .await?
            .into_iter()
            .map(|v| (v.matrix_event_id.clone(), v))
            .collect()
    };
    // The count of a reaction key outside a view's top keys.
    let beyond_top: Vec<(&str, &str)> = pending
        .iter()
        .filter_map(|p| match p {
            Pending::Row(row) if row.subject == subjects::REACTION_UPDATED => {
                let (event, key) = (row.event_id.as_deref()?, row.key.as_deref()?);
                let view = views.get(event)?;
                (!view.reactions.iter().any(|r| r.key == key)).then_some((event, key))
            }
            _ => None,
        })
        .collect();
    let key_counts = if beyond_top.is_empty() {
        HashMap::new()
    } else {
        store.reaction_counts(&beyond_top).await?
    };
    let mut out = Vec::with_capacity(pending.len());
    let mut buffer = PayloadBuffer::for_events(pending.len());
    for p in pending {
        let id = format!("{epoch}:{}", p.position());
        let (subject, payload, light) = match p {
            Pending::Created(view, _) => {
                // Changed since it was written (the change goes out in this round too): as
                // it is now, so a message redacted before it is published never goes out
                // with its text.
                let view = views.get(&view.matrix_event_id).unwrap_or(view);
                (
                    subjects::MESSAGE_CREATED,
                    buffer.put(&created(view)),
                    Some(("message.created", view)),
                )
            }
            Pending::Row(row) => match (
                &row.payload,
                row.event_id.as_ref().and_then(|e| views.get(e)),
            ) {
                (Some(payload), _) => (row.subject.as_str(), buffer.put(payload), None),
                (None, Some(view)) => {
                    let key = row.key.as_deref();
                    let count = view
                        .reactions
                        .iter()
                        .find(|r| Some(r.key.as_str()) == key)
                        .map(|r| r.count)
                        .or_else(|| {
                            key_counts
                                .get(&(view.matrix_event_id.clone(), key?.to_owned()))
                                .copied()
                        })
                        .unwrap_or(0);
                    let (kind, payload) =
                        changed_payload(&mut buffer, &row.subject, key, count, view);
                    (row.subject.as_str(), payload, Some((kind, view)))
                }
                // The message is gone (its room was deleted): say what is known.
                (None, None) => (
                    row.subject.as_str(),
                    buffer.put(&json!({
                        "channel_id": row.channel_id, "matrix_event_id": row.event_id,
                    })),
                    None,
                ),
            },
        };
        let size = payload.len();
        let payload = if size <= MAX_PAYLOAD {
            Ok(payload)
        } else if let Some((kind, view)) = light {
            // Without the view: a client reads the message from the API.
            Ok(buffer.put(&MessageTruncated {
                kind,
                channel_id: &view.channel_id,
                matrix_event_id: &view.matrix_event_id,
                message: None,
                truncated: true,
            }))
        } else {
            Err(format!(
                "payload of {size} bytes, over the bus limit of {MAX_PAYLOAD}"
            ))
        };
        out.push(Outgoing {
            subject,
            id,
            payload,
            size,
        });
    }
    Ok(out)
}

/// Where a round's payloads are written one after another: each is a slice of a few
/// shared allocations, not a vector grown (and copied) a few times for each.
struct PayloadBuffer(BytesMut);

impl PayloadBuffer {
    /// Room for `events` payloads of a typical size.
    fn for_events(events: usize) -> Self {
        Self(BytesMut::with_capacity(events.saturating_mul(1024)))
    }

    /// `payload` as JSON.
    fn put(&mut self, payload: &impl Serialize) -> Bytes {
        serde_json::to_writer((&mut self.0).writer(), payload).expect("payloads serialize");
        self.0.split().freeze()
    }
}

/// `messaging.message.created` of `view`.
fn created(view: &MessageView) -> MessageCreated<'_, MessageView, crate::store::model::Media> {
    MessageCreated {
        kind: "message.created",
        channel_id: &view.channel_id,
        matrix_event_id: &view.matrix_event_id,
        sender_id: &view.sender_id,
        sender_type: &view.sender_type,
        preview: &view.content_preview,
        created_at: &view.created_at,
        msgtype: view.msgtype.as_deref(),
        reply_to: view.reply_to.as_deref(),
        thread_root: view.thread_root.as_deref(),
        media: view.media.as_ref(),
        message: view,
    }
}

/// The type and payload of a change of `view`; `count` is the reaction key's.
fn changed_payload(
    buffer: &mut PayloadBuffer,
    subject: &str,
    key: Option<&str>,
    count: i64,
    view: &MessageView,
) -> (&'static str, Bytes) {
    let (kind, detail) = match subject {
        subjects::MESSAGE_UPDATED => (
            "message.updated",
            ChangeDetail::Updated {
                preview: &view.content_preview,
                edited_at: view.edited_at.as_ref(),
            },
        ),
        subjects::MESSAGE_DELETED => ("message.deleted", ChangeDetail::Deleted {}),
        _ => ("reaction.updated", ChangeDetail::Reaction { key, count }),
    };
    (
        kind,
        buffer.put(&MessageChanged {
            kind,
            channel_id: &view.channel_id,
            matrix_event_id: &view.matrix_event_id,
            detail,
            message: view,
        }),
    )
}

/// Feeds the channels' WebSocket listeners on this instance (`channels`) from `bus`:
/// message and reaction events (from the relay) and typing.
pub async fn feed_channels(bus: Bus, channels: Arc<ChannelHub>) {
    let mut messages = match bus.subscribe(subjects::MESSAGING).await {
        Ok(messages) => messages,
        Err(error) => {
            warn!(%error, "cannot subscribe to messaging events; channel feeds are off");
            return;
        }
    };
    let mut typing = match bus.subscribe(&format!("{TYPING_PREFIX}>")).await {
        Ok(typing) => typing,
        Err(error) => {
            warn!(%error, "cannot subscribe to typing; channel feeds are off");
            return;
        }
    };
    #[derive(serde::Deserialize)]
    struct Head {
        #[serde(rename = "type")]
        kind: Option<String>,
        channel_id: Option<String>,
    }
    loop {
        let message = tokio::select! {
            Some(m) = messages.recv() => m,
            Some(m) = typing.recv() => m,
            else => return,
        };
        // Nobody watches a channel here: nothing to read (the common case under load).
        if !channels.any_watched() {
            continue;
        }
        if message.is_lagged() {
            channels.resync_all();
            continue;
        }
        let Ok(head) = serde_json::from_slice::<Head>(&message.payload) else {
            continue;
        };
        let (Some(kind), Some(channel)) = (head.kind, head.channel_id) else {
            continue;
        };
        if !matches!(
            kind.as_str(),
            "message.created"
                | "message.updated"
                | "message.deleted"
                | "reaction.updated"
                | "pins.updated"
                | "typing"
        ) || !channels.is_watched(&channel)
        {
            continue;
        }
        if let Ok(text) = Utf8Bytes::try_from(message.payload) {
            channels.send(&channel, text);
        }
    }
}

/// Deletes published outbox rows past `OUTBOX_RETENTION_HOURS`, every hour.
pub async fn prune(store: Store, hours: u32) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        every.tick().await;
        match store.prune_outbox(hours).await {
            Ok(0) => {}
            Ok(deleted) => info!(deleted, "published outbox rows deleted"),
            Err(error) => warn!(%error, "cannot prune the outbox"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> Arc<MessageView> {
        Arc::new(MessageView {
            id: "$m:example.org".to_owned(),
            channel_id: "room_city_general".to_owned(),
            matrix_event_id: "$m:example.org".to_owned(),
            sender_id: "user:alice".to_owned(),
            sender_matrix_id: "@alice:example.org".to_owned(),
            sender_type: "human".to_owned(),
            msgtype: Some("m.text".to_owned()),
            content_preview: "hello".to_owned(),
            media: None,
            created_at: chrono::Utc::now(),
            edited_at: None,
            redacted: false,
            reply_to: None,
            thread_root: None,
            pinned: false,
            reactions: Vec::new(),
            reaction_count: 0,
            reaction_keys: 0,
            cursor: "1-1".to_owned(),
        })
    }

    #[test]
    fn the_handoff_keeps_at_most_its_bound_whatever_the_relay_is_doing() {
        let handoff = Handoff::default();
        let one = view();
        let batch = |n: usize, first: i64| Committed {
            messages: (0..n)
                .map(|i| (Arc::clone(&one), first + i64::try_from(i).unwrap()))
                .collect(),
            ..Committed::default()
        };
        // The relay is away (waiting for JetStream): batches keep coming.
        handoff.keep(&batch(HANDED_MAX - 5, 1));
        handoff.keep(&batch(10, 10_000));
        assert_eq!(
            handoff.lock().len(),
            HANDED_MAX,
            "what does not fit is dropped"
        );
        assert_eq!(
            handoff.lock().back().unwrap().1,
            10_004,
            "the first that fit kept"
        );
        // The relay takes what fits with what it already holds.
        let mut handed: Handed = (0..HANDED_MAX - 10)
            .map(|i| (Arc::clone(&one), i64::try_from(i).unwrap() - 10_000))
            .collect();
        handoff.take_into(&mut handed);
        assert_eq!(handed.len(), HANDED_MAX);
        assert_eq!(handoff.lock().len(), HANDED_MAX - 10, "the rest stays kept");
        assert_eq!(handed.back().unwrap().1, 10, "taken in order");
    }
}
