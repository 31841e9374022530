//! Postgres via sqlx — the only place SQL lives.

mod agents;
mod journal;
mod messages;
pub mod model;
mod outbox;
mod pins;
mod reads;
mod room_state;
mod rooms;
pub mod search;
mod spaces;
mod transactions;

use std::time::Duration;

use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

pub use self::{
    agents::Agent,
    journal::JournalEntry,
    messages::{
        ChannelView, Cursor, MAX_REACTION_KEYS, MemberRow, MessageView, Page, ReactionCount,
        SearchHit, channel_id, searchable,
    },
    model::Effects,
    model::MAX_PINS,
    outbox::{Handed, OutboxRow, Pending},
    pins::Pins,
    reads::{ChannelSummary, LastMessage, UNREAD_CAP, Unread},
    rooms::{CityRoom, NewRoom, Recorded, RoomUpdate, UnsettledCreator},
    spaces::SpaceMember,
    transactions::{Applied, Batch, StoredDeadLetter},
};

/// Connections for searches: they never take one the journal's appends need.
const SEARCH_CONNECTIONS: u32 = 2;
/// How long a search may run, and wait for a connection, before it is answered 503.
const SEARCH_TIMEOUT: Duration = Duration::from_secs(3);

/// The database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
    /// Searches' own small pool, with a statement timeout.
    search: PgPool,
}

impl Store {
    /// Connects to `url` and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Self, sqlx::Error> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        sqlx::migrate!().run(&pool).await?;
        let options: PgConnectOptions = url.parse()?;
        let search = PgPoolOptions::new()
            .max_connections(SEARCH_CONNECTIONS)
            .acquire_timeout(SEARCH_TIMEOUT)
            .connect_lazy_with(options.options([(
                "statement_timeout",
                format!("{}ms", SEARCH_TIMEOUT.as_millis()),
            )]));
        Ok(Self { pool, search })
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }
}

/// Whether `error` is about the data of one statement (bad value, constraint), as opposed to
/// the database being unreachable — the former is the event's fault, the latter nobody's.
pub(crate) fn is_data_error(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(e) => e
            .code()
            .is_some_and(|c| c.starts_with("22") || c.starts_with("23")),
        _ => false,
    }
}
