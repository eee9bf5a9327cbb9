//! Salted rungs (issue 20): every stored rung but the one that names its
//! master ends with that master's hash, so no blob is ever listed by two
//! masters. Collecting a master then never needs to know the others (on a
//! bounded replica it cannot): its blobs are its own.
//!
//! Layout: `payload ‖ owner (32 bytes) ‖ SALT_MAGIC (8 bytes)`, where the
//! payload is a rung as it was stored before (QOI, striped QOI `AEq1`,
//! uncompressed `AEr1`, YCbCr planes `AEy1`, or
//! an animated WebP) and the owner is the hash naming the master.
//!
//! Invariants:
//! - [`payload`] is exact without being told whether a blob is salted: a
//!   salted blob's payload is a whole rung by its own framing (QOI's end
//!   marker, the uncompressed header's length, RIFF's size), and an unsalted
//!   rung is whole only at its full length, so it is never cut.
//! - No salted blob equals any master's own blob: a master's blob is an
//!   unsalted rung, whole at its full length, while a salted blob is whole
//!   only 40 bytes short of it. So two masters share a blob only when one of
//!   them was stored before salting.

use crate::model::ContentHash;

/// The last 8 bytes of a salted rung. Its last byte is not QOI's end
/// marker's (`1`), so an unsalted QOI rung never ends with it.
pub const SALT_MAGIC: [u8; 8] = *b"AEsalt\x00\x02";
/// Bytes salting adds to a rung.
pub const SALT_LEN: usize = 32 + SALT_MAGIC.len();

/// QOI's end marker: every QOI stream ends with it.
const QOI_END: [u8; 8] = [0, 0, 0, 0, 0, 0, 0, 1];

/// `rung` salted with `owner`, the hash naming its master.
pub fn salt(mut rung: Vec<u8>, owner: &ContentHash) -> Vec<u8> {
    rung.reserve_exact(SALT_LEN);
    rung.extend_from_slice(&owner.0);
    rung.extend_from_slice(&SALT_MAGIC);
    rung
}

/// The rung inside a stored blob: without its salt when it has one (see the
/// module doc), else the whole blob.
pub fn payload(blob: &[u8]) -> &[u8] {
    match blob.len().checked_sub(SALT_LEN) {
        Some(cut) if blob.ends_with(&SALT_MAGIC) && whole(&blob[..cut]) => &blob[..cut],
        _ => blob,
    }
}

/// The master a salted blob belongs to, if it is salted.
pub fn owner(blob: &[u8]) -> Option<ContentHash> {
    let cut = blob.len().checked_sub(SALT_LEN)?;
    if payload(blob).len() != cut {
        return None;
    }
    let mut h = [0u8; 32];
    h.copy_from_slice(&blob[cut..cut + 32]);
    Some(ContentHash(h))
}

/// Is `rung` complete by its own framing, with nothing after it?
fn whole(rung: &[u8]) -> bool {
    if rung.starts_with(super::encode::RAW_MAGIC) {
        return super::encode::raw_rung_len(rung) == Some(rung.len());
    }
    if rung.starts_with(super::ycc::YCC_MAGIC) {
        return super::ycc::ycc_rung_len(rung) == Some(rung.len());
    }
    if rung.starts_with(super::encode::STRIPED_MAGIC) {
        return super::encode::striped_rung_len(rung) == Some(rung.len());
    }
    if rung.starts_with(b"qoif") {
        return rung.len() >= 14 + QOI_END.len() && rung.ends_with(&QOI_END);
    }
    if rung.starts_with(b"RIFF") && rung.len() >= 12 {
        let size = u32::from_le_bytes([rung[4], rung[5], rung[6], rung[7]]) as usize;
        return size.checked_add(8) == Some(rung.len());
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{normalize, Limits};

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn the_payload_is_found_exactly_whatever_the_rung_ends_with() {
        let by = ContentHash([7; 32]);
        let n = normalize(
            &fixture("photo_grace_hopper_512x600.jpg"),
            None,
            &Limits::default(),
        )
        .unwrap();
        let mut rungs: Vec<Vec<u8>> = n.ladder.iter().map(|r| r.bytes.clone()).collect();
        assert!(rungs.iter().any(|r| r.starts_with(b"AEq1")));
        assert!(rungs.iter().any(|r| r.starts_with(b"AEr1")));
        // A rung of one QOI image (flat art at most 128 rows), as every
        // compressed rung was before striping.
        let flat = crate::model::Pixels {
            width: 64,
            height: 64,
            layout: crate::model::Layout::Rgb8,
            data: vec![9; 64 * 64 * 3],
        };
        rungs.push(super::super::encode::encode_rung(&flat, 256, true).unwrap());
        assert!(rungs.last().unwrap().starts_with(b"qoif"));
        // An uncompressed rung whose pixels end with the salt's bytes: it is
        // whole at its full length, so nothing is cut.
        let mut tricky = rungs
            .iter()
            .find(|r| r.starts_with(b"AEr1"))
            .unwrap()
            .clone();
        let at = tricky.len() - SALT_LEN;
        tricky[at..at + 32].copy_from_slice(&by.0);
        tricky[at + 32..].copy_from_slice(&SALT_MAGIC);
        rungs.push(tricky);
        // An animated WebP whose last chunk ends with them likewise.
        let mut riff = b"RIFF\0\0\0\0WEBP".to_vec();
        riff.extend_from_slice(&by.0);
        riff.extend_from_slice(&SALT_MAGIC);
        let size = (riff.len() - 8) as u32;
        riff[4..8].copy_from_slice(&size.to_le_bytes());
        rungs.push(riff);
        for r in &rungs {
            assert_eq!(payload(r), &r[..], "unsalted: whole");
            assert_eq!(owner(r), None);
            let salted = salt(r.clone(), &by);
            assert_eq!(salted.len(), r.len() + SALT_LEN);
            assert_eq!(payload(&salted), &r[..], "salted: the rung");
            assert_eq!(owner(&salted), Some(by));
        }
        // Cut or foreign bytes are left alone (and fail to decode later).
        let salted = salt(rungs[0].clone(), &by);
        assert_eq!(payload(&salted[1..]), &salted[1..]);
        assert_eq!(
            payload(&salted[..salted.len() - 1]),
            &salted[..salted.len() - 1]
        );
        assert_eq!(payload(&[]), &[] as &[u8]);
    }

    proptest::proptest! {
        /// Any bytes: the payload is a prefix, cut by exactly the salt or
        /// not at all, and a salted whole rung gives back that rung.
        #[test]
        fn the_payload_is_the_blob_or_the_blob_less_its_salt(
            blob in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            side in 1u32..4,
            channels in 3u8..=4,
            fill in proptest::prelude::any::<u8>(),
        ) {
            let p = payload(&blob);
            proptest::prop_assert!(blob.starts_with(p));
            proptest::prop_assert!(p.len() == blob.len() || p.len() + SALT_LEN == blob.len());
            proptest::prop_assert_eq!(owner(&blob).is_some(), p.len() != blob.len());
            // A whole uncompressed rung of any size, whatever its pixels.
            let mut raw = super::super::encode::RAW_MAGIC.to_vec();
            raw.extend_from_slice(&side.to_be_bytes());
            raw.extend_from_slice(&side.to_be_bytes());
            raw.push(channels);
            raw.extend(std::iter::repeat_n(fill, (side * side) as usize * usize::from(channels)));
            let by = ContentHash::of(&blob);
            proptest::prop_assert_eq!(payload(&raw), &raw[..]);
            let salted = salt(raw.clone(), &by);
            proptest::prop_assert_eq!(payload(&salted), &raw[..]);
        }
    }
}
