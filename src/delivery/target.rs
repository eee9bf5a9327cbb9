//! Delivery targets (a CDN purge endpoint or a webhook) and the request that
//! delivers a batch of events to one.

use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::events::{event_json, purge_keys};
use crate::model::ChangeEvent;

// The settings types are the configuration's; how to deliver to them is here.
pub use crate::config::{PurgeStyle, Target};

impl Target {
    /// Stable name: the cursor's key and the metrics label.
    pub fn name(&self) -> String {
        match self {
            Target::Purge { url, .. } => format!("purge:{url}"),
            Target::Webhook { url, .. } => format!("webhook:{url}"),
        }
    }

    /// Events sent per request: purges batch keys, webhooks send one event each.
    pub(super) fn batch(&self) -> usize {
        match self {
            Target::Purge { .. } => 64,
            Target::Webhook { .. } => 1,
        }
    }

    /// The request that delivers `events`.
    pub fn request(&self, events: &[ChangeEvent]) -> Outbound {
        match self {
            Target::Purge { url, style, token } => {
                let mut keys: Vec<String> = events.iter().flat_map(purge_keys).collect();
                keys.sort();
                keys.dedup();
                let joined = keys.join(" ");
                match style {
                    PurgeStyle::Xkey => Outbound {
                        method: "PURGE",
                        url: url.clone(),
                        headers: vec![("xkey-purge".into(), joined)],
                        body: Bytes::new(),
                    },
                    PurgeStyle::Fastly => {
                        let mut headers = vec![("surrogate-key".into(), joined)];
                        if let Some(t) = token {
                            headers.push(("fastly-key".into(), t.clone()));
                        }
                        Outbound {
                            method: "POST",
                            url: url.clone(),
                            headers,
                            body: Bytes::new(),
                        }
                    }
                    PurgeStyle::Cloudflare => {
                        let mut headers = vec![("content-type".into(), "application/json".into())];
                        if let Some(t) = token {
                            headers.push(("authorization".into(), format!("Bearer {t}")));
                        }
                        let body =
                            serde_json::to_vec(&serde_json::json!({ "tags": keys })).expect("json");
                        Outbound {
                            method: "POST",
                            url: url.clone(),
                            headers,
                            body: Bytes::from(body),
                        }
                    }
                }
            }
            Target::Webhook { url, secret } => {
                let e = &events[0];
                let body = event_json(e);
                let mut headers = vec![
                    ("content-type".into(), "application/json".into()),
                    ("x-avatar-edge-event-id".into(), e.id.to_string()),
                ];
                if let Some(s) = secret {
                    headers.push(("x-avatar-edge-signature".into(), signature(s, &body)));
                }
                Outbound {
                    method: "POST",
                    url: url.clone(),
                    headers,
                    body: Bytes::from(body),
                }
            }
        }
    }
}

/// `sha256=<hex HMAC-SHA256 of body>`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A request to send, in plain types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    pub method: &'static str,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::model::{ContentHash, IdentityKeys};

    pub(crate) fn event(id: u64) -> ChangeEvent {
        let k = IdentityKeys::parse("a@example.org").unwrap();
        ChangeEvent {
            id,
            key: k.aliases[0],
            aliases: k.aliases,
            hash: Some(ContentHash([id as u8; 32])),
            previous: None,
            version: id,
            at: 0,
        }
    }

    #[test]
    fn request_shapes() {
        let evs = [event(1), event(2)];
        let x = Target::Purge {
            url: "http://127.0.0.1:6081/".into(),
            style: PurgeStyle::Xkey,
            token: None,
        }
        .request(&evs);
        assert_eq!(x.method, "PURGE");
        assert_eq!(x.headers[0].0, "xkey-purge");
        // Two aliases (deduplicated across the events) and each event's content.
        assert_eq!(x.headers[0].1.split(' ').count(), 4, "deduplicated keys");
        let f = Target::Purge {
            url: "https://api.fastly.com/service/x/purge".into(),
            style: PurgeStyle::Fastly,
            token: Some("t".into()),
        }
        .request(&evs);
        assert_eq!(
            (f.method, f.headers[1].clone()),
            ("POST", ("fastly-key".to_string(), "t".to_string()))
        );
        let c = Target::Purge {
            url: "https://api.cloudflare.com/x".into(),
            style: PurgeStyle::Cloudflare,
            token: Some("t".into()),
        }
        .request(&evs);
        let body: serde_json::Value = serde_json::from_slice(&c.body).unwrap();
        assert_eq!(body["tags"].as_array().unwrap().len(), 4);
        let w = Target::Webhook {
            url: "http://127.0.0.1:1/hook".into(),
            secret: Some("s".into()),
        }
        .request(&evs[..1]);
        assert_eq!(
            w.headers[1],
            ("x-avatar-edge-event-id".to_string(), "1".to_string())
        );
        assert_eq!(w.headers[2].1, signature("s", &w.body));
    }

    #[test]
    fn signature_matches_a_known_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
