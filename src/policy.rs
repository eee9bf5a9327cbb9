//! The upload policy hook (issue 16 item 2): before an upload is accepted,
//! the operator's service (`--upload-hook URL`, never taken from a request)
//! sees a 256 px JPEG of the normalized upload and decides.
//!
//! The request is one `POST` with a JSON body (see `Payload`):
//! `{"key", "hash", "width", "height", "format", "rating", "preview":
//! {"type": "image/jpeg", "side": 256, "base64": "…"}}`. The answer:
//! - `2xx` → accept (the body is read, bounded, and ignored);
//! - `403` or `422` → refuse; an optional JSON `{"reason": "…"}` becomes the
//!   upload's `422 rejected_by_policy` message;
//! - anything else — no answer within `--upload-hook-timeout` (the whole
//!   exchange: connect, request, answer body), no connection, another
//!   status, an answer that is not HTTP, a body over [`MAX_ANSWER_BYTES`] —
//!   is a failure, handled as `--upload-hook-failure` says: `closed` refuses
//!   (503 + `Retry-After`), `open` accepts.
//!
//! The transport is a trait so this module stays free of hyper
//! (`http::client` implements it, as it does delivery's); the timeout, the
//! decision and the counters are here.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use bytes::Bytes;
use serde::Serialize;

use crate::config::{HookConfig, HookFailureMode};
use crate::metrics::{Exposition, Histogram, Kind};
use crate::model::Fault;

/// Side of the JPEG preview the hook receives, px.
pub const PREVIEW_SIDE: u32 = 256;

/// Largest answer body read from the hook; more is a failure.
pub const MAX_ANSWER_BYTES: usize = 64 << 10;

/// Longest refusal reason passed on to the uploader, characters.
pub const MAX_REASON_CHARS: usize = 500;

/// `Retry-After` of an upload refused because the hook failed, seconds.
pub const RETRY_AFTER_SECS: u64 = 5;

/// Message of a refusal whose answer gave no reason.
pub const DEFAULT_REASON: &str = "the upload was refused by the platform's policy";

/// What the hook's verdict means for the upload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    /// The hook refused the upload (the uploader's fault): the reason.
    #[error("{0}")]
    Rejected(String),
    /// The hook could not decide and failures are closed (try again later).
    #[error("the upload policy hook failed: {0}")]
    Unavailable(HookFailure),
}

impl HookError {
    /// Whose fault: the one classification the HTTP mapping reads.
    pub fn fault(&self) -> Fault {
        match self {
            HookError::Rejected(_) => Fault::Client,
            HookError::Unavailable(_) => Fault::Unavailable,
        }
    }
}

/// Why the hook gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookFailure {
    /// The time allowed, ms.
    #[error("no answer within {0} ms")]
    Timeout(u64),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("invalid answer: {0}")]
    Protocol(String),
    #[error("answer body over {0} bytes")]
    TooLarge(usize),
    #[error("unexpected status {0}")]
    Status(u16),
}

impl HookFailure {
    /// The metrics label of the failure.
    fn label(&self) -> &'static str {
        match self {
            HookFailure::Timeout(_) => "timeout",
            HookFailure::Connect(_) => "connect",
            HookFailure::Protocol(_) => "invalid_answer",
            HookFailure::TooLarge(_) => "too_large",
            HookFailure::Status(_) => "status",
        }
    }
}

/// Sends the hook's request: status and body of the answer, the body read
/// up to `max_answer` bytes (more is [`HookFailure::TooLarge`]).
#[async_trait::async_trait]
pub trait HookTransport: Send + Sync + 'static {
    async fn post_json(
        &self,
        url: &str,
        body: Bytes,
        max_answer: usize,
    ) -> Result<(u16, Bytes), HookFailure>;
}

/// What the hook is told about one upload.
#[derive(Debug, Clone)]
pub struct Upload<'a> {
    /// The upload's key as the API names it (normalized email or hash).
    pub key: &'a str,
    /// BLAKE3 of the normalized master, hex (the `/c/` URL's name).
    pub hash: String,
    pub width: u32,
    pub height: u32,
    /// Format the upload was sniffed as (`jpeg`, `png`, `gif`, `webp`).
    pub format: &'a str,
    /// The rating the upload asks for (`g`, `pg`, `r`, `x`).
    pub rating: &'a str,
    /// The [`PREVIEW_SIDE`] px JPEG.
    pub preview: &'a [u8],
}

/// The JSON body of the hook's request.
#[derive(Serialize)]
struct Payload<'a> {
    key: &'a str,
    hash: &'a str,
    width: u32,
    height: u32,
    format: &'a str,
    rating: &'a str,
    preview: Preview,
}

#[derive(Serialize)]
struct Preview {
    #[serde(rename = "type")]
    content_type: &'static str,
    side: u32,
    base64: String,
}

/// The request body for `upload`.
pub fn payload(upload: &Upload<'_>) -> Bytes {
    let p = Payload {
        key: upload.key,
        hash: &upload.hash,
        width: upload.width,
        height: upload.height,
        format: upload.format,
        rating: upload.rating,
        preview: Preview {
            content_type: "image/jpeg",
            side: PREVIEW_SIDE,
            base64: base64::engine::general_purpose::STANDARD.encode(upload.preview),
        },
    };
    Bytes::from(serde_json::to_vec(&p).expect("the hook payload serializes"))
}

/// The hook's decision, from its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Reject(String),
}

/// Read an answer: `2xx` accepts, `403`/`422` refuses (with the JSON
/// `reason` when there is one), any other status is a failure.
pub fn verdict(status: u16, body: &[u8]) -> Result<Verdict, HookFailure> {
    match status {
        200..=299 => Ok(Verdict::Accept),
        403 | 422 => Ok(Verdict::Reject(reason(body))),
        other => Err(HookFailure::Status(other)),
    }
}

/// The `reason` of a refusal's JSON body, trimmed, without control
/// characters, at most [`MAX_REASON_CHARS`]; else [`DEFAULT_REASON`].
fn reason(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Answer {
        reason: Option<String>,
    }
    let given = serde_json::from_slice::<Answer>(body)
        .ok()
        .and_then(|a| a.reason)
        .map(|r| {
            r.chars()
                .filter(|c| !c.is_control())
                .take(MAX_REASON_CHARS)
                .collect::<String>()
                .trim()
                .to_string()
        })
        .filter(|r| !r.is_empty());
    given.unwrap_or_else(|| DEFAULT_REASON.to_string())
}

/// Outcomes, for `/metrics`.
#[derive(Debug, Default)]
struct Stats {
    accepted: AtomicU64,
    rejected: AtomicU64,
    failed_closed: AtomicU64,
    failed_open: AtomicU64,
    /// By [`HookFailure::label`], in [`FAILURE_LABELS`] order.
    failures: [AtomicU64; FAILURE_LABELS.len()],
    latency: Histogram,
}

const FAILURE_LABELS: [&str; 5] = [
    "timeout",
    "connect",
    "invalid_answer",
    "too_large",
    "status",
];

/// The configured hook: where, how long, what a failure means, and its counters.
pub struct UploadHook {
    config: HookConfig,
    transport: Arc<dyn HookTransport>,
    stats: Stats,
}

impl UploadHook {
    pub fn new(config: HookConfig, transport: Arc<dyn HookTransport>) -> UploadHook {
        UploadHook {
            config,
            transport,
            stats: Stats::default(),
        }
    }

    /// Ask the hook about `upload`: `Ok` to accept it.
    pub async fn check(&self, upload: &Upload<'_>) -> Result<(), HookError> {
        let started = Instant::now();
        let limit = self.config.timeout;
        let sent = self
            .transport
            .post_json(&self.config.url, payload(upload), MAX_ANSWER_BYTES);
        let answer = match tokio::time::timeout(limit, sent).await {
            Ok(a) => a,
            Err(_) => Err(HookFailure::Timeout(limit.as_millis() as u64)),
        };
        self.stats.latency.observe(started.elapsed());
        let s = &self.stats;
        match answer.and_then(|(status, body)| verdict(status, &body)) {
            Ok(Verdict::Accept) => {
                s.accepted.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Ok(Verdict::Reject(reason)) => {
                s.rejected.fetch_add(1, Ordering::Relaxed);
                Err(HookError::Rejected(reason))
            }
            Err(failure) => {
                let i = FAILURE_LABELS
                    .iter()
                    .position(|l| *l == failure.label())
                    .unwrap_or(0);
                s.failures[i].fetch_add(1, Ordering::Relaxed);
                let open = self.config.failure == HookFailureMode::Open;
                tracing::warn!(
                    error = %failure,
                    hash = %upload.hash,
                    accepted = open,
                    "the upload policy hook failed"
                );
                if open {
                    s.failed_open.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                } else {
                    s.failed_closed.fetch_add(1, Ordering::Relaxed);
                    Err(HookError::Unavailable(failure))
                }
            }
        }
    }

    /// The hook's families for `/metrics`.
    pub fn write_metrics(&self, out: &mut Exposition) {
        let s = &self.stats;
        let mut f = out.family(
            "avatar_edge_upload_hook_total",
            Kind::Counter,
            "Uploads checked by the policy hook, by outcome (failed_open: accepted although the hook failed).",
        );
        for (outcome, n) in [
            ("accepted", &s.accepted),
            ("rejected", &s.rejected),
            ("failed_closed", &s.failed_closed),
            ("failed_open", &s.failed_open),
        ] {
            f.sample(&[("outcome", outcome)], n.load(Ordering::Relaxed));
        }
        let mut f = out.family(
            "avatar_edge_upload_hook_failures_total",
            Kind::Counter,
            "Policy hook exchanges without a usable answer, by reason.",
        );
        for (label, n) in FAILURE_LABELS.iter().zip(&s.failures) {
            f.sample(&[("reason", label)], n.load(Ordering::Relaxed));
        }
        out.histogram(
            "avatar_edge_upload_hook_seconds",
            "Time the policy hook took to answer (or to fail).",
            &s.latency,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn verdict_table() {
        let long = format!("{{\"reason\":\"{}\"}}", "x".repeat(2000));
        let cases: Vec<(u16, &[u8], Result<Verdict, HookFailure>)> = vec![
            (200, b"", Ok(Verdict::Accept)),
            (204, b"", Ok(Verdict::Accept)),
            (200, b"not json at all", Ok(Verdict::Accept)),
            (
                422,
                br#"{"reason":"nudity"}"#,
                Ok(Verdict::Reject("nudity".into())),
            ),
            (
                403,
                br#"{"reason":" spaced\nout "}"#,
                Ok(Verdict::Reject("spacedout".into())),
            ),
            (403, b"", Ok(Verdict::Reject(DEFAULT_REASON.into()))),
            (422, b"<html>", Ok(Verdict::Reject(DEFAULT_REASON.into()))),
            (
                422,
                br#"{"reason":""}"#,
                Ok(Verdict::Reject(DEFAULT_REASON.into())),
            ),
            (
                422,
                br#"{"reason":7}"#,
                Ok(Verdict::Reject(DEFAULT_REASON.into())),
            ),
            (
                422,
                long.as_bytes(),
                Ok(Verdict::Reject("x".repeat(MAX_REASON_CHARS))),
            ),
            (401, b"", Err(HookFailure::Status(401))),
            (404, b"", Err(HookFailure::Status(404))),
            (500, b"{}", Err(HookFailure::Status(500))),
            (302, b"", Err(HookFailure::Status(302))),
        ];
        for (status, body, want) in cases {
            assert_eq!(
                verdict(status, body),
                want,
                "{status} {:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn payload_carries_the_fields_and_the_preview() {
        let p = payload(&Upload {
            key: "a@b.c",
            hash: "ab".repeat(32),
            width: 512,
            height: 512,
            format: "png",
            rating: "g",
            preview: &[0xff, 0xd8, 0xff],
        });
        let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
        assert_eq!(v["key"], "a@b.c");
        assert_eq!(v["hash"], "ab".repeat(32));
        assert_eq!(
            (v["width"].as_u64(), v["height"].as_u64()),
            (Some(512), Some(512))
        );
        assert_eq!(
            (v["format"].as_str(), v["rating"].as_str()),
            (Some("png"), Some("g"))
        );
        assert_eq!(v["preview"]["type"], "image/jpeg");
        assert_eq!(v["preview"]["side"], PREVIEW_SIDE);
        assert_eq!(v["preview"]["base64"], "/9j/");
    }

    /// A transport answering what it was built with, after a delay.
    struct Fixed(Result<(u16, Bytes), HookFailure>, Duration);

    #[async_trait::async_trait]
    impl HookTransport for Fixed {
        async fn post_json(
            &self,
            _: &str,
            _: Bytes,
            _: usize,
        ) -> Result<(u16, Bytes), HookFailure> {
            tokio::time::sleep(self.1).await;
            self.0.clone()
        }
    }

    #[tokio::test]
    async fn failures_follow_the_failure_mode_and_are_counted() {
        let upload = Upload {
            key: "k",
            hash: String::new(),
            width: 1,
            height: 1,
            format: "png",
            rating: "g",
            preview: &[],
        };
        let fast = Duration::from_millis(1);
        // Past the 100 ms timeout of the cases below.
        let slow = Duration::from_secs(2);
        // (the transport's answer, after, mode) → the check's result, a metric line
        type Case<'a> = (
            Result<(u16, Bytes), HookFailure>,
            Duration,
            HookFailureMode,
            Result<(), HookError>,
            &'a str,
        );
        let cases: Vec<Case> = vec![
            (
                Ok((200, Bytes::new())),
                fast,
                HookFailureMode::Closed,
                Ok(()),
                "outcome=\"accepted\"} 1",
            ),
            (
                Ok((422, Bytes::from_static(br#"{"reason":"no"}"#))),
                fast,
                HookFailureMode::Open,
                Err(HookError::Rejected("no".into())),
                "outcome=\"rejected\"} 1",
            ),
            (
                Ok((200, Bytes::new())),
                slow,
                HookFailureMode::Closed,
                Err(HookError::Unavailable(HookFailure::Timeout(100))),
                "reason=\"timeout\"} 1",
            ),
            (
                Ok((200, Bytes::new())),
                slow,
                HookFailureMode::Open,
                Ok(()),
                "outcome=\"failed_open\"} 1",
            ),
            (
                Err(HookFailure::TooLarge(MAX_ANSWER_BYTES)),
                fast,
                HookFailureMode::Closed,
                Err(HookError::Unavailable(HookFailure::TooLarge(
                    MAX_ANSWER_BYTES,
                ))),
                "reason=\"too_large\"} 1",
            ),
            (
                Ok((500, Bytes::new())),
                fast,
                HookFailureMode::Closed,
                Err(HookError::Unavailable(HookFailure::Status(500))),
                "outcome=\"failed_closed\"} 1",
            ),
        ];
        for (answer, delay, failure, want, metric) in cases {
            let config = HookConfig {
                url: "http://127.0.0.1:9/".into(),
                timeout: Duration::from_millis(100),
                failure,
            };
            let hook = UploadHook::new(config, Arc::new(Fixed(answer.clone(), delay)));
            assert_eq!(
                hook.check(&upload).await,
                want,
                "{answer:?} {delay:?} {failure:?}"
            );
            let mut out = Exposition::new();
            hook.write_metrics(&mut out);
            let text = out.finish();
            assert!(text.contains(metric), "{metric} in\n{text}");
        }
    }
}
