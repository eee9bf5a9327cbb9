//! Client input → typed requests. Every value a client sends (path segments,
//! query parameters, `Accept`, `If-None-Match`, `Last-Event-ID`, signed-URL
//! fields, JSON bodies) is parsed here, once, into a typed value: URLs here,
//! the API's bodies and parameters in `api`, event-stream requests in
//! `events`, conditional requests in `conditional`.
//!
//! Pure: no I/O, no hyper. Two flavours of strictness, on purpose:
//! - content URLs (`/c/…`) and the API are strict: junk is a 400 naming the problem;
//! - identity URLs (`/avatar/…`) are forgiving like Gravatar: out-of-range sizes
//!   clamp, junk parameters are ignored, a malformed hash still gets an avatar
//!   (the server default, flagged `invalid-key`) — a broken template must never
//!   show a broken image.

mod api;
mod conditional;
mod events;
mod moderation;
mod subscription;

pub use api::{
    decode_key_segment, parse_rating_patch, parse_signed_url, parse_upload, parse_upload_url,
    SignedUrl, UploadParams, UploadUrlRequest, DEFAULT_UPLOAD_URL_TTL,
};
pub use conditional::IfNoneMatch;
pub use events::{parse_events, EventsRequest, MAX_EVENT_KEYS};
pub use moderation::{
    parse_audit_page, parse_takedown, parse_takedown_page, TakedownRequest, TakedownTarget,
};
pub use subscription::parse_subscription;

use crate::model::{
    ContentHash, IdentityHash, OutputFormat, ParseError, Rating, Style,
    MAX_OUTPUT_SIDE as MAX_SIZE, MIN_OUTPUT_SIDE as MIN_SIZE,
};
/// Size when the URL names none (Gravatar's default).
pub const DEFAULT_SIZE: u32 = 80;
/// Longest query string we look at; longer ones are refused (strict) or cut (forgiving).
pub const MAX_QUERY_LEN: usize = 2048;
/// Longest `name=`/`initials=` value kept.
pub const MAX_NAME_LEN: usize = 128;

/// Why a strict request was refused. Each maps to a 400 with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("malformed content hash: expected 64 hex digits")]
    BadHash,
    #[error("unknown extension: use .png, .jpg, .jpeg or .webp")]
    BadExtension,
    #[error("size must be an integer from {min} to {max}", min = MIN_SIZE, max = MAX_SIZE)]
    BadSize,
    #[error("query string too long")]
    QueryTooLong,
    #[error("malformed query string")]
    BadQuery,
    #[error("crop must be x,y,side with side > 0")]
    BadCrop,
    #[error("rating must be one of g, pg, r, x")]
    BadRating,
    /// A malformed identity key (an email or a 32/64-hex hash).
    #[error("invalid key: {0}")]
    Key(#[from] ParseError),
    #[error("keys must be comma-separated 32/64-hex identity hashes")]
    BadEventKeys,
    #[error("too many keys (at most {max})", max = MAX_EVENT_KEYS)]
    TooManyEventKeys,
    #[error("last_event_id must be an integer")]
    BadLastEventId,
    #[error("Last-Event-ID must be an integer")]
    BadLastEventIdHeader,
    #[error("expected {{\"key\": \"...\", \"expires_in\": seconds}}: {0}")]
    BadUploadUrlRequest(String),
    #[error("expires_in must be 1..={max} seconds")]
    BadExpiry { max: u64 },
    #[error("expected {{\"rating\": \"g\" | \"pg\" | \"r\" | \"x\"}}")]
    BadRatingPatch,
    /// Issue 14: a refused subscription (body, key, limits, id).
    #[error(transparent)]
    Subscription(#[from] crate::model::subscription::SubscriptionError),
    #[error("use either keys or one sub")]
    KeysAndSub,
    /// Issue 16: a refused moderation request, naming the field.
    #[error("{field}: {problem}")]
    BadField {
        field: &'static str,
        problem: String,
    },
}

/// Decoded `key=value` pairs of a query string (percent- and `+`-decoded).
pub fn query_pairs(query: &str) -> Result<Vec<(String, String)>, SpecError> {
    if query.len() > MAX_QUERY_LEN {
        return Err(SpecError::QueryTooLong);
    }
    let mut out = Vec::new();
    for part in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        out.push((pct_decode(k)?, pct_decode(v)?));
    }
    Ok(out)
}

/// Percent-decode one component (`+` means space, as in forms). Invalid UTF-8 is an error.
pub fn pct_decode(s: &str) -> Result<String, SpecError> {
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| SpecError::BadQuery)
}

fn parse_extension(ext: &str) -> Result<OutputFormat, SpecError> {
    match ext.to_ascii_lowercase().as_str() {
        "png" => Ok(OutputFormat::Png),
        "jpg" | "jpeg" => Ok(OutputFormat::Jpeg),
        "webp" => Ok(OutputFormat::Webp),
        "avif" => Ok(OutputFormat::Avif),
        "gif" => Ok(OutputFormat::Gif),
        _ => Err(SpecError::BadExtension),
    }
}

/// Split `name.ext` into the name and the parsed extension, if any.
fn split_extension(segment: &str) -> (&str, Option<&str>) {
    match segment.rsplit_once('.') {
        Some((name, ext)) => (name, Some(ext)),
        None => (segment, None),
    }
}

/// A request for immutable content: `/c/{hash}[.ext]?s=N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRequest {
    pub hash: ContentHash,
    pub size: u32,
    /// The format named by the extension; `None` means negotiate from `Accept`.
    pub format: Option<OutputFormat>,
    /// Issue 22: `animated=0` asks for the still frame of an animated avatar
    /// (default `true`: WebP and GIF of an animated master move).
    pub animated: bool,
}

/// Parse the part of a content URL after `/c/` plus its raw query string.
pub fn parse_content(segment: &str, query: Option<&str>) -> Result<ContentRequest, SpecError> {
    let (name, ext) = split_extension(segment);
    let hash: ContentHash = name.parse().map_err(|_| SpecError::BadHash)?;
    let format = ext.map(parse_extension).transpose()?;
    let mut size = DEFAULT_SIZE;
    let mut animated = true;
    for (k, v) in query_pairs(query.unwrap_or(""))? {
        match k.as_str() {
            "s" | "size" => size = parse_strict_size(&v)?,
            "animated" => {
                animated = match v.as_str() {
                    "1" | "true" => true,
                    "0" | "false" => false,
                    _ => return Err(SpecError::BadQuery),
                }
            }
            _ => {}
        }
    }
    Ok(ContentRequest {
        hash,
        size,
        format,
        animated,
    })
}

fn parse_strict_size(v: &str) -> Result<u32, SpecError> {
    if v.is_empty() || v.len() > 4 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SpecError::BadSize);
    }
    let n: u32 = v.parse().map_err(|_| SpecError::BadSize)?;
    if (MIN_SIZE..=MAX_SIZE).contains(&n) {
        Ok(n)
    } else {
        Err(SpecError::BadSize)
    }
}

/// Forgiving size parse for identity URLs: clamp out-of-range numbers, ignore junk.
fn parse_lenient_size(v: &str) -> Option<u32> {
    let digits = v.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Very long digit strings overflow: they are "huge", so clamp to the max.
    let n = digits.parse::<u64>().unwrap_or(u64::MAX);
    Some(n.clamp(MIN_SIZE as u64, MAX_SIZE as u64) as u32)
}

/// What an identity URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityRef {
    /// A well-formed hash of a real email.
    Hash(IdentityHash),
    /// `/avatar/`, or the hash of the empty email: no identity, never bound.
    NoIdentity,
    /// Not a 32/64-hex hash: served the server default, flagged `invalid-key`.
    Invalid,
}

/// What to serve when an identity has no (eligible) avatar: Gravatar's `d=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DefaultChoice {
    /// `d` absent or unrecognised: the server's configured default style.
    ServerDefault,
    /// `d=404`: a 404 with a tiny body.
    NotFound,
    /// A generated style.
    Style(Style),
    /// `d=<http(s) URL>`: redirect only if the host is allowed by the operator.
    Url(String),
}

/// A parsed identity URL: `/avatar/{hash}[.ext]?s=&d=&f=&r=&name=&initials=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityRequest {
    pub identity: IdentityRef,
    pub size: u32,
    pub format: Option<OutputFormat>,
    pub default: DefaultChoice,
    pub force_default: bool,
    /// Highest rating the page accepts (`r=`), default `g`.
    pub max_rating: Rating,
    /// `name=`, used by `initials` and to seed defaults for users without email.
    pub name: Option<String>,
    /// `initials=`, taking precedence over letters derived from `name`.
    pub initials: Option<String>,
    /// `v=`: the identity version a live page asks for (issue 14).
    pub version: Option<u64>,
    /// Issue 22: `animated=0` (or `false`/`no`) asks for the still frame.
    pub animated: bool,
}

/// Parse an identity URL. Never fails: this path must always answer an image.
pub fn parse_identity(segment: &str, query: Option<&str>) -> IdentityRequest {
    let (name_part, ext) = split_extension(segment);
    // An unknown extension is treated like a malformed key's tail: ignore it.
    let format = ext.and_then(|e| parse_extension(e).ok());
    let (name_part, format) = match (ext, format) {
        (Some(_), None) => (segment, None),
        _ => (name_part, format),
    };
    let identity = if name_part.is_empty() {
        IdentityRef::NoIdentity
    } else {
        match name_part.parse::<IdentityHash>() {
            Ok(h) if h.is_empty_email() => IdentityRef::NoIdentity,
            Ok(h) => IdentityRef::Hash(h),
            Err(_) => IdentityRef::Invalid,
        }
    };
    let mut req = IdentityRequest {
        identity,
        size: DEFAULT_SIZE,
        format,
        default: DefaultChoice::ServerDefault,
        force_default: false,
        max_rating: Rating::G,
        name: None,
        initials: None,
        version: None,
        animated: true,
    };
    let q = query.unwrap_or("");
    let q = &q[..floor_char_boundary(q, MAX_QUERY_LEN)];
    for part in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let Ok(v) = pct_decode(v) else { continue };
        match k {
            "s" | "size" => {
                if let Some(n) = parse_lenient_size(&v) {
                    req.size = n;
                }
            }
            "d" | "default" => req.default = parse_default(&v),
            "f" | "forcedefault" => {
                req.force_default =
                    matches!(v.to_ascii_lowercase().as_str(), "y" | "yes" | "true" | "1")
            }
            "r" | "rating" => {
                if let Ok(r) = v.parse() {
                    req.max_rating = r;
                }
            }
            "v" => req.version = v.parse().ok(),
            "animated" => req.animated = !matches!(v.as_str(), "0" | "false" | "no"),
            "name" => req.name = clean_text(&v),
            "initials" => req.initials = clean_initials(&v),
            _ => {}
        }
    }
    req
}

fn floor_char_boundary(s: &str, max: usize) -> usize {
    if s.len() <= max {
        return s.len();
    }
    let mut i = max;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn clean_text(v: &str) -> Option<String> {
    let t: String = v
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_NAME_LEN)
        .collect();
    let t = t.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// `initials=`: at most two letters or digits, upper-cased.
fn clean_initials(v: &str) -> Option<String> {
    let t: String = v
        .chars()
        .filter(|c| c.is_alphanumeric())
        .take(2)
        .flat_map(char::to_uppercase)
        .collect();
    (!t.is_empty()).then_some(t)
}

fn parse_default(v: &str) -> DefaultChoice {
    let lower = v.trim().to_ascii_lowercase();
    if lower == "404" {
        return DefaultChoice::NotFound;
    }
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return DefaultChoice::Url(v.trim().to_string());
    }
    match Style::parse(&lower) {
        Some(s) => DefaultChoice::Style(s),
        None => DefaultChoice::ServerDefault,
    }
}

/// The host of an `http(s)` URL, lower-cased, without port or userinfo;
/// `None` for anything that is not a plain absolute http(s) URL.
pub fn url_host(url: &str) -> Option<String> {
    let lower = url.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))?;
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.contains('@') || authority.contains('\\') || authority.is_empty() {
        return None;
    }
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    };
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    ok.then(|| host.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const H: &str = "1111111111111111111111111111111111111111111111111111111111111111";

    type ContentCase<'a> = (
        &'a str,
        Option<&'a str>,
        Result<(u32, Option<OutputFormat>), SpecError>,
    );

    #[test]
    fn content_url_table() {
        let cases: &[ContentCase] = &[
            (H, None, Ok((80, None))),
            (
                &format!("{H}.png"),
                Some("s=128"),
                Ok((128, Some(OutputFormat::Png))),
            ),
            (
                &format!("{H}.JPG"),
                Some("size=512"),
                Ok((512, Some(OutputFormat::Jpeg))),
            ),
            (
                &format!("{H}.jpeg"),
                Some("s=1"),
                Ok((1, Some(OutputFormat::Jpeg))),
            ),
            (
                &format!("{H}.webp"),
                Some("s=2048"),
                Ok((2048, Some(OutputFormat::Webp))),
            ),
            (&format!("{H}.bmp"), None, Err(SpecError::BadExtension)),
            (&format!("{H}.gif"), None, Ok((80, Some(OutputFormat::Gif)))),
            (H, Some("animated=2"), Err(SpecError::BadQuery)),
            (H, Some("s=0"), Err(SpecError::BadSize)),
            (H, Some("s=2049"), Err(SpecError::BadSize)),
            (H, Some("s=abc"), Err(SpecError::BadSize)),
            (H, Some("s=-5"), Err(SpecError::BadSize)),
            (H, Some("s="), Err(SpecError::BadSize)),
            (H, Some("s=99999999999"), Err(SpecError::BadSize)),
            ("abc", None, Err(SpecError::BadHash)),
            ("../../etc/passwd", None, Err(SpecError::BadHash)),
            (&H[..63], None, Err(SpecError::BadHash)),
        ];
        for (seg, q, want) in cases {
            let got = parse_content(seg, *q).map(|r| (r.size, r.format));
            assert_eq!(&got, want, "segment {seg:?} query {q:?}");
        }
    }

    #[test]
    fn identity_url_table() {
        let md5 = "0bc83cb571cd1c50ba6f3e8a78ef1346";
        let r = parse_identity(
            &format!("{}.PNG", md5.to_uppercase()),
            Some("size=200&d=retro"),
        );
        assert!(matches!(
            r.identity,
            IdentityRef::Hash(IdentityHash::Md5(_))
        ));
        assert_eq!((r.size, r.format), (200, Some(OutputFormat::Png)));
        assert_eq!(r.default, DefaultChoice::Style(Style::Retro));

        let r = parse_identity(md5, Some("s=99999&d=404&f=y&r=pg"));
        assert_eq!(
            (r.size, r.default.clone(), r.force_default),
            (2048, DefaultChoice::NotFound, true)
        );
        assert_eq!(r.max_rating, Rating::Pg);

        let r = parse_identity(md5, Some("s=0&d=https%3A%2F%2Fexample.com%2Fa.png&r=zz"));
        assert_eq!(r.size, 1);
        assert_eq!(
            r.default,
            DefaultChoice::Url("https://example.com/a.png".into())
        );
        assert_eq!(r.max_rating, Rating::G);

        let r = parse_identity(md5, Some("s=abc&d=mm&name=Ada+Lovelace"));
        assert_eq!(r.size, 80);
        assert_eq!(r.default, DefaultChoice::Style(Style::Mp));
        assert_eq!(r.name.as_deref(), Some("Ada Lovelace"));

        assert_eq!(parse_identity("", None).identity, IdentityRef::NoIdentity);
        assert_eq!(
            parse_identity(crate::model::MD5_OF_EMPTY, None).identity,
            IdentityRef::NoIdentity
        );
        assert_eq!(
            parse_identity(&format!("{}.jpg", crate::model::SHA256_OF_EMPTY), None).identity,
            IdentityRef::NoIdentity
        );
        assert_eq!(
            parse_identity("not-a-hash", None).identity,
            IdentityRef::Invalid
        );
        assert_eq!(
            parse_identity(&format!("{md5}.bmp"), None).identity,
            IdentityRef::Invalid
        );
        assert_eq!(
            parse_identity(md5, Some("d=whatever")).default,
            DefaultChoice::ServerDefault
        );
    }

    #[test]
    fn url_host_table() {
        let cases = [
            ("https://example.com/a.png", Some("example.com")),
            ("http://Example.COM:8080/x", Some("example.com")),
            ("https://evil.com@example.com/", None),
            ("https://example.com\\@evil.com/", None),
            ("javascript:alert(1)", None),
            ("//example.com/x", None),
            ("https:///x", None),
        ];
        for (url, want) in cases {
            assert_eq!(url_host(url).as_deref(), want, "{url}");
        }
    }

    proptest! {
        #[test]
        fn content_parser_never_panics(seg in ".{0,100}", q in ".{0,100}") {
            let _ = parse_content(&seg, Some(&q));
        }

        #[test]
        fn identity_parser_never_panics_and_size_in_range(seg in ".{0,100}", q in ".{0,300}") {
            let r = parse_identity(&seg, Some(&q));
            prop_assert!((MIN_SIZE..=MAX_SIZE).contains(&r.size));
        }

        #[test]
        fn lenient_size_clamps(n in 0u64..10_000_000) {
            let s = parse_lenient_size(&n.to_string()).unwrap();
            prop_assert_eq!(s as u64, n.clamp(1, 2048));
        }

        #[test]
        fn strict_size_accepts_exactly_the_range(n in 0u32..5000) {
            let ok = parse_strict_size(&n.to_string()).is_ok();
            prop_assert_eq!(ok, (1..=2048).contains(&n));
        }
    }
}
