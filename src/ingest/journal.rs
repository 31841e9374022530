//! The ingest journal, in front of the pipeline: a pushed transaction is appended as
//! received (one row, one commit) and answered; the indexer applies the journal to the
//! index in order, in batches as large as the backlog, and records how far it got in the
//! same commit as the index writes.
//!
//! Crash between the append and the index: the next start applies the rows after the
//! mark. A row appended but never handed over in memory (a request cut off between its
//! commit and the hand-over) is found the same way, by the gap it leaves. Positions are
//! taken one past the last committed row, so a gap the table does not fill once a later
//! row is held is a position no row took (a row written by hand and deleted, or a
//! sequence of an earlier version): it is skipped.

use std::{
    collections::{HashSet, VecDeque},
    ops::Range,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use ruma::{api::appservice::event::push_events::v1::EphemeralData, serde::Raw};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::{Mutex, mpsc};
use tracing::{info, warn};

use super::{Incoming, Indexer};
use crate::{
    Result,
    store::{JournalEntry, Store},
};

/// How many appended transactions wait for the indexer before the next append waits: the
/// bound on memory, and on how far the index trails the acknowledgements.
const QUEUE: usize = 64;
/// The most events the indexer applies in one commit.
const MAX_BATCH_EVENTS: usize = 2_000;
/// How often the indexer looks in the table for rows it was not handed (and trims).
const IDLE_CHECK: Duration = Duration::from_secs(1);
/// How often applied rows are deleted.
const TRIM_EVERY: Duration = Duration::from_secs(5);
/// How many event ids indexed outside the journal are remembered.
const RECENT_DIRECT: usize = 4096;

/// The body of a pushed transaction, read in one pass by borrowing: the events stay raw
/// slices of the body (the indexer parses each once); ephemeral data is typed.
#[derive(Debug, Deserialize)]
pub struct PushedBody<'a> {
    /// The timeline events. Required, as the specification has it (an empty list is a
    /// transaction too).
    #[serde(borrow)]
    pub events: Vec<&'a RawValue>,
    /// Ephemeral data (MSC2409, stable key).
    #[serde(default)]
    pub ephemeral: Vec<Raw<EphemeralData>>,
    /// Ephemeral data under the legacy key, used only when the stable key is empty.
    #[serde(rename = "de.sorunome.msc2409.ephemeral", default)]
    pub legacy_ephemeral: Vec<Raw<EphemeralData>>,
}

/// An appended transaction, handed to the indexer in memory.
#[derive(Debug)]
pub struct Appended {
    pos: i64,
    txn_id: String,
    body: Bytes,
    /// Each event's place in `body`.
    events: Vec<Range<usize>>,
    acknowledged: Instant,
}

impl Appended {
    /// The appended `body` at `pos`, whose `events` were borrowed from it.
    pub fn new(pos: i64, txn_id: &str, body: Bytes, events: &[&RawValue]) -> Self {
        // Where each borrowed event lies in the body (checked when read back).
        let start = body.as_ptr() as usize;
        let events = events
            .iter()
            .map(|raw| {
                let at = (raw.get().as_ptr() as usize).wrapping_sub(start);
                at..at.saturating_add(raw.get().len())
            })
            .collect();
        Self {
            pos,
            txn_id: txn_id.to_owned(),
            body,
            events,
            acknowledged: Instant::now(),
        }
    }
}

/// The hand-over between the acknowledgement path and the indexer.
#[derive(Debug)]
pub struct Journal {
    queue: mpsc::Sender<Appended>,
    /// Held from an append to its hand-over: positions reach the indexer in order.
    order: Mutex<()>,
    /// Messages the pipeline indexed outside the journal (an API send, a discovered
    /// room's history), which Synapse's push is likely to bring again.
    indexed_directly: std::sync::Mutex<RecentIds>,
    /// The last position appended.
    appended: std::sync::atomic::AtomicI64,
    /// The position the index has applied the journal up to.
    indexed: tokio::sync::watch::Sender<i64>,
}

/// The last [`RECENT_DIRECT`] ids noted, oldest forgotten first.
#[derive(Debug, Default)]
struct RecentIds {
    order: VecDeque<String>,
    ids: HashSet<String>,
}

/// The indexer's end of the hand-over: given to [`run_indexer`], never shared.
#[derive(Debug)]
pub struct Handed(mpsc::Receiver<Appended>);

impl Journal {
    /// A journal, and the end of its hand-over that the indexer reads.
    pub fn new() -> (Self, Handed) {
        let (queue, receiver) = mpsc::channel(QUEUE);
        let journal = Self {
            queue,
            order: Mutex::new(()),
            indexed_directly: std::sync::Mutex::default(),
            appended: std::sync::atomic::AtomicI64::new(0),
            indexed: tokio::sync::watch::Sender::new(0),
        };
        (journal, Handed(receiver))
    }

    /// Appends `body` (durable when this returns) and hands it to the indexer.
    pub async fn append(
        &self,
        store: &Store,
        txn_id: &str,
        body: &Bytes,
        events: &[&RawValue],
    ) -> Result<()> {
        let _order = self.order.lock().await;
        let pos = store.journal_append(txn_id, body).await?;
        self.appended
            .fetch_max(pos, std::sync::atomic::Ordering::Relaxed);
        // Waits when the indexer is QUEUE transactions behind. Fails only when it has
        // stopped (shutdown): the row is applied at the next start.
        let _ = self
            .queue
            .send(Appended::new(pos, txn_id, body.clone(), events))
            .await;
        Ok(())
    }

    /// Resolves once the index has applied everything appended before this call, or after
    /// `at_most`: what a pushed receipt waits for, so that the message it names (pushed
    /// before it) is indexed when it is read.
    pub fn until_indexed(&self, at_most: Duration) -> impl Future<Output = ()> + Send + 'static {
        let target = self.appended.load(std::sync::atomic::Ordering::Relaxed);
        let mut indexed = self.indexed.subscribe();
        async move {
            let _ = tokio::time::timeout(at_most, indexed.wait_for(|pos| *pos >= target)).await;
        }
    }

    /// Notes messages indexed outside the journal.
    pub fn note_indexed_directly<'a>(&self, event_ids: impl IntoIterator<Item = &'a str>) {
        let mut recent = self.indexed_directly();
        for id in event_ids {
            if recent.ids.insert(id.to_owned()) {
                recent.order.push_back(id.to_owned());
            }
        }
        while recent.order.len() > RECENT_DIRECT {
            if let Some(old) = recent.order.pop_front() {
                recent.ids.remove(&old);
            }
        }
    }

    /// Whether any of `event_ids` was noted as indexed outside the journal.
    pub fn indexed_directly_any<'a>(&self, mut event_ids: impl Iterator<Item = &'a str>) -> bool {
        let recent = self.indexed_directly();
        !recent.ids.is_empty() && event_ids.any(|id| recent.ids.contains(id))
    }

    fn indexed_directly(&self) -> std::sync::MutexGuard<'_, RecentIds> {
        self.indexed_directly
            .lock()
            .expect("journal ids are not poisoned")
    }
}

/// The indexer: applies the journal in order until the bridge shuts down. Rows after the
/// mark that it was not handed (the previous run's tail, a hand-over cut off) are read
/// from the table; a batch that fails for want of the database is retried as it was.
pub async fn run_indexer(
    Handed(mut receiver): Handed,
    journal: Arc<Journal>,
    store: Store,
    indexer: Arc<Indexer>,
) {
    let mut mark = loop {
        match store.journal_mark().await {
            Ok(mark) => break mark,
            Err(error) => {
                warn!(%error, "cannot read the journal mark; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    journal.indexed.send_replace(mark);
    let mut handed: Vec<Appended> = Vec::new();
    let mut look_in_table = true;
    let mut last_trim = Instant::now();
    loop {
        if handed.is_empty() && !look_in_table {
            match tokio::time::timeout(IDLE_CHECK, receiver.recv()).await {
                Ok(Some(appended)) => handed.push(appended),
                Ok(None) => return,
                Err(_) => look_in_table = true,
            }
        }
        let mut events = handed.iter().map(|a| a.events.len()).sum::<usize>();
        while events < MAX_BATCH_EVENTS {
            match receiver.try_recv() {
                Ok(appended) => {
                    events += appended.events.len();
                    handed.push(appended);
                }
                Err(_) => break,
            }
        }
        handed.retain(|a| a.pos > mark);
        // A gap before the first row handed over: rows this process was not given.
        if handed.first().is_some_and(|a| a.pos > mark + 1) {
            look_in_table = true;
        }
        let batch = if look_in_table {
            look_in_table = false;
            let before = handed.first().map_or(i64::MAX, |a| a.pos);
            match store.journal_after(mark, 64).await {
                Ok(rows) => {
                    let rows: Vec<JournalEntry> =
                        rows.into_iter().filter(|r| r.pos < before).collect();
                    if rows.is_empty() && before != i64::MAX && before > mark + 1 {
                        // Positions no row took: holding `before`, every row before it
                        // that will ever exist is committed (see `Store::journal_append`),
                        // and the table has none. Skipped, never waited on.
                        warn!(
                            from = mark + 1,
                            to = before - 1,
                            "journal positions no row took; skipped"
                        );
                        crate::metrics::metrics()
                            .journal_positions_skipped
                            .inc_by(u64::try_from(before - 1 - mark).unwrap_or(0));
                        mark = before - 1;
                        continue;
                    }
                    if !rows.is_empty() {
                        info!(
                            rows = rows.len(),
                            after = mark,
                            "applying journal rows not yet indexed"
                        );
                        // More may follow: look again before the next batch.
                        look_in_table = rows.len() == 64;
                    }
                    Batch::Table(rows)
                }
                Err(error) => {
                    warn!(%error, "cannot read the journal; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    look_in_table = true;
                    continue;
                }
            }
        } else {
            Batch::Handed(std::mem::take(&mut handed))
        };
        if let Some(last) = apply_until_done(&indexer, &batch).await {
            mark = last;
            journal.indexed.send_replace(last);
            if let Batch::Handed(entries) = &batch {
                let metrics = crate::metrics::metrics();
                for entry in entries {
                    metrics
                        .index_lag_seconds
                        .observe(entry.acknowledged.elapsed().as_secs_f64());
                }
            }
        }
        if last_trim.elapsed() >= TRIM_EVERY {
            last_trim = Instant::now();
            if let Err(error) = store.journal_trim().await {
                warn!(%error, "cannot trim the journal");
            }
        }
    }
}

/// Journal rows to apply together, in order.
enum Batch {
    Handed(Vec<Appended>),
    Table(Vec<JournalEntry>),
}

/// A journal row of a batch, whichever way it came.
struct Row<'a> {
    pos: i64,
    txn_id: &'a str,
    body: &'a [u8],
    /// Each event's place in `body`, when known from the append.
    places: Option<&'a [Range<usize>]>,
}

impl Batch {
    fn rows(&self) -> Vec<Row<'_>> {
        match self {
            Self::Handed(entries) => entries
                .iter()
                .map(|e| Row {
                    pos: e.pos,
                    txn_id: &e.txn_id,
                    body: &e.body,
                    places: Some(&e.events),
                })
                .collect(),
            Self::Table(rows) => rows
                .iter()
                .map(|r| Row {
                    pos: r.pos,
                    txn_id: &r.txn_id,
                    body: &r.body,
                    places: None,
                })
                .collect(),
        }
    }
}

/// Applies `batch`, retrying while the database is away; the last position applied.
async fn apply_until_done(indexer: &Indexer, batch: &Batch) -> Option<i64> {
    let mut wait = Duration::from_millis(100);
    loop {
        match apply_batch(indexer, batch).await {
            Ok(last) => return last,
            Err(error) => {
                warn!(%error, ?wait, "cannot index the journal; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn apply_batch(indexer: &Indexer, batch: &Batch) -> Result<Option<i64>> {
    let rows = batch.rows();
    let Some(last) = rows.last().map(|r| r.pos) else {
        return Ok(None);
    };
    let parsed: Vec<Option<Vec<Incoming<'_>>>> = rows.iter().map(read).collect();
    // Bodies are checked before they are appended. A row that is no transaction even so
    // (written by hand?) goes in whole, as one event the pipeline dead-letters, rather
    // than block the journal.
    let whole: Vec<Option<String>> = rows
        .iter()
        .zip(&parsed)
        .map(|(r, parsed)| {
            parsed.is_none().then(|| {
                warn!(
                    txn_id = r.txn_id,
                    "a journal row is not a transaction; dead-lettered"
                );
                String::from_utf8_lossy(r.body).into_owned()
            })
        })
        .collect();
    let mut events: Vec<Incoming<'_>> = Vec::new();
    for ((r, parsed), whole) in rows.iter().zip(parsed).zip(&whole) {
        match (parsed, whole) {
            (Some(parsed), _) => events.extend(parsed),
            (None, Some(json)) => events.push(Incoming {
                txn_id: r.txn_id,
                json,
            }),
            (None, None) => {}
        }
    }
    let started = Instant::now();
    indexer.apply(&events, Some(last)).await?;
    tracing::debug!(events = events.len(), last, elapsed = ?started.elapsed(), "journal applied");
    Ok(Some(last))
}

/// The events of one journal row: by the places found when it was appended, else by
/// reading the body again. `None` when the body is no transaction.
fn read<'a>(row: &Row<'a>) -> Option<Vec<Incoming<'a>>> {
    let txn_id = row.txn_id;
    if let Some(places) = row.places
        && let Ok(text) = std::str::from_utf8(row.body)
        && let Some(events) = places
            .iter()
            .map(|place| {
                Some(Incoming {
                    txn_id,
                    json: text.get(place.clone())?,
                })
            })
            .collect::<Option<Vec<_>>>()
    {
        return Some(events);
    }
    let pushed = serde_json::from_slice::<PushedBody<'_>>(row.body).ok()?;
    Some(
        pushed
            .events
            .into_iter()
            .map(|raw| Incoming {
                txn_id,
                json: raw.get(),
            })
            .collect(),
    )
}
