//! The presence sockets and their fan-out: one writer for all of them.
//!
//! Each update goes out from one loop over the sockets that may see it: the frame's bytes
//! are shared, and each socket's send is polled once, on the writer's own task. No task is
//! woken per socket and no timer is set per frame; between sockets nothing waits. A socket
//! that cannot take the frame at once (its buffer is full) is handed to a task of its own,
//! which finishes the send within [`SEND_TIMEOUT`] and then brings the client up to date
//! with a snapshot, or drops it; meanwhile the writer goes on with everyone else. Each
//! connection's own task only reads (answers `ping`, notices the client leave) and closes
//! the socket at its token's `exp` or when the bridge stops.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll},
};

use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use futures_util::{Sink, SinkExt as _, StreamExt as _, stream::SplitSink};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::{FromClient, SEND_TIMEOUT, from_client, going_away, token_expired};
use crate::{
    metrics::Connected,
    presence::{PresenceHub, Update, Viewer},
};

/// Sockets written between two yields of the writer (other tasks run in between).
const CHUNK: usize = 256;

/// Every open presence socket, and the writer that fans updates out to them.
#[derive(Debug)]
pub struct PresenceSockets {
    hub: Arc<PresenceHub>,
    sockets: RwLock<HashMap<u64, Arc<Socket>>>,
    next_id: AtomicU64,
}

/// One client's socket.
#[derive(Debug)]
struct Socket {
    sink: tokio::sync::Mutex<SplitSink<WebSocket, Message>>,
    viewer: Viewer,
    /// It missed an update (it was busy): it owes the client a snapshot.
    resync: AtomicBool,
    /// A task of its own is finishing a send on it.
    finishing: AtomicBool,
    /// It took nothing for [`SEND_TIMEOUT`], or failed: its connection ends.
    dropped: CancellationToken,
}

/// What offering a frame to a socket came to.
enum Offered {
    /// Sent, or buffered with a task to finish it.
    Sent,
    /// Not sent (busy, or cannot see it): a snapshot follows when it is owed.
    Not,
}

impl PresenceSockets {
    /// No sockets yet; updates come from `hub`.
    pub fn new(hub: Arc<PresenceHub>) -> Arc<Self> {
        Arc::new(Self {
            hub,
            sockets: RwLock::default(),
            next_id: AtomicU64::new(0),
        })
    }

    /// The writer: each update from the hub to every socket that may see it, until the
    /// hub is gone.
    pub async fn run(self: Arc<Self>) {
        let mut updates = self.hub.subscribe();
        let sent = crate::metrics::metrics().frame_counter("presence", "sent");
        loop {
            let update = match updates.recv().await {
                Ok(update) => Some(update),
                // The writer itself fell behind: everyone gets a snapshot instead.
                Err(RecvError::Lagged(_)) => None,
                Err(RecvError::Closed) => return,
            };
            let sockets: Vec<Arc<Socket>> = self
                .sockets
                .read()
                .expect("not poisoned")
                .values()
                .cloned()
                .collect();
            for chunk in sockets.chunks(CHUNK) {
                let delivered = std::future::poll_fn(|cx| {
                    let delivered = chunk
                        .iter()
                        .filter(|socket| {
                            matches!(self.offer(socket, update.as_ref(), cx), Offered::Sent)
                        })
                        .count();
                    Poll::Ready(delivered)
                })
                .await;
                sent.inc_by(u64::try_from(delivered).unwrap_or(u64::MAX));
                tokio::task::yield_now().await;
            }
        }
    }

    /// Offers `update` (`None`: a snapshot) to `socket`, polling its send once with `cx`.
    fn offer(
        self: &Arc<Self>,
        socket: &Arc<Socket>,
        update: Option<&Update>,
        cx: &mut Context<'_>,
    ) -> Offered {
        let Some(update) = update else {
            socket.resync.store(true, Ordering::Release);
            self.finish(socket);
            return Offered::Not;
        };
        if !socket.viewer.may_see(update.visibility) {
            return Offered::Not;
        }
        let Ok(mut guard) = socket.sink.try_lock() else {
            // Its connection or a task of its own is sending: they send a snapshot after.
            socket.resync.store(true, Ordering::Release);
            return Offered::Not;
        };
        if socket.resync.load(Ordering::Acquire) {
            drop(guard);
            self.finish(socket);
            return Offered::Not;
        }
        let mut sink = Pin::new(&mut *guard);
        match sink.as_mut().poll_ready(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(_)) => {
                socket.dropped.cancel();
                return Offered::Not;
            }
            Poll::Pending => {
                socket.resync.store(true, Ordering::Release);
                drop(guard);
                self.finish(socket);
                return Offered::Not;
            }
        }
        if sink
            .as_mut()
            .start_send(Message::Text(update.text.clone()))
            .is_err()
        {
            socket.dropped.cancel();
            return Offered::Not;
        }
        match sink.as_mut().poll_flush(cx) {
            Poll::Ready(Ok(())) => Offered::Sent,
            Poll::Ready(Err(_)) => {
                socket.dropped.cancel();
                Offered::Not
            }
            Poll::Pending => {
                drop(guard);
                self.finish(socket);
                Offered::Sent
            }
        }
    }

    /// Hands `socket` to a task of its own: it finishes what is buffered and sends the
    /// snapshot owed, within [`SEND_TIMEOUT`], or drops the socket.
    fn finish(self: &Arc<Self>, socket: &Arc<Socket>) {
        if socket.finishing.swap(true, Ordering::AcqRel) {
            return;
        }
        let (sockets, socket) = (Arc::clone(self), Arc::clone(socket));
        tokio::spawn(async move {
            let metrics = crate::metrics::metrics();
            loop {
                let mut sink = socket.sink.lock().await;
                let done = tokio::time::timeout(SEND_TIMEOUT, async {
                    sink.flush().await?;
                    while socket.resync.swap(false, Ordering::AcqRel) {
                        metrics.frame("presence", "resynced");
                        let snapshot = sockets.hub.snapshot(socket.viewer);
                        sink.send(Message::Text(Utf8Bytes::from(snapshot))).await?;
                    }
                    Ok::<(), axum::Error>(())
                })
                .await;
                drop(sink);
                socket.finishing.store(false, Ordering::Release);
                if !matches!(done, Ok(Ok(()))) {
                    metrics.frame("presence", "dropped");
                    socket.dropped.cancel();
                    return;
                }
                // Missed another update while it held the socket: once more.
                if !socket.resync.load(Ordering::Acquire)
                    || socket.finishing.swap(true, Ordering::AcqRel)
                {
                    return;
                }
            }
        });
    }

    /// Sends a frame of the connection's own (an answer, a close frame): whether it went.
    async fn send_own(self: &Arc<Self>, socket: &Arc<Socket>, frame: Message) -> bool {
        let mut sink = socket.sink.lock().await;
        let sent = matches!(
            tokio::time::timeout(SEND_TIMEOUT, sink.send(frame)).await,
            Ok(Ok(()))
        );
        drop(sink);
        if socket.resync.load(Ordering::Acquire) {
            self.finish(socket);
        }
        sent
    }

    /// Serves one connection: the snapshot, then updates from the writer, until the client
    /// leaves, its token expires (4001), the bridge stops (1012) or it is dropped.
    pub async fn serve(
        self: Arc<Self>,
        socket: WebSocket,
        viewer: Viewer,
        expires: tokio::time::Instant,
        stopping: CancellationToken,
    ) {
        let _connected = Connected::new("presence");
        let (sink, mut incoming) = socket.split();
        let socket = Arc::new(Socket {
            sink: tokio::sync::Mutex::new(sink),
            viewer,
            resync: AtomicBool::new(false),
            finishing: AtomicBool::new(false),
            dropped: CancellationToken::new(),
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // Registered while it holds its own socket for the snapshot: an update meanwhile
        // finds it busy and is followed by a fresh snapshot, so none falls between the two
        // and none comes before it.
        let mut sink = socket.sink.lock().await;
        self.sockets
            .write()
            .expect("not poisoned")
            .insert(id, Arc::clone(&socket));
        let snapshot = Message::Text(Utf8Bytes::from(self.hub.snapshot(viewer)));
        let sent = matches!(
            tokio::time::timeout(SEND_TIMEOUT, sink.send(snapshot)).await,
            Ok(Ok(()))
        );
        drop(sink);
        if socket.resync.load(Ordering::Acquire) {
            self.finish(&socket);
        }
        if sent {
            let expiry = tokio::time::sleep_until(expires);
            tokio::pin!(expiry);
            loop {
                let own = tokio::select! {
                    received = incoming.next() => match from_client(received) {
                        FromClient::Answer(answer) => answer,
                        FromClient::Nothing | FromClient::Typing(_) => continue,
                        FromClient::Gone => break,
                    },
                    () = &mut expiry => token_expired(),
                    () = stopping.cancelled() => going_away(),
                    () = socket.dropped.cancelled() => break,
                };
                let closing = matches!(own, Message::Close(_));
                if !self.send_own(&socket, own).await || closing {
                    break;
                }
            }
        }
        self.sockets.write().expect("not poisoned").remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::{extract::WebSocketUpgrade, routing::get};
    use serde_json::Value;
    use tokio_tungstenite::{connect_async, tungstenite::Message as Frame};

    use super::*;
    use crate::{domain::Visibility, presence::RoomPresence};

    /// A `room.presence` of `general` with `online` people, padded to ~16 KB so that a
    /// few thousand fill any socket's buffers.
    fn update(online: usize) -> Vec<u8> {
        serde_json::to_vec(&RoomPresence {
            room_slug: "general".to_owned(),
            matrix_room_id: "!general:city.org".to_owned(),
            matrix_room_alias: None,
            online_count: online,
            typing_count: 512,
            typing_users: (0..512)
                .map(|n| format!("@typist{n:05}:city.org"))
                .collect(),
            last_event_ts: None,
        })
        .unwrap()
    }

    fn json(frame: Frame) -> Value {
        serde_json::from_str(frame.to_text().unwrap()).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_stops_reading_holds_nobody_up_and_is_caught_up_with_a_snapshot() {
        let hub = PresenceHub::new();
        hub.set_catalog(vec![("general".to_owned(), Visibility::Public)]);
        let sockets = PresenceSockets::new(Arc::clone(&hub));
        tokio::spawn(Arc::clone(&sockets).run());
        let app = axum::Router::new().route(
            "/",
            get(move |upgrade: WebSocketUpgrade| {
                let sockets = Arc::clone(&sockets);
                async move {
                    upgrade.on_upgrade(move |ws| {
                        let forever = tokio::time::Instant::now() + Duration::from_secs(3600);
                        sockets.serve(
                            ws,
                            Viewer { admin: false },
                            forever,
                            CancellationToken::new(),
                        )
                    })
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let (mut slow, _) = connect_async(&url).await.unwrap();
        let (mut fast, _) = connect_async(&url).await.unwrap();
        for socket in [&mut slow, &mut fast] {
            let snapshot = json(socket.next().await.unwrap().unwrap());
            assert_eq!(snapshot["type"], "snapshot");
        }

        // 2,000 updates (32 MB) while `slow` reads nothing: `fast` gets every one of them.
        const UPDATES: usize = 2_000;
        let reader = tokio::spawn(async move {
            for n in 1..=UPDATES {
                let frame = json(fast.next().await.unwrap().unwrap());
                assert_eq!(frame["online_count"], n, "in order, none missed");
            }
        });
        for n in 1..=UPDATES {
            hub.receive(&update(n));
            if n % 64 == 0 {
                tokio::task::yield_now().await;
            }
        }
        tokio::time::timeout(Duration::from_secs(30), reader)
            .await
            .expect("the reading client is not held up by the one that does not read")
            .unwrap();

        // `slow` reads again: what its socket held, in order, then a snapshot with the
        // latest state.
        let mut last = 0;
        let caught_up = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let frame = json(slow.next().await.unwrap().unwrap());
                if frame["type"] == "snapshot" {
                    return frame;
                }
                let n = frame["online_count"].as_u64().unwrap();
                assert!(n > last, "in order: {n} after {last}");
                last = n;
            }
        })
        .await
        .expect("a snapshot after what the socket held");
        assert!(
            last < UPDATES as u64,
            "its socket could not hold every update"
        );
        assert_eq!(caught_up["rooms"][0]["online_count"], UPDATES);
    }
}
