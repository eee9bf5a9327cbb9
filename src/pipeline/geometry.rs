//! Integer geometry: square crop selection/validation in upright coordinates,
//! and mapping an upright square back into the stored (pre-EXIF) image.
//!
//! Invariants: every function here is total (no panics, no overflow for any
//! `u32` input) and every region it returns lies inside the image it was
//! computed for. Pure math, no pixels.

use image::metadata::Orientation;

use super::{Crop, PipelineError};

/// A square region `(x, y, side)` with `side >= 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Square {
    pub x: u32,
    pub y: u32,
    pub side: u32,
}

/// Whether `o` swaps width and height.
pub(crate) fn swaps_axes(o: Orientation) -> bool {
    matches!(
        o,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    )
}

/// The square to keep from an upright `w`×`h` image: the requested crop
/// (validated) or the centred largest square.
pub(crate) fn choose_square(w: u32, h: u32, crop: Option<Crop>) -> Result<Square, PipelineError> {
    if w == 0 || h == 0 {
        return Err(PipelineError::Decode(format!("empty image {w}x{h}")));
    }
    match crop {
        None => {
            let side = w.min(h);
            Ok(Square {
                x: (w - side) / 2,
                y: (h - side) / 2,
                side,
            })
        }
        Some(c) => {
            if c.side == 0 {
                return Err(PipelineError::BadCrop("side must be at least 1".into()));
            }
            let fits = |o: u32, len: u32| o.checked_add(c.side).is_some_and(|end| end <= len);
            if !fits(c.x, w) || !fits(c.y, h) {
                return Err(PipelineError::BadCrop(format!(
                    "square of side {} at ({}, {}) does not fit in the {w}x{h} image",
                    c.side, c.x, c.y
                )));
            }
            Ok(Square {
                x: c.x,
                y: c.y,
                side: c.side,
            })
        }
    }
}

/// Maps square `sq` of the upright image back to the stored image of size
/// `sw`×`sh` that becomes upright after applying `o` (as
/// `DynamicImage::apply_orientation` does). `sq` must fit the upright image.
pub(crate) fn upright_to_stored(o: Orientation, sw: u32, sh: u32, sq: Square) -> Square {
    let Square { x, y, side: s } = sq;
    // Saturating keeps this total even for inputs that violate the contract.
    let rx = |len: u32, a: u32| len.saturating_sub(a).saturating_sub(s);
    let (nx, ny) = match o {
        Orientation::NoTransforms => (x, y),
        Orientation::FlipHorizontal => (rx(sw, x), y),
        Orientation::FlipVertical => (x, rx(sh, y)),
        Orientation::Rotate180 => (rx(sw, x), rx(sh, y)),
        Orientation::Rotate90 => (y, rx(sh, x)),
        Orientation::Rotate270 => (rx(sw, y), x),
        Orientation::Rotate90FlipH => (y, x),
        Orientation::Rotate270FlipH => (rx(sw, y), rx(sh, x)),
    };
    Square {
        x: nx,
        y: ny,
        side: s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{DynamicImage, GenericImageView, RgbImage};
    use proptest::prelude::*;

    const ALL: [Orientation; 8] = [
        Orientation::NoTransforms,
        Orientation::FlipHorizontal,
        Orientation::FlipVertical,
        Orientation::Rotate180,
        Orientation::Rotate90,
        Orientation::Rotate270,
        Orientation::Rotate90FlipH,
        Orientation::Rotate270FlipH,
    ];

    #[test]
    fn centre_and_explicit_crops() {
        type Case = (u32, u32, Option<Crop>, Option<(u32, u32, u32)>);
        let cases: &[Case] = &[
            (4032, 800, None, Some((1616, 0, 800))),
            (450, 3156, None, Some((0, 1353, 450))),
            (7, 7, None, Some((0, 0, 7))),
            (1, 9, None, Some((0, 4, 1))),
            (
                100,
                50,
                Some(Crop {
                    x: 50,
                    y: 0,
                    side: 50,
                }),
                Some((50, 0, 50)),
            ),
            (
                100,
                50,
                Some(Crop {
                    x: 51,
                    y: 0,
                    side: 50,
                }),
                None,
            ),
            (
                100,
                50,
                Some(Crop {
                    x: 0,
                    y: 0,
                    side: 0,
                }),
                None,
            ),
            (
                100,
                50,
                Some(Crop {
                    x: u32::MAX,
                    y: 0,
                    side: 2,
                }),
                None,
            ),
            (
                100,
                50,
                Some(Crop {
                    x: 0,
                    y: 1,
                    side: u32::MAX,
                }),
                None,
            ),
        ];
        for &(w, h, crop, want) in cases {
            let got = choose_square(w, h, crop).ok().map(|s| (s.x, s.y, s.side));
            assert_eq!(got, want, "{w}x{h} {crop:?}");
        }
        assert!(matches!(
            choose_square(
                10,
                10,
                Some(Crop {
                    x: 0,
                    y: 0,
                    side: 0
                })
            ),
            Err(PipelineError::BadCrop(_))
        ));
    }

    /// The square mapped to stored coordinates, cropped there and then
    /// oriented, equals cropping the oriented image: checked on every pixel
    /// of a small image with unique pixel values, for all 8 orientations.
    #[test]
    fn mapping_matches_apply_orientation() {
        let (sw, sh) = (7u32, 5u32);
        let stored = RgbImage::from_fn(sw, sh, |x, y| image::Rgb([x as u8, y as u8, 0]));
        for o in ALL {
            let mut upright = DynamicImage::ImageRgb8(stored.clone());
            upright.apply_orientation(o);
            let (uw, uh) = upright.dimensions();
            assert_eq!(swaps_axes(o), uw != sw);
            for side in 1..=uw.min(uh) {
                for y in 0..=uh - side {
                    for x in 0..=uw - side {
                        let sq = Square { x, y, side };
                        let st = upright_to_stored(o, sw, sh, sq);
                        assert!(st.x + side <= sw && st.y + side <= sh, "{o:?} {sq:?}");
                        let mut cut = DynamicImage::ImageRgb8(
                            image::imageops::crop_imm(&stored, st.x, st.y, side, side).to_image(),
                        );
                        cut.apply_orientation(o);
                        let want = upright.crop_imm(x, y, side, side);
                        assert_eq!(cut.to_rgb8(), want.to_rgb8(), "{o:?} {sq:?}");
                    }
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn crop_math_is_total_and_in_bounds(
            w in 0u32..=u32::MAX, h in 0u32..=u32::MAX,
            cx in any::<u32>(), cy in any::<u32>(), cs in any::<u32>(),
            explicit in any::<bool>(), oi in 0usize..8,
        ) {
            let crop = explicit.then_some(Crop { x: cx, y: cy, side: cs });
            if let Ok(sq) = choose_square(w, h, crop) {
                prop_assert!(sq.side >= 1);
                prop_assert!(u64::from(sq.x) + u64::from(sq.side) <= u64::from(w));
                prop_assert!(u64::from(sq.y) + u64::from(sq.side) <= u64::from(h));
                if crop.is_none() {
                    prop_assert_eq!(sq.side, w.min(h));
                }
                let o = ALL[oi];
                let (sw, sh) = if swaps_axes(o) { (h, w) } else { (w, h) };
                let st = upright_to_stored(o, sw, sh, sq);
                prop_assert!(u64::from(st.x) + u64::from(st.side) <= u64::from(sw));
                prop_assert!(u64::from(st.y) + u64::from(st.side) <= u64::from(sh));
            }
        }
    }
}
