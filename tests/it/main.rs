//! Integration tests: the whole bridge against a real Synapse and a real Postgres, started
//! by `scripts/test.sh`. Synapse pushes to one registered address, so the tests that run a
//! bridge take turns (see `support::serial`).

mod agents;
mod appservice_api;
mod browser;
mod check;
mod city_api;
mod concurrency;
mod crash;
mod database_outage;
mod dead_letters;
mod fuzz;
mod healthcheck;
mod ingest;
mod journal_gaps;
mod media;
mod members_pins;
mod messaging_flow;
mod messaging_rules;
mod metrics;
mod outbox;
mod presence;
mod recovery;
mod rights;
mod rooms;
mod search;
mod slow_clients;
mod socket_rights;
mod space;
mod support;
mod unread;
