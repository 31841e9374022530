//! The `city-bridge` command: `serve` or `generate-registration`.

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
    Serve,
    /// Print a registration.yaml with fresh random tokens.
    GenerateRegistration {
        /// The homeserver's server name.
        #[arg(long)]
        server_name: String,
        /// The URL at which Synapse reaches the bridge.
        #[arg(long)]
        url: String,
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
        Command::Serve => serve().await,
    }
}

async fn serve() -> anyhow::Result<()> {
    city_bridge::telemetry::init();
    let config = match config::Config::from_env() {
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
