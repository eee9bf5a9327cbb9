//! The upstream walk over a scripted transport: order, 404/410, redirects,
//! failures, the one deadline.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;

/// Answers by URL; records every URL asked. A URL without an answer hangs.
#[derive(Default)]
struct Script {
    answers: HashMap<String, Result<Got, FallbackError>>,
    asked: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl Fetch for Script {
    async fn get(&self, url: &str, _max_body: usize) -> Result<Got, FallbackError> {
        self.asked.lock().unwrap().push(url.to_string());
        match self.answers.get(url) {
            Some(a) => a.clone(),
            None => std::future::pending().await,
        }
    }
}

fn got(status: u16, location: Option<&str>, body: &'static [u8]) -> Result<Got, FallbackError> {
    Ok(Got {
        status,
        location: location.map(String::from),
        body: Bytes::from_static(body),
    })
}

const A: &str = "http://a.test/avatar/";
const B: &str = "http://b.test/avatar/";

#[tokio::test]
async fn upstreams_are_asked_in_order_within_one_deadline() {
    let hash: IdentityHash = "0bc83cb571cd1c50ba6f3e8a78ef1346".parse().unwrap();
    let url = |base: &str| Upstreams::url(base, &hash, 1024);
    assert_eq!(
        url(A),
        "http://a.test/avatar/0bc83cb571cd1c50ba6f3e8a78ef1346?s=1024&d=404"
    );
    let redirected = "http://a.test/elsewhere/x.png";
    type Case = (
        Vec<(String, Result<Got, FallbackError>)>,
        Result<Fetched, FallbackError>,
        usize,
    );
    // (script, expected result, URLs asked)
    let cases: Vec<Case> = vec![
        (
            vec![(url(A), got(200, None, b"img"))],
            Ok(Fetched::Found(Bytes::from_static(b"img"))),
            1,
        ),
        (
            vec![
                (url(A), got(404, None, b"")),
                (url(B), got(200, None, b"b")),
            ],
            Ok(Fetched::Found(Bytes::from_static(b"b"))),
            2,
        ),
        (
            vec![(url(A), got(410, None, b"")), (url(B), got(404, None, b""))],
            Ok(Fetched::Missing),
            2,
        ),
        (
            vec![(url(A), got(503, None, b"")), (url(B), got(404, None, b""))],
            Err(FallbackError::Status(503)),
            2,
        ),
        (
            vec![
                (url(A), Err(FallbackError::Connect("refused".into()))),
                (url(B), got(200, None, b"b")),
            ],
            Ok(Fetched::Found(Bytes::from_static(b"b"))),
            2,
        ),
        (
            vec![
                (url(A), got(302, Some("/elsewhere/x.png"), b"")),
                (redirected.to_string(), got(200, None, b"r")),
            ],
            Ok(Fetched::Found(Bytes::from_static(b"r"))),
            2,
        ),
        (
            vec![
                (url(A), got(302, Some("http://evil.test/x"), b"")),
                (url(B), got(404, None, b"")),
            ],
            Err(FallbackError::Redirect(
                "\"http://evil.test/x\": another scheme, host or port".into(),
            )),
            2,
        ),
        (
            vec![
                (url(A), got(301, Some(redirected), b"")),
                (redirected.to_string(), got(302, Some(redirected), b"")),
                (url(B), got(429, None, b"")),
            ],
            Err(FallbackError::Redirect("more than 3 redirects".into())),
            5,
        ),
        // The first upstream stalls: the one deadline ends the whole fetch.
        (
            vec![(url(B), got(200, None, b"b"))],
            Err(FallbackError::Timeout),
            1,
        ),
    ];
    for (i, (answers, want, asked)) in cases.into_iter().enumerate() {
        let script = Arc::new(Script {
            answers: answers.into_iter().collect(),
            ..Default::default()
        });
        let config = FallbackConfig {
            upstreams: vec![A.into(), B.into()],
            timeout: Duration::from_millis(200),
            ..Default::default()
        };
        let up = Upstreams::new(config, script.clone());
        let got = up.fetch(&hash, 1024, 1 << 20).await;
        assert_eq!(got, want, "case {i}");
        assert_eq!(script.asked.lock().unwrap().len(), asked, "case {i}");
    }
}

#[test]
fn failures_are_remembered_briefly() {
    let f = RecentFailures::default();
    let h: IdentityHash = "0bc83cb571cd1c50ba6f3e8a78ef1346".parse().unwrap();
    assert!(!f.recent(&h));
    f.note(h);
    assert!(f.recent(&h));
    f.clear(&h);
    assert!(!f.recent(&h));
    assert!(RETRY_AFTER_FAILURE <= Duration::from_secs(10));
}
