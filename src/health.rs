//! Liveness and readiness. `/healthz` answers from the last check (never a database or
//! Synapse call per request); `/readyz` says whether this instance should get traffic: the
//! migrations ran (they run before the server starts), the database answers, and — on the
//! instance Synapse pushes to — the registration's ping round trip succeeded once.

use std::{
    sync::{
        RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{Json, extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::{app::AppState, config::Role, matrix::RetryPolicy};

/// How often the checks run.
const EVERY: Duration = Duration::from_secs(5);
/// How long one check may take.
const TIMEOUT: Duration = Duration::from_secs(3);

/// The last checks.
#[derive(Debug, Default)]
pub struct Health {
    last: RwLock<Option<Checked>>,
    pinged: AtomicBool,
    findings: RwLock<Vec<crate::check::Finding>>,
}

#[derive(Debug, Clone, Copy)]
struct Checked {
    database: bool,
    synapse: bool,
    at: DateTime<Utc>,
}

impl Health {
    /// Whether the appservice ping round trip succeeded once.
    pub fn pinged(&self) -> bool {
        self.pinged.load(Ordering::Relaxed)
    }

    fn record(&self, checked: Checked) {
        *self.last.write().expect("not poisoned") = Some(checked);
    }

    fn last(&self) -> Option<Checked> {
        *self.last.read().expect("not poisoned")
    }
}

/// Checks the homeserver's configuration once the bridge listens (the ping needs it) and
/// logs what is wrong, with the fix; `/readyz` shows the findings.
pub async fn check_homeserver(state: AppState) {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let findings = crate::check::run(&state.config, Some(&state.store)).await;
    for finding in &findings {
        if finding.ok {
            info!(check = finding.check, "{}", finding.detail);
        } else {
            warn!(
                check = finding.check,
                fix = finding.fix.as_deref().unwrap_or_default(),
                "{}",
                finding.detail
            );
        }
    }
    *state.health.findings.write().expect("not poisoned") = findings;
}

/// Checks the database and the homeserver now and every few seconds; until the
/// appservice ping has succeeded once (instance of the registration only), pings too:
/// Synapse answers by calling the bridge back, and retries its queued transactions.
pub async fn keep_checking(state: AppState) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let database = tokio::time::timeout(TIMEOUT, state.store.ping())
            .await
            .unwrap_or(false);
        let homeserver = state.homeserver.with_retry(RetryPolicy::ONCE);
        let synapse = matches!(
            tokio::time::timeout(TIMEOUT, homeserver.whoami()).await,
            Ok(Ok(_))
        );
        state.health.record(Checked {
            database,
            synapse,
            at: Utc::now(),
        });
        if state.config.role == Role::All && synapse && !state.health.pinged() {
            match tokio::time::timeout(
                Duration::from_secs(10),
                homeserver.ping(&state.config.registration.id),
            )
            .await
            {
                Ok(Ok(rtt)) => {
                    info!(?rtt, "homeserver ping answered");
                    state.health.pinged.store(true, Ordering::Relaxed);
                }
                Ok(Err(error)) => warn!(%error, "homeserver ping failed; retrying"),
                Err(_) => warn!("homeserver ping timed out; retrying"),
            }
        }
    }
}

fn word(ok: Option<bool>, yes: &'static str, no: &'static str) -> &'static str {
    match ok {
        Some(true) => yes,
        Some(false) => no,
        None => "unknown",
    }
}

/// # `GET /healthz`
///
/// Liveness: always 200 while the process serves, with the last checks.
pub async fn healthz(State(state): State<AppState>) -> Json<Value> {
    let last = state.health.last();
    Json(json!({
        "status": "ok",
        "synapse": word(last.map(|c| c.synapse), "connected", "unreachable"),
        "database": word(last.map(|c| c.database), "connected", "unreachable"),
        "checked_at": last.map(|c| c.at),
    }))
}

/// # `GET /readyz`
///
/// 200 when ready, 503 otherwise, with the reasons.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let last = state.health.last();
    let database_ok = last.is_some_and(|c| c.database);
    let ping = match state.config.role {
        Role::Api => "not needed (API-only instance)",
        Role::All if state.health.pinged() => "ok",
        Role::All => "waiting: Synapse has not answered the appservice ping yet",
    };
    let ready = database_ok && (state.config.role == Role::Api || state.health.pinged());
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if ready { "ready" } else { "not_ready" },
            "checks": {
                "migrations": "applied",
                "database": word(last.map(|c| c.database), "ok", "unreachable"),
                "appservice_ping": ping,
            },
            "checked_at": last.map(|c| c.at),
            "homeserver_configuration": *state.health.findings.read().expect("not poisoned"),
        })),
    )
}
