//! Tests of the public API of `identicon`: golden bytes, sizes (proptest),
//! seed sensitivity, crispness of the grid styles, anti-aliasing of the vector
//! styles, `Style::parse` and `initials_of` tables, the contact sheet.
//!
//! `AVATAR_EDGE_WRITE_GOLDEN=<dir>` makes the golden test also write every
//! golden image and `styles.png` (the docs contact sheet) into `<dir>`.

use super::*;
use md5::{Digest, Md5};
use proptest::prelude::*;

fn md5(s: &str) -> Vec<u8> {
    Md5::digest(s.as_bytes()).to_vec()
}

fn write_png(name: &str, px: &Pixels) {
    if let Ok(dir) = std::env::var("AVATAR_EDGE_WRITE_GOLDEN") {
        let path = std::path::Path::new(&dir).join(name);
        std::fs::create_dir_all(&dir).expect("create golden dir");
        image::save_buffer(
            &path,
            &px.data,
            px.width,
            px.height,
            image::ExtendedColorType::Rgba8,
        )
        .expect("write png");
    }
}

const GOLDEN_SEEDS: [(&str, &str); 2] = [
    ("alice@example.org", "Alice Liddell"),
    ("bob@example.org", "bob"),
];
const GOLDEN_SIZES: [u32; 4] = [16, 32, 80, 512];

/// BLAKE3 of the RGBA buffer: (style, seed index, size) → hex prefix (16 hex digits).
const GOLDEN: &[(&str, usize, u32, &str)] = &[
    ("identicon", 0, 16, "c3b84b5d0199a3e0"),
    ("identicon", 0, 32, "1c113dd4cc669e9e"),
    ("identicon", 0, 80, "558da17be91c9fd4"),
    ("identicon", 0, 512, "a28fceffa264539e"),
    ("identicon", 1, 16, "ce50d5b814f88cf5"),
    ("identicon", 1, 32, "1509931fc631c21b"),
    ("identicon", 1, 80, "9fdf781761add7c4"),
    ("identicon", 1, 512, "07255233a4670e2e"),
    ("retro", 0, 16, "191206daaa690388"),
    ("retro", 0, 32, "7d718d7deeae76bf"),
    ("retro", 0, 80, "d360623dcf237bfb"),
    ("retro", 0, 512, "f94aadb9e719ef02"),
    ("retro", 1, 16, "aa95daab60a69a13"),
    ("retro", 1, 32, "9d5dc1675e08c928"),
    ("retro", 1, 80, "5f676cbca37d8e90"),
    ("retro", 1, 512, "c825ff25a3a450af"),
    ("monsterid", 0, 16, "fd0b50d29a7ac0f7"),
    ("monsterid", 0, 32, "c940d54229f63f32"),
    ("monsterid", 0, 80, "fccaa2e611957e56"),
    ("monsterid", 0, 512, "e761ef4f950c3596"),
    ("monsterid", 1, 16, "dca197b4692c055d"),
    ("monsterid", 1, 32, "6d5d54dd459b5617"),
    ("monsterid", 1, 80, "251a8206d6bba8f1"),
    ("monsterid", 1, 512, "115057423c3c720a"),
    ("wavatar", 0, 16, "16cd640c4f6a2d96"),
    ("wavatar", 0, 32, "d419c181fbba10e7"),
    ("wavatar", 0, 80, "52f1ce097a58c70a"),
    ("wavatar", 0, 512, "42a8b84d5a36d3bd"),
    ("wavatar", 1, 16, "cfaf348033ef0799"),
    ("wavatar", 1, 32, "0c5a4988cf1c6c43"),
    ("wavatar", 1, 80, "413833648a8c6d3e"),
    ("wavatar", 1, 512, "ca45818b4f1d6bad"),
    ("robohash", 0, 16, "38784a9e91df4d19"),
    ("robohash", 0, 32, "854d7f0dc196e179"),
    ("robohash", 0, 80, "d13b311d3052e4eb"),
    ("robohash", 0, 512, "7eb6c9150216c5b5"),
    ("robohash", 1, 16, "77592b716551813a"),
    ("robohash", 1, 32, "41b7586ee3a8fafd"),
    ("robohash", 1, 80, "89404148fb30860b"),
    ("robohash", 1, 512, "688875cc30ba4d89"),
    ("mp", 0, 16, "6de364f867eb9774"),
    ("mp", 0, 32, "1d502541b4c60a34"),
    ("mp", 0, 80, "3f63a61e4914ebb0"),
    ("mp", 0, 512, "bad3f17b7a4fef86"),
    ("mp", 1, 16, "6de364f867eb9774"),
    ("mp", 1, 32, "1d502541b4c60a34"),
    ("mp", 1, 80, "3f63a61e4914ebb0"),
    ("mp", 1, 512, "bad3f17b7a4fef86"),
    ("blank", 0, 16, "d6fd9de5bccf223f"),
    ("blank", 0, 32, "b6fb73fc46938c98"),
    ("blank", 0, 80, "9e90ec32f0b9c7ed"),
    ("blank", 0, 512, "488de202f73bd976"),
    ("blank", 1, 16, "d6fd9de5bccf223f"),
    ("blank", 1, 32, "b6fb73fc46938c98"),
    ("blank", 1, 80, "9e90ec32f0b9c7ed"),
    ("blank", 1, 512, "488de202f73bd976"),
    ("initials", 0, 16, "f9ea41a82527ed6b"),
    ("initials", 0, 32, "d266aa7722b1ef73"),
    ("initials", 0, 80, "bf67dc8011a4c864"),
    ("initials", 0, 512, "3ffd25a90d7d95ff"),
    ("initials", 1, 16, "f632977e317b39c5"),
    ("initials", 1, 32, "44ef0bee985db627"),
    ("initials", 1, 80, "ff8adfbed01df0f2"),
    ("initials", 1, 512, "6753be697e0bcbc0"),
    ("color", 0, 16, "e00a5dea0fbdc51f"),
    ("color", 0, 32, "f4096e9eecff4509"),
    ("color", 0, 80, "e52d5d83369d05d5"),
    ("color", 0, 512, "7956d910bdd946cb"),
    ("color", 1, 16, "869978ea1665b22e"),
    ("color", 1, 32, "aa1356ca7929f6b0"),
    ("color", 1, 80, "33a56caa6801788b"),
    ("color", 1, 512, "3bb84df95e8c2b9c"),
];

#[test]
fn golden_bytes() {
    let mut got = Vec::new();
    for style in Style::ALL {
        for (i, (email, name)) in GOLDEN_SEEDS.iter().enumerate() {
            let seed = md5(email);
            let ini = initials_of(name);
            for size in GOLDEN_SIZES {
                let px = render(style, &seed, size, Some(&ini));
                let h = blake3::hash(&px.data).to_hex();
                got.push((style.as_str(), i, size, h[..16].to_string()));
                write_png(&format!("{}-{}-{}.png", style.as_str(), i, size), &px);
            }
        }
    }
    let seeds: Vec<Vec<u8>> = [
        "alice@example.org",
        "bob@example.org",
        "carol@example.org",
        "dave@example.org",
    ]
    .map(md5)
    .to_vec();
    let refs: Vec<&[u8]> = seeds.iter().map(|s| s.as_slice()).collect();
    write_png("styles.png", &contact_sheet(&refs, &[16, 32, 64, 128]));

    let table: String = got
        .iter()
        .map(|(s, i, z, h)| format!("    (\"{s}\", {i}, {z}, \"{h}\"),\n"))
        .collect();
    let want: Vec<(&str, usize, u32, String)> = GOLDEN
        .iter()
        .map(|(s, i, z, h)| (*s, *i, *z, h.to_string()))
        .collect();
    assert!(got == want, "golden mismatch; current table:\n{table}");
}

#[test]
fn style_parse_table() {
    let cases = [
        ("identicon", Some(Style::Identicon)),
        ("IDENTICON", Some(Style::Identicon)),
        ("Retro", Some(Style::Retro)),
        ("monsterid", Some(Style::MonsterId)),
        ("wavatar", Some(Style::Wavatar)),
        ("robohash", Some(Style::Robohash)),
        ("mp", Some(Style::Mp)),
        ("mm", Some(Style::Mp)),
        ("MM", Some(Style::Mp)),
        ("mysteryman", Some(Style::Mp)),
        ("MysteryMan", Some(Style::Mp)),
        ("blank", Some(Style::Blank)),
        ("initials", Some(Style::Initials)),
        ("color", Some(Style::Color)),
        ("colour", None),
        ("404", None),
        ("", None),
        (" identicon", None),
        ("identicon ", None),
        ("retrö", None),
        ("https://example.com/a.png", None),
    ];
    for (input, want) in cases {
        assert_eq!(Style::parse(input), want, "{input:?}");
        assert_eq!(input.parse::<Style>().ok(), want, "{input:?}");
    }
    for style in Style::ALL {
        assert_eq!(Style::parse(style.as_str()), Some(style));
        assert_eq!(style.to_string(), style.as_str());
    }
    assert!(matches!("nope".parse::<Style>(), Err(IdenticonError::UnknownStyle(s)) if s == "nope"));
}

#[test]
fn initials_of_table() {
    let cases = [
        ("Ada Lovelace", "AL"),
        ("ada", "A"),
        ("  jean-luc picard ", "JP"),
        ("李小龍", "李"),
        ("", ""),
        ("!!!", ""),
        ("   ", ""),
        ("Ada Augusta King Lovelace", "AL"),
        ("ada (admin)", "AA"),
        ("!!! bob", "B"),
        ("bob !!!", "B"),
        ("o'brien smith", "OS"),
        ("émile zola", "ÉZ"),
        ("straße", "S"),
        ("ßtraße x", "ßX"),
        ("42 wallaby way", "4W"),
        ("ИВАН петров", "ИП"),
        ("\tmary\nann\r\n", "MA"),
        ("ǆemal", "Ǆ"),
    ];
    for (name, want) in cases {
        assert_eq!(initials_of(name), want, "{name:?}");
        assert!(initials_of(name).chars().count() <= 2);
    }
}

fn assert_shape(px: &Pixels, size: u32) {
    let want = size.clamp(1, MAX_SIZE);
    assert_eq!(
        (px.width, px.height, px.layout),
        (want, want, crate::model::Layout::Rgba8)
    );
    assert_eq!(px.data.len(), want as usize * want as usize * 4);
}

/// Every pixel opaque (all of them up to 256 px; a fixed sample above, to keep
/// the unoptimized test build fast).
fn assert_opaque(px: &Pixels, what: &str) {
    let step = if px.width <= 256 { 1 } else { 97 };
    assert!(
        px.data.chunks_exact(4).step_by(step).all(|p| p[3] == 255),
        "{what} not opaque"
    );
}

#[test]
fn every_style_at_edge_sizes() {
    let seed = md5("edge@example.org");
    for style in Style::ALL {
        for size in [1u32, 2, 3, 7, 2047, 2048] {
            let px = render(style, &seed, size, Some("EZ"));
            assert_shape(&px, size);
            if style != Style::Blank {
                assert_opaque(&px, &format!("{style} {size}"));
            }
        }
    }
    // out-of-range sizes clamp to 1..=2048
    for size in [0u32, 2049, u32::MAX] {
        assert_shape(&render(Style::Color, &seed, size, None), size);
    }
    assert_eq!(
        render(Style::Identicon, &seed, 0, None),
        render(Style::Identicon, &seed, 1, None)
    );
    assert_eq!(
        render(Style::Wavatar, &seed, u32::MAX, None),
        render(Style::Wavatar, &seed, 2048, None)
    );
}

#[test]
fn odd_seeds_and_initials_never_fail() {
    let long = vec![0xA5u8; 10_000];
    let seeds: [&[u8]; 5] = [b"", b"\0", &[0xFF; 16], &[0; 32], &long];
    for style in Style::ALL {
        for seed in seeds {
            for ini in [
                None,
                Some(""),
                Some("李"),
                Some("\u{FFFF}\u{10FFFF}"),
                Some("WWWWWWWWWWWW"),
                Some("ij"),
            ] {
                assert_shape(&render(style, seed, 24, ini), 24);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn render_is_exactly_size_squared(
        style in 0usize..9,
        size in prop_oneof![1u32..=128, 1u32..=2048],
        seed in proptest::collection::vec(any::<u8>(), 0..48),
    ) {
        let style = Style::ALL[style];
        let px = render(style, &seed, size, Some("QW"));
        prop_assert_eq!((px.width, px.height), (size, size));
        prop_assert_eq!(px.data.len(), size as usize * size as usize * 4);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn different_seeds_give_different_grid_avatars(a in any::<[u8; 16]>(), b in any::<[u8; 16]>()) {
        prop_assume!(a != b);
        for style in [Style::Identicon, Style::Retro, Style::MonsterId, Style::Wavatar, Style::Robohash] {
            prop_assert_ne!(render(style, &a, 40, None).data, render(style, &b, 40, None).data, "{}", style);
        }
    }
}

#[test]
fn different_seeds_change_the_identicon_pattern_not_just_colour() {
    // Over many seeds the 5×5 identicon uses many distinct patterns.
    let mut patterns = std::collections::BTreeSet::new();
    for i in 0u32..300 {
        let seed = i.to_le_bytes();
        let [bg, _] = grid::identicon_palette(&seed);
        let px = render(Style::Identicon, &seed, 5, None); // 1 px per cell, no margin
        let mask: Vec<bool> = px
            .data
            .chunks(4)
            .map(|p| p[..3] != [bg.0, bg.1, bg.2])
            .collect();
        patterns.insert(mask);
    }
    assert!(
        patterns.len() > 280,
        "only {} distinct patterns",
        patterns.len()
    );
}

/// Every pixel is one of `palette` (checked only where the colour changes along
/// the buffer, which is every place a blended pixel could hide).
fn in_palette(px: &Pixels, palette: &[[u8; 4]]) -> bool {
    let mut last: &[u8] = &[];
    px.data.chunks_exact(4).all(|p| {
        if p == last {
            return true;
        }
        last = p;
        palette.iter().any(|c| c == p)
    })
}

#[test]
fn grid_styles_are_crisp_at_16_and_2048() {
    for email in ["alice@example.org", "bob@example.org"] {
        let seed = md5(email);
        for size in [16u32, 80, 2048] {
            let idp = grid::identicon_palette(&seed).map(|c| c.rgba());
            let id = render(Style::Identicon, &seed, size, None);
            assert!(in_palette(&id, &idp), "identicon {size}");
            for c in idp {
                assert!(
                    id.data.chunks(4).any(|p| p == c),
                    "identicon {size} lacks {c:?}"
                );
            }
            let rp = grid::retro_palette(&seed).map(|c| c.rgba());
            let re = render(Style::Retro, &seed, size, None);
            assert!(in_palette(&re, &rp), "retro {size}");
            // background, body and the dark eyes are always present
            for c in [rp[0], rp[1], rp[3]] {
                assert!(
                    re.data.chunks(4).any(|p| p == c),
                    "retro {size} lacks {c:?}"
                );
            }
        }
    }
}

#[test]
fn vector_styles_are_antialiased_not_upscaled() {
    // The mp silhouette at 512 has edge pixels strictly between its two greys,
    // and only within about a pixel of the edges (few of them).
    let px = render(Style::Mp, b"", 512, None);
    let (bg, fg) = (vector::MP_BG, vector::MP_FG);
    let mut mixed = 0usize;
    for p in px.data.chunks(4) {
        let v = p[0];
        assert!(p[0] == p[1] && p[1] == p[2], "mp is grey");
        assert!((fg.0..=bg.0).contains(&v));
        if v != bg.0 && v != fg.0 {
            mixed += 1;
        }
    }
    assert!(mixed > 500 && mixed < 4000, "{mixed} blended pixels");
    // A 1024 px render is not a 2× upscale of the 512 one: upscaling would make
    // every 2×2 block uniform.
    for style in [
        Style::Mp,
        Style::Wavatar,
        Style::MonsterId,
        Style::Robohash,
        Style::Initials,
    ] {
        let big = render(style, b"seed", 1024, Some("AB"));
        let s = 1024usize;
        let non_uniform = (0..s / 2)
            .flat_map(|by| (0..s / 2).map(move |bx| (bx, by)))
            .filter(|&(bx, by)| {
                let at = |x: usize, y: usize| &big.data[(y * s + x) * 4..][..4];
                let a = at(2 * bx, 2 * by);
                a != at(2 * bx + 1, 2 * by)
                    || a != at(2 * bx, 2 * by + 1)
                    || a != at(2 * bx + 1, 2 * by + 1)
            })
            .count();
        assert!(non_uniform > 100, "{style}: {non_uniform}");
    }
}

#[test]
fn seed_independent_and_trivial_styles() {
    let (a, b) = (md5("a@example.org"), md5("b@example.org"));
    assert_eq!(
        render(Style::Mp, &a, 80, None),
        render(Style::Mp, &b, 80, None)
    );
    assert!(render(Style::Blank, &a, 33, None)
        .data
        .iter()
        .all(|&v| v == 0));
    let ca = render(Style::Color, &a, 20, None);
    let cb = render(Style::Color, &b, 20, None);
    assert!(ca.data.chunks(4).all(|p| p == &ca.data[..4]));
    assert_eq!(ca.data[3], 255);
    assert_ne!(ca.data[..4], cb.data[..4]);
    // initials with no letters = the coloured background only
    let plain = render(Style::Initials, &a, 40, None);
    assert_eq!(render(Style::Initials, &a, 40, Some("")), plain);
    assert!(plain.data.chunks(4).all(|p| p == &plain.data[..4]));
    assert_ne!(render(Style::Initials, &a, 40, Some("A")), plain);
}

#[test]
fn styles_differ_from_each_other() {
    let seed = md5("alice@example.org");
    let all: Vec<Pixels> = Style::ALL
        .iter()
        .map(|s| render(*s, &seed, 64, Some("AL")))
        .collect();
    for i in 0..all.len() {
        for j in i + 1..all.len() {
            assert_ne!(all[i], all[j], "{} vs {}", Style::ALL[i], Style::ALL[j]);
        }
    }
}

#[test]
fn contact_sheet_layout() {
    let seeds: [&[u8]; 2] = [b"one", b"two"];
    let sheet = contact_sheet(&seeds, &[16, 32]);
    let g = SHEET_GUTTER;
    let block = 16 + 32 + 3 * g;
    assert_eq!(sheet.width, g + 2 * block);
    assert_eq!(sheet.height, g + 9 * (32 + g));
    assert_eq!(sheet.data.len(), (sheet.width * sheet.height * 4) as usize);
    // the first tile (identicon, seed "one", 16 px) is copied verbatim
    let tile = render(Style::Identicon, b"one", 16, None);
    let (x0, y0) = (2 * g as usize, g as usize);
    for y in 0..16 {
        let row = &sheet.data[((y0 + y) * sheet.width as usize + x0) * 4..][..64];
        assert_eq!(row, &tile.data[y * 64..(y + 1) * 64]);
    }
    // corner is gutter
    assert_eq!(sheet.data[..4], SHEET_BG.rgba());
    // degenerate and oversized inputs stay bounded
    let empty = contact_sheet(&[], &[]);
    assert!(empty.width >= 1 && empty.height >= 1);
    let many: Vec<&[u8]> = (0..100).map(|_| &b"s"[..]).collect();
    let wide = contact_sheet(&many, &[100; 16]);
    assert_eq!(wide.width, g + 4 * (16 * (100 + g) + g)); // 4 blocks fit in 8192 px
    assert!(wide.width <= SHEET_MAX_WIDTH);
    assert_eq!(wide.data.len(), (wide.width * wide.height * 4) as usize);
    let clamped = contact_sheet(&[b"s"], &[5000]);
    assert_eq!(
        (clamped.width, clamped.height),
        (3 * g + SHEET_MAX_TILE, g + 9 * (SHEET_MAX_TILE + g))
    );
}
