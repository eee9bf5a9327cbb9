//! Issue 16's client input: the body of `POST /v1/takedowns` and the paging
//! parameters of `GET /v1/takedowns` and `GET /v1/audit`. Strict: every
//! refusal is a [`SpecError::BadField`] naming the field.

use serde_json::{Map, Value};

use super::{query_pairs, SpecError};
use crate::model::{ContentHash, IdentityKeys};

/// Longest takedown reason, characters.
pub const MAX_REASON_CHARS: usize = 1000;
/// Page size when the query names none.
pub const DEFAULT_PAGE: usize = 100;
/// Largest page.
pub const MAX_PAGE: usize = 1000;

/// What a takedown names: the content itself, or the content an identity
/// shows now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TakedownTarget {
    Hash(ContentHash),
    Key(IdentityKeys),
}

/// A parsed `POST /v1/takedowns` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakedownRequest {
    pub target: TakedownTarget,
    pub reason: String,
}

fn bad(field: &'static str, problem: impl Into<String>) -> SpecError {
    SpecError::BadField {
        field,
        problem: problem.into(),
    }
}

fn string<'a>(
    obj: &'a Map<String, Value>,
    field: &'static str,
) -> Result<Option<&'a str>, SpecError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad(field, "expected a string")),
    }
}

/// Parse `{"hash": "<blake3>"}` or `{"key": "<email or identity hash>"}`,
/// plus `"reason"` (required, 1 to `MAX_REASON_CHARS` characters).
pub fn parse_takedown(body: &[u8]) -> Result<TakedownRequest, SpecError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| bad("body", format!("malformed JSON ({e})")))?;
    let Value::Object(obj) = value else {
        return Err(bad("body", "expected a JSON object"));
    };
    if let Some(unknown) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "hash" | "key" | "reason"))
    {
        return Err(SpecError::BadField {
            field: "body",
            problem: format!("unknown field {unknown:?}"),
        });
    }
    let target = match (string(&obj, "hash")?, string(&obj, "key")?) {
        (Some(_), Some(_)) => return Err(bad("hash", "give hash or key, not both")),
        (None, None) => return Err(bad("hash", "hash or key is required")),
        (Some(h), None) => TakedownTarget::Hash(
            h.parse()
                .map_err(|_| bad("hash", "expected 64 hex digits (a BLAKE3 content hash)"))?,
        ),
        (None, Some(k)) => {
            TakedownTarget::Key(IdentityKeys::parse(k).map_err(|e| bad("key", e.to_string()))?)
        }
    };
    let reason = string(&obj, "reason")?
        .map(str::trim)
        .ok_or_else(|| bad("reason", "reason is required"))?;
    if reason.is_empty() {
        return Err(bad("reason", "must not be empty"));
    }
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(bad(
            "reason",
            format!("at most {MAX_REASON_CHARS} characters"),
        ));
    }
    Ok(TakedownRequest {
        target,
        reason: reason.to_string(),
    })
}

/// `limit=` of a page: 1 to [`MAX_PAGE`], [`DEFAULT_PAGE`] when absent.
fn limit(v: &str) -> Result<usize, SpecError> {
    match v.parse::<usize>() {
        Ok(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        _ => Err(bad(
            "limit",
            format!("expected an integer from 1 to {MAX_PAGE}"),
        )),
    }
}

/// `GET /v1/audit?after=<id>&limit=<n>`: (after, limit).
pub fn parse_audit_page(query: Option<&str>) -> Result<(u64, usize), SpecError> {
    let mut page = (0, DEFAULT_PAGE);
    for (k, v) in query_pairs(query.unwrap_or(""))? {
        match k.as_str() {
            "after" => {
                page.0 = v
                    .parse()
                    .map_err(|_| bad("after", "expected an entry id"))?
            }
            "limit" => page.1 = limit(&v)?,
            _ => {}
        }
    }
    Ok(page)
}

/// `GET /v1/takedowns?after=<hash>&limit=<n>`: (after, limit).
pub fn parse_takedown_page(query: Option<&str>) -> Result<(Option<ContentHash>, usize), SpecError> {
    let mut page = (None, DEFAULT_PAGE);
    for (k, v) in query_pairs(query.unwrap_or(""))? {
        match k.as_str() {
            "after" => {
                page.0 = Some(
                    v.parse()
                        .map_err(|_| bad("after", "expected a content hash"))?,
                )
            }
            "limit" => page.1 = limit(&v)?,
            _ => {}
        }
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takedown_bodies() {
        let h = "ab".repeat(32);
        let ok =
            parse_takedown(format!(r#"{{"hash":"{h}","reason":" spam "}}"#).as_bytes()).unwrap();
        assert_eq!(ok.target, TakedownTarget::Hash(h.parse().unwrap()));
        assert_eq!(ok.reason, "spam");
        let by_key = parse_takedown(br#"{"key":"A@example.org","reason":"x"}"#).unwrap();
        assert!(matches!(by_key.target, TakedownTarget::Key(k) if k.key == "a@example.org"));
        // (body, the field the refusal names)
        let long = "x".repeat(MAX_REASON_CHARS + 1);
        let cases: Vec<(String, &str)> = vec![
            ("{".into(), "body"),
            ("[]".into(), "body"),
            (r#"{"reason":"x"}"#.into(), "hash"),
            (
                format!(r#"{{"hash":"{h}","key":"a@b.c","reason":"x"}}"#),
                "hash",
            ),
            (r#"{"hash":"zz","reason":"x"}"#.into(), "hash"),
            (r#"{"hash":5,"reason":"x"}"#.into(), "hash"),
            (r#"{"key":"not a key","reason":"x"}"#.into(), "key"),
            (format!(r#"{{"hash":"{h}"}}"#), "reason"),
            (format!(r#"{{"hash":"{h}","reason":"  "}}"#), "reason"),
            (format!(r#"{{"hash":"{h}","reason":7}}"#), "reason"),
            (format!(r#"{{"hash":"{h}","reason":"{long}"}}"#), "reason"),
            (format!(r#"{{"hash":"{h}","reason":"x","why":1}}"#), "body"),
        ];
        for (body, want) in cases {
            match parse_takedown(body.as_bytes()) {
                Err(SpecError::BadField { field, .. }) => assert_eq!(field, want, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn pages() {
        assert_eq!(parse_audit_page(None).unwrap(), (0, DEFAULT_PAGE));
        assert_eq!(parse_audit_page(Some("after=7&limit=2")).unwrap(), (7, 2));
        for q in ["after=x", "limit=0", "limit=1001", "limit=-1"] {
            assert!(parse_audit_page(Some(q)).is_err(), "{q}");
        }
        let h = "cd".repeat(32);
        let (after, n) = parse_takedown_page(Some(&format!("after={h}&limit=5"))).unwrap();
        assert_eq!((after, n), (Some(h.parse().unwrap()), 5));
        assert!(parse_takedown_page(Some("after=12")).is_err());
    }
}
