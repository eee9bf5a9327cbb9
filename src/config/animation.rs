//! Issue 22: the animation limits of uploads (`--max-frames`,
//! `--max-animation-megapixels`, `--max-animation-seconds`,
//! `--animation-over-limit`), validated into `pipeline::AnimationLimits`.

use super::{invalid, ConfigError, Settings};
use crate::pipeline::{AnimationLimits, OverLimit};

/// What an animated upload over a limit gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnimationOverLimit {
    /// 422 naming the limit.
    #[default]
    Refuse,
    /// Keep the first frame: a still avatar.
    Still,
}

/// The validated limits (defaults: 300 frames, 200 megapixels, 60 s, refuse).
pub(super) fn animation_limits(s: &Settings) -> Result<AnimationLimits, ConfigError> {
    let d = AnimationLimits::default();
    let max_frames = s.max_frames.unwrap_or(d.max_frames);
    if !(1..=10_000).contains(&max_frames) {
        return Err(invalid("max_frames", "must be 1..=10000"));
    }
    let mp = s
        .max_animation_megapixels
        .unwrap_or(d.max_pixels / 1_000_000);
    if !(1..=10_000).contains(&mp) {
        return Err(invalid("max_animation_megapixels", "must be 1..=10000"));
    }
    let seconds = s.max_animation_seconds.unwrap_or(d.max_duration_ms / 1000);
    if !(1..=3600).contains(&seconds) {
        return Err(invalid("max_animation_seconds", "must be 1..=3600"));
    }
    Ok(AnimationLimits {
        max_frames,
        max_pixels: mp * 1_000_000,
        max_duration_ms: seconds * 1000,
        over_limit: match s.animation_over_limit.unwrap_or_default() {
            AnimationOverLimit::Refuse => OverLimit::Refuse,
            AnimationOverLimit::Still => OverLimit::Still,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bounds() {
        let l = animation_limits(&Settings::default()).unwrap();
        assert_eq!(l, AnimationLimits::default());
        assert_eq!(
            (l.max_frames, l.max_pixels, l.max_duration_ms),
            (300, 200_000_000, 60_000)
        );
        let s = Settings {
            max_frames: Some(10),
            max_animation_megapixels: Some(5),
            max_animation_seconds: Some(2),
            animation_over_limit: Some(AnimationOverLimit::Still),
            ..Settings::default()
        };
        let l = animation_limits(&s).unwrap();
        assert_eq!(
            (l.max_frames, l.max_pixels, l.max_duration_ms, l.over_limit),
            (10, 5_000_000, 2000, OverLimit::Still)
        );
        for bad in [
            Settings {
                max_frames: Some(0),
                ..Settings::default()
            },
            Settings {
                max_animation_megapixels: Some(0),
                ..Settings::default()
            },
            Settings {
                max_animation_seconds: Some(0),
                ..Settings::default()
            },
        ] {
            assert!(animation_limits(&bad).is_err());
        }
    }
}
