//! Issue 17, the migration proxy's part of the composition root: the
//! upstream fetcher on the service, and `import --from-upstream`.

use std::sync::Arc;

use anyhow::Context;

use super::build;
use crate::config::{Config, FallbackConfig};
use crate::metrics::Metrics;
use crate::service::Service;

/// The service with the migration proxy, when `--fallback-upstream` names any.
pub(super) fn with_fallback(
    service: Service,
    config: FallbackConfig,
    metrics: &Metrics,
) -> anyhow::Result<Service> {
    if !config.enabled() {
        return Ok(service);
    }
    for u in &config.upstreams {
        tracing::info!(upstream = %u, "falling back to an upstream avatar service");
    }
    let transport =
        Arc::new(crate::http::client::HttpTransport::new().context("loading the TLS trust store")?);
    let outcomes = Arc::new(crate::fallback::Outcomes::default());
    let o = outcomes.clone();
    metrics.register(move |out| o.write_metrics(out));
    let upstreams = crate::fallback::Upstreams::new(config, transport);
    Ok(service.with_fallback(upstreams, outcomes))
}

/// `import --from-upstream URL --hashes FILE`: adopt each hash's avatar from
/// the upstream, `concurrency` at a time, with a progress bar.
pub(super) async fn import_from_upstream(
    config: Config,
    url: &str,
    file: &std::path::Path,
    concurrency: usize,
) -> anyhow::Result<()> {
    let url = crate::config::check_upstream(url)?;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let (hashes, bad) = crate::import::read_hashes(&text);
    for (line, text) in &bad {
        eprintln!("{}:{line}: not a 32/64-hex hash: {text:?}", file.display());
    }
    let fallback = FallbackConfig {
        upstreams: vec![url],
        ..config.fallback.clone()
    };
    let transport =
        Arc::new(crate::http::client::HttpTransport::new().context("loading the TLS trust store")?);
    let upstreams = crate::fallback::Upstreams::new(fallback, transport);
    let app = build(config, false).await?.app;
    let bar = indicatif::ProgressBar::new(hashes.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} {elapsed_precise} eta {eta} {msg}",
        )
        .expect("valid template"),
    );
    let report = crate::import::import_from_upstream(
        &app.service,
        &upstreams,
        hashes,
        concurrency,
        |hash, _| {
            bar.set_message(hash.to_string());
            bar.inc(1);
        },
    )
    .await;
    bar.finish_and_clear();
    print!("{}", report.summary());
    anyhow::ensure!(
        report.failed.is_empty(),
        "{} hashes failed; run the same command again to retry them",
        report.failed.len()
    );
    Ok(())
}
