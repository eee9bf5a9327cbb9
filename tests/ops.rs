//! The operators' kit against the real binary: the packaged example config,
//! unknown config keys, token-file reload on SIGHUP, online backup under
//! upload load and restore.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use avatar_edge::config::{Config, Settings};
use clap::Args;
use common::*;

fn example_config() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("pkg/avatar-edge.toml"))
        .unwrap()
}

/// `#name = value` lines are the example's commented-out settings.
fn commented_setting(line: &str) -> Option<&str> {
    let rest = line.strip_prefix('#')?;
    let (name, _) = rest.split_once(" = ")?;
    (!name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')).then_some(rest)
}

#[test]
fn the_packaged_example_config_sets_every_option_and_every_value_is_valid() {
    let text = example_config();
    let dir = tempfile::tempdir().unwrap();

    // As shipped (comments stay comments): valid, with the packaged paths.
    let shipped = dir.path().join("shipped.toml");
    std::fs::write(&shipped, &text).unwrap();
    let c = Config::resolve(Settings::from_file(&shipped).unwrap(), None).unwrap();
    assert_eq!(c.store.data_dir, Path::new("/var/lib/avatar-edge"));
    assert_eq!(c.http.listen.to_string(), "127.0.0.1:8080");

    // Every commented-out setting switched on: still valid, key by key.
    let all: String = text
        .lines()
        .map(|l| commented_setting(l).unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let full = dir.path().join("full.toml");
    std::fs::write(&full, &all).unwrap();
    let settings = Settings::from_file(&full).unwrap_or_else(|e| panic!("{e}"));
    Config::resolve(settings, None).unwrap_or_else(|e| panic!("{e}"));

    // And the example names every option `serve` has.
    let present: Vec<&str> = text
        .lines()
        .filter_map(|l| commented_setting(l).or(Some(l)))
        .filter_map(|l| l.split_once(" = ").map(|(k, _)| k))
        .collect();
    let cmd = Settings::augment_args(clap::Command::new("serve"));
    let mut missing = Vec::new();
    for arg in cmd.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        let key = long.replace('-', "_");
        if !present.contains(&key.as_str()) {
            missing.push(key);
        }
    }
    assert!(missing.is_empty(), "pkg/avatar-edge.toml lacks {missing:?}");
}

#[test]
fn an_unknown_config_key_stops_the_server_naming_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("edge.toml");
    std::fs::write(&file, "cache_mb = 64\ncache_mbb = 128\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_avatar-edge"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&file)
        .arg("--data")
        .arg(dir.path().join("data"))
        .env_remove("AVATAR_EDGE_TOKEN")
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cache_mbb"), "{err}");
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert!(!dir.path().join("data").exists(), "nothing started");
}

fn hup(server: &Server) {
    let ok = Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

const MINT: &str = "/v1/upload-urls";
const MINT_BODY: &str = r#"{"key":"ada@example.org","expires_in":60}"#;

#[test]
fn sighup_reloads_the_token_file_on_open_connections_and_keeps_the_old_tokens_on_failure() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    let (first, second) = ("platform-token-aaaaaaaaaaaa", "platform-token-bbbbbbbbbbbb");
    std::fs::write(&tokens, format!("platform:{first}\n")).unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--token-file", tokens.to_str().unwrap()],
        Some(TOKEN),
    );
    let mut conn = KeepAlive::connect(server.addr);
    assert_eq!(conn.post(MINT, first, MINT_BODY), 200);
    assert_eq!(conn.post(MINT, second, MINT_BODY), 401);

    // Rotate: the new token works on the connection opened before.
    std::fs::write(&tokens, format!("platform:{second}\n")).unwrap();
    hup(&server);
    eventually(Duration::from_secs(10), || {
        (metric(server.addr, "avatar_edge_token_reloads_total") == 1).then_some(())
    })
    .expect("the reload is counted");
    assert_eq!(conn.post(MINT, second, MINT_BODY), 200);
    assert_eq!(
        conn.post(MINT, first, MINT_BODY),
        401,
        "the old token is gone"
    );
    assert_eq!(
        conn.post(MINT, TOKEN, MINT_BODY),
        200,
        "the admin token stays"
    );
    // Issue 16: the reload is in the audit trail, by the operator.
    let bearer = format!("Bearer {second}");
    let reloads = eventually(Duration::from_secs(10), || {
        let r = request(
            server.addr,
            "GET",
            "/v1/audit",
            &[("authorization", &bearer)],
            b"",
        );
        let j: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
        let entries = j["entries"].as_array()?.clone();
        (!entries.is_empty()).then_some(entries)
    })
    .expect("an audit entry");
    assert_eq!(
        (reloads.len(), &reloads[0]["action"], &reloads[0]["actor"]),
        (
            1,
            &serde_json::json!("tokens_reloaded"),
            &serde_json::json!("admin")
        )
    );

    // A token file that cannot be read: the previous tokens stay, one error.
    std::fs::remove_file(&tokens).unwrap();
    server.drain_log();
    hup(&server);
    eventually(Duration::from_secs(10), || {
        (metric(server.addr, "avatar_edge_token_reload_failures_total") == 1).then_some(())
    })
    .expect("the failure is counted");
    assert_eq!(conn.post(MINT, second, MINT_BODY), 200);
    // An invalid file is refused the same way.
    std::fs::write(&tokens, "platform:short\n").unwrap();
    hup(&server);
    eventually(Duration::from_secs(10), || {
        (metric(server.addr, "avatar_edge_token_reload_failures_total") == 2).then_some(())
    })
    .expect("the second failure is counted");
    assert_eq!(conn.post(MINT, second, MINT_BODY), 200);
    std::thread::sleep(Duration::from_millis(100));
    let errors: Vec<String> = server
        .drain_log()
        .into_iter()
        .filter(|l| l.contains("ERROR"))
        .collect();
    assert_eq!(errors.len(), 2, "one error per failed reload: {errors:#?}");
    assert!(
        errors[0].contains("tokens"),
        "names the file: {}",
        errors[0]
    );
    assert!(
        !errors
            .iter()
            .any(|l| l.contains(second) || l.contains("short")),
        "no token in a log line"
    );
    assert!(server.stop().success());
}

/// A small PNG of one colour: each `n` gives different bytes and hash.
fn png(n: u32) -> Vec<u8> {
    let px = image::RgbImage::from_pixel(
        48,
        48,
        image::Rgb([(n * 37) as u8, (n * 11) as u8, (n / 7) as u8]),
    );
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(px)
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

fn upload(addr: std::net::SocketAddr, key: &str, n: u32) -> String {
    let (ak, av) = auth();
    let r = request(
        addr,
        "PUT",
        &format!("/v1/avatars/{key}"),
        &[(ak, &av)],
        &png(n),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["hash"]
        .as_str()
        .unwrap()
        .to_string()
}

fn served_hash(server: &Server, key: &str) -> Option<String> {
    let (ak, av) = auth();
    let r = server.request("GET", &format!("/v1/avatars/{key}"), &[(ak, &av)], b"");
    if r.status != 200 {
        return None;
    }
    let hash = serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["hash"]
        .as_str()?
        .to_string();
    // The bytes themselves, not just the index entry.
    let img = server.request("GET", &format!("/c/{hash}.png?s=32"), &[], b"");
    (img.status == 200).then_some(hash)
}

#[test]
fn a_backup_taken_under_upload_load_restores_every_acknowledged_avatar() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[], Some(TOKEN));
    let addr = server.addr;

    // Acknowledged before the backup starts: must all be in it.
    let before: Vec<(String, String)> = (0..12)
        .map(|i| {
            let key = format!("user{i}@example.org");
            let hash = upload(addr, &key, i);
            (key, hash)
        })
        .collect();

    // Load during the backup: new identities, and replacements of the first
    // ones (their old blobs become garbage while the snapshot is pinned).
    let stop = Arc::new(AtomicBool::new(false));
    let during: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let loader = {
        let (stop, during) = (stop.clone(), during.clone());
        std::thread::spawn(move || {
            let mut n = 100;
            while !stop.load(Ordering::Relaxed) {
                let key = if n % 2 == 0 {
                    format!("user{}@example.org", n % 6)
                } else {
                    format!("late{n}@example.org")
                };
                let hash = upload(addr, &key, n);
                during.lock().unwrap().push((key, hash));
                n += 1;
            }
        })
    };
    while during.lock().unwrap().len() < 4 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let backup = dir.path().join("backup");
    let out = Command::new(env!("CARGO_BIN_EXE_avatar-edge"))
        .arg("backup")
        .arg(&backup)
        .args(["--url", &format!("http://{addr}")])
        .env("AVATAR_EDGE_TOKEN", TOKEN)
        .output()
        .unwrap();
    let acked_before_end = during.lock().unwrap().len();
    stop.store(true, Ordering::Relaxed);
    loader.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("blobs"), "{said}");
    assert!(backup.join("BACKUP.json").is_file());
    assert!(acked_before_end > 4, "uploads went on during the backup");

    // Without the admin token: refused; a named token is not enough either.
    let (ak, _) = auth();
    let r = server.request(
        "GET",
        "/v1/backup",
        &[(ak, "Bearer wrong-token-0123456789")],
        b"",
    );
    assert_eq!(r.status, 401);
    // Restoring into a used data directory is refused.
    let refused = Command::new(env!("CARGO_BIN_EXE_avatar-edge"))
        .arg("restore")
        .arg(&backup)
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not empty"));
    assert!(server.stop().success());

    let restored = dir.path().join("restored");
    let out = Command::new(env!("CARGO_BIN_EXE_avatar-edge"))
        .arg("restore")
        .arg(&backup)
        .arg("--data")
        .arg(&restored)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = Server::start(&restored, &[], Some(TOKEN));
    let during = during.lock().unwrap().clone();
    for (key, hash) in &before {
        let got = served_hash(&server, key).unwrap_or_else(|| panic!("{key} is not served"));
        // Replaced during the backup: the snapshot holds one acknowledged version.
        let allowed: Vec<&String> = std::iter::once(hash)
            .chain(during.iter().filter(|(k, _)| k == key).map(|(_, h)| h))
            .collect();
        assert!(
            allowed.contains(&&got),
            "{key}: {got} was never acknowledged"
        );
    }
    // Identities created during the backup: served as acknowledged, or absent.
    for (key, hash) in during.iter().filter(|(k, _)| k.starts_with("late")) {
        if let Some(got) = served_hash(&server, key) {
            assert_eq!(&got, hash, "{key}");
        }
    }
    // The admin token generated by the first server came along.
    assert!(restored.join("signing.key").is_file());
    assert!(server.stop().success());
}

#[test]
fn metrics_expose_process_build_and_duration_families_the_dashboard_uses() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[], Some(TOKEN));
    let md5 = md5_hex("ada@example.org");
    assert_eq!(
        server
            .request("GET", &format!("/avatar/{md5}?s=32"), &[], b"")
            .status,
        200
    );
    assert_eq!(server.request("GET", "/v1/client.js", &[], b"").status, 200);
    assert_eq!(server.request("GET", "/nowhere", &[], b"").status, 404);
    let text = String::from_utf8(server.request("GET", "/metrics", &[], b"").body).unwrap();
    for want in [
        "avatar_edge_build_info{version=\"",
        "avatar_edge_request_duration_seconds_count{route=\"identity\",status_class=\"2xx\"} 1",
        "avatar_edge_request_duration_seconds_count{route=\"asset\",status_class=\"2xx\"} 1",
        "avatar_edge_request_duration_seconds_count{route=\"other\",status_class=\"4xx\"} 1",
        "\nprocess_resident_memory_bytes ",
        "\nprocess_cpu_seconds_total ",
        "\nprocess_open_fds ",
        "\nprocess_max_fds ",
        "\nprocess_start_time_seconds ",
    ] {
        assert!(text.contains(want), "{want} missing from /metrics");
    }
    // Every family the example dashboard queries exists (NATS ones aside).
    let dashboard = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/grafana-dashboard.json"),
    )
    .unwrap();
    let mut names: Vec<&str> = dashboard
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("avatar_edge_") || w.starts_with("process_"))
        .collect();
    names.sort();
    names.dedup();
    assert!(names.len() > 20, "{names:?}");
    for name in names {
        assert!(
            text.contains(&format!("\n{name} ")) || text.contains(&format!("\n{name}{{")),
            "the dashboard queries {name}, /metrics has no such series"
        );
    }
    assert!(server.stop().success());
}
