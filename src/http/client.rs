//! Outbound HTTP(S) for purges, webhooks, the upload policy hook and
//! upstream avatars: hyper-util's pooled client with rustls (ring, the OS
//! trust store). Implements the transport the delivery workers use (with a
//! per-request timeout), the policy hook's (bounded answer; the hook times
//! the whole exchange itself) and the migration proxy's fetch (its deadline
//! is the caller's).

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

use crate::delivery::{Outbound, Transport};
use crate::fallback::{FallbackError, Got};
use crate::policy::{HookFailure, HookTransport};

const USER_AGENT: &str = concat!("avatar-edge/", env!("CARGO_PKG_VERSION"));

/// Time allowed for one delivery request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A pooled HTTP/1.1 client for `http://` and `https://` URLs.
pub struct HttpTransport {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl HttpTransport {
    pub fn new() -> std::io::Result<HttpTransport> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(HttpTransport {
            client: Client::builder(TokioExecutor::new()).build(https),
        })
    }
}

#[async_trait::async_trait]
impl Transport for HttpTransport {
    async fn send(&self, out: Outbound) -> Result<u16, String> {
        let method = Method::from_bytes(out.method.as_bytes()).map_err(|e| e.to_string())?;
        let mut req = Request::builder().method(method).uri(&out.url);
        for (k, v) in &out.headers {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| e.to_string())?;
            let value = HeaderValue::from_str(v).map_err(|e| e.to_string())?;
            req = req.header(name, value);
        }
        let req = req
            .header(header::USER_AGENT, USER_AGENT)
            .body(Full::new(out.body))
            .map_err(|e| e.to_string())?;
        let fut = async {
            let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            // Drain the body so the connection can be reused.
            let _ = resp.into_body().collect().await;
            Ok(status)
        };
        tokio::time::timeout(REQUEST_TIMEOUT, fut)
            .await
            .map_err(|_| "timed out".to_string())?
    }
}

/// An error with its chain of sources, one line (hyper-util's client error
/// says "client error (Connect)" and keeps the why in its sources).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out.push_str(": ");
        out.push_str(&s.to_string());
        next = s.source();
    }
    out
}

#[async_trait::async_trait]
impl HookTransport for HttpTransport {
    async fn post_json(
        &self,
        url: &str,
        body: Bytes,
        max_answer: usize,
    ) -> Result<(u16, Bytes), HookFailure> {
        let req = Request::post(url)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, USER_AGENT)
            .body(Full::new(body))
            .map_err(|e| HookFailure::Connect(e.to_string()))?;
        let resp = self.client.request(req).await.map_err(|e| {
            if e.is_connect() {
                HookFailure::Connect(chain(&e))
            } else {
                HookFailure::Protocol(chain(&e))
            }
        })?;
        let status = resp.status().as_u16();
        let declared = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max_answer as u64) {
            return Err(HookFailure::TooLarge(max_answer));
        }
        match Limited::new(resp.into_body(), max_answer).collect().await {
            Ok(c) => Ok((status, c.to_bytes())),
            Err(e)
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                Err(HookFailure::TooLarge(max_answer))
            }
            Err(e) => Err(HookFailure::Protocol(chain(e.as_ref()))),
        }
    }
}

/// Issue 17: one GET of an upstream avatar service, its 2xx body read up to
/// `max_body` bytes and no further (a longer body ends the connection).
#[async_trait::async_trait]
impl crate::fallback::Fetch for HttpTransport {
    async fn get(&self, url: &str, max_body: usize) -> Result<Got, FallbackError> {
        let req = Request::get(url)
            .header(
                "user-agent",
                concat!("avatar-edge/", env!("CARGO_PKG_VERSION"), " (fallback)"),
            )
            .header("accept", "image/png, image/jpeg, image/gif, image/webp")
            .body(Full::new(Bytes::new()))
            .map_err(|e| FallbackError::Connect(e.to_string()))?;
        let resp = self.client.request(req).await.map_err(|e| {
            use std::error::Error;
            let cause = e.source().map(|s| format!(": {s}")).unwrap_or_default();
            FallbackError::Connect(format!("{e}{cause}"))
        })?;
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        if !(200..300).contains(&status) {
            // Not read: dropping it closes the connection if anything is left.
            return Ok(Got {
                status,
                location,
                body: Bytes::new(),
            });
        }
        let declared = resp
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max_body as u64) {
            return Err(FallbackError::TooLarge(max_body));
        }
        let mut body = resp.into_body();
        let mut buf = bytes::BytesMut::with_capacity(declared.unwrap_or(0) as usize);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| FallbackError::Connect(e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > max_body {
                    return Err(FallbackError::TooLarge(max_body));
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(Got {
            status,
            location,
            body: buf.freeze(),
        })
    }
}
