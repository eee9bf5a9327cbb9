//! Content negotiation: `Accept` → output format, when the URL names no
//! extension. Order: AVIF (photos from [`AVIF_MIN_SIDE`] px, when
//! `--avif-negotiate`) > WebP > PNG for
//! images with alpha, JPEG otherwise; responses carry `Vary: Accept`.
//!
//! Invariants: pure (no I/O); only explicitly listed types with q > 0
//! count; the classes here (avif, webp, other) are exactly the ones
//! `examples/varnish.vcl` collapses `Accept` to, so a CDN stores at most one
//! object per class and URL.

use crate::model::{Compression, OutputFormat};

/// What a negotiated variant may be: the master's facts and the server's
/// AVIF switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offer {
    pub has_alpha: bool,
    /// Lossless masters (flat art, generated defaults) never negotiate AVIF:
    /// lossless WebP is smaller for them and exact.
    pub compression: Compression,
    /// `--avif-negotiate`.
    pub avif: bool,
    /// The variant's requested side, px.
    pub size: u32,
}

/// Smallest side at which AVIF is negotiated. Below it AVIF's container and
/// AV1 headers outweigh its coding gain: `bench/bytes.sh` (photos, q80)
/// measured median bytes against our JPEG of 0.77 (AVIF) and 0.54 (lossy
/// WebP) at 32 px, 0.67 and 0.63 at 64 px, then 0.59 and 0.64 at 128 px and
/// 0.47 and 0.55 at 256 px, with WebP's SSIM at least as high throughout.
/// Explicit `.avif` URLs are served at every size.
pub const AVIF_MIN_SIDE: u32 = 128;

/// The image types an `Accept` header lists with a non-zero q. Wildcards
/// (`image/*`, `*/*`) do not count: every browser that decodes WebP or AVIF
/// names it, and a wildcard from a non-browser client is no promise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Accepts {
    pub avif: bool,
    pub webp: bool,
}

impl Accepts {
    pub fn parse(accept: Option<&str>) -> Accepts {
        let mut a = Accepts::default();
        for item in accept.unwrap_or("").split(',') {
            let mut parts = item.split(';');
            let media = parts.next().unwrap_or("").trim();
            // q=0 (q=0.0, q=0.000) means "not acceptable"; an unparsable q
            // counts as 1, as most servers read it.
            let refused = parts.any(|p| {
                let p = p.trim();
                let q = p.strip_prefix("q=").or_else(|| p.strip_prefix("Q="));
                q.and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            if refused {
                continue;
            }
            if media.eq_ignore_ascii_case("image/avif") {
                a.avif = true;
            } else if media.eq_ignore_ascii_case("image/webp") {
                a.webp = true;
            }
        }
        a
    }
}

/// Pick the output format when the URL named none: AVIF (photos, when
/// enabled) > WebP > PNG for images with alpha, JPEG otherwise. A CDN
/// caching by `Vary: Accept` must collapse `Accept` to the same classes
/// (`examples/varnish.vcl`).
pub fn negotiate(accept: Option<&str>, offer: Offer) -> OutputFormat {
    let a = Accepts::parse(accept);
    if a.avif
        && offer.avif
        && offer.compression == Compression::Lossy
        && offer.size >= AVIF_MIN_SIDE
    {
        OutputFormat::Avif
    } else if a.webp {
        OutputFormat::Webp
    } else if offer.has_alpha {
        OutputFormat::Png
    } else {
        OutputFormat::Jpeg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// (browser, class, Accept) rows of `fixtures/browser_accepts.tsv`.
    fn browser_accepts() -> Vec<(String, String, String)> {
        let p = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/browser_accepts.tsv");
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let mut f = l.splitn(3, '\t').map(String::from);
                let mut next = || f.next().unwrap();
                (next(), next(), next())
            })
            .collect()
    }

    #[test]
    fn negotiation_table() {
        use OutputFormat::{Avif, Jpeg, Png, Webp};
        let photo = Offer {
            has_alpha: false,
            compression: Compression::Lossy,
            avif: true,
            size: AVIF_MIN_SIDE,
        };
        let small_photo = Offer {
            size: AVIF_MIN_SIDE - 1,
            ..photo
        };
        let alpha_photo = Offer {
            has_alpha: true,
            ..photo
        };
        let no_avif = Offer {
            avif: false,
            ..photo
        };
        let flat = Offer {
            compression: Compression::Lossless,
            ..photo
        };
        let flat_alpha = Offer {
            has_alpha: true,
            ..flat
        };
        let chromium = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8";
        let cases: &[(Option<&str>, Offer, OutputFormat)] = &[
            (None, photo, Jpeg),
            (None, alpha_photo, Png),
            (None, flat_alpha, Png),
            (Some(chromium), photo, Avif),
            (Some(chromium), alpha_photo, Avif),
            (Some(chromium), no_avif, Webp),
            (Some(chromium), small_photo, Webp),
            (Some("image/avif"), small_photo, Jpeg),
            (Some(chromium), flat, Webp),
            (Some(chromium), flat_alpha, Webp),
            (Some("image/avif,image/webp,*/*"), photo, Avif),
            (Some("image/avif;q=0,image/webp"), photo, Webp),
            (Some("image/avif; q=0.0 ,image/webp"), photo, Webp),
            (Some("image/avif;q=0.1"), photo, Avif),
            (Some("image/avif"), no_avif, Jpeg),
            (Some("image/avif"), flat_alpha, Png),
            (Some("image/webp;q=0"), alpha_photo, Png),
            (Some("image/webp; q=0.5"), alpha_photo, Webp),
            (Some("IMAGE/WEBP"), photo, Webp),
            (Some("Image/AVIF"), photo, Avif),
            (Some("image/png,image/*"), photo, Jpeg),
            (Some("*/*"), alpha_photo, Png),
            (Some("image/avifx,image/webpx"), photo, Jpeg),
            (Some(""), photo, Jpeg),
            (Some(",,;;q=,"), photo, Jpeg),
        ];
        for &(accept, offer, want) in cases {
            assert_eq!(negotiate(accept, offer), want, "{accept:?} {offer:?}");
        }
    }

    #[test]
    fn real_browsers_fall_into_three_classes() {
        let rows = browser_accepts();
        assert!(rows.len() >= 12, "a dozen browsers");
        let photo = Offer {
            has_alpha: false,
            compression: Compression::Lossy,
            avif: true,
            size: 256,
        };
        for (browser, class, accept) in rows {
            let (want, format) = match class.as_str() {
                "avif" => ((true, true), OutputFormat::Avif),
                "webp" => ((false, true), OutputFormat::Webp),
                "other" => ((false, false), OutputFormat::Jpeg),
                c => panic!("unknown class {c}"),
            };
            let got = Accepts::parse(Some(&accept));
            assert_eq!((got.avif, got.webp), want, "{browser}");
            assert_eq!(negotiate(Some(&accept), photo), format, "{browser}");
        }
    }

    proptest! {
        #[test]
        fn accept_parser_never_panics_and_wildcards_promise_nothing(a in ".{0,200}") {
            let got = Accepts::parse(Some(&a));
            prop_assert!(!got.avif || a.to_ascii_lowercase().contains("image/avif"));
            prop_assert!(!got.webp || a.to_ascii_lowercase().contains("image/webp"));
        }
    }
}
