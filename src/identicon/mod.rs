//! Generated default avatars (identicon, retro, monsterid, wavatar, robohash,
//! mp silhouette, blank, initials, color), drawn natively at the requested size.
//!
//! Pure and synchronous: seed bytes + style + size → RGBA pixels. Same inputs,
//! same bytes, on every machine.
//!
//! (Skeleton: the real implementation replaces the `todo!()`s.)

use crate::pipeline::Pixels;

/// A generated default style.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Style {
    Identicon,
    Retro,
    MonsterId,
    Wavatar,
    Robohash,
    Mp,
    Blank,
    Initials,
    Color,
}

pub const MAX_SIZE: u32 = 2048;

impl Style {
    pub const ALL: [Style; 9] = [
        Style::Identicon,
        Style::Retro,
        Style::MonsterId,
        Style::Wavatar,
        Style::Robohash,
        Style::Mp,
        Style::Blank,
        Style::Initials,
        Style::Color,
    ];
    pub fn as_str(&self) -> &'static str {
        match self {
            Style::Identicon => "identicon",
            Style::Retro => "retro",
            Style::MonsterId => "monsterid",
            Style::Wavatar => "wavatar",
            Style::Robohash => "robohash",
            Style::Mp => "mp",
            Style::Blank => "blank",
            Style::Initials => "initials",
            Style::Color => "color",
        }
    }
    pub fn parse(s: &str) -> Option<Style> {
        let s = s.to_ascii_lowercase();
        if s == "mm" || s == "mysteryman" {
            return Some(Style::Mp);
        }
        Style::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

pub fn render(_style: Style, _seed: &[u8], size: u32, _initials: Option<&str>) -> Pixels {
    let size = size.clamp(1, MAX_SIZE);
    Pixels {
        width: size,
        height: size,
        layout: crate::pipeline::Layout::Rgba8,
        data: vec![128; (size * size * 4) as usize],
    }
}

pub fn initials_of(name: &str) -> String {
    name.chars().take(1).collect()
}

pub fn contact_sheet(_seeds: &[&[u8]], _sizes: &[u32]) -> Pixels {
    render(Style::Blank, b"", 1, None)
}
