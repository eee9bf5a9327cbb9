//! The connection to NATS: options, the minimum server version, and URLs
//! shown without credentials (every log line and error names servers through
//! [`redact`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::NatsOptions;
use crate::backoff::Doubling;
use crate::config::{NatsSecurity, Secret};
use crate::store::StoreError;

/// The oldest nats-server this store runs against: per-key compare-and-set
/// (`Nats-Expected-Last-Subject-Sequence`) is safe against concurrent
/// writers on clustered streams only from 2.9.21 (nats-server#4320), and
/// current clients expect the 2.10 JetStream API (account info, consumer
/// and stream fields).
pub const MIN_SERVER: (u64, u64) = (2, 10);

/// How often the client pings its server (two unanswered: reconnect).
const PING_INTERVAL: Duration = Duration::from_secs(1);
/// The longest any one NATS request (a JetStream API call or a publish
/// acknowledgement) waits.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// How long start-up keeps retrying the JetStream steps after connecting
/// (opening the buckets and streams) while the cluster is still forming:
/// servers started together elect a meta leader and place R3 streams only
/// after a few seconds, and a node started beside them waits, logging each
/// retry, instead of exiting.
pub(super) const START_PATIENCE: Duration = Duration::from_secs(60);

/// Runs start-up step `what` until it succeeds or [`START_PATIENCE`] has
/// passed (then its last error is returned). Waits 100 ms, doubling to 2 s,
/// between attempts.
pub(super) async fn at_start<T, F, Fut>(what: &str, mut step: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    const WAITS: Doubling = Doubling::new(Duration::from_millis(100), Duration::from_secs(2));
    let deadline = tokio::time::Instant::now() + START_PATIENCE;
    let mut n = 0;
    loop {
        let wait = WAITS.nth(n);
        n += 1;
        match step().await {
            Ok(v) => return Ok(v),
            Err(e) if tokio::time::Instant::now() + wait < deadline => {
                tracing::warn!(
                    step = what,
                    error = %e,
                    retry_in_ms = wait.as_millis() as u64,
                    "NATS JetStream not ready at start-up; retrying"
                );
                tokio::time::sleep(wait).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Checks a server's version string (`2.15.1`, `2.10.0-beta.3`) against
/// [`MIN_SERVER`]; the error names the version found and the minimum.
pub fn check_version(found: &str) -> Result<(), String> {
    let mut parts = found
        .trim_start_matches('v')
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u64>().ok());
    let parsed = match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => Some((major, minor)),
        _ => None,
    };
    match parsed {
        Some(v) if v >= MIN_SERVER => Ok(()),
        _ => Err(format!(
            "nats-server {found:?} is too old or unknown: avatar-edge needs nats-server {}.{} or later",
            MIN_SERVER.0, MIN_SERVER.1
        )),
    }
}

/// A server URL as it may be shown: without `user:password@` or a token.
pub fn redact(url: &str) -> String {
    let url = url.trim();
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let rest = match rest.rsplit_once('@') {
        Some((_, host)) => format!("***@{host}"),
        None => rest.to_string(),
    };
    if scheme.is_empty() {
        rest
    } else {
        format!("{scheme}://{rest}")
    }
}

/// Client options carrying `sec`.
async fn options(sec: &NatsSecurity) -> Result<async_nats::ConnectOptions, StoreError> {
    let mut o = match &sec.creds {
        Some(path) => async_nats::ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!("NATS credentials file {}: {e}", path.display()))
            })?,
        None => async_nats::ConnectOptions::new(),
    };
    if let Some((user, Secret(password))) = &sec.user_password {
        o = o.user_and_password(user.clone(), password.clone());
    }
    if let Some(Secret(token)) = &sec.token {
        o = o.token(token.clone());
    }
    if let Some(ca) = &sec.tls_ca {
        o = o.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let Some((cert, key)) = &sec.tls_client {
        o = o.add_client_certificate(cert.clone(), key.clone());
    }
    Ok(o)
}

/// All seed URLs, redacted, comma-separated.
pub fn redacted_urls(urls: &[String]) -> String {
    urls.iter().map(|u| redact(u)).collect::<Vec<_>>().join(",")
}

/// Connects to the cluster (counting (re)connections in `reconnects`) and
/// refuses a server older than [`MIN_SERVER`].
pub(super) async fn connect(
    opts: &NatsOptions,
    reconnects: Arc<AtomicU64>,
) -> Result<async_nats::Client, StoreError> {
    let shown = redacted_urls(&opts.urls);
    let addrs = opts
        .urls
        .iter()
        .map(|u| u.trim().parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StoreError::Unavailable(format!("invalid NATS URL in {shown}: {e}")))?;
    let counter = reconnects;
    let security = &opts.security;
    let client = options(security)
        .await?
        // Issue 15, fail over fast: a silent server is given up after about
        // two missed pings (SIGKILL on the same host is seen at once), and no
        // request waits long for a stream leader being elected.
        .ping_interval(PING_INTERVAL)
        .connection_timeout(Duration::from_secs(2))
        .request_timeout(Some(REQUEST_TIMEOUT))
        .max_reconnects(None)
        .reconnect_delay_callback(|n| Duration::from_millis((50u64 << n.min(4)).min(1000)))
        .event_callback(move |event| {
            let counter = counter.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        counter.fetch_add(1, Ordering::Relaxed);
                        tracing::info!("NATS connection (re)established");
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!("NATS connection lost; reconnecting")
                    }
                    other => tracing::debug!(event = %other, "NATS event"),
                }
            }
        })
        .connect(addrs)
        .await
        .map_err(|e| {
            let why = match e.kind() {
                async_nats::ConnectErrorKind::AuthorizationViolation
                | async_nats::ConnectErrorKind::Authentication => format!(
                    "authorization refused ({}); check --nats-creds or \
                     AVATAR_EDGE_NATS_USER/PASSWORD/TOKEN",
                    security.scrub(&e.to_string())
                ),
                _ => security.scrub(&e.to_string()),
            };
            StoreError::Unavailable(format!("cannot connect to NATS at {shown}: {why}"))
        })?;
    let version = client.server_info().version;
    check_version(&version)
        .map_err(|e| StoreError::Unavailable(format!("NATS at {shown}: {e}")))?;
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_below_the_minimum_are_refused() {
        for ok in ["2.10.0", "2.10.0-beta.3", "v2.11.4", "2.15.1", "3.0.0"] {
            assert_eq!(check_version(ok), Ok(()), "{ok}");
        }
        for old in ["2.9.10", "2.9.21", "1.4.1", "", "junk"] {
            let e = check_version(old).unwrap_err();
            assert!(e.contains("2.10") && e.contains(&format!("{old:?}")), "{e}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn start_up_steps_retry_until_they_succeed_or_patience_ends() {
        // Fails three times, then succeeds: the value comes back.
        let mut calls = 0;
        let t0 = tokio::time::Instant::now();
        let got = at_start("flaky", || {
            calls += 1;
            let n = calls;
            async move {
                if n < 4 {
                    Err(StoreError::Unavailable(format!("attempt {n}")))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(got.unwrap(), 4);
        assert_eq!(t0.elapsed(), Duration::from_millis(100 + 200 + 400));
        // Never succeeds: the last error, once patience has run out.
        let mut calls = 0;
        let t0 = tokio::time::Instant::now();
        let got: Result<(), _> = at_start("down", || {
            calls += 1;
            let n = calls;
            async move { Err(StoreError::Unavailable(format!("attempt {n}"))) }
        })
        .await;
        let waited = t0.elapsed();
        assert!(waited <= START_PATIENCE && waited > START_PATIENCE - Duration::from_secs(2));
        match got {
            Err(StoreError::Unavailable(m)) => assert_eq!(m, format!("attempt {calls}")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn urls_are_shown_without_credentials() {
        for (url, shown) in [
            ("nats://a:4222", "nats://a:4222"),
            ("nats://alice:s3cret@a:4222", "nats://***@a:4222"),
            ("tls://tok3n@b:4222", "tls://***@b:4222"),
            ("x:p@c:1", "***@c:1"),
        ] {
            assert_eq!(redact(url), shown);
        }
        let all = redacted_urls(&["nats://u:pw@a:1".into(), "nats://b:2".into()]);
        assert_eq!(all, "nats://***@a:1,nats://b:2");
        assert!(!all.contains("pw"));
    }
}
