//! The API's client input: upload parameters and key segments, the JSON
//! bodies of `POST /v1/upload-urls` and `PATCH /v1/avatars/{key}`, and the
//! fields of a signed upload URL. Strict: junk is a [`SpecError`] (a 400).

use serde::Deserialize;

use super::{query_pairs, SpecError};
use crate::model::{Crop, IdentityKeys, Rating};

/// Parameters of an upload: `PUT /v1/avatars/{key}?crop=x,y,side&rating=g&still_frame=N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UploadParams {
    pub crop: Option<Crop>,
    pub rating: Option<Rating>,
    /// Issue 22: the frame (0-based) of an animation the still ladder is
    /// made from (default 0).
    pub still_frame: Option<u32>,
}

/// Strictly parse upload query parameters.
pub fn parse_upload(query: Option<&str>) -> Result<UploadParams, SpecError> {
    let mut p = UploadParams::default();
    for (k, v) in query_pairs(query.unwrap_or(""))? {
        match k.as_str() {
            "crop" => p.crop = Some(parse_crop(&v)?),
            "rating" | "r" => p.rating = Some(v.parse().map_err(|_| SpecError::BadRating)?),
            "still_frame" => {
                let ok = !v.is_empty() && v.len() <= 5 && v.bytes().all(|b| b.is_ascii_digit());
                p.still_frame = Some(v.parse().ok().filter(|_| ok).ok_or(SpecError::BadQuery)?);
            }
            _ => {}
        }
    }
    Ok(p)
}

fn parse_crop(v: &str) -> Result<Crop, SpecError> {
    let nums: Vec<u32> = v
        .split(',')
        .map(|n| {
            let n = n.trim();
            if n.is_empty() || n.len() > 6 {
                return Err(SpecError::BadCrop);
            }
            n.parse::<u32>().map_err(|_| SpecError::BadCrop)
        })
        .collect::<Result<_, _>>()?;
    match nums[..] {
        [x, y, side] if side > 0 => Ok(Crop { x, y, side }),
        _ => Err(SpecError::BadCrop),
    }
}

/// Percent-decode an upload key from the path (`/v1/avatars/{key}`).
pub fn decode_key_segment(segment: &str) -> Result<String, SpecError> {
    if segment.len() > 3 * crate::model::MAX_EMAIL_LEN {
        return Err(SpecError::BadQuery);
    }
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| SpecError::BadQuery)
}

/// Lifetime of a signed upload URL when the request names none, seconds.
pub const DEFAULT_UPLOAD_URL_TTL: u64 = 600;

/// A parsed `POST /v1/upload-urls` body: the identity and the lifetime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadUrlRequest {
    pub keys: IdentityKeys,
    /// Seconds, `1..=max_ttl`.
    pub expires_in: u64,
}

/// Parse `{"key": "...", "expires_in": seconds}` (`expires_in` defaults to
/// [`DEFAULT_UPLOAD_URL_TTL`] and must be `1..=max_ttl`).
pub fn parse_upload_url(body: &[u8], max_ttl: u64) -> Result<UploadUrlRequest, SpecError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        key: String,
        #[serde(default = "default_ttl")]
        expires_in: u64,
    }
    fn default_ttl() -> u64 {
        DEFAULT_UPLOAD_URL_TTL
    }
    let raw: Raw =
        serde_json::from_slice(body).map_err(|e| SpecError::BadUploadUrlRequest(e.to_string()))?;
    let keys = IdentityKeys::parse(&raw.key)?;
    if raw.expires_in == 0 || raw.expires_in > max_ttl {
        return Err(SpecError::BadExpiry { max: max_ttl });
    }
    Ok(UploadUrlRequest {
        keys,
        expires_in: raw.expires_in,
    })
}

/// Parse the body of `PATCH /v1/avatars/{key}`: `{"rating": "g" | "pg" | "r" | "x"}`.
pub fn parse_rating_patch(body: &[u8]) -> Result<Rating, SpecError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Patch {
        rating: String,
    }
    serde_json::from_slice::<Patch>(body)
        .ok()
        .and_then(|p| p.rating.parse().ok())
        .ok_or(SpecError::BadRatingPatch)
}

/// The signature fields of a signed upload URL
/// (`PUT /v1/avatars/{key}?expires=<unix s>&signature=<hex>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedUrl {
    /// Unix seconds.
    pub expires: u64,
    pub signature: String,
    /// The URL also sets a rating (which only a token may do).
    pub sets_rating: bool,
}

/// The signed-URL fields of a query string, or `None` when it carries no
/// well-formed `expires` and `signature`.
pub fn parse_signed_url(query: Option<&str>) -> Option<SignedUrl> {
    let pairs = query_pairs(query.unwrap_or("")).ok()?;
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    Some(SignedUrl {
        expires: get("expires")?.parse().ok()?,
        signature: get("signature")?.to_string(),
        sets_rating: get("rating").is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_params_table() {
        assert_eq!(parse_upload(None).unwrap(), UploadParams::default());
        let p = parse_upload(Some("crop=10,20,300&rating=pg")).unwrap();
        assert_eq!(
            p.crop,
            Some(Crop {
                x: 10,
                y: 20,
                side: 300
            })
        );
        assert_eq!(p.rating, Some(Rating::Pg));
        for bad in [
            "crop=1,2",
            "crop=1,2,0",
            "crop=a,b,c",
            "crop=1,2,3,4",
            "rating=nc17",
            "crop=-1,0,5",
        ] {
            assert!(parse_upload(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn upload_url_body_table() {
        let ok = parse_upload_url(br#"{"key":"A@Example.org"}"#, 86_400).unwrap();
        assert_eq!(
            (ok.keys.key.as_str(), ok.expires_in),
            ("a@example.org", DEFAULT_UPLOAD_URL_TTL)
        );
        let cases: &[(&[u8], &str)] = &[
            (b"not json", "expected {\"key\""),
            (br#"{"key":"a@b","extra":1}"#, "unknown field"),
            (br#"{"key":"nope"}"#, "invalid key"),
            (
                br#"{"key":"a@b","expires_in":0}"#,
                "expires_in must be 1..=60 seconds",
            ),
            (
                br#"{"key":"a@b","expires_in":61}"#,
                "expires_in must be 1..=60 seconds",
            ),
        ];
        for (body, want) in cases {
            let e = parse_upload_url(body, 60).unwrap_err().to_string();
            assert!(e.contains(want), "{}: {e}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn rating_patch_table() {
        assert_eq!(parse_rating_patch(br#"{"rating":"PG"}"#), Ok(Rating::Pg));
        for bad in [
            &br#"{"rating":"nc17"}"#[..],
            b"{}",
            b"x",
            br#"{"rating":"g","x":1}"#,
        ] {
            assert_eq!(parse_rating_patch(bad), Err(SpecError::BadRatingPatch));
        }
    }

    #[test]
    fn signed_url_table() {
        let s = parse_signed_url(Some("expires=10&signature=ab")).unwrap();
        assert_eq!(
            (s.expires, s.signature.as_str(), s.sets_rating),
            (10, "ab", false)
        );
        assert!(
            parse_signed_url(Some("expires=10&signature=ab&rating=x"))
                .unwrap()
                .sets_rating
        );
        for bad in [
            None,
            Some("expires=x&signature=ab"),
            Some("signature=ab"),
            Some("expires=1"),
        ] {
            assert_eq!(parse_signed_url(bad), None, "{bad:?}");
        }
    }
}
