//! Colour management: converting pixels tagged with an embedded ICC profile to
//! sRGB with `moxcms` (the same version `image` uses).
//!
//! Best effort by design: a profile that does not parse, is not an RGB profile
//! (gray, CMYK — the JPEG decoder has already converted CMYK to RGB), or cannot
//! build a transform is ignored and the pixels are left as they are; it is never
//! an error. Profiles whose primaries are sRGB's are skipped (no-op transform,
//! saves time). Alpha passes through unchanged. Pure, no I/O.

use moxcms::{ColorProfile, DataColorSpace, Layout as CmsLayout, TransformOptions, Xyzd};

use super::{Layout, Pixels};

fn close(a: Xyzd, b: Xyzd) -> bool {
    (a.x - b.x).abs() < 2e-3 && (a.y - b.y).abs() < 2e-3 && (a.z - b.z).abs() < 2e-3
}

/// True when `profile` is an RGB matrix/shaper profile with sRGB primaries.
fn is_srgb_like(profile: &ColorProfile) -> bool {
    let srgb = ColorProfile::new_srgb();
    profile.is_matrix_shaper()
        && close(profile.red_colorant, srgb.red_colorant)
        && close(profile.green_colorant, srgb.green_colorant)
        && close(profile.blue_colorant, srgb.blue_colorant)
}

/// Converts `px` in place from the colour space described by `icc` to sRGB.
/// Returns whether a conversion was applied.
pub(crate) fn to_srgb(px: &mut Pixels, icc: &[u8]) -> bool {
    let Ok(profile) = ColorProfile::new_from_slice(icc) else {
        return false;
    };
    if profile.color_space != DataColorSpace::Rgb || is_srgb_like(&profile) {
        return false;
    }
    let layout = match px.layout {
        Layout::Rgb8 => CmsLayout::Rgb,
        Layout::Rgba8 => CmsLayout::Rgba,
    };
    let srgb = ColorProfile::new_srgb();
    let Ok(transform) =
        profile.create_transform_8bit(layout, &srgb, layout, TransformOptions::default())
    else {
        return false;
    };
    let mut out = vec![0u8; px.data.len()];
    if transform.transform(&px.data, &mut out).is_err() {
        return false;
    }
    px.data = out;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn px(layout: Layout, data: Vec<u8>) -> Pixels {
        let ch = if layout == Layout::Rgb8 { 3 } else { 4 };
        Pixels {
            width: (data.len() / ch) as u32,
            height: 1,
            layout,
            data,
        }
    }

    #[test]
    fn broken_or_non_rgb_profiles_are_ignored() {
        let orig = px(Layout::Rgb8, vec![10, 200, 30, 250, 0, 5]);
        for icc in [&b""[..], b"garbage", &[0u8; 200][..]] {
            let mut p = orig.clone();
            assert!(!to_srgb(&mut p, icc));
            assert_eq!(p, orig);
        }
    }

    #[test]
    fn srgb_profile_is_skipped_and_display_p3_converts() {
        let srgb = ColorProfile::new_srgb().encode().unwrap();
        let mut p = px(Layout::Rgb8, vec![0, 255, 0]);
        assert!(!to_srgb(&mut p, &srgb));
        assert_eq!(p.data, vec![0, 255, 0]);

        // Pure P3 green is outside sRGB: it clips to a saturated green, and
        // a mid grey stays grey (white point and TRC are the same).
        let p3 = ColorProfile::new_display_p3().encode().unwrap();
        let mut p = px(Layout::Rgba8, vec![0, 255, 0, 128, 128, 128, 128, 7]);
        assert!(to_srgb(&mut p, &p3));
        assert!(
            p.data[0] < 10 && p.data[1] == 255 && p.data[2] < 10,
            "{:?}",
            p.data
        );
        assert_eq!(p.data[3], 128, "alpha untouched");
        for c in &p.data[4..7] {
            assert!((i32::from(*c) - 128).abs() <= 1, "{:?}", p.data);
        }
        assert_eq!(p.data[7], 7);
    }
}
