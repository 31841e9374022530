//! The event bus to the rest of the platform: NATS when `NATS_URL` is set, an in-process
//! broadcast otherwise. Every instance subscribes to what it serves (the WebSocket
//! gateways), so with NATS a client on any instance sees what another one published.

use bytes::Bytes;
use futures_util::StreamExt as _;
use tokio::sync::{broadcast, mpsc};
use tracing::warn;

use crate::workers::Workers;

/// How many messages a slow in-process subscriber may fall behind before it misses some.
const IN_PROCESS_CAPACITY: usize = 4096;

/// A message on the bus.
#[derive(Debug, Clone)]
pub struct BusMessage {
    /// The subject, e.g. `city.presence.room.general`.
    pub subject: String,
    /// The JSON payload.
    pub payload: Bytes,
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
                let (outbox, mut queued) = mpsc::channel::<BusMessage>(NATS_BACKLOG);
                let publisher = client.clone();
                workers.spawn("bus publisher", async move {
                    while let Some(m) = queued.recv().await {
                        if let Err(error) = publisher.publish(m.subject.clone(), m.payload).await {
                            warn!(subject = %m.subject, %error, "NATS publish failed");
                        }
                    }
                });
                Self::Nats {
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
            }
            Self::Nats { outbox, .. } => {
                if let Err(e) = outbox.try_send(BusMessage { subject, payload }) {
                    warn!(subject = %e.into_inner().subject, "NATS backlog full; update dropped");
                }
            }
        }
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
                                warn!(n, "bus subscriber fell behind")
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
