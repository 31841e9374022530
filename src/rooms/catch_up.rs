//! Transactions Synapse never sends. When the bridge was unreachable (stopped, or it
//! refused pushes while Postgres was away), Synapse queues the transactions and a recovery
//! sends them once the bridge answers again; then it marks the appservice up. A
//! transaction made in the instant between the recovery's last look at the queue and that
//! mark is queued as if the appservice were still down, and nothing sends it until the
//! next outage (Synapse's `appservice/scheduler.py`: `_Recoverer.retry` against
//! `_TransactionController.send`). Under traffic, a recovery leaves one behind often: in
//! the SIGKILL test, two runs in four.
//!
//! So once Synapse is seen recovering — a push was refused, or a local user's pushed
//! event was sent before the bridge started or arrives more than [`HELD`] after it was
//! sent — the bridge reads every city room's timeline back
//! from a minute before that moment, a few times over the following minutes, and indexes
//! what the index lacks. Reading back is idempotent per event, like every ingestion; the
//! transaction Synapse holds is applied as a replay when it is sent at last.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use ruma::{MilliSecondsSinceUnixEpoch, ServerName, UInt};
use tokio::{sync::Notify, time::Instant};
use tracing::{debug, warn};

use super::{
    Rooms,
    history::{Window, index_timeline},
};

/// A pushed event this late was held by Synapse: a recovery is delivering it.
const HELD: Duration = Duration::from_secs(2);
/// How far before the recovery was seen the rooms are read back: Synapse's clock may be
/// behind the bridge's, and its recovery may have started before the first late push.
const MARGIN: Duration = Duration::from_secs(60);
/// When the rooms are read back, after the last sign of a recovery: soon (a recovery
/// usually ends within a second), and again in case it went on longer.
const PASSES: [Duration; 3] = [
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(120),
];

/// Signs of Synapse's recoveries, from the pushes; and the worker that reads the rooms back
/// after each ([`CatchUp::run`]).
#[derive(Debug)]
pub struct CatchUp {
    /// `:<server name>`: the end of a local user's id. Only local events tell: a remote
    /// server's event can reach Synapse late, or with its clock wrong.
    local: String,
    /// When (milliseconds since the Unix epoch) this process started: an event sent before
    /// was queued by Synapse while no bridge answered.
    started_at: u64,
    /// A push was refused since the last one accepted.
    refused: AtomicBool,
    /// When (milliseconds since the Unix epoch) the last sign of a recovery was seen.
    seen_at: AtomicU64,
    /// Rings at each sign of a recovery.
    seen: Notify,
}

impl CatchUp {
    /// The signs of recoveries of the homeserver `server_name`, from now.
    pub fn new(server_name: &ServerName) -> Self {
        Self {
            local: format!(":{server_name}"),
            started_at: now(),
            refused: AtomicBool::default(),
            seen_at: AtomicU64::default(),
            seen: Notify::default(),
        }
    }
}

impl CatchUp {
    /// The bridge refused a push: Synapse will queue and recover.
    pub fn refused(&self) {
        self.refused.store(true, Ordering::Relaxed);
    }

    /// The bridge accepted a push whose first (oldest) event was sent by `sender` at
    /// `sent` (milliseconds since the Unix epoch); none without events.
    pub fn accepted(&self, first: Option<(&str, u64)>) {
        let now = now();
        let held = first.is_some_and(|(sender, sent)| {
            sender.ends_with(&self.local)
                && (sent < self.started_at || now.saturating_sub(sent) > millis(HELD))
        });
        let after_refusal =
            self.refused.load(Ordering::Relaxed) && self.refused.swap(false, Ordering::Relaxed);
        if held || after_refusal {
            self.seen_at.store(now, Ordering::Relaxed);
            self.seen.notify_one();
        }
    }

    /// Reads the rooms back after each recovery until the bridge shuts down: from a
    /// [`MARGIN`] before the first sign of it, at each of [`PASSES`] after the last sign.
    pub async fn run(self: Arc<Self>, rooms: Rooms) {
        loop {
            self.seen.notified().await;
            let mut since = u64::MAX;
            'recovery: loop {
                let seen_at = self.seen_at.load(Ordering::Relaxed);
                since = since.min(seen_at.saturating_sub(millis(MARGIN)));
                let last_sign = Instant::now();
                for after in PASSES {
                    tokio::select! {
                        () = tokio::time::sleep_until(last_sign + after) => {}
                        // Still recovering: the passes start over, the window kept.
                        () = self.seen.notified() => continue 'recovery,
                    }
                    let since = UInt::new_saturating(since);
                    read_back(&rooms, MilliSecondsSinceUnixEpoch(since)).await;
                }
                break;
            }
        }
    }
}

fn now() -> u64 {
    u64::from(MilliSecondsSinceUnixEpoch::now().get())
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Reads every city room's timeline back from `since` and indexes what the index lacks.
async fn read_back(rooms: &Rooms, since: MilliSecondsSinceUnixEpoch) {
    let mut found = 0;
    let all = rooms.directory.all();
    for (room_id, _) in &all {
        match index_timeline(rooms, room_id, Window::Since(since)).await {
            Ok(0) => {}
            Ok(created) => {
                found += created;
                crate::metrics::metrics()
                    .caught_up_messages
                    .inc_by(u64::try_from(created).unwrap_or(0));
                warn!(
                    %room_id,
                    created,
                    "indexed messages Synapse had not pushed (a transaction held back by its recovery)"
                );
            }
            Err(error) => {
                warn!(%room_id, %error, "could not read the room back after Synapse's recovery");
            }
        }
    }
    debug!(
        rooms = all.len(),
        found, "read the rooms back after Synapse's recovery"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `accepted` took the push for a sign of a recovery (and forgets it).
    fn sign(catch_up: &CatchUp, first: Option<(&str, u64)>) -> bool {
        catch_up.seen_at.store(0, Ordering::Relaxed);
        catch_up.accepted(first);
        catch_up.seen_at.load(Ordering::Relaxed) != 0
    }

    #[test]
    fn refusals_and_late_local_events_are_signs_of_a_recovery() {
        let catch_up = CatchUp::new(ServerName::parse("city.example").unwrap().as_ref());
        let now = now();
        let late = now - millis(HELD) - 1_000;
        assert!(!sign(&catch_up, Some(("@alice:city.example", now))), "live");
        assert!(!sign(&catch_up, None), "no events");
        assert!(sign(&catch_up, Some(("@alice:city.example", late))), "held");
        assert!(
            !sign(&catch_up, Some(("@bob:elsewhere.example", late))),
            "a remote event may be late on its own"
        );
        let before_start = CatchUp {
            started_at: now + 1,
            ..CatchUp::new(ServerName::parse("city.example").unwrap().as_ref())
        };
        assert!(
            sign(&before_start, Some(("@alice:city.example", now))),
            "queued while no bridge answered"
        );

        catch_up.refused();
        assert!(
            sign(&catch_up, None),
            "the first push accepted after a refusal"
        );
        assert!(!sign(&catch_up, None), "only the first");
    }
}
