//! city-bridge: the Matrix application service of DAARION.city.

pub mod agents;
pub mod api;
/// The application: state, router, `run`.
pub mod app;
pub mod appservice;
pub mod auth;
pub mod bus;
pub mod check;
pub mod config;
pub mod domain;
pub mod error;
pub mod health;
pub mod ingest;
pub mod matrix;
pub mod messaging;
pub mod metrics;
pub mod outbox;
pub mod presence;
pub mod rooms;
pub mod secret;
pub mod store;
pub mod telemetry;
pub mod web;
pub mod websocket;
pub mod workers;

pub use error::{Error, Result};
