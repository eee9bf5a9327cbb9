//! Static browser assets compiled into the binary: the live-avatar client as
//! a classic script (`/v1/client.js`), as an ES module (`/v1/client.mjs`),
//! both also as `/v1/client.<hash16>.{js,mjs}` for immutable caching, its
//! TypeScript declarations (`/v1/client.d.ts`), and
//! the demo platform page (`/demo`, `/demo/demo.js`, `/demo/demo.css`,
//! `POST /demo/upload-url`, all only with `--demo`).
//!
//! Invariants: asset bytes come from `include_str!` (no runtime file reads);
//! every asset has a strong ETag derived from the BLAKE3 hash of its bytes,
//! and the hashed client URL answers only for the current hash (an old hash
//! is a 404, never stale bytes under an immutable lifetime). The demo upload
//! endpoint mints a signed URL for [`DEMO_EMAIL`] only, so the API token
//! never reaches the browser.
//!
//! Boundaries: no I/O, no state; routing glue lives in `route`, which the
//! parent's `route()` calls before its not-found fallback.

use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};

use super::response::{full, not_modified};
use super::router::method_not_allowed;
use super::{App, Body};
use crate::metrics::Route;

/// The browser client as a classic script: the shared core
/// (`assets/client/core.js`) in a wrapper that starts it by itself.
pub const CLIENT_JS: &str = concat!(
    include_str!("../../assets/client/classic-head.js"),
    include_str!("../../assets/client/core.js"),
    include_str!("../../assets/client/classic-tail.js"),
);
/// The same core as an ES module exporting `start({ base })`.
pub const CLIENT_MJS: &str = concat!(
    include_str!("../../assets/client/core.js"),
    include_str!("../../assets/client/module-tail.js"),
);
/// TypeScript declarations of both.
pub const CLIENT_DTS: &str = include_str!("../../assets/client/client.d.ts");
const DEMO_HTML: &str = include_str!("../../assets/demo.html");
const DEMO_JS: &str = include_str!("../../assets/demo.js");
const DEMO_CSS: &str = include_str!("../../assets/demo.css");

/// The identity the demo page shows and uploads for.
pub const DEMO_EMAIL: &str = "demo@avatar-edge.invalid";
/// Lifetime of the upload URLs the demo mints, seconds.
pub const DEMO_UPLOAD_URL_TTL: u64 = 300;

const JS: &str = "text/javascript; charset=utf-8";
const TS: &str = "application/typescript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";
const CLIENT_CACHE: &str = "public, max-age=300";
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// The demo page loads its own scripts and styles, images from here (and the
/// placeholder data URL), and talks only to this origin.
const DEMO_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; form-action 'none'; base-uri 'none'; \
frame-ancestors 'none'";

/// First 16 hex digits of the BLAKE3 hash of `bytes`.
pub fn hash16(bytes: &[u8]) -> String {
    let mut hex = blake3::hash(bytes).to_hex().to_string();
    hex.truncate(16);
    hex
}

/// The immutable URL path of the current client: `/v1/client.<hash16>.js`.
pub fn client_path() -> String {
    format!("/v1/client.{}.js", hash16(CLIENT_JS.as_bytes()))
}

/// The immutable URL path of the current module: `/v1/client.<hash16>.mjs`.
pub fn module_path() -> String {
    format!("/v1/client.{}.mjs", hash16(CLIENT_MJS.as_bytes()))
}

/// The demo page with its placeholders filled in.
pub fn demo_html() -> String {
    use md5::Digest;
    let key = hex::encode(md5::Md5::digest(DEMO_EMAIL.as_bytes()));
    DEMO_HTML
        .replace("{{CLIENT_URL}}", &client_path())
        .replace("{{KEY}}", &key)
        .replace("{{EMAIL}}", DEMO_EMAIL)
}

/// Answer the asset routes; `None` for any other path (or for the demo
/// routes when the demo is off), so the caller falls through to its 404.
pub(super) fn route(
    app: &App,
    method: &Method,
    path: &str,
    headers: &http::HeaderMap,
) -> Option<(Route, Response<Body>)> {
    let read = *method == Method::GET || *method == Method::HEAD;
    let head = *method == Method::HEAD;
    if let Some(rest) = path.strip_prefix("/v1/client") {
        let (text, content_type, cache) = match rest {
            ".js" => (CLIENT_JS, JS, CLIENT_CACHE),
            ".mjs" => (CLIENT_MJS, JS, CLIENT_CACHE),
            ".d.ts" => (CLIENT_DTS, TS, CLIENT_CACHE),
            _ => {
                let (h, text) = match rest.strip_prefix('.') {
                    Some(r) if r.ends_with(".mjs") => (&r[..r.len() - 4], CLIENT_MJS),
                    Some(r) if r.ends_with(".js") => (&r[..r.len() - 3], CLIENT_JS),
                    _ => return None,
                };
                if h != hash16(text.as_bytes()) {
                    return None;
                }
                (text, JS, IMMUTABLE)
            }
        };
        if !read {
            return Some((Route::ApiOther, method_not_allowed("GET, HEAD")));
        }
        let mut r = asset(headers, head, text, content_type, cache);
        r.headers_mut().insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        return Some((Route::ApiOther, r));
    }
    if !app.http.demo || !(path == "/demo" || path.starts_with("/demo/")) {
        return None;
    }
    let r = match path {
        "/demo/upload-url" if *method == Method::POST => demo_upload_url(app),
        "/demo/upload-url" => method_not_allowed("POST"),
        _ if !read => method_not_allowed("GET, HEAD"),
        "/demo" | "/demo/" => {
            let mut r = asset(headers, head, &demo_html(), HTML, "no-cache");
            r.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(DEMO_CSP),
            );
            r
        }
        "/demo/demo.js" => asset(headers, head, DEMO_JS, JS, "no-cache"),
        "/demo/demo.css" => asset(headers, head, DEMO_CSS, CSS, "no-cache"),
        _ => return None,
    };
    Some((Route::Other, r))
}

/// A text asset with a strong ETag, answering 304 to a matching `If-None-Match`.
fn asset(
    headers: &http::HeaderMap,
    head: bool,
    text: &str,
    content_type: &'static str,
    cache_control: &'static str,
) -> Response<Body> {
    let etag = HeaderValue::from_str(&format!("\"{}\"", hash16(text.as_bytes())))
        .unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
    let is_304 = not_modified(headers, &etag);
    let body = if is_304 || head {
        full(bytes::Bytes::new())
    } else {
        full(bytes::Bytes::copy_from_slice(text.as_bytes()))
    };
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(header::ETAG, etag);
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    if is_304 {
        *r.status_mut() = StatusCode::NOT_MODIFIED;
    } else {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
    }
    r
}

/// `POST /demo/upload-url`: a signed upload URL for the demo user, minted
/// here so the page needs no token (same shape as `POST /v1/upload-urls`).
fn demo_upload_url(app: &App) -> Response<Body> {
    let keys = match crate::model::IdentityKeys::parse(DEMO_EMAIL) {
        Ok(k) => k,
        Err(e) => return super::error_response(crate::spec::SpecError::Key(e)),
    };
    let ttl = DEMO_UPLOAD_URL_TTL.min(app.max_upload_url_ttl.max(1));
    super::upload_urls::upload_url_response(app, &keys, ttl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_client_path_matches_the_bytes() {
        let p = client_path();
        let h = p
            .strip_prefix("/v1/client.")
            .and_then(|r| r.strip_suffix(".js"))
            .unwrap();
        assert_eq!(h.len(), 16);
        assert!(h.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(h, hash16(CLIENT_JS.as_bytes()));
        assert_ne!(hash16(b"a"), hash16(b"b"));
        let m = module_path();
        assert_eq!(
            m.strip_prefix("/v1/client.")
                .and_then(|r| r.strip_suffix(".mjs")),
            Some(hash16(CLIENT_MJS.as_bytes()).as_str())
        );
    }

    #[test]
    fn classic_and_module_share_one_core() {
        let core = include_str!("../../assets/client/core.js");
        assert!(CLIENT_JS.contains(core) && CLIENT_MJS.contains(core));
        assert!(CLIENT_MJS.contains("export function start(options)"));
        assert!(
            !CLIENT_JS.contains("export "),
            "a classic script cannot export"
        );
        assert!(CLIENT_JS.contains("window.AvatarEdge = createAvatarClient"));
        assert!(CLIENT_DTS.contains("export function start(options: StartOptions): AvatarClient;"));
    }

    #[test]
    fn demo_page_has_every_placeholder_filled() {
        let html = demo_html();
        assert!(!html.contains("{{"), "unfilled placeholder");
        assert!(html.contains(&format!("src=\"{}\"", client_path())));
        // md5("demo@avatar-edge.invalid"), as the identity URLs expect.
        use md5::Digest;
        let key = hex::encode(md5::Md5::digest(DEMO_EMAIL.as_bytes()));
        assert_eq!(html.matches("data-avatar-live").count(), 5);
        for size in ["32", "256", "48"] {
            let src = format!("src=\"/avatar/{key}?s={size}&amp;d=identicon\"");
            assert!(html.contains(&src), "{src}");
        }
    }

    #[test]
    fn etag_and_304() {
        let r = asset(&http::HeaderMap::new(), false, "x", JS, CLIENT_CACHE);
        assert_eq!(r.status(), StatusCode::OK);
        let etag = r.headers()[header::ETAG].clone();
        assert_eq!(etag.to_str().unwrap(), format!("\"{}\"", hash16(b"x")));
        let mut h = http::HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, etag);
        let r = asset(&h, false, "x", JS, CLIENT_CACHE);
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        assert!(r.headers().get(header::CONTENT_TYPE).is_none());
        let r = asset(&h, false, "y", JS, CLIENT_CACHE);
        assert_eq!(r.status(), StatusCode::OK, "changed bytes, new tag");
    }
}
