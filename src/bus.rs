//! The event bus to the rest of the platform: NATS when `NATS_URL` is set, an in-process
//! broadcast otherwise. Every instance subscribes to what it serves (the WebSocket
//! gateways), so with NATS a client on any instance sees what another one published.

use bytes::Bytes;
use futures_util::StreamExt as _;
use tokio::sync::{broadcast, mpsc};
use tracing::warn;

use crate::{presence::wire::ROOM_SUBJECT_PREFIX, workers::Workers};

/// How many messages a slow in-process subscriber may fall behind before it misses some
/// (and is told so: [`BusMessage::is_lagged`]).
const IN_PROCESS_CAPACITY: usize = 4096;

/// A message on the bus.
#[derive(Debug, Clone)]
pub struct BusMessage {
    /// The subject, e.g. `city.presence.room.general`.
    pub subject: String,
    /// The JSON payload.
    pub payload: Bytes,
}

/// The subject of [`BusMessage::lagged`]: no subject published on the bus is empty.
const LAGGED: &str = "";

impl BusMessage {
    /// Says that the subscriber fell so far behind that messages were lost before this
    /// one: what it feeds should be read again (live channel feeds get `resync`).
    fn lagged() -> Self {
        Self {
            subject: LAGGED.to_owned(),
            payload: Bytes::new(),
        }
    }

    /// Whether this says that messages were lost.
    pub fn is_lagged(&self) -> bool {
        self.subject == LAGGED
    }
}

/// How many messages may wait for a NATS server that is slow or away before new ones are
/// dropped (live updates: the next one supersedes a lost one).
const NATS_BACKLOG: usize = 8192;

/// The bus.
#[derive(Debug, Clone)]
pub enum Bus {
    /// Inside this process only.
    InProcess {
        /// The broadcast.
        tx: broadcast::Sender<BusMessage>,
        /// Where subscription tasks run.
        workers: Workers,
    },
    /// A NATS server, fed by one publisher task so that publishing never waits on it.
    Nats {
        /// For subscriptions.
        client: async_nats::Client,
        /// JetStream, for the outbox relay's acknowledged publishing.
        jetstream: Box<async_nats::jetstream::Context>,
        /// The KV bucket of the latest `room.presence` per room.
        presence: Option<Box<async_nats::jetstream::kv::Store>>,
        /// To the publisher task.
        outbox: mpsc::Sender<BusMessage>,
        /// Where the publisher and subscription tasks run.
        workers: Workers,
    },
}

impl Bus {
    /// Connects to NATS at `url`, or makes an in-process bus when there is none.
    pub async fn connect(
        url: Option<&str>,
        workers: &Workers,
    ) -> Result<Self, async_nats::ConnectError> {
        Ok(match url {
            Some(url) => {
                let client = async_nats::connect(url).await?;
                let jetstream = async_nats::jetstream::new(client.clone());
                let presence = presence_bucket(&jetstream).await;
                let (outbox, mut queued) = mpsc::channel::<BusMessage>(NATS_BACKLOG);
                let publisher = client.clone();
                let latest = presence.clone();
                workers.spawn("bus publisher", async move {
                    while let Some(m) = queued.recv().await {
                        // The latest state of each room is also kept, for instances that
                        // start later.
                        if let (Some(kv), Some(slug)) =
                            (&latest, m.subject.strip_prefix(ROOM_SUBJECT_PREFIX))
                            && let Err(error) = kv.put(slug, m.payload.clone()).await
                        {
                            warn!(%slug, %error, "cannot keep the room's presence in the KV bucket");
                        }
                        match publisher.publish(m.subject.clone(), m.payload).await {
                            Ok(()) => crate::metrics::metrics().publish("core", "ok"),
                            Err(error) => {
                                crate::metrics::metrics().publish("core", "failed");
                                warn!(subject = %m.subject, %error, "NATS publish failed");
                            }
                        }
                    }
                });
                Self::Nats {
                    jetstream: Box::new(jetstream),
                    presence: presence.map(Box::new),
                    client,
                    outbox,
                    workers: workers.clone(),
                }
            }
            None => Self::InProcess {
                tx: broadcast::channel(IN_PROCESS_CAPACITY).0,
                workers: workers.clone(),
            },
        })
    }

    /// Publishes `payload` on `subject` without waiting: ingestion, which calls this,
    /// must never stall on the bus (a NATS outage would otherwise hold Synapse's stream).
    /// What cannot be queued is dropped and logged; the bus carries live updates, and the
    /// next one supersedes a lost one.
    pub fn publish(&self, subject: String, payload: Bytes) {
        match self {
            Self::InProcess { tx, .. } => {
                // No subscriber is not an error.
                let _ = tx.send(BusMessage { subject, payload });
                crate::metrics::metrics().publish("core", "ok");
            }
            Self::Nats { outbox, .. } => {
                if let Err(e) = outbox.try_send(BusMessage { subject, payload }) {
                    crate::metrics::metrics().publish("core", "dropped");
                    warn!(subject = %e.into_inner().subject, "NATS backlog full; update dropped");
                }
            }
        }
    }

    /// Creates the JetStream stream of the outbox's events, or updates its settings: file
    /// storage, `subjects`, events kept for `max_age`, `Nats-Msg-Id` duplicates dropped
    /// within `duplicate_window`. Nothing to do in-process.
    pub async fn ensure_stream(
        &self,
        name: &str,
        subjects: &[&str],
        max_age: std::time::Duration,
        duplicate_window: std::time::Duration,
    ) -> Result<(), String> {
        let Self::Nats { jetstream, .. } = self else {
            return Ok(());
        };
        let config = async_nats::jetstream::stream::Config {
            name: name.to_owned(),
            subjects: subjects.iter().map(|s| (*s).to_owned()).collect(),
            storage: async_nats::jetstream::stream::StorageType::File,
            max_age,
            duplicate_window,
            ..Default::default()
        };
        jetstream
            .create_or_update_stream(config)
            .await
            .map(drop)
            .map_err(|e| format!("JetStream stream {name}: {e}"))
    }

    /// Publishes `events` (subject, message id, payload) in order and waits for each to be
    /// stored: by JetStream (which drops a message id it has seen within its duplicate
    /// window), or at once in-process. How many, from the first, were stored (the rest are
    /// to be published again), and whether the next one was refused for good.
    ///
    /// The events are sent without waiting for each acknowledgement, and each after the
    /// first names the one before it (`Nats-Expected-Last-Msg-Id`): one that fails makes
    /// every later one of the call fail too, so nothing is stored ahead of an event that is
    /// published again.
    pub async fn publish_acked(&self, events: &[(&str, &str, Bytes)]) -> Published {
        match self {
            Self::InProcess { tx, .. } => {
                for (subject, _, payload) in events {
                    let _ = tx.send(BusMessage {
                        subject: (*subject).to_owned(),
                        payload: payload.clone(),
                    });
                }
                Published {
                    stored: events.len(),
                    refused: None,
                }
            }
            Self::Nats {
                client, jetstream, ..
            } => {
                if let Some(published) = publish_chain(client, jetstream, events).await {
                    return published;
                }
                let mut acks = Vec::with_capacity(events.len());
                let mut refused = None;
                let mut previous: Option<&str> = None;
                for (subject, id, payload) in events {
                    let mut publish = async_nats::jetstream::message::PublishMessage::build()
                        .payload(payload.clone())
                        .message_id(*id);
                    if let Some(previous) = previous {
                        publish = publish.expected_last_message_id(previous);
                    }
                    previous = Some(id);
                    match jetstream.send_publish((*subject).to_owned(), publish).await {
                        Ok(ack) => acks.push(ack),
                        Err(error) => {
                            crate::metrics::metrics().publish("jetstream", "failed");
                            warn!(%subject, %error, "JetStream publish failed");
                            refused = refused_for_good(&error);
                            break;
                        }
                    }
                }
                let mut stored = 0;
                for ack in acks {
                    match tokio::time::timeout(std::time::Duration::from_secs(10), ack).await {
                        Ok(Ok(_)) => {
                            crate::metrics::metrics().publish("jetstream", "ok");
                            stored += 1;
                        }
                        Ok(Err(error)) => {
                            crate::metrics::metrics().publish("jetstream", "failed");
                            warn!(%error, "JetStream did not store an event");
                            refused = refused_for_good(&error);
                            break;
                        }
                        Err(_) => {
                            warn!("JetStream did not acknowledge an event in 10 s");
                            refused = None;
                            break;
                        }
                    }
                }
                Published { stored, refused }
            }
        }
    }

    /// The latest `room.presence` payload of every room, as kept in the KV bucket: what a
    /// new instance shows before the next updates. Empty in-process.
    pub async fn presence_snapshot(&self) -> Vec<Bytes> {
        let Self::Nats {
            presence: Some(kv), ..
        } = self
        else {
            return Vec::new();
        };
        let mut keys = match kv.keys().await {
            Ok(keys) => keys,
            Err(error) => {
                warn!(%error, "cannot list the presence bucket");
                return Vec::new();
            }
        };
        let mut payloads = Vec::new();
        while let Some(Ok(key)) = keys.next().await {
            if let Ok(Some(payload)) = kv.get(key).await {
                payloads.push(payload);
            }
        }
        payloads
    }

    /// Messages whose subject matches `pattern` (NATS syntax; in-process only the
    /// trailing `>` wildcard is understood), until the receiver is dropped.
    pub async fn subscribe(
        &self,
        pattern: &str,
    ) -> Result<mpsc::Receiver<BusMessage>, async_nats::SubscribeError> {
        let (tx, rx) = mpsc::channel(IN_PROCESS_CAPACITY);
        match self {
            Self::InProcess { tx: bus, workers } => {
                let mut messages = bus.subscribe();
                let prefix = pattern.trim_end_matches('>').to_owned();
                workers.spawn("bus subscription", async move {
                    loop {
                        match messages.recv().await {
                            Ok(m) if m.subject.starts_with(&prefix) => {
                                if tx.send(m).await.is_err() {
                                    break;
                                }
                            }
                            Ok(_) => {}
                            Err(broadcast::error::RecvError::Lagged(n)) => {
                                warn!(n, "bus subscriber fell behind; told to read again");
                                if tx.send(BusMessage::lagged()).await.is_err() {
                                    break;
                                }
                            }
                            Err(broadcast::error::RecvError::Closed) => break,
                        }
                    }
                });
            }
            Self::Nats {
                client, workers, ..
            } => {
                let mut subscription = client.subscribe(pattern.to_owned()).await?;
                workers.spawn("bus subscription", async move {
                    while let Some(m) = subscription.next().await {
                        let message = BusMessage {
                            subject: m.subject.to_string(),
                            payload: m.payload,
                        };
                        if tx.send(message).await.is_err() {
                            break;
                        }
                    }
                });
            }
        }
        Ok(rx)
    }
}

/// The KV bucket `city_presence` (one value per room), created if needed; `None` (logged)
/// when JetStream cannot give it.
async fn presence_bucket(
    jetstream: &async_nats::jetstream::Context,
) -> Option<async_nats::jetstream::kv::Store> {
    if let Ok(kv) = jetstream.get_key_value(PRESENCE_BUCKET).await {
        return Some(kv);
    }
    // The bucket's stream, made directly: the client's `create_key_value` asks the server
    // for account details that the NATS 2.9 of Debian answers in another shape.
    let config = async_nats::jetstream::stream::Config {
        name: format!("KV_{PRESENCE_BUCKET}"),
        subjects: vec![format!("$KV.{PRESENCE_BUCKET}.>")],
        max_messages_per_subject: 1,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: async_nats::jetstream::stream::DiscardPolicy::New,
        ..Default::default()
    };
    let made = match jetstream.get_or_create_stream(config).await {
        Ok(_) => jetstream
            .get_key_value(PRESENCE_BUCKET)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match made {
        Ok(kv) => Some(kv),
        Err(error) => {
            warn!(%error, "no presence KV bucket: new instances start with empty counts");
            None
        }
    }
}

/// What [`Bus::publish_acked`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// How many events, from the first, were stored.
    pub stored: usize,
    /// Why the event after them was refused for good (too large for the server or the
    /// stream), if it was: publishing it again would fail again.
    pub refused: Option<String>,
}

/// Why `error` refuses its event for good, or `None` when it may pass another time.
/// Publishes `events` as one chain, each one expecting the previous one's id as the
/// stream's last, and only the last one acknowledged: JetStream takes an event only right
/// after the one it expects, so the last one's acknowledgement proves every one of them
/// stored, in order. One acknowledgement a batch instead of one an event (each a reply to
/// route, parse and wake a task for, in the bridge and in nats-server). `None` when that
/// proof does not come (an event refused or dropped as a duplicate breaks the chain, and
/// then the last one is refused too): the caller publishes them again one by one, each
/// acknowledged, and JetStream drops the ones it has as duplicates.
async fn publish_chain(
    client: &async_nats::Client,
    jetstream: &async_nats::jetstream::Context,
    events: &[(&str, &str, Bytes)],
) -> Option<Published> {
    use async_nats::header::{NATS_EXPECTED_LAST_MESSAGE_ID, NATS_MESSAGE_ID};
    let ((last_subject, last_id, last_payload), rest) = events.split_last()?;
    if rest.is_empty() {
        return None;
    }
    let mut previous: Option<&str> = None;
    for (subject, id, payload) in rest {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(NATS_MESSAGE_ID, *id);
        if let Some(previous) = previous {
            headers.insert(NATS_EXPECTED_LAST_MESSAGE_ID, previous);
        }
        client
            .publish_with_headers((*subject).to_owned(), headers, payload.clone())
            .await
            .ok()?;
        previous = Some(id);
    }
    let publish = async_nats::jetstream::message::PublishMessage::build()
        .payload(last_payload.clone())
        .message_id(*last_id)
        .expected_last_message_id(previous?);
    let ack = jetstream
        .send_publish((*last_subject).to_owned(), publish)
        .await
        .ok()?;
    let ack = tokio::time::timeout(std::time::Duration::from_secs(10), ack)
        .await
        .ok()?
        .ok()?;
    if ack.duplicate {
        return None;
    }
    crate::metrics::metrics().publishes("jetstream", "ok", events.len());
    Some(Published {
        stored: events.len(),
        refused: None,
    })
}

fn refused_for_good(error: &async_nats::jetstream::context::PublishError) -> Option<String> {
    use async_nats::jetstream::{ErrorCode, context::PublishErrorKind};
    match error.kind() {
        PublishErrorKind::MaxPayloadExceeded => Some(error.to_string()),
        PublishErrorKind::Other => std::error::Error::source(error)
            .and_then(|source| source.downcast_ref::<async_nats::jetstream::Error>())
            .filter(|e| e.error_code() == ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM)
            .map(ToString::to_string),
        _ => None,
    }
}

/// The KV bucket of the latest presence per room.
pub const PRESENCE_BUCKET: &str = "city_presence";

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_in_process_subscriber_that_falls_behind_is_told() {
        let workers = Workers::new();
        let bus = Bus::connect(None, &workers).await.unwrap();
        let mut messages = bus.subscribe("messaging.>").await.unwrap();
        // More than the subscription's queue and the broadcast hold, unread.
        for n in 0..3 * IN_PROCESS_CAPACITY {
            bus.publish("messaging.test".to_owned(), Bytes::from(n.to_string()));
            if n % 256 == 0 {
                tokio::task::yield_now().await;
            }
        }
        let mut seen = 0;
        let lagged = loop {
            let m = tokio::time::timeout(std::time::Duration::from_secs(5), messages.recv())
                .await
                .expect("messages")
                .expect("open");
            if m.is_lagged() {
                break true;
            }
            seen += 1;
            assert!(seen <= 3 * IN_PROCESS_CAPACITY, "never told of the loss");
        };
        assert!(lagged);
        assert!(seen < 3 * IN_PROCESS_CAPACITY, "some were lost");
    }
}
