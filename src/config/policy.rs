//! Settings of issue 16's policy features: the upload hook (item 2), the
//! rate limits of anonymous clients and the proxies whose `X-Forwarded-For`
//! names them (item 5).

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

use super::{invalid, ConfigError, Settings};

/// What an upload gets when the hook fails: no answer in time, no
/// connection, a status other than 2xx/403/422, an invalid or oversized answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HookFailureMode {
    /// Refuse the upload: 503 + `Retry-After`, nothing stored.
    #[default]
    Closed,
    /// Accept the upload as if the hook had said yes.
    Open,
}

/// The upload policy hook (`--upload-hook`), set by the operator only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookConfig {
    /// `http(s)://` URL the server POSTs each normalized upload to.
    pub url: String,
    /// Time allowed for the whole exchange (connect, request, answer body).
    pub timeout: Duration,
    pub failure: HookFailureMode,
}

/// Rate limits of anonymous clients (signed-URL uploads, keyed event
/// streams, subscriptions); token calls are never limited. 0 = no limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimits {
    /// Signed-URL uploads per client address per minute (burst as many).
    pub uploads_per_address: u32,
    /// Signed-URL uploads per key per minute.
    pub uploads_per_key: u32,
    /// Anonymous keyed event streams open at once per client address.
    pub event_streams_per_address: u32,
    /// Anonymous `POST /v1/subscriptions` per client address per minute.
    pub subscriptions_per_address: u32,
}

impl Default for RateLimits {
    /// The documented defaults.
    fn default() -> Self {
        RateLimits {
            uploads_per_address: 10,
            uploads_per_key: 10,
            event_streams_per_address: 20,
            subscriptions_per_address: 60,
        }
    }
}

/// Whose `X-Forwarded-For` is believed (`--trust-forwarded-for`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TrustedProxies {
    /// Nobody's: the client is the socket peer.
    #[default]
    None,
    /// Any peer's last hop (the flag without a value, or `true`: the
    /// behaviour before proxies could be named).
    Any,
    /// These proxies' (addresses and CIDR networks): when the peer is one of
    /// them, the client is the nearest hop of `X-Forwarded-For` that is not.
    Listed(Vec<IpNet>),
}

impl TrustedProxies {
    /// Parse `--trust-forwarded-for` values: addresses, CIDR networks,
    /// `true` (any peer) or `false` (none).
    pub fn parse(values: &[String]) -> Result<TrustedProxies, String> {
        let mut any = false;
        let mut nets = Vec::new();
        for v in values.iter().map(|v| v.trim()).filter(|v| !v.is_empty()) {
            match v {
                "true" => any = true,
                "false" => {}
                _ => nets.push(
                    v.parse::<IpNet>()
                        .or_else(|_| v.parse::<IpAddr>().map(IpNet::from))
                        .map_err(|_| format!("{v:?} is not an address or a CIDR network"))?,
                ),
            }
        }
        match (any, nets.is_empty()) {
            (true, false) => {
                Err("`true` trusts every peer: name proxies or say true, not both".into())
            }
            (true, true) => Ok(TrustedProxies::Any),
            (false, true) => Ok(TrustedProxies::None),
            (false, false) => Ok(TrustedProxies::Listed(nets)),
        }
    }

    /// Is `ip` a proxy whose `X-Forwarded-For` is believed?
    pub fn trusts(&self, ip: IpAddr) -> bool {
        match self {
            TrustedProxies::None => false,
            TrustedProxies::Any => true,
            TrustedProxies::Listed(nets) => {
                let ip = ip.to_canonical();
                nets.iter().any(|n| n.contains(&ip))
            }
        }
    }
}

/// Issue 16's policy settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyConfig {
    pub hook: Option<HookConfig>,
    pub limits: RateLimits,
}

/// Longest `--upload-hook-timeout`, seconds (the request timeout bounds it anyway).
pub const MAX_HOOK_TIMEOUT_SECS: u64 = 300;

/// Validate the policy settings; `check_url` is the configuration's one
/// test of an `http(s)://` URL.
pub(super) fn resolve(
    s: &Settings,
    check_url: &dyn Fn(&'static str, &str) -> Result<String, ConfigError>,
) -> Result<PolicyConfig, ConfigError> {
    let timeout = s.upload_hook_timeout.unwrap_or(5);
    if !(1..=MAX_HOOK_TIMEOUT_SECS).contains(&timeout) {
        return Err(invalid(
            "upload_hook_timeout",
            format!("must be 1..={MAX_HOOK_TIMEOUT_SECS} seconds, got {timeout}"),
        ));
    }
    let hook = match s.upload_hook.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(u) => Some(HookConfig {
            url: check_url("upload_hook", u)?,
            timeout: Duration::from_secs(timeout),
            failure: s.upload_hook_failure.unwrap_or_default(),
        }),
    };
    let d = RateLimits::default();
    let limits = RateLimits {
        uploads_per_address: s
            .signed_uploads_per_address
            .unwrap_or(d.uploads_per_address),
        uploads_per_key: s.signed_uploads_per_key.unwrap_or(d.uploads_per_key),
        event_streams_per_address: s
            .event_streams_per_address
            .unwrap_or(d.event_streams_per_address),
        subscriptions_per_address: s
            .subscriptions_per_address
            .unwrap_or(d.subscriptions_per_address),
    };
    Ok(PolicyConfig { hook, limits })
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    #[test]
    fn trusted_proxies_table() {
        let p = |v: &[&str]| {
            TrustedProxies::parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(p(&[]), Ok(TrustedProxies::None));
        assert_eq!(p(&["false"]), Ok(TrustedProxies::None));
        assert_eq!(p(&["true"]), Ok(TrustedProxies::Any));
        assert!(p(&["true", "10.0.0.1"]).is_err());
        assert!(p(&["10.0.0.300"]).unwrap_err().contains("10.0.0.300"));
        assert!(p(&["proxy.example"]).is_err());
        let listed = p(&["10.0.0.0/8", " 192.0.2.7 ", "2001:db8::/32"]).unwrap();
        // (address, trusted?)
        let cases = [
            ("10.1.2.3", true),
            ("::ffff:10.1.2.3", true),
            ("192.0.2.7", true),
            ("192.0.2.8", false),
            ("2001:db8:5::1", true),
            ("2001:db9::1", false),
            ("127.0.0.1", false),
        ];
        for (ip, want) in cases {
            assert_eq!(listed.trusts(ip.parse().unwrap()), want, "{ip}");
            assert!(!TrustedProxies::None.trusts(ip.parse().unwrap()));
            assert!(TrustedProxies::Any.trusts(ip.parse().unwrap()));
        }
        // The file may say true/false (as before) or name proxies.
        for (toml_text, want) in [
            ("trust_forwarded_for = true", TrustedProxies::Any),
            ("trust_forwarded_for = false", TrustedProxies::None),
            (
                "trust_forwarded_for = [\"10.0.0.1\"]",
                TrustedProxies::Listed(vec!["10.0.0.1/32".parse().unwrap()]),
            ),
            (
                "trust_forwarded_for = \"10.0.0.0/8\"",
                TrustedProxies::Listed(vec!["10.0.0.0/8".parse().unwrap()]),
            ),
        ] {
            let s: Settings = toml::from_str(toml_text).unwrap();
            let c = Config::resolve(s, None).unwrap();
            assert_eq!(c.http.trust_forwarded_for, want, "{toml_text}");
        }
        let s: Settings = toml::from_str("trust_forwarded_for = [\"nope\"]").unwrap();
        let e = Config::resolve(s, None).unwrap_err().to_string();
        assert!(e.contains("trust_forwarded_for"), "{e}");
    }

    #[test]
    fn rate_limit_settings() {
        let c = Config::resolve(Settings::default(), None).unwrap();
        assert_eq!(c.policy.limits, RateLimits::default());
        assert_eq!(
            (
                c.policy.limits.uploads_per_address,
                c.policy.limits.event_streams_per_address
            ),
            (10, 20)
        );
        let s: Settings = toml::from_str(
            "signed_uploads_per_address = 0\nsigned_uploads_per_key = 3\nevent_streams_per_address = 5\nsubscriptions_per_address = 7",
        )
        .unwrap();
        let l = Config::resolve(s, None).unwrap().policy.limits;
        assert_eq!(
            l,
            RateLimits {
                uploads_per_address: 0,
                uploads_per_key: 3,
                event_streams_per_address: 5,
                subscriptions_per_address: 7
            }
        );
    }

    #[test]
    fn hook_settings() {
        let c = Config::resolve(Settings::default(), None).unwrap();
        assert_eq!(c.policy.hook, None, "no hook by default");
        let s: Settings = toml::from_str(
            "upload_hook = \"http://127.0.0.1:9/check\"\nupload_hook_failure = \"open\"",
        )
        .unwrap();
        let h = Config::resolve(s, None).unwrap().policy.hook.unwrap();
        assert_eq!(h.url, "http://127.0.0.1:9/check");
        assert_eq!(h.timeout, Duration::from_secs(5));
        assert_eq!(h.failure, HookFailureMode::Open);
        // (url, timeout) → the setting the error names
        let bad: &[(&str, Option<u64>, &str)] = &[
            ("ftp://x/", None, "upload_hook"),
            ("not a url", None, "upload_hook"),
            ("http://x/", Some(0), "upload_hook_timeout"),
            ("http://x/", Some(301), "upload_hook_timeout"),
        ];
        for &(url, timeout, name) in bad {
            let s = Settings {
                upload_hook: Some(url.into()),
                upload_hook_timeout: timeout,
                ..Default::default()
            };
            let e = Config::resolve(s, None).unwrap_err().to_string();
            assert!(e.contains(name), "{url} {timeout:?}: {e}");
        }
    }
}
