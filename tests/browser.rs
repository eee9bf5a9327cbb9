//! Real-browser test: the `avatar-edge` binary (with `--demo`) plus headless
//! Chromium driven by `tests/browser/live.mjs` (playwright-core). The script
//! serves a platform page on a second loopback origin that embeds
//! `/v1/client.js` cross-origin, uploads through signed URLs in one of two
//! tabs and checks that every avatar in both tabs changes within 1 s (content
//! hash in the URL and pixel colour), then the invalid-file message and the
//! demo page. Needs `/usr/bin/chromium` and `tests/browser/node_modules`;
//! `scripts/test` installs both.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::*;

#[test]
fn live_avatars_in_two_tabs_of_a_real_browser() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: run scripts/test (installs Debian `chromium`)"
    );
    assert!(
        root.join("tests/browser/node_modules/playwright-core")
            .is_dir(),
        "playwright-core is missing: run scripts/test (npm ci --prefix tests/browser)"
    );
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--demo", "--max-upload-mb", "1"], Some(TOKEN));

    // The client and its immutable twin, before the browser uses them.
    let r = server.request("GET", "/v1/client.js", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(r.header("cache-control"), Some("public, max-age=300"));
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    let etag = r.header("etag").unwrap().to_string();
    let hash16 = etag.trim_matches('"').to_string();
    let again = server.request("GET", "/v1/client.js", &[("If-None-Match", &etag)], b"");
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    let pinned = server.request("GET", &format!("/v1/client.{hash16}.js"), &[], b"");
    assert_eq!(pinned.status, 200);
    assert_eq!(pinned.body, r.body);
    assert_eq!(
        pinned.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    let stale = server.request("GET", "/v1/client.0123456789abcdef.js", &[], b"");
    assert_eq!(stale.status, 404, "an old hash never gets the new bytes");
    let demo = server.request("GET", "/demo", &[], b"");
    assert_eq!(demo.status, 200);
    let csp = demo.header("content-security-policy").unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let page = String::from_utf8_lossy(&demo.body);
    assert!(page.contains(&format!("/v1/client.{hash16}.js")));

    let t0 = Instant::now();
    let out = Command::new("node")
        .arg(root.join("tests/browser/live.mjs"))
        .env("AVATAR_EDGE_URL", format!("http://{}", server.addr))
        .env("AVATAR_EDGE_TOKEN", TOKEN)
        .env("FIXTURES", root.join("fixtures"))
        .env("CHROMIUM", &chromium)
        .output()
        .expect("node runs (Node 20 is needed)");
    println!("{}", String::from_utf8_lossy(&out.stdout));
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "tests/browser/live.mjs failed ({:?}) after {:?}",
        out.status,
        t0.elapsed()
    );
    println!("browser test took {:?}", t0.elapsed());
}

#[test]
fn demo_routes_are_404_without_demo() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], Some(TOKEN));
    for (method, path) in [
        ("GET", "/demo"),
        ("GET", "/demo/demo.js"),
        ("POST", "/demo/upload-url"),
    ] {
        let r = server.request(method, path, &[], b"");
        assert_eq!(r.status, 404, "{method} {path}");
        let e: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(e["error"], "not_found");
    }
    // The client itself is always served.
    assert_eq!(server.request("GET", "/v1/client.js", &[], b"").status, 200);
    // The demo's signed URL works without a token, for the demo user only.
    let on = tempfile::tempdir().unwrap();
    let demo = Server::start(on.path(), &["--demo"], Some(TOKEN));
    let r = demo.request("POST", "/demo/upload-url", &[], b"");
    assert_eq!(r.status, 200);
    let signed: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(signed["key"], "demo@avatar-edge.invalid");
    let url = signed["url"].as_str().unwrap();
    let up = demo.request("PUT", url, &[], &fixture("logo_alpha_disc_512.png"));
    assert_eq!(up.status, 200, "{}", String::from_utf8_lossy(&up.body));
    let other = url.replace("demo%40avatar%2Dedge%2Einvalid", "x%40example%2Eorg");
    assert_ne!(other, url);
    let r = demo.request("PUT", &other, &[], &fixture("logo_alpha_disc_512.png"));
    assert_eq!(r.status, 401, "the signature binds the demo user");
}
