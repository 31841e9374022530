//! The `city-bridge` command: `serve`, `check`, `dead-letters`, and the generators of
//! registrations, configuration and development tokens.

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
    /// A YAML configuration file (see `generate-config`); environment variables that are
    /// set override it.
    #[arg(long, global = true, env = "CITY_BRIDGE_CONFIG", value_name = "FILE")]
    config: Option<std::path::PathBuf>,
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
    /// Print a commented example configuration file, for `--config`.
    GenerateConfig,
    /// Print the puppet registration (sending as the homeserver's users) with fresh tokens.
    GeneratePuppetRegistration {
        /// The homeserver's server name.
        #[arg(long)]
        server_name: String,
    },
    /// GET the bridge's liveness endpoint: exit code 0 on a 2xx within 5 s, else 1 (the
    /// container image's HEALTHCHECK: it has no curl).
    Healthcheck {
        /// The endpoint to ask.
        #[arg(long, default_value = "http://127.0.0.1:7025/healthz")]
        url: String,
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
    let cli = Cli::parse();
    let file = cli.config.as_deref();
    match cli.command {
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
        Command::GenerateConfig => {
            print!("{}", config::generate_config());
            Ok(())
        }
        Command::Serve { role } => serve(load_config(file, role)).await,
        Command::Check => check(load_config(file, None)).await,
        Command::DeadLetters { action } => dead_letters(load_config(file, None), action).await,
        Command::Healthcheck { url } => healthcheck(&url).await,
    }
}

/// Prints the answer on success (Docker keeps it in the container's health log), the
/// reason on stderr and exit code 1 otherwise.
async fn healthcheck(url: &str) -> anyhow::Result<()> {
    let answer = async {
        let response = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            .build()?
            .get(url)
            .send()
            .await?;
        let status = response.status();
        let body = response.text().await?;
        anyhow::ensure!(status.is_success(), "answered {status}: {body}");
        Ok(body)
    };
    match answer.await {
        Ok(body) => {
            println!("{body}");
            Ok(())
        }
        Err(e) => {
            eprintln!("city-bridge: {url}: {e:#}");
            std::process::exit(1)
        }
    }
}

async fn serve(config: config::Config) -> anyhow::Result<()> {
    city_bridge::telemetry::init();
    let listener = TcpListener::bind(config.listen_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen_addr))?;
    let state = app::AppState::new(config)
        .await
        .context("start-up failed")?;
    app::run(listener, state, shutdown_signal()).await?;
    Ok(())
}

/// The configuration from the environment over the `--config` file, with `serve --role`
/// over both; on an error, one line saying what to fix (not a backtrace) and exit code 2.
fn load_config(file: Option<&std::path::Path>, role: Option<String>) -> config::Config {
    let loaded = file
        .map(config::ConfigFile::load)
        .transpose()
        .and_then(|file| {
            config::Config::from_env_and_file(&file.unwrap_or_default(), role.as_deref())
        });
    match loaded {
        Ok(config) => config,
        Err(e) => {
            eprintln!("city-bridge: {e}");
            std::process::exit(2);
        }
    }
}

async fn dead_letters(config: config::Config, action: DeadLetterAction) -> anyhow::Result<()> {
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
                    d.letter.event_type.as_deref().unwrap_or("-"),
                    d.letter.event_id.as_deref().unwrap_or("-"),
                    d.letter.reason
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
                .timeout(std::time::Duration::from_secs(120))
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

async fn check(config: config::Config) -> anyhow::Result<()> {
    let store = city_bridge::store::Store::connect(config.database_url.expose())
        .await
        .map_err(|e| {
            eprintln!(
                "city-bridge: the database is not reachable ({e}); the directory is probed with a room of its own"
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
