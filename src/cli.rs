//! Command line: `avatar-edge serve` (and the operators' tools). Start-up
//! errors are `anyhow` here and nowhere else.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::{Config, Settings};
use crate::http::{auth::Tokens, App};
use crate::metrics::Metrics;
use crate::service::Service;
use crate::store::{self, embedded::EmbeddedStore};

/// avatar-edge: the HTTP origin for user avatars.
#[derive(Debug, Parser)]
#[command(name = "avatar-edge", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server. Every option can also come from the environment
    /// (AVATAR_EDGE_*) or a TOML file (--config); precedence CLI > env > file >
    /// defaults. The admin token comes from AVATAR_EDGE_TOKEN, or is generated
    /// into <data>/admin.token on first start.
    Serve {
        /// TOML file with the same settings (snake_case names, e.g. cache_mb = 512)
        #[arg(long, env = "AVATAR_EDGE_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: Settings,
    },
}

/// Parse arguments and run.
pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Serve { config, settings } => {
            let file = match &config {
                Some(p) => Settings::from_file(p)?,
                None => Settings::default(),
            };
            let token = std::env::var("AVATAR_EDGE_TOKEN").ok();
            let config = Config::resolve(settings.or(file), token)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(serve(config))
        }
    }
}

/// Build the application from a config (also used by tests).
pub fn build_app(config: Config) -> anyhow::Result<(Arc<App>, String)> {
    let store = EmbeddedStore::open(&config.data_dir)
        .with_context(|| format!("opening the data directory {}", config.data_dir.display()))?;
    let mut tokens = Tokens::default();
    let token = match &config.token {
        Some(t) => t.clone(),
        None => {
            let (t, path, created) = store::admin_token(&config.data_dir)
                .context("reading or creating the admin token")?;
            if created {
                tracing::info!(path = %path.display(), "generated an admin token (mode 0600); use it as `Authorization: Bearer <token>`");
            } else {
                tracing::info!(path = %path.display(), "using the admin token from the data directory");
            }
            t
        }
    };
    tokens.add("admin", &token);
    let service = Service::new(Arc::new(config), Arc::new(store), Arc::new(Metrics::new()));
    Ok((Arc::new(App::new(service, tokens)), token))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listen = config.listen;
    let (app, _) = build_app(config)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    tracing::info!(address = %listener.local_addr()?, "avatar-edge listening");
    crate::http::server::serve(app, listener, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}
