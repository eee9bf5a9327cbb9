//! The migration proxy's settings (issue 17): upstream avatar services asked
//! for identities this server has no avatar for.

use std::time::Duration;

use super::{invalid, ConfigError, Settings};

/// Default deadline of one upstream fetch (headers and body).
pub const DEFAULT_FALLBACK_TIMEOUT: Duration = Duration::from_secs(2);
/// Default lifetime of a fetched avatar.
pub const DEFAULT_FALLBACK_TTL: Duration = Duration::from_secs(24 * 3600);
/// Default lifetime of an upstream "not found".
pub const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(3600);

/// Upstream fall-back: off when `upstreams` is empty.
#[derive(Debug, Clone, PartialEq)]
pub struct FallbackConfig {
    /// Base URLs (`http(s)://host[:port]/path`, no query), tried in order; the
    /// hash is appended to each.
    pub upstreams: Vec<String>,
    /// Deadline of the whole fetch from all upstreams, redirects included.
    pub timeout: Duration,
    /// Lifetime of a fetched avatar (and the longest any cache may keep it).
    pub ttl: Duration,
    /// Lifetime of "no upstream has it".
    pub negative_ttl: Duration,
    /// Fall back for identities whose local avatar was deleted.
    pub after_delete: bool,
    /// Store a fetched avatar as the identity's own.
    pub adopt: bool,
}

impl FallbackConfig {
    /// True when at least one upstream is configured.
    pub fn enabled(&self) -> bool {
        !self.upstreams.is_empty()
    }
}

impl Default for FallbackConfig {
    fn default() -> Self {
        FallbackConfig {
            upstreams: Vec::new(),
            timeout: DEFAULT_FALLBACK_TIMEOUT,
            ttl: DEFAULT_FALLBACK_TTL,
            negative_ttl: DEFAULT_NEGATIVE_TTL,
            after_delete: false,
            adopt: false,
        }
    }
}

/// Validate an upstream base URL: http(s), a host, no query or fragment;
/// it ends with `/` (added when missing).
pub fn check_upstream(u: &str) -> Result<String, ConfigError> {
    let u = u.trim();
    let bad = |why: &str| invalid("fallback_upstream", format!("{u:?}: {why}"));
    if !(u.starts_with("http://") || u.starts_with("https://")) {
        return Err(bad("not an http(s) URL"));
    }
    let uri: http::Uri = u.parse().map_err(|_| bad("not a URL"))?;
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    if u.contains('?') || u.contains('#') {
        return Err(bad("the hash is appended to it: no query or fragment"));
    }
    // The hash is a path segment of its own: `…/avatar` means `…/avatar/`.
    Ok(if u.ends_with('/') {
        u.to_string()
    } else {
        format!("{u}/")
    })
}

/// The fall-back part of [`super::Config`].
pub(super) fn resolve(s: &Settings) -> Result<FallbackConfig, ConfigError> {
    let upstreams = s
        .fallback_upstream
        .iter()
        .filter(|u| !u.trim().is_empty())
        .map(|u| check_upstream(u))
        .collect::<Result<Vec<_>, _>>()?;
    let timeout = match s.fallback_timeout {
        None => DEFAULT_FALLBACK_TIMEOUT,
        Some(t) if t.is_finite() && (0.05..=60.0).contains(&t) => Duration::from_secs_f64(t),
        Some(t) => {
            return Err(invalid(
                "fallback_timeout",
                format!("--fallback-timeout must be 0.05..=60 seconds, got {t}"),
            ))
        }
    };
    let secs = |name: &'static str, v: Option<u64>, default: Duration| match v {
        None => Ok(default),
        Some(n @ 1..=31_536_000) => Ok(Duration::from_secs(n)),
        Some(n) => Err(invalid(
            name,
            format!("must be 1..=31536000 seconds, got {n}"),
        )),
    };
    Ok(FallbackConfig {
        upstreams,
        timeout,
        ttl: secs("fallback_ttl", s.fallback_ttl, DEFAULT_FALLBACK_TTL)?,
        negative_ttl: secs(
            "fallback_negative_ttl",
            s.fallback_negative_ttl,
            DEFAULT_NEGATIVE_TTL,
        )?,
        after_delete: s.fallback_after_delete.unwrap_or(false),
        adopt: s.fallback_adopt.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_and_lifetimes_are_validated() {
        let ok = Settings {
            fallback_upstream: vec![
                "https://gravatar.example/avatar/".into(),
                " http://127.0.0.1:9000/avatar ".into(),
            ],
            fallback_timeout: Some(0.5),
            fallback_ttl: Some(60),
            ..Default::default()
        };
        let c = resolve(&ok).unwrap();
        assert_eq!(c.upstreams[1], "http://127.0.0.1:9000/avatar/");
        assert_eq!(c.timeout, Duration::from_millis(500));
        assert_eq!(c.ttl, Duration::from_secs(60));
        assert_eq!(c.negative_ttl, DEFAULT_NEGATIVE_TTL);
        assert!(c.enabled() && !c.adopt && !c.after_delete);
        assert!(!resolve(&Settings::default()).unwrap().enabled());
        // (setting, text the error must hold)
        let bad: [(Settings, &str); 5] = [
            (
                Settings {
                    fallback_upstream: vec!["ftp://x/".into()],
                    ..Default::default()
                },
                "not an http(s) URL",
            ),
            (
                Settings {
                    fallback_upstream: vec!["https://x/avatar/?d=mp".into()],
                    ..Default::default()
                },
                "no query",
            ),
            (
                Settings {
                    fallback_timeout: Some(0.0),
                    ..Default::default()
                },
                "--fallback-timeout",
            ),
            (
                Settings {
                    fallback_timeout: Some(f64::NAN),
                    ..Default::default()
                },
                "--fallback-timeout",
            ),
            (
                Settings {
                    fallback_ttl: Some(0),
                    ..Default::default()
                },
                "fallback_ttl",
            ),
        ];
        for (s, want) in bad {
            let e = resolve(&s).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }
}
