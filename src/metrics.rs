//! Prometheus metrics (`prometheus-client`), one registry for the process, served at
//! `GET /metrics` in the text format (and on `METRICS_ADDR` when set). Every metric is
//! named `city_bridge_*`.

use std::{sync::OnceLock, time::Duration};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

/// `type` and `outcome` of a pushed event.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// The event type (or `other` beyond the ones the bridge reads).
    pub r#type: &'static str,
    /// `applied`, `duplicate`, `ignored`, `dead_lettered`, `unmapped_room`, `malformed`.
    pub outcome: &'static str,
}

/// A homeserver call.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// The client-server endpoint, e.g. `message::send_message_event::v3`.
    pub endpoint: String,
    /// The HTTP status, or `network`.
    pub status: String,
}

/// One label: the endpoint.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    /// The client-server endpoint.
    pub endpoint: String,
}

/// One label: an outcome.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// What happened.
    pub outcome: &'static str,
}

/// One label: where something came from.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    /// Where from.
    pub source: &'static str,
}

/// One label: a kind.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// `presence` or `messaging` (WebSockets); `core` or `jetstream` (bus).
    pub kind: &'static str,
}

/// A kind and what happened.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindOutcome {
    /// The kind.
    pub kind: &'static str,
    /// What happened.
    pub outcome: &'static str,
}

/// The version the binary was built from.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    /// The crate version.
    pub version: &'static str,
}

/// Every metric.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Transactions received from Synapse.
    pub transactions: Counter,
    /// Events received, by type and outcome.
    pub events: Family<EventLabels, Counter>,
    /// Time from receiving a transaction to answering it.
    pub ack_seconds: Histogram,
    /// Time from acknowledging a transaction (journal appended) to its events being indexed.
    pub index_lag_seconds: Histogram,
    /// Dead letters recorded.
    pub dead_letters: Counter,
    /// Journal positions no row took, skipped by the indexer.
    pub journal_positions_skipped: Counter,
    /// Messages Synapse never pushed, found by reading rooms back after its recovery.
    pub caught_up_messages: Counter,
    /// Outbox events that could not be published, recorded and skipped.
    pub outbox_dead_letters: Counter,
    /// New messages the relay took, by source: `handed` (as this instance's indexer
    /// wrote them) or `read_back` (from the index).
    pub relay_messages: Family<SourceLabel, Counter>,
    /// Homeserver calls, by endpoint and final status.
    pub homeserver_calls: Family<CallLabels, Counter>,
    /// Retries of homeserver calls, by endpoint.
    pub homeserver_retries: Family<EndpointLabel, Counter>,
    /// Homeserver call latency (all attempts), by endpoint.
    pub homeserver_seconds: Family<EndpointLabel, Histogram>,
    /// Alias queries from Synapse, by outcome.
    pub alias_queries: Family<OutcomeLabel, Counter>,
    /// User queries from Synapse, by outcome.
    pub user_queries: Family<OutcomeLabel, Counter>,
    /// City rooms whose Matrix room is pending (as the reconciler last saw).
    pub rooms_pending: Gauge,
    /// Open WebSocket connections, by kind.
    pub ws_connections: Family<KindLabel, Gauge>,
    /// WebSocket frames, by kind and outcome (`sent`, `dropped`, `resynced`).
    pub ws_frames: Family<KindOutcome, Counter>,
    /// Rooms whose presence the bridge tracks.
    pub presence_rooms: Gauge,
    /// Bus publishes, by kind and outcome (`ok`, `failed`, `dropped`).
    pub bus_publishes: Family<KindOutcome, Counter>,
    /// Events not published by the relay yet.
    pub outbox_lag: Gauge,
}

fn seconds_histogram() -> Histogram {
    // 0.5 ms … ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("city_bridge");
        let metrics = Self {
            transactions: Counter::default(),
            events: Family::default(),
            ack_seconds: seconds_histogram(),
            index_lag_seconds: seconds_histogram(),
            dead_letters: Counter::default(),
            journal_positions_skipped: Counter::default(),
            caught_up_messages: Counter::default(),
            outbox_dead_letters: Counter::default(),
            relay_messages: Family::default(),
            homeserver_calls: Family::default(),
            homeserver_retries: Family::default(),
            homeserver_seconds: Family::new_with_constructor(seconds_histogram),
            alias_queries: Family::default(),
            user_queries: Family::default(),
            rooms_pending: Gauge::default(),
            ws_connections: Family::default(),
            ws_frames: Family::default(),
            presence_rooms: Gauge::default(),
            bus_publishes: Family::default(),
            outbox_lag: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "transactions",
            "Transactions pushed by Synapse",
            metrics.transactions.clone(),
        );
        registry.register(
            "events",
            "Events pushed by Synapse, by type and outcome",
            metrics.events.clone(),
        );
        registry.register(
            "ack_seconds",
            "Time from receiving a transaction to answering it (after the journal append's commit)",
            metrics.ack_seconds.clone(),
        );
        registry.register(
            "index_lag_seconds",
            "Time from acknowledging a transaction to the commit that indexed its events",
            metrics.index_lag_seconds.clone(),
        );
        registry.register(
            "dead_letters",
            "Events recorded as dead letters",
            metrics.dead_letters.clone(),
        );
        registry.register(
            "journal_positions_skipped",
            "Journal positions no row took, skipped by the indexer",
            metrics.journal_positions_skipped.clone(),
        );
        registry.register(
            "caught_up_messages",
            "Messages Synapse never pushed, found by reading the rooms back after its recovery",
            metrics.caught_up_messages.clone(),
        );
        registry.register(
            "outbox_dead_letters",
            "Outbox events that could not be published, recorded and skipped",
            metrics.outbox_dead_letters.clone(),
        );
        registry.register(
            "relay_messages",
            "New messages the relay took: handed by this instance's indexer, or read back",
            metrics.relay_messages.clone(),
        );
        registry.register(
            "homeserver_calls",
            "Calls to the homeserver, by endpoint and final status",
            metrics.homeserver_calls.clone(),
        );
        registry.register(
            "homeserver_retries",
            "Retried attempts of homeserver calls",
            metrics.homeserver_retries.clone(),
        );
        registry.register(
            "homeserver_seconds",
            "Homeserver call latency, retries included",
            metrics.homeserver_seconds.clone(),
        );
        registry.register(
            "alias_queries",
            "Alias queries from Synapse, by outcome",
            metrics.alias_queries.clone(),
        );
        registry.register(
            "user_queries",
            "User queries from Synapse, by outcome",
            metrics.user_queries.clone(),
        );
        registry.register(
            "rooms_pending",
            "City rooms whose Matrix room is not created yet",
            metrics.rooms_pending.clone(),
        );
        registry.register(
            "ws_connections",
            "Open WebSocket connections",
            metrics.ws_connections.clone(),
        );
        registry.register(
            "ws_frames",
            "WebSocket frames, by outcome",
            metrics.ws_frames.clone(),
        );
        registry.register(
            "presence_rooms",
            "Rooms whose presence is tracked",
            metrics.presence_rooms.clone(),
        );
        registry.register(
            "bus_publishes",
            "Publishes to the bus, by kind and outcome",
            metrics.bus_publishes.clone(),
        );
        registry.register(
            "outbox_lag",
            "Events written but not published yet",
            metrics.outbox_lag.clone(),
        );
        let build: Family<BuildLabels, Gauge> = Family::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "The running build", build);
        Self {
            registry,
            ..metrics
        }
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// Counts one event.
    pub fn event(&self, r#type: &str, outcome: &'static str) {
        self.events
            .get_or_create(&EventLabels {
                r#type: known_type(r#type),
                outcome,
            })
            .inc();
    }

    /// Records a finished homeserver call.
    pub fn call(&self, endpoint: &str, status: String, took: Duration, retries: u32) {
        let label = EndpointLabel {
            endpoint: endpoint.to_owned(),
        };
        self.homeserver_calls
            .get_or_create(&CallLabels {
                endpoint: endpoint.to_owned(),
                status,
            })
            .inc();
        if retries > 0 {
            self.homeserver_retries
                .get_or_create(&label)
                .inc_by(u64::from(retries));
        }
        self.homeserver_seconds
            .get_or_create(&label)
            .observe(took.as_secs_f64());
    }

    /// Counts one WebSocket frame.
    pub fn frame(&self, kind: &'static str, outcome: &'static str) {
        self.frames(kind, outcome, 1);
    }

    /// Counts `n` WebSocket frames with one outcome (none: nothing is counted).
    pub fn frames(&self, kind: &'static str, outcome: &'static str, n: u64) {
        if n > 0 {
            self.ws_frames
                .get_or_create(&KindOutcome { kind, outcome })
                .inc_by(n);
        }
    }

    /// Counts one bus publish.
    pub fn publish(&self, kind: &'static str, outcome: &'static str) {
        self.publishes(kind, outcome, 1);
    }

    /// Counts `n` publishes with one outcome.
    pub fn publishes(&self, kind: &'static str, outcome: &'static str, n: usize) {
        self.bus_publishes
            .get_or_create(&KindOutcome { kind, outcome })
            .inc_by(u64::try_from(n).unwrap_or(u64::MAX));
    }
}

/// The event types label values are kept to (bounded cardinality).
fn known_type(t: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "m.room.message",
        "m.room.encrypted",
        "m.reaction",
        "m.room.redaction",
        "m.room.member",
        "m.room.name",
        "m.room.topic",
        "m.room.canonical_alias",
        "m.room.tombstone",
        "m.room.encryption",
        "m.room.create",
        "m.room.power_levels",
        "m.room.join_rules",
        "m.room.history_visibility",
    ];
    KNOWN.iter().find(|k| **k == t).copied().unwrap_or("other")
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// A gauge held up while a value lives: one WebSocket connection.
#[derive(Debug)]
pub struct Connected(&'static str);

impl Connected {
    /// Counts a connection of `kind` until dropped.
    pub fn new(kind: &'static str) -> Self {
        metrics()
            .ws_connections
            .get_or_create(&KindLabel { kind })
            .inc();
        Self(kind)
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        metrics()
            .ws_connections
            .get_or_create(&KindLabel { kind: self.0 })
            .dec();
    }
}

/// # `GET /metrics`
pub async fn serve() -> impl axum::response::IntoResponse {
    (
        [(
            http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics().encode(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_every_metric() {
        let m = metrics();
        m.transactions.inc();
        m.event("m.room.message", "applied");
        m.event("com.example.custom", "ignored");
        let text = m.encode();
        for name in [
            "city_bridge_transactions_total",
            "city_bridge_events_total{type=\"m.room.message\",outcome=\"applied\"}",
            "city_bridge_events_total{type=\"other\",outcome=\"ignored\"}",
            "city_bridge_build_info{version=",
            "city_bridge_ack_seconds_bucket",
            "# EOF",
        ] {
            assert!(text.contains(name), "{name} missing in:\n{text}");
        }
    }
}
