//! Issue 16 through `http::handle` (no socket): takedowns by content — 410 on
//! every size and format, defaults for bound identities with events, 451 on a
//! re-upload under any key, lifts — and the audit trail with its actors.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::Value;

mod inproc;
use inproc::{env, env_with, fixture, Env, Resp, TOKEN};

const PHOTO: &str = "photo_grace_hopper_512x600.jpg";
const LOGO: &str = "logo_alpha_disc_512.png";

fn md5_hex(s: &str) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(s.as_bytes()))
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn call(e: &Env, method: &str, uri: &str, token: Option<&str>, body: &str) -> Resp {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        b = b.header("authorization", bearer(t));
    }
    e.send(b.body(Full::new(Bytes::from(body.to_string()))).unwrap())
        .await
}

async fn take_down(e: &Env, body: &str) -> Resp {
    call(e, "POST", "/v1/takedowns", Some(TOKEN), body).await
}

fn text(r: &Resp) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// Every content URL form of `hash` a page or the CDN may have cached.
fn content_urls(hash: &str) -> Vec<String> {
    let mut urls = vec![format!("/c/{hash}")];
    for size in [32, 80, 200] {
        for ext in ["", ".png", ".jpg", ".webp"] {
            urls.push(format!("/c/{hash}{ext}?s={size}"));
        }
    }
    urls
}

#[tokio::test]
async fn a_takedown_is_gone_everywhere_refused_on_reupload_and_lifted_back() {
    let e = env();
    let alice = e.upload_ok("alice@example.org", PHOTO).await;
    let bob = e.upload_ok("bob@example.org", PHOTO).await;
    let carol = e.upload_ok("carol@example.org", LOGO).await;
    let hash = alice["hash"].as_str().unwrap().to_string();
    assert_eq!(bob["hash"], alice["hash"], "same content, two identities");
    // Warm the caches first: a takedown must beat them.
    for url in content_urls(&hash) {
        assert_eq!(e.get(&url).await.status, 200, "{url}");
    }
    let mut live = e.app.service.subscribe();

    let r = take_down(&e, &format!(r#"{{"hash":"{hash}","reason":"DMCA #42"}}"#)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", text(&r));
    let t = r.json();
    assert_eq!(
        (t["hash"].as_str(), t["reason"].as_str()),
        (Some(hash.as_str()), Some("DMCA #42"))
    );
    assert_eq!(
        (t["actor"].as_str(), t["identities"].as_u64()),
        (Some("admin"), Some(2))
    );

    // 410 with the JSON error and the content's surrogate key, every form.
    for url in content_urls(&hash) {
        let r = e
            .get_with(&url, ("accept", "image/avif,image/webp,*/*"))
            .await;
        assert_eq!(r.status, StatusCode::GONE, "{url}");
        assert_eq!(r.json()["error"], "gone", "{url}");
        assert_eq!(r.header("surrogate-key"), hash, "{url}");
        assert_eq!(r.header("xkey"), hash, "{url}");
        assert_eq!(r.header("cache-control"), "public, max-age=60", "{url}");
    }
    // Bound identities serve their default, cacheable, with their keys.
    for email in ["alice@example.org", "bob@example.org"] {
        let md5 = md5_hex(email);
        let r = e.get(&format!("/avatar/{md5}?s=80")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.avatar_default(), Some("identicon"), "{email}");
        assert_eq!(r.header("cache-control"), "public, max-age=60");
        assert!(r.header("surrogate-key").contains(&md5), "{email}");
        assert!(!r.header("surrogate-key").contains(&hash), "{email}");
        let d = e.get(&format!("/v1/avatars/{email}")).await.json();
        assert_eq!(d["blocked"], true, "{email}");
    }
    let r = e
        .get(&format!("/avatar/{}", md5_hex("carol@example.org")))
        .await;
    assert_eq!(r.avatar_default(), None, "other content stays");
    assert_ne!(carol["hash"], alice["hash"]);
    // One event per identity: a new version, no avatar.
    let mut seen = Vec::new();
    for _ in 0..2 {
        let ev = live.recv().await.unwrap();
        assert_eq!(ev.hash, None);
        assert_eq!(
            ev.previous.map(|h| h.to_hex()),
            Some(hash.clone()),
            "purges the content"
        );
        assert_eq!(ev.version, 2);
        seen.push(ev.key.to_hex());
    }
    seen.sort();
    let mut want = vec![md5_hex("alice@example.org"), md5_hex("bob@example.org")];
    want.sort();
    assert_eq!(seen, want);

    // The same content under any key: 451, nothing bound.
    for key in ["dave@example.org", "alice@example.org"] {
        let r = e.put(key, "", fixture(PHOTO)).await;
        assert_eq!(r.status, StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS, "{key}");
        let j = r.json();
        assert_eq!(j["error"], "blocked");
        assert!(j["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    assert_eq!(e.get("/v1/avatars/dave@example.org").await.status, 404);

    // Listed, then lifted: the content and the identities come back.
    let list = call(&e, "GET", "/v1/takedowns", Some(TOKEN), "")
        .await
        .json();
    assert_eq!(list["takedowns"].as_array().unwrap().len(), 1);
    assert_eq!(list["takedowns"][0]["reason"], "DMCA #42");
    assert_eq!(list["next"], Value::Null);
    let r = call(
        &e,
        "DELETE",
        &format!("/v1/takedowns/{hash}"),
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.json()["identities"], 2);
    for _ in 0..2 {
        let ev = live.recv().await.unwrap();
        assert_eq!(
            (ev.hash.map(|h| h.to_hex()), ev.version),
            (Some(hash.clone()), 3)
        );
    }
    for url in content_urls(&hash) {
        assert_eq!(e.get(&url).await.status, 200, "{url}");
    }
    for email in ["alice@example.org", "bob@example.org"] {
        let r = e.get(&format!("/avatar/{}", md5_hex(email))).await;
        assert_eq!(r.avatar_default(), None, "{email} is back");
        assert!(r.header("surrogate-key").contains(&hash));
        assert_eq!(
            e.get(&format!("/v1/avatars/{email}"))
                .await
                .json()
                .get("blocked"),
            None
        );
    }
    assert_eq!(
        e.put("dave@example.org", "", fixture(PHOTO)).await.status,
        200
    );
    let again = call(
        &e,
        "DELETE",
        &format!("/v1/takedowns/{hash}"),
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(again.status, 404, "nothing left to lift");
}

#[tokio::test]
async fn takedowns_by_key_repeated_unknown_malformed_unauthorized_and_paged() {
    let e = env();
    let a = e.upload_ok("alice@example.org", PHOTO).await;
    let b = e.upload_ok("bob@example.org", LOGO).await;
    let c = e
        .upload_ok("carol@example.org", "photo_large_4032x3024.jpg")
        .await;

    // By key: the content the identity shows now.
    let r = take_down(&e, r#"{"key":"Alice@Example.org","reason":"abuse"}"#).await;
    assert_eq!(r.status, 201, "{}", text(&r));
    assert_eq!(r.json()["hash"], a["hash"]);
    // By one of its hashes too; again: the existing takedown, 200.
    let again = format!(
        r#"{{"key":"{}","reason":"other"}}"#,
        md5_hex("alice@example.org")
    );
    let r = take_down(&e, &again).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.json()["reason"], "abuse", "the first one stands");

    // Unknown content or identity: 404.
    let unknown = format!(r#"{{"hash":"{}","reason":"x"}}"#, "ab".repeat(32));
    assert_eq!(take_down(&e, &unknown).await.status, 404);
    let nobody = take_down(&e, r#"{"key":"nobody@example.org","reason":"x"}"#).await;
    assert_eq!(nobody.status, 404);
    let lift = call(
        &e,
        "DELETE",
        &format!("/v1/takedowns/{}", "ab".repeat(32)),
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(lift.status, 404);

    // Malformed: 400 naming the field.
    let h = b["hash"].as_str().unwrap();
    let cases = [
        ("{not json", "body"),
        (r#"{"reason":"x"}"#, "hash"),
        (r#"{"hash":"xyz","reason":"x"}"#, "hash"),
        (r#"{"key":"not a key","reason":"x"}"#, "key"),
        (&*format!(r#"{{"hash":"{h}"}}"#), "reason"),
        (
            &*format!(r#"{{"hash":"{h}","reason":"x","extra":1}}"#),
            "extra",
        ),
    ];
    for (body, field) in cases {
        let r = take_down(&e, body).await;
        assert_eq!(r.status, 400, "{body}");
        let j = r.json();
        assert_eq!(j["error"], "bad_request", "{body}");
        assert!(
            j["message"].as_str().unwrap().contains(field),
            "{body}: {j}"
        );
    }
    let bad = call(&e, "DELETE", "/v1/takedowns/not-a-hash", Some(TOKEN), "").await;
    assert_eq!(bad.status, 400);
    assert_eq!(
        e.get(&format!("/c/{h}")).await.status,
        200,
        "nothing was taken down"
    );

    // Token only, everywhere.
    for (m, uri) in [
        ("GET", "/v1/takedowns"),
        ("POST", "/v1/takedowns"),
        ("GET", "/v1/audit"),
    ] {
        let r = call(&e, m, uri, None, &unknown).await;
        assert_eq!(r.status, 401, "{m} {uri}");
    }
    let del = format!("/v1/takedowns/{}", a["hash"].as_str().unwrap());
    assert_eq!(call(&e, "DELETE", &del, None, "").await.status, 401);
    assert_eq!(
        call(&e, "PUT", "/v1/takedowns", Some(TOKEN), "")
            .await
            .status,
        405
    );

    // Paged in hash order.
    for v in [&b, &c] {
        let body = format!(
            r#"{{"hash":"{}","reason":"p"}}"#,
            v["hash"].as_str().unwrap()
        );
        assert_eq!(take_down(&e, &body).await.status, 201);
    }
    let mut all: Vec<String> = [&a, &b, &c]
        .iter()
        .map(|v| v["hash"].as_str().unwrap().to_string())
        .collect();
    all.sort();
    let p1 = call(&e, "GET", "/v1/takedowns?limit=2", Some(TOKEN), "")
        .await
        .json();
    let got: Vec<&str> = p1["takedowns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["hash"].as_str().unwrap())
        .collect();
    assert_eq!(got, [all[0].as_str(), all[1].as_str()]);
    assert_eq!(p1["next"], all[1]);
    let next = format!("/v1/takedowns?limit=2&after={}", all[1]);
    let p2 = call(&e, "GET", &next, Some(TOKEN), "").await.json();
    assert_eq!(p2["takedowns"][0]["hash"], all[2]);
    assert_eq!(
        (p2["takedowns"].as_array().unwrap().len(), &p2["next"]),
        (1, &Value::Null)
    );
    let r = call(&e, "GET", "/v1/takedowns?limit=0", Some(TOKEN), "").await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn the_audit_trail_records_every_mutation_with_its_actor_and_pages() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(&file, "ops:ops-token-0123456789\n").unwrap();
    let e = env_with(|c| c.auth.token_file = Some(file.clone()));
    let ops = "ops-token-0123456789";
    let email = "audit@example.org";
    let md5 = md5_hex(email);

    // upload by `ops`, rating by `admin`, upload by a signed URL, delete,
    // takedown, lift, token reload.
    let put = e
        .send(
            Request::put(format!("/v1/avatars/{email}"))
                .header("authorization", bearer(ops))
                .body(Full::new(Bytes::from(fixture(PHOTO))))
                .unwrap(),
        )
        .await;
    assert_eq!(put.status, 200);
    let photo = put.json()["hash"].as_str().unwrap().to_string();
    let r = call(
        &e,
        "PATCH",
        &format!("/v1/avatars/{email}"),
        Some(TOKEN),
        r#"{"rating":"pg"}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    let minted = call(
        &e,
        "POST",
        "/v1/upload-urls",
        Some(TOKEN),
        &format!(r#"{{"key":"{email}"}}"#),
    )
    .await;
    let url = minted.json()["url"].as_str().unwrap().to_string();
    let signed = e
        .send(
            Request::put(url)
                .body(Full::new(Bytes::from(fixture(LOGO))))
                .unwrap(),
        )
        .await;
    assert_eq!(signed.status, 200, "{}", text(&signed));
    let logo = signed.json()["hash"].as_str().unwrap().to_string();
    // A no-op (same bytes again) is not a mutation.
    assert_eq!(e.put(email, "", fixture(LOGO)).await.status, 200);
    assert_eq!(e.delete(email).await.status, 204);
    e.upload_ok("other@example.org", PHOTO).await;
    let t = call(
        &e,
        "POST",
        "/v1/takedowns",
        Some(ops),
        &format!(r#"{{"hash":"{photo}","reason":"spam"}}"#),
    )
    .await;
    assert_eq!(t.status, 201);
    let l = call(
        &e,
        "DELETE",
        &format!("/v1/takedowns/{photo}"),
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(l.status, 200);
    e.app.service.audit_tokens_reloaded(1).await;

    let page = call(&e, "GET", "/v1/audit", Some(ops), "").await;
    assert_eq!(page.status, 200);
    let page = page.json();
    let entries = page["entries"].as_array().unwrap();
    let other = md5_hex("other@example.org");
    // (action, actor, key, hash)
    let want: Vec<(&str, &str, Option<&str>, Option<&str>)> = vec![
        ("upload", "ops", Some(&md5), Some(&photo)),
        ("rating", "admin", Some(&md5), Some(&photo)),
        ("upload", "signed-url", Some(&md5), Some(&logo)),
        ("delete", "admin", Some(&md5), Some(&logo)),
        ("upload", "admin", Some(&other), Some(&photo)),
        ("takedown", "ops", None, Some(&photo)),
        ("lift", "admin", None, Some(&photo)),
        ("tokens_reloaded", "admin", None, None),
    ];
    let got: Vec<(&str, &str, Option<&str>, Option<&str>)> = entries
        .iter()
        .map(|x| {
            (
                x["action"].as_str().unwrap(),
                x["actor"].as_str().unwrap(),
                x["key"].as_str(),
                x["hash"].as_str(),
            )
        })
        .collect();
    assert_eq!(got, want);
    let mut last = 0;
    for x in entries {
        for field in ["id", "at", "actor", "action", "key", "hash", "detail"] {
            assert!(x.get(field).is_some(), "{field} missing: {x}");
        }
        let id = x["id"].as_u64().unwrap();
        assert!(id > last, "ids grow");
        last = id;
        assert!(x["at"].as_u64().unwrap() > 1_700_000_000_000);
    }
    assert_eq!(entries[1]["detail"], "rating pg");
    assert!(entries[5]["detail"].as_str().unwrap().contains("spam"));
    assert_eq!(page["next"], Value::Null);
    assert!(
        !text(&call(&e, "GET", "/v1/audit", Some(TOKEN), "").await).contains(email),
        "no emails kept"
    );

    // Paging: 3 + 3 + 2, each page's `next` the last id on it.
    let mut after = 0;
    let mut ids: Vec<u64> = Vec::new();
    for expect in [3, 3, 2] {
        let p = call(
            &e,
            "GET",
            &format!("/v1/audit?after={after}&limit=3"),
            Some(TOKEN),
            "",
        )
        .await
        .json();
        let got: Vec<u64> = p["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["id"].as_u64().unwrap())
            .collect();
        assert_eq!(got.len(), expect);
        ids.extend(&got);
        match p["next"].as_u64() {
            Some(n) => {
                assert_eq!(n, *got.last().unwrap());
                after = n;
            }
            None => assert_eq!(expect, 2, "only the last page ends"),
        }
    }
    let all: Vec<u64> = entries.iter().map(|x| x["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, all);
    for q in ["after=x", "limit=0", "limit=100000"] {
        let r = call(&e, "GET", &format!("/v1/audit?{q}"), Some(TOKEN), "").await;
        assert_eq!(r.status, 400, "{q}");
    }
}

#[tokio::test]
async fn takedowns_and_the_audit_trail_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let build = || {
        avatar_edge::cli::build_app(avatar_edge::config::Config::for_tests(dir.path()), false)
            .unwrap()
    };
    let built = build();
    let e = Env {
        app: built.app,
        dir: tempfile::tempdir().unwrap(),
        shutdown: built.shutdown,
    };
    let v = e.upload_ok("restart@example.org", PHOTO).await;
    let hash = v["hash"].as_str().unwrap().to_string();
    let r = take_down(&e, &format!(r#"{{"hash":"{hash}","reason":"kept"}}"#)).await;
    assert_eq!(r.status, 201);
    drop(e);

    let built = build();
    let e = Env {
        app: built.app,
        dir: tempfile::tempdir().unwrap(),
        shutdown: built.shutdown,
    };
    assert_eq!(e.get(&format!("/c/{hash}?s=64")).await.status, 410);
    let r = e
        .get(&format!("/avatar/{}", md5_hex("restart@example.org")))
        .await;
    assert_eq!(r.avatar_default(), Some("identicon"));
    assert_eq!(
        e.put("new@example.org", "", fixture(PHOTO)).await.status,
        451
    );
    let audit = call(&e, "GET", "/v1/audit", Some(TOKEN), "").await.json();
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["upload", "takedown"]);
    let lift = call(
        &e,
        "DELETE",
        &format!("/v1/takedowns/{hash}"),
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(lift.status, 200);
    assert_eq!(e.get(&format!("/c/{hash}?s=64")).await.status, 200);
}
