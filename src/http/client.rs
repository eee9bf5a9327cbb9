//! Outbound HTTP(S) for purges and webhooks: hyper-util's pooled client with
//! rustls (ring, the OS trust store) and a per-request timeout. Implements
//! the transport the delivery workers use.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

use crate::delivery::{Outbound, Transport};

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
            .header(
                "user-agent",
                concat!("avatar-edge/", env!("CARGO_PKG_VERSION")),
            )
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
