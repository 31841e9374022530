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
//! sent — the bridge reads every city room's timeline back from a minute before that
//! moment, a few times over the following minutes, and indexes what the index lacks. Reading back is idempotent per event, like every ingestion; the
//! transaction Synapse holds is applied as a replay when it is sent at last.

use std::{
    future::Future,
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
/// However long the signs go on, the passes are put off no longer than this after the
/// first: a Synapse whose clock is more than [`HELD`] apart from the bridge's makes every
/// push a sign.
const LONGEST_WAIT: Duration = Duration::from_secs(120);
/// When a pass Synapse cut short (unreachable) is taken again.
const RETRY_UNREACHABLE: Duration = Duration::from_secs(30);

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
        self.run_with(|since| read_back(&rooms, since)).await;
    }

    /// The schedule of [`CatchUp::run`], with `pass` reading the rooms back. A sign while
    /// the series of signs is younger than [`LONGEST_WAIT`] starts the passes over; later
    /// ones only widen the window, so that signs that never stop still leave passes.
    async fn run_with<F, Fut>(&self, mut pass: F)
    where
        F: FnMut(MilliSecondsSinceUnixEpoch) -> Fut,
        Fut: Future<Output = bool>,
    {
        loop {
            self.seen.notified().await;
            let first_sign = Instant::now();
            let mut last_sign = first_sign;
            let mut since = self.since();
            let mut next = 0;
            // A pass Synapse cut short, taken again then.
            let mut retry_at = None;
            let mut warned = false;
            while let Some(after) = PASSES.get(next) {
                let base = last_sign.min(first_sign + LONGEST_WAIT);
                let due = retry_at.unwrap_or(base + *after);
                tokio::select! {
                    () = tokio::time::sleep_until(due) => {
                        if pass(MilliSecondsSinceUnixEpoch(UInt::new_saturating(since))).await {
                            retry_at = None;
                            // Passes that fell due meanwhile (while Synapse was away) are done.
                            let now = Instant::now();
                            next += 1;
                            while PASSES.get(next).is_some_and(|after| base + *after <= now) {
                                next += 1;
                            }
                        } else {
                            retry_at = Some(Instant::now() + RETRY_UNREACHABLE);
                        }
                    }
                    () = self.seen.notified() => {
                        since = since.min(self.since());
                        last_sign = Instant::now();
                        retry_at = None;
                        if last_sign < first_sign + LONGEST_WAIT {
                            next = 0;
                        } else if !warned {
                            warned = true;
                            warn!(
                                "Synapse has looked to be recovering for two minutes: local events \
                                 keep arriving more than 2 s after they were sent (is Synapse's \
                                 clock apart from the bridge's, or Synapse far behind?)"
                            );
                        }
                    }
                }
            }
        }
    }

    /// The start of the window to read back, from the last sign.
    fn since(&self) -> u64 {
        self.seen_at
            .load(Ordering::Relaxed)
            .saturating_sub(millis(MARGIN))
    }
}

fn now() -> u64 {
    u64::from(MilliSecondsSinceUnixEpoch::now().get())
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Reads every city room's timeline back from `since` and indexes what the index lacks;
/// whether it read them all (not when Synapse could not be reached: the rest would fail
/// alike, so the pass stops there, to be taken again).
async fn read_back(rooms: &Rooms, since: MilliSecondsSinceUnixEpoch) -> bool {
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
            Err(crate::Error::Homeserver(error)) if error.is_unavailable() => {
                warn!(
                    %error,
                    "Synapse is unreachable: the rooms are read back again in {} s",
                    RETRY_UNREACHABLE.as_secs()
                );
                return false;
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
    true
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

    /// Runs the schedule for `for_` of paused time, with a sign at each of `signs` (from
    /// the start) and Synapse unreachable for the first `unreachable_for` passes; the
    /// moments of the passes.
    async fn passes(signs: Vec<Duration>, unreachable_for: usize, for_: Duration) -> Vec<Duration> {
        let catch_up = Arc::new(CatchUp::new(
            ServerName::parse("city.example").unwrap().as_ref(),
        ));
        let start = Instant::now();
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let worker = {
            let (catch_up, log) = (Arc::clone(&catch_up), Arc::clone(&log));
            tokio::spawn(async move {
                catch_up
                    .run_with(|_| {
                        let mut log = log.lock().unwrap();
                        log.push(start.elapsed());
                        let reached = log.len() > unreachable_for;
                        async move { reached }
                    })
                    .await;
            })
        };
        for at in signs {
            tokio::time::sleep_until(start + at).await;
            catch_up.refused();
            catch_up.accepted(None);
        }
        tokio::time::sleep_until(start + for_).await;
        worker.abort();
        let _ = worker.await;
        Arc::try_unwrap(log).unwrap().into_inner().unwrap()
    }

    fn secs(s: &[u64]) -> Vec<Duration> {
        s.iter().copied().map(Duration::from_secs).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn the_rooms_are_read_back_three_times_after_the_last_sign() {
        // Signs 2 s apart (a recovery under way): nothing until they stop.
        let seen = passes(secs(&[0, 2, 4]), 0, Duration::from_secs(600)).await;
        assert_eq!(seen, secs(&[9, 34, 124]));
    }

    #[tokio::test(start_paused = true)]
    async fn signs_that_never_stop_put_the_passes_off_two_minutes_at_most() {
        // A sign every 0.7 s for ten minutes (never at the moment of a pass).
        let signs = (0..857).map(|n| Duration::from_millis(700 * n)).collect();
        let seen = passes(signs, 0, Duration::from_secs(600)).await;
        // 120 s after each series' first sign, then 5, 30 and 120 s on; the next sign
        // (at 240.1 s) starts a new series.
        let ms = |ms: &[u64]| {
            ms.iter()
                .copied()
                .map(Duration::from_millis)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            seen,
            ms(&[125_000, 150_000, 240_000, 365_100, 390_100, 480_100])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_pass_synapse_cuts_short_is_taken_again_30_s_later() {
        let seen = passes(secs(&[0]), 2, Duration::from_secs(600)).await;
        // 5 s (unreachable), 35 s (unreachable), 65 s (in place of the pass due at 30 s),
        // then 120 s after the sign.
        assert_eq!(seen, secs(&[5, 35, 65, 120]));
    }
}
