//! The generated default styles (Gravatar's `d=` names). The value lives here
//! so the parsing layer and the configuration name a style without importing
//! the renderer; `identicon` draws them.

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

    /// Case-insensitive; also accepts Gravatar's legacy `mm` and `mysteryman` for [`Style::Mp`].
    pub fn parse(s: &str) -> Option<Style> {
        if s.eq_ignore_ascii_case("mm") || s.eq_ignore_ascii_case("mysteryman") {
            return Some(Style::Mp);
        }
        Style::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
    }
}

impl std::fmt::Display for Style {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
