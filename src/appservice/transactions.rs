//! Pushed transactions: handed to the ingest pipeline one at a time, answered only once
//! committed.

use axum::extract::State;
use ruma::{
    api::appservice::event::push_events::{self, v1::EphemeralData},
    serde::Raw,
};
use tracing::debug;

use super::{Ruma, RumaResponse};
use crate::{app::AppState, error::MatrixError, ingest};

/// # `PUT /_matrix/app/v1/transactions/{txnId}`
///
/// 200 means durable: the answer comes after the commit, so a crash before it makes
/// Synapse resend, and the event id keeps the resend from adding rows.
pub async fn push_events(
    State(state): State<AppState>,
    Ruma { request, body }: Ruma<push_events::v1::Request>,
) -> Result<RumaResponse<push_events::v1::Response>, MatrixError> {
    let received = std::time::Instant::now();
    let metrics = crate::metrics::metrics();
    metrics.transactions.inc();
    // Synapse sends one transaction at a time; a resend racing a slow first attempt must
    // still be applied after it, in order.
    let _in_order = state.ingest.lock().await;
    let applied = ingest::apply(&state, request.txn_id.as_str(), &request.events).await?;
    let ephemeral = if request.ephemeral.is_empty() {
        legacy_ephemeral(&body)
    } else {
        request.ephemeral
    };
    if !ephemeral.is_empty() {
        let typing = state.live.apply_ephemeral(&ephemeral, &state.directory);
        for (channel, user_ids) in typing {
            crate::messaging::typing(&state, channel.as_str(), &user_ids);
        }
    }
    debug!(txn_id = %request.txn_id, events = request.events.len(), ?applied, "transaction applied");
    metrics
        .ack_seconds
        .observe(received.elapsed().as_secs_f64());
    Ok(RumaResponse(push_events::v1::Response::new()))
}

/// Ephemeral data under the legacy key, read only when the stable `ephemeral` key is
/// empty (never both), and only parsed when the key is present at all.
fn legacy_ephemeral(body: &[u8]) -> Vec<Raw<EphemeralData>> {
    const KEY: &[u8] = b"\"de.sorunome.msc2409.ephemeral\"";
    if !body.windows(KEY.len()).any(|w| w == KEY) {
        return Vec::new();
    }
    #[derive(serde::Deserialize)]
    struct Legacy {
        #[serde(rename = "de.sorunome.msc2409.ephemeral", default)]
        ephemeral: Vec<Raw<EphemeralData>>,
    }
    serde_json::from_slice::<Legacy>(body)
        .map(|l| l.ephemeral)
        .unwrap_or_default()
}
