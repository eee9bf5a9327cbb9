//! Service tests of event-stream subscriptions (issue 14): `POST
//! /v1/subscriptions` and `GET /v1/events?sub=`, through `http::handle`
//! without a socket, on the embedded store.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

mod inproc;
use inproc::{env, fixture, Env, Resp};

fn md5_hex(s: &str) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(s.as_bytes()))
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// `n` distinct identity hashes, MD5 and SHA-256 mixed.
fn page_keys(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let email = format!("member{i}@example.org");
            if i % 3 == 0 {
                sha256_hex(&email)
            } else {
                md5_hex(&email)
            }
        })
        .collect()
}

async fn subscribe(e: &Env, body: impl Into<Bytes>) -> Resp {
    e.send(
        Request::post("/v1/subscriptions")
            .header("content-type", "text/plain;charset=UTF-8")
            .body(Full::new(body.into()))
            .unwrap(),
    )
    .await
}

fn keys_body(keys: &[String]) -> Vec<u8> {
    serde_json::to_vec(&json!({ "keys": keys })).unwrap()
}

/// An open event stream: frames are read as they come.
struct Stream(avatar_edge::http::Body);

async fn open(e: &Env, uri: &str) -> Result<Stream, Resp> {
    let resp =
        avatar_edge::http::handle(&e.app, Request::get(uri).body(Full::default()).unwrap()).await;
    let (parts, body) = resp.into_parts();
    if parts.status != StatusCode::OK {
        return Err(Resp {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        });
    }
    assert_eq!(parts.headers["content-type"], "text/event-stream");
    Ok(Stream(body))
}

impl Stream {
    /// The data of the next `avatar` event within `ms`, or `None`.
    async fn next_event(&mut self, ms: u64) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
        let mut text = String::new();
        loop {
            if let Some(at) = text.find("event: avatar\ndata: ") {
                let rest = &text[at + 20..];
                if let Some(end) = rest.find("\n\n") {
                    return Some(serde_json::from_str(&rest[..end]).unwrap());
                }
            }
            let frame = tokio::time::timeout_at(deadline, self.0.frame())
                .await
                .ok()??;
            if let Ok(data) = frame.unwrap().into_data() {
                text.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
    }
}

#[tokio::test]
async fn subscriptions_are_content_addressed_and_idempotent() {
    let e = env();
    let keys = page_keys(2000);
    let r = subscribe(&e, keys_body(&keys)).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("cache-control"), "no-store");
    let j = r.json();
    let id = j["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 32);
    assert_eq!(j["keys"], 2000);
    assert_eq!(j["expires_in"], 3600);
    assert!(j["last_event_id"].is_u64());
    assert_eq!(j["events"], format!("/v1/events?sub={id}"));
    assert_eq!(j["recent"], json!({}));
    // Another order, duplicates, upper case: the same subscription.
    let mut again: Vec<String> = keys.iter().rev().map(|k| k.to_uppercase()).collect();
    again.extend(keys[..10].iter().cloned());
    let r2 = subscribe(&e, keys_body(&again)).await;
    assert_eq!(r2.json()["id"], id.as_str());
    assert_eq!(r2.json()["keys"], 2000);
    // A different set, a different id.
    let r3 = subscribe(&e, keys_body(&keys[1..])).await;
    assert_ne!(r3.json()["id"], id.as_str());
}

#[tokio::test]
async fn bad_input_is_refused_whole_with_typed_errors() {
    let e = env();
    let mut keys = page_keys(20);
    let good_id = subscribe(&e, keys_body(&keys)).await.json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // A malformed key: 400 naming it, nothing subscribed.
    keys.truncate(19);
    keys.insert(5, "not-a-hash".into());
    let r = subscribe(&e, keys_body(&keys)).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "bad_key");
    let msg = r.json()["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("keys[5]") && msg.contains("not-a-hash"),
        "{msg}"
    );
    let mut valid = keys.clone();
    valid.remove(5);
    let id = avatar_edge::spec::parse_subscription(&keys_body(&valid))
        .unwrap()
        .id()
        .to_string();
    assert_ne!(id, good_id);
    let r = open(&e, &format!("/v1/events?sub={id}"))
        .await
        .err()
        .unwrap();
    assert_eq!(r.status, 404, "nothing of a refused body was kept");
    assert_eq!(r.json()["error"], "not_found");
    // Limits: 10,000 keys are fine, 10,001 are a 413.
    let many = page_keys(10_001);
    let r = subscribe(&e, keys_body(&many[..10_000])).await;
    assert_eq!(r.status, 200);
    let r = subscribe(&e, keys_body(&many)).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"], "too_many_keys");
    assert!(r.json()["message"].as_str().unwrap().contains("10000"));
    let r = subscribe(&e, vec![b' '; 2 << 20]).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"], "body_too_large");
    // An empty set would mean "every identity": never.
    let r = subscribe(&e, keys_body(&[])).await;
    assert_eq!(
        (r.status.as_u16(), r.json()["error"].clone()),
        (400, json!("no_keys"))
    );
    for body in [
        &b"keys=a,b"[..],
        b"{\"keys\":\"a\"}",
        b"{\"keys\":[],\"all\":true}",
    ] {
        let r = subscribe(&e, body.to_vec()).await;
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(body));
        assert!(r.json()["message"].as_str().unwrap().contains("keys"));
    }
    let r = e.get("/v1/subscriptions").await;
    assert_eq!(r.status, 405);
    // The stream: malformed, unknown, or mixed with keys=.
    for (uri, status) in [
        ("/v1/events?sub=xyz".to_string(), 400),
        (format!("/v1/events?sub={}", "0".repeat(32)), 404),
        (
            format!("/v1/events?sub={good_id}&keys={}", md5_hex("a@b.c")),
            400,
        ),
        (
            format!("/v1/events?keys={}&sub={good_id}", md5_hex("a@b.c")),
            400,
        ),
    ] {
        let r = open(&e, &uri).await.err().unwrap();
        assert_eq!(r.status.as_u16(), status, "{uri}");
        assert!(r.json()["message"].is_string());
    }
}

#[tokio::test]
async fn one_stream_for_two_thousand_identities_resumes_from_the_post() {
    let e = env();
    let mut keys = page_keys(1998);
    keys.push(md5_hex("ada@example.org"));
    keys.push(sha256_hex("grace@example.org"));
    let j = subscribe(&e, keys_body(&keys)).await.json();
    let (id, after) = (
        j["id"].as_str().unwrap(),
        j["last_event_id"].as_u64().unwrap(),
    );
    // A change between the POST and the GET is replayed from `last_event_id`.
    let ada = e
        .upload_ok("ada@example.org", "logo_alpha_disc_512.png")
        .await;
    let mut s = open(&e, &format!("/v1/events?sub={id}&last_event_id={after}"))
        .await
        .unwrap_or_else(|r| panic!("{}", String::from_utf8_lossy(&r.body)));
    let ev = s.next_event(2000).await.expect("replayed event");
    assert_eq!(ev["key"], md5_hex("ada@example.org"));
    assert_eq!(ev["hash"], ada["hash"]);
    assert!(ev["version"].as_u64().unwrap() >= 1);
    // Live: an identity outside the set is filtered out; the SHA-256 one
    // (an alias of the uploaded email) comes through.
    e.upload_ok("stranger@example.org", "logo_alpha_disc_512.png")
        .await;
    let grace = e
        .upload_ok("grace@example.org", "photo_grace_hopper_512x600.jpg")
        .await;
    let ev = s.next_event(2000).await.expect("live event");
    assert_eq!(ev["hash"], grace["hash"]);
    let aliases: Vec<&str> = ev["aliases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(aliases.contains(&sha256_hex("grace@example.org").as_str()));
    assert!(s.next_event(300).await.is_none(), "nothing else");
}

#[tokio::test]
async fn recent_changes_come_with_the_subscription() {
    let e = env();
    let up = e
        .upload_ok("recent@example.org", "logo_alpha_disc_512.png")
        .await;
    let r = e
        .put(
            "rated@example.org",
            "?rating=r",
            fixture("logo_alpha_disc_512.png"),
        )
        .await;
    assert_eq!(r.status, 200);
    let key = md5_hex("recent@example.org");
    let rated = sha256_hex("rated@example.org");
    let quiet = md5_hex("quiet@example.org");
    let j = subscribe(&e, keys_body(&[key.clone(), rated.clone(), quiet.clone()]))
        .await
        .json();
    let recent = j["recent"].as_object().unwrap();
    assert_eq!(recent[&key]["hash"], up["hash"]);
    assert_eq!(recent[&key]["version"], up["version"]);
    assert!(recent.contains_key(&rated), "any alias of a recent change");
    assert!(!recent.contains_key(&quiet), "never changed");
    assert!(j["last_event_id"].as_u64().unwrap() >= 2);
}

#[tokio::test]
async fn versioned_identity_urls_keep_ratings_and_defaults() {
    let e = env();
    let r = e
        .put(
            "rated@example.org",
            "?rating=r",
            fixture("logo_alpha_disc_512.png"),
        )
        .await;
    let version = r.json()["version"].as_u64().unwrap();
    let key = md5_hex("rated@example.org");
    // What the client points an image at after a change: `v=` changes the
    // URL (caches), never the answer.
    let plain = e.get(&format!("/avatar/{key}?s=48&d=identicon&r=x")).await;
    let versioned = e
        .get(&format!("/avatar/{key}?s=48&d=identicon&r=x&v={version}"))
        .await;
    assert_eq!(versioned.status, 200);
    assert_eq!(versioned.body, plain.body);
    assert!(versioned.avatar_default().is_none());
    // At the page's rating g it stays the default, the same bytes as
    // an identity with no avatar at all would get for d=identicon.
    let g = e
        .get(&format!("/avatar/{key}?s=48&d=identicon&v={version}"))
        .await;
    assert_eq!(g.status, 200);
    assert!(g.avatar_default().is_some());
    assert_ne!(g.body, plain.body);
    let g_plain = e.get(&format!("/avatar/{key}?s=48&d=identicon")).await;
    assert_eq!(g.body, g_plain.body);
}

#[tokio::test]
async fn a_version_this_node_has_not_reached_is_never_cached() {
    // What a cluster node whose replica lags the event a page saw answers:
    // after waiting (bounded) for the version, the picture it has, uncacheable,
    // so no cache keeps the old picture under the new URL.
    let e = env();
    let up = e
        .upload_ok("ahead@example.org", "logo_alpha_disc_512.png")
        .await;
    let v = up["version"].as_u64().unwrap();
    let key = md5_hex("ahead@example.org");
    let ahead = e.get(&format!("/avatar/{key}?s=48&v={}", v + 1)).await;
    assert_eq!(ahead.status, 200);
    assert_eq!(ahead.header("cache-control"), "no-store");
    assert_eq!(ahead.header("cdn-cache-control"), "no-store");
    let current = e.get(&format!("/avatar/{key}?s=48&v={v}")).await;
    assert_eq!(current.body, ahead.body);
    assert!(current.header("cache-control").starts_with("public"));
    // An identity nobody has: a version ahead gets the default, uncached too.
    let nobody = md5_hex("nobody@example.org");
    let r = e
        .get(&format!("/avatar/{nobody}?s=48&d=identicon&v=3"))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("cache-control"), "no-store");
    let r = e.get(&format!("/avatar/{nobody}?s=48&d=identicon")).await;
    assert!(r.header("cache-control").starts_with("public"));
}
