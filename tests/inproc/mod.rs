//! The in-process harness shared by the service and hostile-input tests: the
//! whole application built by `cli::build_app` on a temporary data directory
//! and called through `http::handle`, without a socket.
#![allow(dead_code)]

use std::sync::Arc;

use avatar_edge::config::Config;
use avatar_edge::http::{handle, App};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::Value;

/// The admin token `Config::for_tests` sets.
pub const TOKEN: &str = "test-token-0123456789";

pub struct Env {
    pub app: Arc<App>,
    /// The data directory (kept alive as long as the app).
    pub dir: tempfile::TempDir,
    /// Kept so event streams stay open (a dropped sender ends them).
    pub shutdown: tokio::sync::watch::Sender<bool>,
}

pub fn env_with(tweak: impl FnOnce(&mut Config)) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_tests(dir.path());
    tweak(&mut config);
    let built = avatar_edge::cli::build_app(config, false).unwrap();
    assert_eq!(built.token, TOKEN);
    Env {
        app: built.app,
        dir,
        shutdown: built.shutdown,
    }
}

pub fn env() -> Env {
    env_with(|_| {})
}

pub fn fixture(name: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("missing header {name}"))
            .to_str()
            .unwrap()
    }
    /// The generated default served instead of an upload, if any.
    pub fn avatar_default(&self) -> Option<&str> {
        self.headers
            .get("x-avatar-default")
            .map(|v| v.to_str().unwrap())
    }
    pub fn image(&self) -> image::DynamicImage {
        image::load_from_memory(&self.body).expect("body decodes as an image")
    }
}

impl Env {
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Resp {
        let (parts, body) = handle(&self.app, req).await.into_parts();
        Resp {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    }

    pub async fn get(&self, uri: &str) -> Resp {
        self.send(Request::get(uri).body(Full::default()).unwrap())
            .await
    }

    pub async fn get_with(&self, uri: &str, header: (&str, &str)) -> Resp {
        self.send(
            Request::get(uri)
                .header(header.0, header.1)
                .body(Full::default())
                .unwrap(),
        )
        .await
    }

    /// `PUT /v1/avatars/{key}{query}` with the admin token.
    pub async fn put(&self, key: &str, query: &str, body: Vec<u8>) -> Resp {
        self.send(
            Request::put(format!("/v1/avatars/{key}{query}"))
                .header("authorization", format!("Bearer {TOKEN}"))
                .body(Full::new(Bytes::from(body)))
                .unwrap(),
        )
        .await
    }

    pub async fn delete(&self, key: &str) -> Resp {
        self.send(
            Request::delete(format!("/v1/avatars/{key}"))
                .header("authorization", format!("Bearer {TOKEN}"))
                .body(Full::default())
                .unwrap(),
        )
        .await
    }

    pub async fn upload_ok(&self, key: &str, file: &str) -> Value {
        let r = self.put(key, "", fixture(file)).await;
        assert_eq!(
            r.status,
            200,
            "{file}: {}",
            String::from_utf8_lossy(&r.body)
        );
        r.json()
    }

    pub fn metric(&self, name: &str) -> u64 {
        let text = self.app.service.metrics_text();
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("metric {name} missing"))
    }
}
