//! Where a redirect may lead: the same scheme, host and port as the URL that
//! answered it, nowhere else.

use super::FallbackError;

/// The URL `location` (absolute, scheme-relative, absolute-path or relative
/// path) points at from `current`, if it keeps `current`'s origin.
pub(super) fn follow(current: &str, location: &str) -> Result<String, FallbackError> {
    let refuse = |why: &str| FallbackError::Redirect(format!("{location:?}: {why}"));
    let here: http::Uri = current.parse().map_err(|_| refuse("bad current URL"))?;
    let (Some(scheme), Some(authority)) = (here.scheme_str(), here.authority()) else {
        return Err(refuse("bad current URL"));
    };
    let location = location.trim();
    let next = if let Some(rest) = location.strip_prefix("//") {
        format!("{scheme}://{rest}")
    } else if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else if location.contains("://") {
        location.to_string()
    } else {
        // A relative path: beside the current path.
        let path = here.path();
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        format!("{scheme}://{authority}{dir}{location}")
    };
    let there: http::Uri = next.parse().map_err(|_| refuse("not a URL"))?;
    if same_origin(&here, &there) {
        Ok(next)
    } else {
        Err(refuse("another scheme, host or port"))
    }
}

fn same_origin(a: &http::Uri, b: &http::Uri) -> bool {
    let port = |u: &http::Uri| {
        u.port_u16().or(match u.scheme_str() {
            Some("http") => Some(80),
            Some("https") => Some(443),
            _ => None,
        })
    };
    let host = |u: &http::Uri| u.host().map(str::to_ascii_lowercase);
    a.scheme() == b.scheme() && host(a).is_some() && host(a) == host(b) && port(a) == port(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_origin_is_followed() {
        let here = "https://up.example/avatar/ab?s=1024&d=404";
        // (Location, Some(followed URL) or None: refused)
        let cases: &[(&str, Option<&str>)] = &[
            (
                "/avatar/cd?s=1024",
                Some("https://up.example/avatar/cd?s=1024"),
            ),
            ("cd", Some("https://up.example/avatar/cd")),
            ("https://UP.example/x", Some("https://UP.example/x")),
            ("https://up.example:443/x", Some("https://up.example:443/x")),
            ("//up.example/y", Some("https://up.example/y")),
            ("http://up.example/x", None),
            ("https://up.example:8443/x", None),
            ("https://evil.example/x", None),
            ("//evil.example/x", None),
            ("https://up.example.evil.example/x", None),
            ("https://up.example@evil.example/x", None),
            ("file:///etc/passwd", None),
            ("http://127.0.0.1:22/", None),
        ];
        for (loc, want) in cases {
            let got = follow(here, loc).ok();
            assert_eq!(got.as_deref(), *want, "{loc}");
        }
        let plain = "http://127.0.0.1:9000/avatar/ab";
        assert!(follow(plain, "http://127.0.0.1:9000/b").is_ok());
        assert!(follow(plain, "http://127.0.0.1:9001/b").is_err());
        assert!(follow(plain, "http://localhost:9000/b").is_err());
    }
}
