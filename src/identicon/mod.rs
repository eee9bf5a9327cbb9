//! Generated default avatars (identicon, retro, monsterid, wavatar, robohash,
//! mp silhouette, blank, initials, color), drawn natively at the requested size.
//!
//! Pure and synchronous: seed bytes + style + size → RGBA pixels. Same inputs,
//! same bytes, on every machine.
//!
//! (Skeleton: the real implementation replaces the `todo!()`s.)
