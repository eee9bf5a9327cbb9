//! A real Varnish (examples/varnish.vcl, the xkey vmod) in front of the real
//! binary: shared by the freshness and fallback tests.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{eventually, free_port, request, try_request, Reply};

/// varnishd with examples/varnish.vcl, pointed at `backend_port`.
pub struct Varnish {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Varnish {
    pub fn start(backend_port: u16) -> Varnish {
        let dir = tempfile::tempdir().unwrap();
        let vcl = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/varnish.vcl"),
        )
        .unwrap()
        .replace(".port = \"8080\";", &format!(".port = \"{backend_port}\";"));
        let vcl_path = dir.path().join("avatar.vcl");
        std::fs::write(&vcl_path, vcl).unwrap();
        let port = free_port();
        let child = Command::new("varnishd")
            .args(["-F", "-j", "none", "-T", "none", "-s", "malloc,64m"])
            .arg("-a")
            .arg(format!("127.0.0.1:{port}"))
            .arg("-f")
            .arg(&vcl_path)
            .arg("-n")
            .arg(dir.path().join("work"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("varnishd is installed (scripts/test installs it)");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        // Ready means the child has loaded the VCL and answers: a PURGE is
        // answered by the VCL itself (synth), without touching the backend.
        let up = eventually(Duration::from_secs(30), || {
            try_request(
                addr,
                "PURGE",
                "/",
                &[("xkey-purge", "warmup")],
                b"",
                Duration::from_secs(2),
            )
            .ok()
            .filter(|r| r.status == 200)
        });
        assert!(up.is_some(), "varnishd did not become ready");
        Varnish {
            child,
            addr,
            _dir: dir,
        }
    }

    pub fn get(&self, path: &str) -> Reply {
        request(self.addr, "GET", path, &[], b"")
    }

    pub fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        request(self.addr, "GET", path, headers, b"")
    }
}

impl Drop for Varnish {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
