//! Command line: `avatar-edge serve` (and the operators' tools). Start-up
//! errors are `anyhow` here and nowhere else.

// Doc comments here double as `--help` text, where <placeholders> read naturally.
#![allow(rustdoc::invalid_html_tags)]

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::{Config, Settings};
use crate::http::{auth::Tokens, App};
use crate::metrics::Metrics;
use crate::service::Service;
use crate::store::{self, embedded::EmbeddedStore};

mod fallback;
mod render;
use fallback::{import_from_upstream, with_fallback};
pub use render::CONTACT_SHEET_EMAILS;
use render::{contact_sheet, render};

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
    /// Bulk-import a directory of files named <email-or-hash>.<ext> into the
    /// data directory (run it while the server is stopped: the index is
    /// single-process), or with --from-upstream adopt the avatars of a list
    /// of hashes from an upstream service. Idempotent; safe to re-run after an
    /// interruption.
    Import {
        /// Directory holding the avatars (not with --from-upstream)
        #[arg(
            required_unless_present = "from_upstream",
            conflicts_with = "from_upstream"
        )]
        dir: Option<PathBuf>,
        /// TOML file with the server settings (limits, data directory)
        #[arg(long, env = "AVATAR_EDGE_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: Settings,
        // --- Migration proxy (issue 17): adopt avatars from an upstream. ---
        /// Adopt the avatars of --hashes from this Gravatar-compatible base URL
        /// (e.g. `https://gravatar.example/avatar/`) as the identities' own;
        /// identities with a local record are skipped, so a re-run resumes
        #[arg(long, requires = "hashes")]
        from_upstream: Option<String>,
        /// File of identity hashes (32 or 64 hex), one a line, for --from-upstream
        #[arg(long, requires = "from_upstream")]
        hashes: Option<PathBuf>,
        /// Upstream fetches in flight at once, for --from-upstream
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
        concurrency: u16,
    },
    /// Render one generated default to a file (format from the extension:
    /// .png, .jpg, .webp, .avif).
    Render {
        /// identicon, retro, monsterid, wavatar, robohash, mp, blank, initials, color
        #[arg(long)]
        style: String,
        /// Identity hash (32 or 64 hex) or any text used as the seed
        #[arg(long)]
        key: String,
        /// Side in pixels (1-2048)
        #[arg(short = 's', long = "size", default_value_t = 80)]
        size: u32,
        /// Letters for the initials style
        #[arg(long)]
        initials: Option<String>,
        /// Output file
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
    /// Write the contact sheet of every generated style (docs/styles.png).
    ContactSheet {
        /// Output PNG file
        #[arg(short = 'o', long = "output", default_value = "docs/styles.png")]
        output: PathBuf,
    },
    /// Take a consistent online backup of a running server (embedded store:
    /// index and every blob it references, plus the admin token and signing
    /// key) into <dir>, which must be empty or new. Uploads continue meanwhile.
    /// Authenticates with AVATAR_EDGE_TOKEN, else <data>/admin.token.
    Backup {
        /// Directory to write the backup into
        dir: PathBuf,
        /// Base URL of the server [default: http://<listen> of the settings]
        #[arg(long)]
        url: Option<String>,
        /// TOML file with the server settings (listen, data)
        #[arg(long, env = "AVATAR_EDGE_CONFIG")]
        config: Option<PathBuf>,
        /// Address the server listens on [default: 127.0.0.1:8080]
        #[arg(long, env = "AVATAR_EDGE_LISTEN")]
        listen: Option<std::net::SocketAddr>,
        /// Data directory holding admin.token [default: ./avatar-data]
        #[arg(long, env = "AVATAR_EDGE_DATA")]
        data: Option<PathBuf>,
    },
    /// Restore a backup directory into an empty (or new) data directory, with
    /// the server stopped. Every blob is verified, then the restored index.
    Restore {
        /// Directory written by `avatar-edge backup`
        backup: PathBuf,
        /// TOML file with the server settings (data)
        #[arg(long, env = "AVATAR_EDGE_CONFIG")]
        config: Option<PathBuf>,
        /// Data directory to restore into [default: ./avatar-data]
        #[arg(long, env = "AVATAR_EDGE_DATA")]
        data: Option<PathBuf>,
    },
    /// Write man pages or shell completions into <dir> (packaging).
    #[command(hide = true)]
    Generate {
        /// man or completions
        what: crate::ops::Artifact,
        /// Output directory
        dir: PathBuf,
    },
}

/// Settings for the operators' commands: file settings under `listen`/`data`
/// given on the command line.
fn ops_config(
    config: Option<PathBuf>,
    listen: Option<std::net::SocketAddr>,
    data: Option<PathBuf>,
) -> anyhow::Result<Config> {
    let file = match &config {
        Some(p) => Settings::from_file(p)?,
        None => Settings::default(),
    };
    let cli = Settings {
        listen,
        data,
        ..Settings::default()
    };
    Ok(Config::resolve(cli.or(file), None)?)
}

/// Parse arguments and run.
pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // `serve` and `import` log as their settings say, once resolved.
    let _log = (!matches!(cli.command, Command::Serve { .. } | Command::Import { .. }))
        .then(|| crate::logging::init(&Default::default(), false));
    match cli.command {
        Command::Serve { config, settings } => {
            let file = match &config {
                Some(p) => Settings::from_file(p)?,
                None => Settings::default(),
            };
            let token = std::env::var("AVATAR_EDGE_TOKEN").ok();
            let config = Config::resolve(settings.or(file), token)?;
            let _log = crate::logging::init(&config.log, config.http.access_log);
            // Blocking threads do blob reads and index commits (renders are
            // bounded by their own pools): cap them so a burst of cold misses
            // cannot start hundreds of threads, each with its own stack and
            // allocator state.
            let blocking = config.render.render_threads + config.render.upload_threads + 16;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .max_blocking_threads(blocking)
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(serve(config))
        }
        Command::Import {
            dir,
            config,
            settings,
            from_upstream,
            hashes,
            concurrency,
        } => {
            let file = match &config {
                Some(p) => Settings::from_file(p)?,
                None => Settings::default(),
            };
            let config = Config::resolve(settings.or(file), None)?;
            let _log = crate::logging::init(&config.log, false);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            match (dir, from_upstream, hashes) {
                (_, Some(url), Some(file)) => runtime.block_on(import_from_upstream(
                    config,
                    &url,
                    &file,
                    usize::from(concurrency),
                )),
                (Some(dir), _, _) => runtime.block_on(import(config, dir)),
                _ => anyhow::bail!("give a directory, or --from-upstream with --hashes"),
            }
        }
        Command::Render {
            style,
            key,
            size,
            initials,
            output,
        } => render(&style, &key, size, initials.as_deref(), &output),
        Command::ContactSheet { output } => contact_sheet(&output),
        Command::Backup {
            dir,
            url,
            config,
            listen,
            data,
        } => {
            let config = ops_config(config, listen, data)?;
            let url = url.unwrap_or_else(|| {
                let mut addr = config.http.listen;
                if addr.ip().is_unspecified() {
                    addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                format!("http://{addr}")
            });
            let token = match std::env::var("AVATAR_EDGE_TOKEN") {
                Ok(t) if !t.trim().is_empty() => t,
                _ => store::backup::local_admin_token(&config.store.data_dir)?,
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let info = runtime.block_on(crate::ops::backup(&url, &token, &dir))?;
            println!(
                "backup of {url} written to {}: {} identities, {} blobs ({} bytes)",
                dir.display(),
                info.identities,
                info.blobs,
                info.blob_bytes
            );
            if !info.missing.is_empty() {
                eprintln!(
                    "warning: {} blobs the index references were missing or corrupt on the server and are not in the backup: {}",
                    info.missing.len(),
                    info.missing.join(", ")
                );
            }
            Ok(())
        }
        Command::Restore {
            backup,
            config,
            data,
        } => {
            let config = ops_config(config, None, data)?;
            let r = crate::ops::restore(&backup, &config.store.data_dir)?;
            println!(
                "restored {} into {}: {} identities, {} blobs (backup taken by avatar-edge {})",
                backup.display(),
                config.store.data_dir.display(),
                r.info.identities,
                r.blobs,
                r.info.version
            );
            Ok(())
        }
        Command::Generate { what, dir } => {
            use clap::CommandFactory;
            for name in crate::ops::generate(Cli::command(), what, &dir)? {
                println!("wrote {name}");
            }
            Ok(())
        }
    }
}

async fn import(config: Config, dir: PathBuf) -> anyhow::Result<()> {
    let app = build(config, false).await?.app;
    let files =
        crate::import::list_files(&dir).with_context(|| format!("reading {}", dir.display()))?;
    let bar = indicatif::ProgressBar::new(files.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {elapsed_precise} {msg}")
            .expect("valid template"),
    );
    let report = crate::import::import_dir(&app.service, &dir, |path, _| {
        bar.set_message(
            path.file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default(),
        );
        bar.inc(1);
    })
    .await?;
    bar.finish_and_clear();
    print!("{}", report.summary());
    Ok(())
}

/// A built application and the handles that control it.
pub struct Built {
    pub app: Arc<App>,
    /// The admin token in force.
    pub token: String,
    /// Send `true` to end event streams and delivery workers.
    pub shutdown: tokio::sync::watch::Sender<bool>,
}

/// Build the application from a config (also used by tests) on the embedded
/// store. With `deliver`, start the outbox delivery workers (needs a Tokio
/// runtime).
pub fn build_app(config: Config, deliver: bool) -> anyhow::Result<Built> {
    let bus = crate::events::Bus::new();
    let dir = &config.store.data_dir;
    let store = EmbeddedStore::open(dir)
        .with_context(|| format!("opening the data directory {}", dir.display()))?
        .publishing(publish_on(&bus))
        .audit_retention(config.store.audit_retention);
    store.sweep_orphans_in_background(); // issue 15: what a crash left
    build_app_on(config, deliver, Arc::new(store), bus)
}

/// A store's publisher that announces on `bus`.
fn publish_on(bus: &crate::events::Bus) -> crate::store::Publish {
    let bus = bus.clone();
    crate::store::Publish::new(move |e| bus.publish(e))
}

/// Build the application on the store the config names: NATS JetStream when
/// `--nats` is set (connecting first; an unreachable cluster is an error
/// naming its URLs), else the embedded store.
pub async fn build(config: Config, deliver: bool) -> anyhow::Result<Built> {
    let Some(opts) = config.store.nats.clone() else {
        return build_app(config, deliver);
    };
    let bus = crate::events::Bus::new();
    let store = crate::store::nats::NatsStore::connect(&opts, publish_on(&bus))
        .await
        .with_context(|| {
            let urls = crate::store::nats::redacted_urls(&opts.urls);
            format!("starting on the NATS cluster {urls}")
        })?;
    // Issue 16: the audit trail's stream.
    store
        .open_audit(config.store.audit_retention)
        .await
        .context("opening the audit stream on NATS")?;
    if deliver {
        let names: Vec<String> = config.delivery.targets.iter().map(|t| t.name()).collect();
        store
            .prepare_delivery(&names)
            .await
            .context("creating the delivery consumers on NATS")?;
    }
    tracing::info!(
        urls = %crate::store::nats::redacted_urls(&opts.urls),
        identities = store.replica_len(),
        "index replica loaded from NATS JetStream"
    );
    build_app_on(config, deliver, Arc::new(store), bus)
}

/// Build the application on `store`, which announces its events on `bus`.
pub fn build_app_on(
    config: Config,
    deliver: bool,
    store: crate::store::SharedStore,
    bus: crate::events::Bus,
) -> anyhow::Result<Built> {
    let mut tokens = Tokens::default();
    let token = match &config.auth.token {
        Some(t) => t.clone(),
        None => {
            let (t, path, created) = store::admin_token(&config.store.data_dir)
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
    if let Some(path) = &config.auth.token_file {
        let named = store::read_token_file(path).map_err(anyhow::Error::msg)?;
        tracing::info!(path = %path.display(), count = named.len(), "loaded named API tokens");
        tokens.set_named(&named);
    }
    let signing_key = match &config.auth.signing_key {
        Some(k) => k.clone(),
        None => store::signing_key(&config.store.data_dir)
            .context("reading or creating the signing key")?,
    };
    let signer = crate::http::auth::UrlSigner::new(signing_key.as_bytes());
    let (tx, rx) = tokio::sync::watch::channel(false);
    let Config {
        http,
        auth,
        render,
        cache,
        delivery,
        store: _,
        log: _,
        policy,
        fallback,
    } = config;
    let targets = delivery.targets;
    let metrics = Arc::new(Metrics::new());
    // Issue 16: the upload policy hook, when the operator set one.
    let hook = match policy.hook {
        Some(h) => {
            tracing::info!(url = %h.url, failure = ?h.failure, "uploads are checked by the policy hook");
            let transport =
                crate::http::client::HttpTransport::new().context("loading the TLS trust store")?;
            let hook = Arc::new(crate::policy::UploadHook::new(h, Arc::new(transport)));
            let h = hook.clone();
            metrics.register(move |out| h.write_metrics(out));
            Some(hook)
        }
        None => None,
    };
    let service = Service::new(render, store.clone(), metrics.clone(), bus).with_upload_hook(hook);
    let service = with_fallback(service, fallback, &metrics)?;
    let deliveries = if deliver && !targets.is_empty() {
        let transport = Arc::new(
            crate::http::client::HttpTransport::new().context("loading the TLS trust store")?,
        );
        for t in &targets {
            tracing::info!(target = %t.name(), "delivering changes");
        }
        crate::delivery::spawn(
            targets,
            store.clone(),
            service.bus().clone(),
            transport,
            rx.clone(),
        )
    } else {
        Default::default()
    };
    let d = deliveries.clone();
    metrics.register(move |out| d.write_metrics(out));
    metrics.register(move |out| store.collect_metrics(out));
    metrics.register(|out| {
        out.counter(
            "avatar_edge_log_lines_dropped_total",
            "Log lines dropped because stderr did not keep up (logging never blocks a request).",
            crate::logging::dropped_lines(),
        )
    });
    let app_config = crate::http::AppConfig {
        http,
        cache,
        max_upload_url_ttl: auth.max_upload_url_ttl,
        limits: policy.limits,
    };
    let app = Arc::new(App::new(
        service, app_config, tokens, signer, rx, deliveries,
    ));
    Ok(Built {
        app,
        token,
        shutdown: tx,
    })
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listen = config.http.listen;
    let token_file = config.auth.token_file.clone();
    let built = build(config, true).await?;
    let app = built.app.clone();
    crate::ops::reload_tokens_on_sighup(app.clone(), token_file)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    tracing::info!(address = %listener.local_addr()?, "avatar-edge listening");
    let stop = built.shutdown;
    let signal = async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    };
    crate::http::server::serve(app, listener, signal).await?;
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
