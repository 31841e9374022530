//! The presence sockets, and the fan-out of each update to them: one pass of one writer
//! over the sockets, writing the same frame bytes to each, instead of a task woken per
//! socket per update (`bench/presence.rs` measures the difference).
//!
//! A socket that takes a frame whole (the usual case: the kernel's buffer has room) costs
//! one `write`. One that takes it in part, or not at all, keeps the rest queued, and its
//! connection's own task writes it when the socket can take more. A socket that falls
//! [`LAG_FRAMES`] updates behind keeps only what it has begun, and gets a fresh snapshot
//! once it has caught up; one that takes nothing for a while is dropped by its task. So
//! a slow or stuck client never delays the others.

use std::{
    collections::VecDeque,
    io::ErrorKind,
    sync::{Arc, Mutex, MutexGuard},
};

use bytes::Bytes;
use tokio::{net::TcpStream, sync::Notify};

use super::Viewer;
use crate::domain::Visibility;

/// How many updates a socket may have queued before it is resynchronised with a
/// snapshot instead.
pub const LAG_FRAMES: usize = 256;

/// The registered sockets.
#[derive(Debug, Default)]
pub struct Sockets {
    /// Shared with the fan-outs under way, each of which goes over the list as it was
    /// when it began; a change while one is under way copies the list.
    registry: Mutex<Arc<Vec<Arc<Socket>>>>,
}

/// What one fan-out did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Sockets that were written the update, or have it queued.
    pub sent: u64,
    /// Sockets that fell behind, and will get a snapshot instead.
    pub resynced: u64,
}

impl Sockets {
    /// Registers a socket of `viewer`. It gets no update until its connection's task has
    /// sent it a snapshot ([`Socket::resync`]): an update offered before that is in the
    /// snapshot, one offered after comes after it.
    pub fn register(&self, stream: Arc<TcpStream>, viewer: Viewer) -> Arc<Socket> {
        let socket = Arc::new(Socket {
            viewer,
            out: Mutex::new(Out {
                stream: Some(stream),
                lagged: true,
                ..Out::default()
            }),
            wake: Notify::new(),
        });
        let mut registry = self.registry.lock().expect("not poisoned");
        Arc::make_mut(&mut registry).push(Arc::clone(&socket));
        socket
    }

    /// Writes `frame` (an update of a room of `visibility`) to every socket that may see
    /// it, yielding to the rest of the server every so often.
    pub async fn deliver(&self, frame: &Bytes, visibility: Visibility) -> Delivered {
        let pass = Arc::clone(&self.registry.lock().expect("not poisoned"));
        let mut delivered = Delivered::default();
        for socket in pass.iter() {
            if socket.viewer.may_see(visibility) {
                match socket.offer(frame) {
                    Offered::Sent => delivered.sent += 1,
                    Offered::Resynced => delivered.resynced += 1,
                    Offered::Skipped => {}
                }
            }
            // Its share of the worker, as any task: ten thousand writes take a while.
            tokio::task::coop::consume_budget().await;
        }
        delivered
    }

    /// `socket` has ended: no more is written to it (a fan-out under way passes it
    /// over), and it leaves the registry.
    pub fn end(&self, socket: &Socket) {
        socket.end();
        let mut registry = self.registry.lock().expect("not poisoned");
        if let Some(at) = registry.iter().position(|s| std::ptr::eq(&**s, socket)) {
            Arc::make_mut(&mut registry).swap_remove(at);
        }
    }
}

/// One presence socket as the fan-out writes to it.
#[derive(Debug)]
pub struct Socket {
    viewer: Viewer,
    out: Mutex<Out>,
    /// Told when frames are queued, so the connection's task waits until the socket can
    /// take them.
    wake: Notify,
}

#[derive(Debug, Default)]
struct Out {
    /// `None` once the connection has ended.
    stream: Option<Arc<TcpStream>>,
    /// Frames not yet written whole (the first maybe in part), and whether each is an
    /// update that a snapshot may replace.
    pending: VecDeque<(Bytes, bool)>,
    /// Bytes of the first pending frame already written.
    written: usize,
    /// A snapshot is due once the socket has caught up (updates were dropped, or none
    /// was sent yet).
    lagged: bool,
    /// A close frame is queued: nothing more goes after it.
    closing: bool,
}

enum Offered {
    Sent,
    Resynced,
    Skipped,
}

/// What a flush found.
#[derive(Debug, PartialEq, Eq)]
pub enum Flushed {
    /// Everything queued is written (a snapshot may still be due: [`Socket::resync`]).
    Drained,
    /// The socket takes no more for now; `progressed`: it took some.
    Blocked { progressed: bool },
    /// The socket failed, or the connection has ended.
    Failed,
}

impl Socket {
    fn lock(&self) -> MutexGuard<'_, Out> {
        self.out.lock().expect("not poisoned")
    }

    /// Writes a frame of the connection's own (a pong), after whatever is queued; never
    /// dropped for a snapshot.
    pub fn send(&self, frame: Bytes) {
        let mut out = self.lock();
        if !out.closing {
            self.push(&mut out, frame, false);
        }
    }

    /// Writes the connection's last frame (a close), after whatever is queued: no update
    /// or snapshot goes after it.
    pub fn close(&self, frame: Bytes) {
        let mut out = self.lock();
        if !out.closing {
            out.closing = true;
            self.push(&mut out, frame, false);
        }
    }

    /// An update: written, queued, or, for a socket too far behind, left to the snapshot
    /// it will get.
    fn offer(&self, frame: &Bytes) -> Offered {
        let mut out = self.lock();
        if out.stream.is_none() || out.lagged || out.closing {
            return Offered::Skipped;
        }
        if out.pending.len() >= LAG_FRAMES {
            // Keep what the socket has begun and the connection's own frames.
            let begun = out.written > 0;
            let mut first = true;
            out.pending.retain(|(_, update)| {
                let keep = !*update || (first && begun);
                first = false;
                keep
            });
            out.lagged = true;
            // The snapshot is due even if nothing is left to write before it.
            self.wake.notify_one();
            return Offered::Resynced;
        }
        self.push(&mut out, frame.clone(), true);
        Offered::Sent
    }

    fn push(&self, out: &mut Out, frame: Bytes, update: bool) {
        let Some(stream) = &out.stream else {
            return;
        };
        if !out.pending.is_empty() {
            out.pending.push_back((frame, update));
            return;
        }
        let written = match stream.try_write(&frame) {
            Ok(n) if n == frame.len() => return,
            Ok(n) => n,
            // The socket takes nothing now, or failed: the connection's task sees which
            // when it writes the rest.
            Err(_) => 0,
        };
        out.written = written;
        out.pending.push_back((frame, update));
        self.wake.notify_one();
    }

    /// Resolves when frames were queued since the last call.
    pub async fn queued(&self) {
        self.wake.notified().await;
    }

    /// Whether frames, or a snapshot, wait for the socket to take them.
    pub fn pending(&self) -> bool {
        let out = self.lock();
        !out.pending.is_empty() || (out.lagged && !out.closing)
    }

    /// Writes what is queued, as far as the socket takes it.
    pub fn flush(&self) -> Flushed {
        let mut guard = self.lock();
        let out = &mut *guard;
        let Some(stream) = &out.stream else {
            return Flushed::Failed;
        };
        let mut progressed = false;
        while let Some((frame, _)) = out.pending.front() {
            match stream.try_write(&frame[out.written..]) {
                Ok(0) => return Flushed::Failed,
                Ok(n) => {
                    progressed = true;
                    out.written += n;
                    if out.written == frame.len() {
                        out.pending.pop_front();
                        out.written = 0;
                    }
                }
                Err(error) if error.kind() == ErrorKind::WouldBlock => {
                    return Flushed::Blocked { progressed };
                }
                Err(_) => return Flushed::Failed,
            }
        }
        Flushed::Drained
    }

    /// Sends `snapshot` if one is due (the first, or updates were dropped), while no
    /// update can be offered: one offered before it is in it, one offered after comes
    /// after it.
    pub fn resync(&self, snapshot: impl FnOnce() -> Bytes) -> bool {
        let mut out = self.lock();
        if !out.lagged || out.closing {
            return false;
        }
        out.lagged = false;
        let frame = snapshot();
        self.push(&mut out, frame, false);
        true
    }

    /// Nothing more is written; the socket closes when its task lets go of it.
    fn end(&self) {
        let mut out = self.lock();
        out.stream = None;
        out.pending.clear();
    }
}

#[cfg(test)]
impl Sockets {
    /// Whether no socket is registered.
    pub fn is_empty(&self) -> bool {
        self.registry.lock().expect("not poisoned").is_empty()
    }

    /// Frames queued over every socket.
    pub fn queued_frames(&self) -> usize {
        let registry = self.registry.lock().expect("not poisoned");
        registry
            .iter()
            .map(|socket| socket.lock().pending.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fills a socket whose client never reads with updates of `size` bytes until it
    /// falls behind; then whether a snapshot is owed, and what the next update does.
    async fn fall_behind(size: usize) -> (bool, Delivered) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let sockets = Sockets::default();
        let socket = sockets.register(Arc::new(server), Viewer { admin: false });
        assert!(socket.resync(|| crate::websocket::text("snapshot")));
        let frame = crate::websocket::text(&"x".repeat(size));
        let mut delivered = Delivered::default();
        while delivered.resynced == 0 {
            delivered = sockets.deliver(&frame, Visibility::Public).await;
        }
        let owed = socket.pending();
        (owed, sockets.deliver(&frame, Visibility::Public).await)
    }

    #[tokio::test]
    async fn a_socket_that_fell_behind_is_owed_a_snapshot_even_with_nothing_left_to_write() {
        // Small frames of several sizes, so that in some the socket fills at a frame's
        // edge: all that is queued is updates not begun, and the lag drops them all.
        for size in 40..=60 {
            let (owed, next) = fall_behind(size).await;
            assert!(
                owed,
                "{size} B: the snapshot it is owed waits for the socket (its task waits for it)"
            );
            assert_eq!(
                next,
                Delivered::default(),
                "no update goes before that snapshot"
            );
        }
    }
}
