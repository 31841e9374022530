//! The `city-bridge` command: `serve`, `generate-registration` or
//! `generate-puppet-registration`.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use ruma::ServerName;
use tokio::net::TcpListener;

use city_bridge::{app, config};

#[derive(Parser)]
#[command(
    name = "city-bridge",
    version,
    about = "The Matrix application service of DAARION.city"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (configured by the environment; see README).
    Serve {
        /// `all` (default: the appservice, the outbox relay and the API) or `api` (the
        /// REST API and WebSockets only); overrides BRIDGE_ROLE.
        #[arg(long)]
        role: Option<String>,
    },
    /// Print a registration.yaml with fresh random tokens.
    GenerateRegistration {
        /// The homeserver's server name.
        #[arg(long)]
        server_name: String,
        /// The URL at which Synapse reaches the bridge.
        #[arg(long)]
        url: String,
    },
    /// Look at, replay or delete the events that could not be applied.
    DeadLetters {
        #[command(subcommand)]
        action: DeadLetterAction,
    },
    /// Check the homeserver's configuration for this bridge (run it while the bridge runs:
    /// Synapse must reach it for the ping). Exit code 1 when something needs fixing.
    Check,
    /// Print a user JWT signed with $JWT_SECRET, for development and trying the API; refused
    /// unless CITY_BRIDGE_DEV=1 is set, so a production environment never mints tokens.
    DevToken {
        /// The subject, e.g. `user:alice`.
        #[arg(long)]
        sub: String,
        /// Give it the `admin` role.
        #[arg(long)]
        admin: bool,
        /// Hours until it expires.
        #[arg(long, default_value_t = 24)]
        hours: i64,
    },
    /// Print the puppet registration (sending as the homeserver's users) with fresh tokens.
    GeneratePuppetRegistration {
        /// The homeserver's server name.
        #[arg(long)]
        server_name: String,
    },
}

#[derive(Subcommand)]
enum DeadLetterAction {
    /// The newest dead letters, one line each.
    List {
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// One dead letter, whole.
    Show {
        /// Its id.
        id: i64,
    },
    /// Apply dead letters again (after a fix), through the running bridge, in turn with
    /// Synapse's transactions; those that apply now are deleted. Idempotent.
    Replay {
        /// These ids (or --all).
        ids: Vec<i64>,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
        /// The running bridge (default: http://127.0.0.1:<port of LISTEN_ADDR>).
        #[arg(long)]
        bridge_url: Option<String>,
    },
    /// Delete dead letters.
    Purge {
        /// These ids.
        ids: Vec<i64>,
        /// Or all older than this many days.
        #[arg(long)]
        older_than_days: Option<u32>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::GenerateRegistration { server_name, url } => {
            let server_name = ServerName::parse(&server_name).context("--server-name")?;
            print!("{}", config::generate_registration(&server_name, &url));
            Ok(())
        }
        Command::GeneratePuppetRegistration { server_name } => {
            let server_name = ServerName::parse(&server_name).context("--server-name")?;
            print!("{}", config::generate_puppet_registration(&server_name));
            Ok(())
        }
        Command::DevToken { sub, admin, hours } => {
            anyhow::ensure!(
                std::env::var("CITY_BRIDGE_DEV").is_ok_and(|v| v == "1"),
                "dev-token is for development only: set CITY_BRIDGE_DEV=1 to sign a token"
            );
            let secret = std::env::var("JWT_SECRET")
                .ok()
                .filter(|s| !s.is_empty())
                .context("JWT_SECRET must be set: the token is signed with it")?;
            let roles: &[&str] = if admin { &["admin"] } else { &[] };
            println!(
                "{}",
                city_bridge::auth::sign_jwt(&sub, roles, chrono::Duration::hours(hours), &secret)?
            );
            Ok(())
        }
        Command::Serve { role } => serve(role).await,
        Command::Check => check().await,
        Command::DeadLetters { action } => dead_letters(action).await,
    }
}

async fn serve(role: Option<String>) -> anyhow::Result<()> {
    city_bridge::telemetry::init();
    let config = match config::Config::from_lookup(|name| match (name, &role) {
        ("BRIDGE_ROLE", Some(role)) => Some(role.clone()),
        _ => std::env::var(name).ok(),
    }) {
        Ok(config) => config,
        Err(e) => {
            // One line saying what to fix, not a backtrace.
            eprintln!("city-bridge: {e}");
            std::process::exit(2);
        }
    };
    let listener = TcpListener::bind(config.listen_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen_addr))?;
    let state = app::AppState::new(config)
        .await
        .context("start-up failed")?;
    app::run(listener, state, shutdown_signal()).await?;
    Ok(())
}

fn load_config() -> config::Config {
    match config::Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("city-bridge: {e}");
            std::process::exit(2);
        }
    }
}

async fn dead_letters(action: DeadLetterAction) -> anyhow::Result<()> {
    let config = load_config();
    let store = city_bridge::store::Store::connect(config.database_url.expose())
        .await
        .context("the database")?;
    match action {
        DeadLetterAction::List { limit } => {
            for d in store.stored_dead_letters(None, limit).await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    d.id,
                    d.recorded_at.format("%Y-%m-%d %H:%M:%S"),
                    d.event_type.as_deref().unwrap_or("-"),
                    d.event_id.as_deref().unwrap_or("-"),
                    d.reason
                );
            }
        }
        DeadLetterAction::Show { id } => {
            let found = store.stored_dead_letters(Some(&[id]), 1).await?;
            let letter = found.first().context("no such dead letter")?;
            println!("{}", serde_json::to_string_pretty(letter)?);
        }
        DeadLetterAction::Purge {
            ids,
            older_than_days,
        } => {
            anyhow::ensure!(
                !ids.is_empty() || older_than_days.is_some(),
                "name ids, or --older-than-days"
            );
            let ids = (!ids.is_empty()).then_some(ids);
            let deleted = store
                .purge_dead_letters(ids.as_deref(), older_than_days)
                .await?;
            println!("{deleted} deleted");
        }
        DeadLetterAction::Replay {
            ids,
            all,
            bridge_url,
        } => {
            anyhow::ensure!(all == ids.is_empty(), "name ids, or --all (not both)");
            let url = bridge_url
                .unwrap_or_else(|| format!("http://127.0.0.1:{}", config.listen_addr.port()));
            let body = if all {
                serde_json::json!({"all": true})
            } else {
                serde_json::json!({"ids": ids})
            };
            let response = reqwest::Client::new()
                .post(format!("{url}/internal/dead-letters/replay"))
                .bearer_auth(config.gateway_secret.expose())
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .with_context(|| format!("the bridge at {url}"))?;
            let status = response.status();
            let text = response.text().await?;
            anyhow::ensure!(status.is_success(), "the bridge answered {status}: {text}");
            println!("{text}");
        }
    }
    Ok(())
}

async fn check() -> anyhow::Result<()> {
    let config = match config::Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("city-bridge: {e}");
            std::process::exit(2);
        }
    };
    let store = city_bridge::store::Store::connect(config.database_url.expose())
        .await
        .map_err(|e| {
            eprintln!(
                "city-bridge: the database is not reachable ({e}); skipping the directory probe"
            )
        })
        .ok();
    let findings = city_bridge::check::run(&config, store.as_ref()).await;
    for finding in &findings {
        let mark = if finding.ok { "ok  " } else { "FAIL" };
        println!("{mark} {}: {}", finding.check, finding.detail);
        if let Some(fix) = &finding.fix {
            for line in fix.lines() {
                println!("       {line}");
            }
        }
    }
    if findings.iter().all(|f| f.ok) {
        Ok(())
    } else {
        std::process::exit(1)
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
