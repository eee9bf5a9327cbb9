//! Configuration: defaults, environment and flags, refusals.

use super::*;

#[test]
fn defaults_are_the_documented_ones() {
    let c = Config::resolve(Settings::default(), None).unwrap();
    assert_eq!(c.http.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.store.data_dir, PathBuf::from("avatar-data"));
    assert_eq!(c.render.cache_bytes, 256 << 20);
    assert_eq!(c.render.limits.master_side, 1024);
    assert_eq!(c.render.limits.raw_rungs_up_to, 256);
    assert_eq!(c.render.limits.max_upload_bytes, 10 << 20);
    assert_eq!(c.cache.identity_max_age, 60);
    assert_eq!(c.render.default_style, Style::Identicon);
    assert!(!c.http.identity_redirect);
    assert_eq!(c.render.quality, Quality { webp: 80, avif: 80 });
    assert!(!c.render.avif_negotiate);
}

#[test]
fn raw_rungs_up_to_is_0_to_512() {
    // setting → Ok(value) or Err(text the message must hold)
    let cases: &[(Option<u32>, Result<u32, &str>)] = &[
        (None, Ok(256)),
        (Some(0), Ok(0)),
        (Some(512), Ok(512)),
        (Some(513), Err("raw_rungs_up_to: must be 0..=512, got 513")),
    ];
    for (setting, want) in cases {
        let s = Settings {
            raw_rungs_up_to: *setting,
            ..Default::default()
        };
        let got = Config::resolve(s, None)
            .map(|c| c.render.limits.raw_rungs_up_to)
            .map_err(|e| e.to_string());
        match (got, want) {
            (Ok(g), Ok(w)) => assert_eq!(g, *w),
            (Err(e), Err(w)) => assert!(e.contains(w), "{e}"),
            (g, w) => panic!("{setting:?}: got {g:?}, want {w:?}"),
        }
    }
}

#[test]
fn qualities_outside_1_to_100_refuse_start_naming_the_option() {
    // (webp, avif) → Ok((webp, avif)) or Err(text the message must hold)
    type Case<'a> = (Option<u32>, Option<u32>, Result<(u8, u8), &'a str>);
    let cases: &[Case] = &[
        (None, None, Ok((80, 80))),
        (Some(1), Some(100), Ok((1, 100))),
        (Some(100), Some(1), Ok((100, 1))),
        (Some(0), None, Err("--webp-quality must be 1..=100, got 0")),
        (
            Some(101),
            None,
            Err("--webp-quality must be 1..=100, got 101"),
        ),
        (None, Some(0), Err("--avif-quality must be 1..=100, got 0")),
        (
            None,
            Some(4000),
            Err("--avif-quality must be 1..=100, got 4000"),
        ),
    ];
    for &(webp, avif, ref want) in cases {
        let s = Settings {
            webp_quality: webp,
            avif_quality: avif,
            ..Default::default()
        };
        let got = Config::resolve(s, None)
            .map(|c| (c.render.quality.webp, c.render.quality.avif))
            .map_err(|e| e.to_string());
        match (got, want) {
            (Ok(g), Ok(w)) => assert_eq!(g, *w),
            (Err(e), Err(w)) => assert!(e.contains(w), "{e}"),
            (g, w) => panic!("{webp:?}/{avif:?}: got {g:?}, want {w:?}"),
        }
    }
    let file: Settings =
        toml::from_str("webp_quality = 75\navif_quality = 50\navif_negotiate = false").unwrap();
    let c = Config::resolve(file, None).unwrap();
    assert_eq!(
        (
            c.render.quality.webp,
            c.render.quality.avif,
            c.render.avif_negotiate
        ),
        (75, 50, false)
    );
}

#[test]
fn higher_layer_wins_and_lists_fall_through() {
    let cli = Settings {
        cache_mb: Some(64),
        ..Default::default()
    };
    let file: Settings = toml::from_str(
        "cache_mb = 512\nlisten = \"127.0.0.1:9000\"\ndefault_url_allow = [\"Example.org\"]",
    )
    .unwrap();
    let c = Config::resolve(cli.or(file), None).unwrap();
    assert_eq!(c.render.cache_bytes, 64 << 20);
    assert_eq!(c.http.listen.port(), 9000);
    assert_eq!(c.render.default_url_allow, vec!["example.org".to_string()]);
}

#[test]
fn bad_settings_are_named() {
    let s = Settings {
        default_style: Some("sparkles".into()),
        ..Default::default()
    };
    let e = Config::resolve(s, None).unwrap_err().to_string();
    assert!(e.contains("default_style"), "{e}");
    assert!(toml::from_str::<Settings>("no_such_option = 1").is_err());
    assert!(Config::resolve(Settings::default(), Some("short".into())).is_err());
}

#[test]
fn nats_settings() {
    let c = Config::resolve(Settings::default(), None).unwrap();
    assert_eq!(c.store.nats, None, "embedded by default");
    let s: Settings =
        toml::from_str("nats = [\"nats://127.0.0.1:4222\", \"nats://10.0.0.2:4222\"]").unwrap();
    let n = Config::resolve(s, None).unwrap().store.nats.unwrap();
    assert_eq!((n.urls.len(), n.replicas), (2, 3));
    let s = Settings {
        nats: vec!["nats://a:4222".into()],
        nats_replicas: Some(1),
        ..Default::default()
    };
    assert_eq!(
        Config::resolve(s, None)
            .unwrap()
            .store
            .nats
            .unwrap()
            .replicas,
        1
    );
    for (urls, replicas) in [(vec!["http://a:4222"], None), (vec!["nats://a"], Some(9))] {
        let s = Settings {
            nats: urls.into_iter().map(String::from).collect(),
            nats_replicas: replicas,
            ..Default::default()
        };
        assert!(Config::resolve(s, None).is_err());
    }
    // The index budget: unset is decided by the bucket (`Replica::for_budget`).
    for (mb, want) in [
        (None, Ok(None)),
        (Some(0), Ok(Some(0))),
        (Some(64), Ok(Some(64 << 20))),
    ]
    .into_iter()
    .chain([(Some((1 << 20) + 1), Err(()))])
    {
        let s = Settings {
            nats: vec!["nats://a:4222".into()],
            nats_index_mb: mb,
            ..Default::default()
        };
        let got = Config::resolve(s, None).map(|c| c.store.nats.unwrap().index_bytes);
        assert_eq!(got.map_err(|_| ()), want, "{mb:?}");
    }
}
