//! Issue 22, animated avatars, through `http::handle` (no socket): an animated
//! upload moves in WebP (explicit and negotiated) and GIF, is still in PNG,
//! JPEG and with `animated=0`, on content and identity URLs alike; its delays
//! and loop count survive resizing; limits are 422s naming the limit; the
//! animated master is collected with the rest.

use std::io::Cursor;

use image::{AnimationDecoder, ImageDecoder};

mod inproc;
use inproc::{env, env_with, fixture, Resp};

fn md5_hex(s: &str) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(s.as_bytes()))
}

/// (side, delays in ms) of an animated WebP, or `None` for a still one.
fn webp_frames(r: &Resp) -> Option<(u32, Vec<u32>)> {
    assert_eq!(r.header("content-type"), "image/webp");
    let dec = image::codecs::webp::WebPDecoder::new(Cursor::new(&r.body[..])).unwrap();
    if !dec.has_animation() {
        return None;
    }
    let side = dec.dimensions().0;
    Some((side, delays(dec.into_frames())))
}

fn gif_frames(r: &Resp) -> (u32, Vec<u32>) {
    assert_eq!(r.header("content-type"), "image/gif");
    let dec = image::codecs::gif::GifDecoder::new(Cursor::new(&r.body[..])).unwrap();
    let side = dec.dimensions().0;
    (side, delays(dec.into_frames()))
}

fn delays(frames: image::Frames<'_>) -> Vec<u32> {
    frames
        .map(|f| {
            let (n, d) = f.unwrap().delay().numer_denom_ms();
            n / d
        })
        .collect()
}

#[tokio::test]
async fn an_animated_gif_moves_in_webp_and_gif_and_is_still_elsewhere() {
    let e = env();
    let v = e
        .upload_ok("anim@example.org", "gif_animated_aero_56f.gif")
        .await;
    let hash = v["hash"].as_str().unwrap().to_string();
    assert_eq!(
        (v["width"].as_u64(), v["format"].as_str()),
        (Some(189), Some("gif"))
    );

    // 29 distinct frames of the 56 (identical neighbours merged), 5.9 s a loop.
    let (side, webp) = webp_frames(&e.get(&format!("/c/{hash}.webp?s=64")).await).unwrap();
    assert_eq!((side, webp.len(), webp.iter().sum::<u32>()), (64, 29, 5900));
    let (side, gif) = gif_frames(&e.get(&format!("/c/{hash}.gif?s=100")).await);
    assert_eq!((side, gif.len()), (100, 29));
    for (g, w) in gif.iter().zip(&webp) {
        assert!(g.abs_diff(*w) <= 10, "{gif:?} vs {webp:?}");
    }
    // Larger than the animated master: upscaled, still moving.
    let (side, _) = webp_frames(&e.get(&format!("/c/{hash}.webp?s=300")).await).unwrap();
    assert_eq!(side, 300);

    // Negotiated: animated WebP when WebP is accepted, else a still.
    let r = e
        .get_with(
            &format!("/c/{hash}?s=64"),
            ("accept", "image/avif,image/webp,*/*"),
        )
        .await;
    assert_eq!(webp_frames(&r).map(|f| f.1.len()), Some(29));
    let r = e
        .get_with(&format!("/c/{hash}?s=64"), ("accept", "image/png,*/*"))
        .await;
    assert_eq!(r.header("content-type"), "image/png");

    // Stills: PNG, JPEG, and animated=0 in any format.
    for (uri, ct) in [
        (format!("/c/{hash}.png?s=64"), "image/png"),
        (format!("/c/{hash}.jpg?s=64"), "image/jpeg"),
        (format!("/c/{hash}.png?s=64&animated=0"), "image/png"),
        (format!("/c/{hash}.gif?s=64&animated=0"), "image/gif"),
    ] {
        let r = e.get(&uri).await;
        assert_eq!(
            (r.status.as_u16(), r.header("content-type")),
            (200, ct),
            "{uri}"
        );
        assert_eq!(r.image().width(), 64, "{uri}");
    }
    let (_, still_gif) = gif_frames(&e.get(&format!("/c/{hash}.gif?s=64&animated=0")).await);
    assert_eq!(still_gif.len(), 1);
    let still = e.get(&format!("/c/{hash}.webp?s=64&animated=0")).await;
    assert_eq!(webp_frames(&still), None);
    let moving = e.get(&format!("/c/{hash}.webp?s=64")).await;
    assert_ne!(
        still.header("etag"),
        moving.header("etag"),
        "animated vs still in the key"
    );
    assert_eq!(
        e.get(&format!("/c/{hash}.webp?s=64&animated=2"))
            .await
            .status,
        400
    );

    // Identity URLs behave the same.
    let id = md5_hex("anim@example.org");
    let r = e.get(&format!("/avatar/{id}.webp?s=64")).await;
    assert_eq!(webp_frames(&r).map(|f| f.1.len()), Some(29));
    let r = e.get(&format!("/avatar/{id}.webp?s=64&animated=0")).await;
    assert_eq!(webp_frames(&r), None);
    let r = e.get(&format!("/avatar/{id}.gif?s=48")).await;
    assert_eq!(gif_frames(&r).1.len(), 29);
}

#[tokio::test]
async fn apng_and_webp_keep_delays_and_loop_counts() {
    let e = env();
    let v = e.upload_ok("ball@example.org", "apng_ball_20f.png").await;
    let hash = v["hash"].as_str().unwrap();
    let (side, d) = webp_frames(&e.get(&format!("/c/{hash}.webp?s=64")).await).unwrap();
    assert_eq!((side, d), (64, vec![75; 20]));
    let v = e.upload_ok("w@example.org", "webp_animated_6f.webp").await;
    let hash = v["hash"].as_str().unwrap();
    let (_, d) = gif_frames(&e.get(&format!("/c/{hash}.gif?s=64")).await);
    assert_eq!(d, vec![100; 6]);
}

#[tokio::test]
async fn still_frame_picks_the_still_and_defaults_never_move() {
    let e = env();
    let r = e
        .put(
            "s@example.org",
            "?still_frame=10",
            fixture("apng_ball_20f.png"),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = e
        .put(
            "s@example.org",
            "?still_frame=20",
            fixture("apng_ball_20f.png"),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.json()["error"].as_str()),
        (422, Some("bad_still_frame"))
    );
    // A generated default as GIF or WebP is a still.
    let r = e
        .get(&format!(
            "/avatar/{}.gif?s=64&d=identicon",
            md5_hex("nobody@example.org")
        ))
        .await;
    assert_eq!(gif_frames(&r).1.len(), 1);
    let r = e
        .get(&format!(
            "/avatar/{}.webp?s=64&d=retro",
            md5_hex("nobody@example.org")
        ))
        .await;
    assert_eq!(webp_frames(&r), None);
}

#[tokio::test]
async fn over_a_limit_is_a_422_naming_it_or_the_first_frame() {
    let e = env_with(|c| c.render.limits.animation.max_frames = 20);
    let r = e
        .put("l@example.org", "", fixture("gif_animated_aero_56f.gif"))
        .await;
    assert_eq!(
        (r.status.as_u16(), r.json()["error"].as_str()),
        (422, Some("too_many_frames"))
    );
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("--max-frames"));
    let e = env_with(|c| {
        c.render.limits.animation.max_frames = 20;
        c.render.limits.animation.over_limit = avatar_edge::pipeline::OverLimit::Still;
    });
    let v = e
        .upload_ok("l@example.org", "gif_animated_aero_56f.gif")
        .await;
    let r = e
        .get(&format!("/c/{}.webp?s=64", v["hash"].as_str().unwrap()))
        .await;
    assert_eq!(webp_frames(&r), None);
}

#[tokio::test]
async fn the_animated_master_is_collected_with_the_ladder() {
    let e = env();
    let v = e
        .upload_ok("gc@example.org", "gif_animated_aero_56f.gif")
        .await;
    let hash = v["hash"].as_str().unwrap();
    assert_eq!(e.get(&format!("/c/{hash}.gif?s=32")).await.status, 200);
    let deleted = e.metric("avatar_edge_blobs_deleted_total");
    assert_eq!(e.delete("gc@example.org").await.status, 204);
    // The 189 px animated master, its 94 px animated rung, and the 189 and
    // 94 px stills.
    assert_eq!(e.metric("avatar_edge_blobs_deleted_total") - deleted, 4);
    assert_eq!(e.get(&format!("/c/{hash}.webp?s=33")).await.status, 404);
}
