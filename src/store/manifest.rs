//! What the store knows about a normalized master: its manifest and the
//! rungs of its resolution ladder.

use serde::{Deserialize, Serialize};

use crate::model::{AnimationInfo, Compression, ContentHash};

/// One stored rung of a master's resolution ladder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RungRef {
    pub side: u32,
    pub blob: ContentHash,
    pub len: u64,
}

/// What the store knows about a normalized master (named by rung 0's hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub hash: ContentHash,
    pub has_alpha: bool,
    /// Format the upload was sniffed as ("jpeg", "png", "gif", "webp").
    pub source_format: String,
    /// Largest first; `rungs[0].blob == hash`. Issue 22: an animated
    /// master's rungs start with the animated master itself and its smaller
    /// animated rungs (`AnimationInfo::smaller`), rungs of side 0 (no still
    /// is ever picked from them: `pipeline::pick_rung` asks for a side >= the
    /// request), so every store keeps, backs up and collects them like the
    /// still rungs that follow.
    pub rungs: Vec<RungRef>,
    /// Issue 22: what the animated master (`rungs[0]`) is; absent for stills.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub animation: Option<AnimationInfo>,
    /// Lossy or lossless WebP, decided at upload (`pipeline::classify`).
    /// Absent in manifests written before the decision existed: see
    /// [`Manifest::compression`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
    /// Issue 20: every rung but `rungs[0]` ends with `hash`
    /// (`pipeline::salt`), so no other master lists any of them; absent in
    /// manifests written before salting, whose rungs may be shared.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub salted: bool,
}

impl Manifest {
    /// The still master's side.
    pub fn side(&self) -> u32 {
        self.rungs.iter().map(|r| r.side).max().unwrap_or(0)
    }

    /// The still rungs a render of any size up to `size` may read: with
    /// `pipeline::pick_rung`'s rule (the exact or next-larger side), every
    /// still rung up to the smallest one at least `size` wide, or every
    /// still rung when none is that wide. Animated rungs (side 0) are not
    /// among them.
    pub fn still_rungs_up_to(&self, size: u32) -> impl Iterator<Item = &RungRef> {
        let cap = self
            .rungs
            .iter()
            .map(|r| r.side)
            .filter(|&s| s >= size)
            .min()
            .unwrap_or(u32::MAX);
        self.rungs
            .iter()
            .filter(move |r| r.side > 0 && r.side <= cap)
    }

    /// A still manifest with rungs of these sides (blob hashes from the
    /// sides), for tests of rung choice.
    #[cfg(test)]
    pub(crate) fn with_sides(sides: &[u32]) -> Manifest {
        Manifest {
            hash: ContentHash::of(b"m"),
            has_alpha: false,
            source_format: "png".into(),
            rungs: sides
                .iter()
                .map(|&side| RungRef {
                    side,
                    blob: ContentHash::of(&side.to_le_bytes()),
                    len: 1,
                })
                .collect(),
            animation: None,
            compression: None,
            salted: false,
        }
    }

    /// The animated rungs (side, blob), the master's first; empty for a
    /// still.
    pub fn animated_rungs(&self) -> Vec<(u32, ContentHash)> {
        let sides = self.animation.map(|a| a.rung_sides()).unwrap_or_default();
        sides
            .into_iter()
            .zip(&self.rungs)
            .map(|(side, r)| (side, r.blob))
            .collect()
    }

    /// The master's compression. Masters stored before the decision existed
    /// keep what they had (lossless WebP) unless they were JPEG uploads,
    /// which are photos: never larger than before, lighter where it is safe.
    pub fn compression(&self) -> Compression {
        self.compression.unwrap_or(if self.source_format == "jpeg" {
            Compression::Lossy
        } else {
            Compression::Lossless
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn still_rungs_up_to_cover_every_render_of_that_size_or_less() {
        // (ladder, size, sides selected)
        let cases: [(&[u32], u32, &[u32]); 7] = [
            (&[1024, 512, 256, 128, 64, 32], 256, &[256, 128, 64, 32]),
            (&[1024, 512, 256, 128, 64, 32], 200, &[256, 128, 64, 32]),
            (&[1024, 512, 256, 128, 64, 32], 16, &[32]),
            // No 256 rung: the next larger one is read for 256 px renders.
            (&[400, 200, 100], 256, &[400, 200, 100]),
            // A master smaller than the size: all of it.
            (&[96, 64, 32], 256, &[96, 64, 32]),
            // Animated rungs (side 0) first: never selected.
            (&[0, 0, 512, 256, 128], 256, &[256, 128]),
            (&[0, 0], 256, &[]),
        ];
        for (ladder, size, want) in cases {
            let m = Manifest::with_sides(ladder);
            let got: Vec<u32> = m.still_rungs_up_to(size).map(|r| r.side).collect();
            assert_eq!(got, want, "{ladder:?} up to {size}");
        }
        // That renders read nothing else: the proptest in `service::render`.
    }

    #[test]
    fn manifests_without_a_compression_decision_still_load() {
        let h = "ab".repeat(32);
        let old = |fmt: &str| {
            format!(
                r#"{{"hash":"{h}","has_alpha":false,"source_format":"{fmt}","rungs":[{{"side":64,"blob":"{h}","len":9}}]}}"#
            )
        };
        // (stored JSON, expected compression)
        let cases = [
            (old("jpeg"), Compression::Lossy),
            (old("png"), Compression::Lossless),
            (old("gif"), Compression::Lossless),
            (old("webp"), Compression::Lossless),
        ];
        for (json, want) in cases {
            let m: Manifest = serde_json::from_str(&json).unwrap();
            assert_eq!((m.compression, m.compression()), (None, want), "{json}");
            assert!(!m.salted, "stored before salted rungs");
            // Written back unchanged: no field appears out of nowhere.
            assert_eq!(serde_json::to_string(&m).unwrap(), json);
        }
        let mut m: Manifest = serde_json::from_str(&old("jpeg")).unwrap();
        m.compression = Some(Compression::Lossless);
        let json = serde_json::to_string(&m).unwrap();
        assert!(json.contains(r#""compression":"lossless""#), "{json}");
        let back: Manifest = serde_json::from_str(&json).unwrap();
        assert_eq!(back.compression(), Compression::Lossless);
    }
}
