//! Secured NATS (issue 15): how a node authenticates to the NATS servers
//! and verifies them. Files (credentials, certificates) are settings;
//! passwords and tokens come from the environment only
//! (`AVATAR_EDGE_NATS_USER` / `_PASSWORD` / `_TOKEN`), never from the command
//! line or the settings file, and are never printed.

use std::path::PathBuf;

use super::{invalid, ConfigError, Settings};

/// A secret (password, token): never printed, not even by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Authentication and TLS towards the NATS servers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsSecurity {
    /// A NATS credentials file (user JWT and NKey seed).
    pub creds: Option<PathBuf>,
    pub user_password: Option<(String, Secret)>,
    pub token: Option<Secret>,
    /// CA certificate to verify the servers with (TLS then required).
    pub tls_ca: Option<PathBuf>,
    /// Client certificate and key.
    pub tls_client: Option<(PathBuf, PathBuf)>,
}

impl NatsSecurity {
    /// `text` with every secret replaced by `***` (errors from the client
    /// or the server might echo one).
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        let secrets = self
            .user_password
            .iter()
            .map(|(_, p)| p)
            .chain(self.token.iter());
        for Secret(s) in secrets {
            if !s.is_empty() {
                out = out.replace(s.as_str(), "***");
            }
        }
        out
    }
}

/// Secured NATS: files from the settings, secrets from the environment
/// (`env`): at most one of credentials file, user/password, token; a client
/// certificate comes with its key.
pub(super) fn security(
    s: &Settings,
    env: impl Fn(&str) -> Option<String>,
) -> Result<NatsSecurity, ConfigError> {
    let var = |k: &str| env(k).filter(|v| !v.is_empty());
    let user = var("AVATAR_EDGE_NATS_USER");
    let password = var("AVATAR_EDGE_NATS_PASSWORD").map(Secret);
    let token = var("AVATAR_EDGE_NATS_TOKEN").map(Secret);
    let user_password = match (user, password) {
        (Some(u), Some(p)) => Some((u, p)),
        (None, None) => None,
        _ => {
            return Err(invalid(
                "nats_user",
                "AVATAR_EDGE_NATS_USER and AVATAR_EDGE_NATS_PASSWORD go together",
            ))
        }
    };
    let ways = [
        s.nats_creds.is_some(),
        user_password.is_some(),
        token.is_some(),
    ];
    if ways.iter().filter(|w| **w).count() > 1 {
        return Err(invalid(
            "nats_creds",
            "use one of --nats-creds, AVATAR_EDGE_NATS_USER/PASSWORD, AVATAR_EDGE_NATS_TOKEN",
        ));
    }
    if s.nats_tls_cert.is_some() != s.nats_tls_key.is_some() {
        return Err(invalid(
            "nats_tls_cert",
            "--nats-tls-cert and --nats-tls-key go together",
        ));
    }
    Ok(NatsSecurity {
        creds: s.nats_creds.clone(),
        user_password,
        token,
        tls_ca: s.nats_tls_ca.clone(),
        tls_client: s.nats_tls_cert.clone().zip(s.nats_tls_key.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_security_from_files_and_environment_only() {
        fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
            let v: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            move |k: &str| v.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        }
        let s = Settings::default();
        let none = security(&s, env(&[])).unwrap();
        assert_eq!(none, NatsSecurity::default());
        let up = security(
            &s,
            env(&[
                ("AVATAR_EDGE_NATS_USER", "alice"),
                ("AVATAR_EDGE_NATS_PASSWORD", "pw"),
            ]),
        )
        .unwrap();
        assert_eq!(
            up.user_password,
            Some(("alice".into(), Secret("pw".into())))
        );
        assert!(!format!("{up:?}").contains("pw"), "secrets never printed");
        let t = security(&s, env(&[("AVATAR_EDGE_NATS_TOKEN", "tok")])).unwrap();
        assert_eq!(t.token, Some(Secret("tok".into())));
        for bad in [
            &[("AVATAR_EDGE_NATS_USER", "alice")][..],
            &[
                ("AVATAR_EDGE_NATS_PASSWORD", "pw"),
                ("AVATAR_EDGE_NATS_TOKEN", "t"),
            ][..],
        ] {
            // Only a user (no password), or two ways at once.
            assert!(security(&s, env(bad)).is_err());
        }
        let tls = Settings {
            nats_tls_ca: Some("ca.pem".into()),
            nats_tls_cert: Some("c.pem".into()),
            ..Default::default()
        };
        assert!(
            security(&tls, env(&[])).is_err(),
            "a certificate needs its key"
        );
        let tls = Settings {
            nats_tls_key: Some("k.pem".into()),
            ..tls
        };
        let ok = security(&tls, env(&[])).unwrap();
        assert_eq!(ok.tls_client, Some(("c.pem".into(), "k.pem".into())));
        let creds = Settings {
            nats_creds: Some("x.creds".into()),
            ..Default::default()
        };
        assert!(security(&creds, env(&[("AVATAR_EDGE_NATS_TOKEN", "t")])).is_err());
    }

    #[test]
    fn secrets_are_scrubbed_and_never_debug_printed() {
        let s = NatsSecurity {
            user_password: Some(("alice".into(), Secret("s3cret".into()))),
            token: Some(Secret("t0ken".into())),
            ..Default::default()
        };
        assert_eq!(s.scrub("bad s3cret and t0ken"), "bad *** and ***");
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("t0ken"),
            "{shown}"
        );
    }
}
