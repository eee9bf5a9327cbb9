//! The event-stream request: `GET /v1/events[?keys=h1,h2][&last_event_id=N]`
//! with an optional `Last-Event-ID` header (which wins over the parameter).

use super::{query_pairs, SpecError};
use crate::model::subscription::SubscriptionId;
use crate::model::IdentityHash;

/// Largest number of identity keys one event stream may filter on.
pub const MAX_EVENT_KEYS: usize = 1000;

/// A parsed event-stream request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventsRequest {
    /// Identities to follow; empty = every change.
    pub keys: Vec<IdentityHash>,
    /// Replay events after this id before going live.
    pub last_event_id: Option<u64>,
    /// `sub=`: the keys of a `POST /v1/subscriptions` (issue 14), instead of `keys`.
    pub sub: Option<SubscriptionId>,
}

/// Parse the query string and the `Last-Event-ID` header value (raw bytes;
/// `None` when absent).
pub fn parse_events(
    query: Option<&str>,
    last_event_id: Option<&[u8]>,
) -> Result<EventsRequest, SpecError> {
    let mut out = EventsRequest::default();
    for (k, v) in query_pairs(query.unwrap_or(""))? {
        match k.as_str() {
            "sub" if out.sub.is_some() || !out.keys.is_empty() => {
                return Err(SpecError::KeysAndSub)
            }
            "sub" => out.sub = Some(v.trim().parse()?),
            "keys" if out.sub.is_some() => return Err(SpecError::KeysAndSub),
            "keys" => {
                for part in v.split(',').filter(|p| !p.is_empty()) {
                    let h = part.trim().parse().map_err(|_| SpecError::BadEventKeys)?;
                    out.keys.push(h);
                }
                if out.keys.len() > MAX_EVENT_KEYS {
                    return Err(SpecError::TooManyEventKeys);
                }
            }
            "last_event_id" => {
                out.last_event_id = Some(v.parse().map_err(|_| SpecError::BadLastEventId)?)
            }
            _ => {}
        }
    }
    if let Some(h) = last_event_id {
        let n = std::str::from_utf8(h)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .ok_or(SpecError::BadLastEventIdHeader)?;
        out.last_event_id = Some(n);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MD5: &str = "0bc83cb571cd1c50ba6f3e8a78ef1346";

    #[test]
    fn events_request_table() {
        let r = parse_events(Some(&format!("keys={MD5},,{MD5}&last_event_id=7")), None).unwrap();
        assert_eq!((r.keys.len(), r.last_event_id), (2, Some(7)));
        let r = parse_events(Some("last_event_id=7"), Some(b" 9 ")).unwrap();
        assert_eq!(r.last_event_id, Some(9), "the header wins");
        assert_eq!(parse_events(None, None).unwrap(), EventsRequest::default());
        let too_many = format!("keys={}", vec![MD5; MAX_EVENT_KEYS + 1].join(","));
        let cases: Vec<(String, Option<&[u8]>, SpecError)> = vec![
            ("keys=zz".into(), None, SpecError::BadEventKeys),
            // The query length limit comes first: 1001 keys never reach the count.
            (too_many, None, SpecError::QueryTooLong),
            ("last_event_id=x".into(), None, SpecError::BadLastEventId),
            (String::new(), Some(b"x"), SpecError::BadLastEventIdHeader),
            ("a=%ff".into(), None, SpecError::BadQuery),
        ];
        // Issue 14: one `sub`, never together with `keys`.
        let sub = "0123456789abcdef0123456789ABCDEF";
        let r = parse_events(Some(&format!("sub={sub}&last_event_id=3")), None).unwrap();
        assert_eq!(r.sub.map(|s| s.to_string()), Some(sub.to_lowercase()));
        assert!(r.keys.is_empty());
        for q in [
            format!("sub={sub}&keys={MD5}"),
            format!("keys={MD5}&sub={sub}"),
            format!("sub={sub}&sub={sub}"),
        ] {
            assert_eq!(
                parse_events(Some(&q), None),
                Err(SpecError::KeysAndSub),
                "{q}"
            );
        }
        assert!(matches!(
            parse_events(Some("sub=xyz"), None),
            Err(SpecError::Subscription(_))
        ));
        for (q, h, want) in cases {
            assert_eq!(parse_events(Some(&q), h), Err(want), "{q:?}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(q in ".{0,200}", h in proptest::collection::vec(any::<u8>(), 0..24)) {
            let _ = parse_events(Some(&q), Some(&h));
        }
    }
}
