//! The reconciler: creates (or adopts) the Matrix rooms of city rooms left pending —
//! stored while the homeserver was unavailable, or whose creation was cut off before it
//! was recorded — and keeps the city's Space in step with the rooms.

use std::time::Duration;

use tracing::{debug, info, warn};

use super::Rooms;
use crate::messaging::Messenger;

/// Runs until the bridge shuts down (it is spawned through [`crate::workers::Workers`]),
/// with exponential backoff while the homeserver fails. Woken at once by
/// `rooms.reconciler.notify_one()`. Creators are settled through `messenger`.
pub async fn reconcile(rooms: Rooms, messenger: Messenger) {
    const MIN: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(10);
    let mut delay = MIN;
    loop {
        let pending = match rooms.store.rooms_without_matrix(true).await {
            Ok(pending) => pending,
            Err(e) => {
                warn!(error = %e, "reconciler cannot read pending rooms");
                Vec::new()
            }
        };
        debug!(pending = pending.len(), "reconciling pending Matrix rooms");
        crate::metrics::metrics()
            .rooms_pending
            .set(i64::try_from(pending.len()).unwrap_or(i64::MAX));
        let mut failed = false;
        for room in &pending {
            match rooms.ensure_matrix_room(&room.slug).await {
                Ok(ensured) => info!(slug = %room.slug, ?ensured, "pending Matrix room reconciled"),
                Err(e) => {
                    warn!(slug = %room.slug, error = %e, "pending Matrix room still failing");
                    failed = true;
                }
            }
        }
        // Rooms mapped, archived or restored meanwhile: listed in (or withdrawn from)
        // their Space.
        match rooms.catch_up_spaces().await {
            Ok(true) => {}
            Ok(false) => failed = true,
            Err(e) => {
                warn!(error = %e, "cannot bring the city Space in step yet");
                failed = true;
            }
        }
        // Channels created meanwhile through the API: their creators become their admins.
        if let Err(e) = crate::messaging::settle_creators(&messenger, None).await {
            warn!(error = %e, "cannot settle the creators of new channels yet");
            failed = true;
        }
        delay = if failed { (delay * 2).min(MAX) } else { MIN };
        let wait = if failed { delay } else { MAX };
        tokio::select! {
            () = rooms.reconciler.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}
