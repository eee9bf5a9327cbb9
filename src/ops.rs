//! Operators' commands besides `serve`: `backup` (the client of
//! `GET /v1/backup`), `restore`, the SIGHUP reload of the token file, and the
//! hidden `generate` (man pages and shell completions for the package).

use std::io::{self, Read};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::http::App;
use crate::store::backup::{self, BackupInfo};

/// Blocking reader over chunks arriving on a channel.
struct ChunkReader {
    rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(chunk) => self.current = chunk?,
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Download a consistent snapshot from the server at `base` (e.g.
/// `http://127.0.0.1:8080`) into `dir`, which must be empty or new.
pub async fn backup(base: &str, token: &str, dir: &Path) -> anyhow::Result<BackupInfo> {
    let url = format!("{}/v1/backup", base.trim_end_matches('/'));
    let uri: http::Uri = url.parse().with_context(|| format!("bad URL {url:?}"))?;
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .context("loading the TLS trust store")?
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let req = http::Request::get(uri)
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .header(
            http::header::USER_AGENT,
            concat!("avatar-edge-backup/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::new())?;
    let resp = client
        .request(req)
        .await
        .with_context(|| format!("GET {url}: is the server running there?"))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp.into_body().collect().await.map(|b| b.to_bytes());
        let text = body
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        anyhow::bail!("GET {url}: {status} {}", text.trim());
    }
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let target = dir.to_path_buf();
    let unpacker = tokio::task::spawn_blocking(move || {
        let reader = ChunkReader {
            rx,
            current: Bytes::new(),
        };
        backup::unpack(reader, &target)
    });
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        let chunk = match frame {
            Ok(f) => match f.into_data() {
                Ok(data) => Ok(data),
                Err(_) => continue,
            },
            Err(e) => Err(io::Error::other(e)),
        };
        let failed = chunk.is_err();
        if tx.send(chunk).await.is_err() || failed {
            break;
        }
    }
    drop(tx);
    let info = unpacker
        .await
        .context("the unpacking thread failed")?
        .with_context(|| format!("writing the backup into {}", dir.display()))?;
    Ok(info)
}

/// Restore a backup directory into an empty data directory.
pub fn restore(backup_dir: &Path, data: &Path) -> anyhow::Result<backup::Restored> {
    backup::restore(backup_dir, data)
        .with_context(|| format!("restoring {} into {}", backup_dir.display(), data.display()))
}

/// Re-read the token file on every SIGHUP for as long as the server runs: a
/// good file replaces the named tokens at once (requests in flight keep
/// theirs, connections stay open); an unreadable or invalid one keeps the old
/// tokens, logs one error and counts it. Registered before the server starts
/// listening, so a SIGHUP can never terminate it.
#[cfg(unix)]
pub fn reload_tokens_on_sighup(
    app: Arc<App>,
    path: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let Some(path) = &path else {
                tracing::info!("SIGHUP received; no token file is configured, nothing to reload");
                continue;
            };
            let metrics = app.service.metrics();
            let file = path.clone();
            let read = tokio::task::spawn_blocking(move || crate::store::read_token_file(&file))
                .await
                .unwrap_or_else(|e| Err(format!("reading the token file failed: {e}")));
            match read {
                Ok(named) => {
                    app.tokens.set_named(&named);
                    metrics.token_reloads.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(path = %path.display(), count = named.len(), "reloaded named API tokens");
                    // Issue 16: the audit trail records every reload.
                    app.service.audit_tokens_reloaded(named.len()).await;
                }
                Err(e) => {
                    metrics
                        .token_reload_failures
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, "token file reload failed; the previous tokens stay in force");
                }
            }
        }
    });
    Ok(())
}

/// On other systems there is no SIGHUP: nothing to install.
#[cfg(not(unix))]
pub fn reload_tokens_on_sighup(
    _app: Arc<App>,
    _path: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    Ok(())
}

/// What `generate` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Artifact {
    /// Man pages: avatar-edge.1 and one per subcommand (avatar-edge-serve.1, ...)
    Man,
    /// Shell completions for bash, zsh and fish
    Completions,
}

/// Write man pages or completions for `cmd` into `dir` (the packaging step).
pub fn generate(cmd: clap::Command, what: Artifact, dir: &Path) -> anyhow::Result<Vec<String>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    match what {
        Artifact::Man => {
            clap_mangen::generate_to(cmd, dir)
                .with_context(|| format!("writing man pages into {}", dir.display()))?;
            for e in std::fs::read_dir(dir)? {
                let name = e?.file_name().to_string_lossy().into_owned();
                if name.ends_with(".1") {
                    written.push(name);
                }
            }
        }
        Artifact::Completions => {
            use clap_complete::Shell;
            let mut cmd = cmd;
            for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
                let path = clap_complete::generate_to(shell, &mut cmd, "avatar-edge", dir)
                    .with_context(|| format!("writing {shell} completions"))?;
                written.push(path.display().to_string());
            }
        }
    }
    written.sort();
    Ok(written)
}
