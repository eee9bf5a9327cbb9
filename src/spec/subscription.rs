//! The body of `POST /v1/subscriptions` (issue 14): client input → a typed
//! key set.

use crate::model::subscription::{
    KeySet, SubscriptionError, MAX_SUBSCRIPTION_BODY, MAX_SUBSCRIPTION_KEYS,
};
use crate::model::IdentityHash;

/// Longest bad key quoted back in an error message.
const MAX_QUOTED: usize = 80;

/// Parse `POST /v1/subscriptions`: `{"keys": ["<hex>", ...]}` (the client
/// sends it as `text/plain` to stay a simple CORS request, so the content
/// type is not checked). The first malformed key is named; nothing of a
/// refused body is kept.
pub fn parse_subscription(body: &[u8]) -> Result<KeySet, SubscriptionError> {
    if body.len() > MAX_SUBSCRIPTION_BODY {
        return Err(SubscriptionError::BodyTooLarge {
            limit: MAX_SUBSCRIPTION_BODY,
        });
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Request {
        keys: Vec<String>,
    }
    let req: Request =
        serde_json::from_slice(body).map_err(|e| SubscriptionError::BadBody(e.to_string()))?;
    if req.keys.len() > MAX_SUBSCRIPTION_KEYS {
        return Err(SubscriptionError::TooManyKeys {
            count: req.keys.len(),
            max: MAX_SUBSCRIPTION_KEYS,
        });
    }
    let keys = req
        .keys
        .iter()
        .enumerate()
        .map(|(index, raw)| {
            raw.trim()
                .parse::<IdentityHash>()
                .map_err(|_| SubscriptionError::BadKey {
                    index,
                    key: quote(raw),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    KeySet::new(keys)
}

/// At most [`MAX_QUOTED`] characters of `raw`, control characters dropped.
fn quote(raw: &str) -> String {
    let mut s: String = raw
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_QUOTED)
        .collect();
    if raw.chars().count() > MAX_QUOTED {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MD5: &str = "0bc83cb571cd1c50ba6f3e8a78ef1346";
    const SHA: &str = "84059b07d4be415b0f5b4a0b2b5f5d8e0e7f0f4c7a6c8d4b3e2e1d0c9b8a7f6e";

    fn body(keys: &[&str]) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "keys": keys })).unwrap()
    }

    #[test]
    fn table() {
        let cases: Vec<(Vec<u8>, Result<usize, &str>)> = vec![
            (body(&[MD5, SHA]), Ok(2)),
            (body(&[MD5, MD5, &MD5.to_uppercase()]), Ok(1)),
            (body(&[&format!(" {MD5} ")]), Ok(1)),
            (body(&[]), Err("at least one key")),
            (body(&[MD5, "zz", "also bad"]), Err("keys[1] is not")),
            (body(&[&MD5[..31]]), Err("keys[0]")),
            (b"{\"keys\": \"a,b\"}".to_vec(), Err("expected a JSON body")),
            (
                b"{\"keys\": [], \"all\": true}".to_vec(),
                Err("unknown field"),
            ),
            (b"not json".to_vec(), Err("expected a JSON body")),
        ];
        for (input, want) in cases {
            let got = parse_subscription(&input);
            match (got, want) {
                (Ok(set), Ok(n)) => assert_eq!(set.len(), n),
                (Err(e), Err(m)) => assert!(e.to_string().contains(m), "{e} !~ {m}"),
                (got, want) => panic!("{got:?} vs {want:?} for {input:?}"),
            }
        }
    }

    #[test]
    fn limits_are_typed() {
        let many: Vec<String> = (0..=MAX_SUBSCRIPTION_KEYS)
            .map(|i| format!("{i:032x}"))
            .collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(
            parse_subscription(&body(&refs)),
            Err(SubscriptionError::TooManyKeys {
                count: MAX_SUBSCRIPTION_KEYS + 1,
                max: MAX_SUBSCRIPTION_KEYS
            })
        );
        assert!(parse_subscription(&body(&refs[..MAX_SUBSCRIPTION_KEYS])).is_ok());
        let sha: Vec<String> = (0..MAX_SUBSCRIPTION_KEYS)
            .map(|i| format!("{i:064x}"))
            .collect();
        let b = serde_json::to_vec(&serde_json::json!({ "keys": sha })).unwrap();
        assert!(b.len() <= MAX_SUBSCRIPTION_BODY, "the limit fits the keys");
        let huge = vec![b' '; MAX_SUBSCRIPTION_BODY + 1];
        assert!(matches!(
            parse_subscription(&huge),
            Err(SubscriptionError::BodyTooLarge { .. })
        ));
    }

    #[test]
    fn bad_key_is_quoted_short() {
        let long = "x".repeat(500);
        let e = parse_subscription(&body(&[MD5, &long]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("keys[1]") && e.len() < 250, "{e}");
    }

    fn key() -> impl Strategy<Value = IdentityHash> {
        prop_oneof![
            any::<[u8; 16]>().prop_map(IdentityHash::Md5),
            any::<[u8; 32]>().prop_map(IdentityHash::Sha256),
        ]
    }

    proptest! {
        /// Order and duplicates never change the set or its id; the encoding
        /// round-trips; a parsed body holds exactly the distinct keys sent.
        #[test]
        fn content_addressed(keys in prop::collection::vec(key(), 1..60), seed in any::<u64>()) {
            let mut shuffled = keys.clone();
            shuffled.extend(keys.iter().take(5).copied());
            let n = shuffled.len();
            for i in 0..n {
                shuffled.swap(i, (seed as usize).wrapping_add(i * 7) % n);
            }
            let a = KeySet::new(keys.clone()).unwrap();
            let b = KeySet::new(shuffled.clone()).unwrap();
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(a.id(), b.id());
            prop_assert_eq!(KeySet::decode(&a.encode()), Some(a.clone()));
            let hex: Vec<String> = shuffled.iter().map(|k| k.to_hex().to_uppercase()).collect();
            let refs: Vec<&str> = hex.iter().map(String::as_str).collect();
            let parsed = parse_subscription(&body(&refs)).unwrap();
            prop_assert_eq!(&parsed, &a);
            for k in &keys {
                prop_assert!(parsed.contains(k));
            }
        }

        /// Any body: an answer, never a panic; a success is a valid set.
        #[test]
        fn any_body(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(set) = parse_subscription(&bytes) {
                prop_assert!(!set.is_empty() && set.len() <= MAX_SUBSCRIPTION_KEYS);
            }
        }

        /// One bad key anywhere refuses the whole body and names its index.
        #[test]
        fn first_bad_key_named(keys in prop::collection::vec(key(), 1..20), at in 0usize..20, junk in "[g-z ]{0,70}") {
            let mut hex: Vec<String> = keys.iter().map(|k| k.to_hex()).collect();
            let at = at % (hex.len() + 1);
            hex.insert(at, junk);
            let refs: Vec<&str> = hex.iter().map(String::as_str).collect();
            let e = parse_subscription(&body(&refs)).unwrap_err();
            prop_assert!(matches!(e, SubscriptionError::BadKey { index, .. } if index == at), "{:?}", e);
        }

        /// Decoding arbitrary bytes never panics.
        #[test]
        fn decode_any(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = KeySet::decode(&bytes);
        }
    }
}
