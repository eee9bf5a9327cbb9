//! Settings of issue 16's policy features: the upload hook (item 2).

use std::time::Duration;

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

/// Issue 16's policy settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyConfig {
    pub hook: Option<HookConfig>,
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
    Ok(PolicyConfig { hook })
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

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
