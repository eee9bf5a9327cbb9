//! Real-browser test: the `avatar-edge` binary (with `--demo`) plus headless
//! Chromium driven by `tests/browser/live.mjs` (playwright-core). The script
//! serves pages with 2,000 identities on a second loopback origin that embed
//! `/v1/client.js` (and `/v1/client.mjs`) cross-origin, and checks that
//! without JavaScript every image is real, that uploads reach every image of
//! the changed identities in three tabs within 1 s (pixels equal to the
//! content URL's; an `r`-rated one stays the default at `r=g`), the request
//! budget (one stream and at most two other requests per tab), the failure
//! rules (404 stream → one re-subscribe, 413 → one console report), the
//! invalid-file message and the demo page. Needs `/usr/bin/chromium` and
//! `tests/browser/node_modules`; `scripts/test` installs both.

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
    // The ES module and the type declarations.
    let module = server.request("GET", "/v1/client.mjs", &[], b"");
    assert_eq!(module.status, 200);
    assert_eq!(
        module.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(module.header("access-control-allow-origin"), Some("*"));
    let text = String::from_utf8_lossy(&module.body);
    assert!(text.contains("export function start(options)"));
    let mhash = module.header("etag").unwrap().trim_matches('"').to_string();
    let pinned_module = server.request("GET", &format!("/v1/client.{mhash}.mjs"), &[], b"");
    assert_eq!(pinned_module.status, 200);
    assert_eq!(pinned_module.body, module.body);
    let wrong = server.request("GET", &format!("/v1/client.{hash16}.mjs"), &[], b"");
    assert_eq!(
        wrong.status, 404,
        "the classic script's hash names no module"
    );
    let dts = server.request("GET", "/v1/client.d.ts", &[], b"");
    assert_eq!(dts.status, 200);
    assert_eq!(
        dts.header("content-type"),
        Some("application/typescript; charset=utf-8")
    );
    assert!(String::from_utf8_lossy(&dts.body).contains("export function start("));
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

/// Issue 22: `tests/browser/motion.mjs` — an animated avatar moves (two
/// screenshots differ), holds still under emulated `prefers-reduced-motion:
/// reduce` (the client asks for `animated=0`), and moves again when the
/// preference changes on the open page.
#[test]
fn animated_avatars_hold_still_under_reduced_motion() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(Path::new(&chromium).exists(), "{chromium} is missing");
    assert!(
        root.join("tests/browser/node_modules/playwright-core")
            .is_dir(),
        "playwright-core is missing: run scripts/test (npm ci --prefix tests/browser)"
    );
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], Some(TOKEN));
    let out = Command::new("node")
        .arg(root.join("tests/browser/motion.mjs"))
        .env("AVATAR_EDGE_URL", format!("http://{}", server.addr))
        .env("AVATAR_EDGE_TOKEN", TOKEN)
        .env("FIXTURES", root.join("fixtures"))
        .env("CHROMIUM", &chromium)
        .output()
        .expect("node runs (Node 20 is needed)");
    println!("{}", String::from_utf8_lossy(&out.stdout));
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "tests/browser/motion.mjs failed");
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
