//! Pushed transactions: checked, appended to the ingest journal and answered; the
//! journal's indexer applies them to the index in order (`ingest::journal`).

use axum::extract::{Path, State};
use bytes::Bytes;
use http::StatusCode;
use tracing::debug;

use super::extract::Authenticated;
use crate::{app::AppState, error::MatrixError, ingest::journal::PushedBody};

/// # `PUT /_matrix/app/v1/transactions/{txnId}`
///
/// 200 means durable: the answer comes after the journal row's commit, so a crash before
/// it makes Synapse resend, and the event ids keep the resend from adding rows. The body
/// is read once, by borrowing: the event list for the journal, ephemeral data for live
/// presence (never journaled: stale after a restart anyway).
pub async fn push_events(
    State(state): State<AppState>,
    Path(txn_id): Path<String>,
    _auth: Authenticated,
    body: super::extract::RawBody,
) -> Result<axum::Json<serde_json::Map<String, serde_json::Value>>, MatrixError> {
    let received = std::time::Instant::now();
    let metrics = crate::metrics::metrics();
    metrics.transactions.inc();
    let body = body.0;
    // Only the receiving instance routes Synapse's pushes here.
    let Some(receiving) = &state.receiving else {
        return Err(MatrixError::unrecognized());
    };
    // On a refusal Synapse queues this and what follows, and recovers.
    let pushed = read(&body).inspect_err(|_| receiving.catch_up.refused())?;
    if !pushed.events.is_empty() {
        receiving
            .journal
            .append(&state.store, &txn_id, &body, &pushed.events)
            .await
            .inspect_err(|_| receiving.catch_up.refused())?;
    }
    // Events Synapse held back tell that it is recovering from an outage of the bridge.
    let first = pushed.events.first().and_then(|event| Sent::of(event));
    receiving.catch_up.accepted(
        first
            .as_ref()
            .map(|sent| (sent.sender.as_ref(), sent.origin_server_ts)),
    );
    let ephemeral = if pushed.ephemeral.is_empty() {
        pushed.legacy_ephemeral
    } else {
        pushed.ephemeral
    };
    if !ephemeral.is_empty() {
        let typing = state.live.apply_ephemeral(&ephemeral, &state.directory);
        for (channel, user_ids) in typing {
            crate::messaging::typing(&state.bus, channel.as_str(), &user_ids);
        }
        let receipts =
            crate::messaging::receipts(&ephemeral, &state.directory, &state.config.server_name);
        if !receipts.is_empty() {
            // Off the acknowledgement's path: a read position is live state, not history.
            let (store, bus) = (state.store.clone(), state.bus.clone());
            let indexed = receiving
                .journal
                .until_indexed(crate::messaging::RECEIPT_WAITS_FOR_INDEX);
            state.workers.spawn("read receipts", async move {
                indexed.await;
                for receipt in receipts {
                    crate::messaging::record_receipt(&store, &bus, &receipt).await;
                }
            });
        }
    }
    debug!(%txn_id, events = pushed.events.len(), "transaction journaled");
    metrics
        .ack_seconds
        .observe(received.elapsed().as_secs_f64());
    Ok(axum::Json(serde_json::Map::new()))
}

/// Who sent an event, and when (milliseconds since the Unix epoch).
#[derive(serde::Deserialize)]
struct Sent<'a> {
    #[serde(borrow)]
    sender: std::borrow::Cow<'a, str>,
    origin_server_ts: u64,
}

impl<'a> Sent<'a> {
    fn of(event: &'a serde_json::value::RawValue) -> Option<Self> {
        serde_json::from_str(event.get()).ok()
    }
}

fn read(body: &Bytes) -> Result<PushedBody<'_>, MatrixError> {
    serde_json::from_slice(body).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            MatrixError::new(StatusCode::BAD_REQUEST, "M_NOT_JSON", "Body is not JSON")
        } else {
            MatrixError::new(StatusCode::BAD_REQUEST, "M_BAD_JSON", e.to_string())
        }
    })
}
