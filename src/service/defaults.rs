//! The default-avatar policy as a pure function: what to serve when an
//! identity URL has no (eligible) avatar. [`plan`] takes the parsed request,
//! why a default is needed, and the operator's policy, and returns a small
//! [`Plan`]: a 404, a redirect, or a generated image (style, seed, initials,
//! the `X-Avatar-Default` reason, cacheability). No I/O, no state: the
//! identity use case renders what the plan says.

use crate::identicon;
use crate::model::{IdentityHash, Style};
use crate::spec::{self, DefaultChoice, IdentityRequest};

/// Why the identity URL gets a default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject<'a> {
    /// Not a 32/64-hex hash: the server default, flagged `invalid-key`.
    InvalidKey,
    /// `/avatar/` or the hash of the empty email.
    NoIdentity,
    /// A real identity without an avatar the page may show.
    Unbound(&'a IdentityHash),
    /// A real identity whose avatar could not be read or rendered (our fault:
    /// the server default, never cached).
    Fault(&'a IdentityHash),
}

/// The operator's side of the policy.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    /// Style when the URL names none (`--default-style`).
    pub style: Style,
    /// Hosts a `d=<URL>` may redirect to.
    pub url_allow: &'a [String],
}

/// Seed bytes of a generated default (at most 32: a hash or a digest), inline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seed {
    bytes: [u8; 32],
    len: u8,
}

impl Seed {
    fn of(b: &[u8]) -> Seed {
        let mut bytes = [0u8; 32];
        let len = b.len().min(32);
        bytes[..len].copy_from_slice(&b[..len]);
        Seed {
            bytes,
            len: len as u8,
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// A generated default to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generate {
    pub style: Style,
    pub seed: Seed,
    /// Letters for [`Style::Initials`] (never empty).
    pub initials: Option<String>,
    /// The `X-Avatar-Default` value.
    pub reason: &'static str,
    /// False for a fault default: it must not be kept by any cache.
    pub cacheable: bool,
}

/// What to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// `d=404`.
    NotFound,
    /// `d=<allowed URL>`.
    Redirect(String),
    Generate(Generate),
}

/// The default for `req` given why one is needed and the operator's policy.
pub fn plan(req: &IdentityRequest, subject: Subject<'_>, policy: &Policy<'_>) -> Plan {
    let (style, seed, reason, cacheable) = match subject {
        Subject::InvalidKey => (policy.style, Seed::of(b"invalid-key"), "invalid-key", true),
        Subject::Fault(h) => (policy.style, Seed::of(h.as_bytes()), "", false),
        Subject::Unbound(h) => {
            let style = match &req.default {
                DefaultChoice::NotFound => return Plan::NotFound,
                DefaultChoice::Url(url) => {
                    if spec::url_host(url).is_some_and(|h| policy.url_allow.contains(&h)) {
                        return Plan::Redirect(url.clone());
                    }
                    policy.style
                }
                DefaultChoice::Style(s) => *s,
                DefaultChoice::ServerDefault => policy.style,
            };
            (style, Seed::of(h.as_bytes()), "", true)
        }
        Subject::NoIdentity => match (&req.default, &req.name, &req.initials) {
            (DefaultChoice::NotFound, _, _) => return Plan::NotFound,
            (DefaultChoice::Style(Style::Blank), _, _) => (Style::Blank, Seed::of(b""), "", true),
            (_, None, None) => (Style::Mp, Seed::of(b""), "", true),
            (choice, name, initials) => {
                // Seed from the name so users without email differ from each other.
                let text = name.as_deref().or(initials.as_deref()).unwrap_or("");
                let wants_initials = matches!(choice, DefaultChoice::Style(Style::Initials))
                    || (matches!(choice, DefaultChoice::ServerDefault)
                        && policy.style == Style::Initials);
                let style = if wants_initials {
                    Style::Initials
                } else {
                    Style::Identicon
                };
                (
                    style,
                    Seed::of(blake3::hash(text.as_bytes()).as_bytes()),
                    "",
                    true,
                )
            }
        },
    };
    // The reason names the style drawn, except for a malformed key.
    let reason = if reason.is_empty() {
        style.as_str()
    } else {
        reason
    };
    // Initials without any letter fall back to an identicon.
    let (style, initials, reason) = if style == Style::Initials {
        let letters = req
            .initials
            .clone()
            .or_else(|| req.name.as_deref().map(identicon::initials_of))
            .filter(|s| !s.is_empty());
        match letters {
            Some(l) => (style, Some(l), reason),
            None => (Style::Identicon, None, Style::Identicon.as_str()),
        }
    } else {
        (style, None, reason)
    };
    Plan::Generate(Generate {
        style,
        seed,
        initials,
        reason,
        cacheable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MD5: &str = "0bc83cb571cd1c50ba6f3e8a78ef1346";

    fn generated(p: Plan) -> (Style, &'static str, bool, Option<String>) {
        match p {
            Plan::Generate(g) => (g.style, g.reason, g.cacheable, g.initials),
            other => panic!("expected a generated default, got {other:?}"),
        }
    }

    #[test]
    fn plan_table() {
        let h: IdentityHash = MD5.parse().unwrap();
        let allow = vec!["cdn.example.org".to_string()];
        let policy = Policy {
            style: Style::Retro,
            url_allow: &allow,
        };
        use Style as S;
        type Case<'a> = (
            &'a str,
            Subject<'a>,
            (Style, &'a str, bool, Option<&'a str>),
        );
        let cases: Vec<Case> = vec![
            ("", Subject::Unbound(&h), (S::Retro, "retro", true, None)),
            (
                "d=wavatar",
                Subject::Unbound(&h),
                (S::Wavatar, "wavatar", true, None),
            ),
            (
                "d=https://evil.example/x.png",
                Subject::Unbound(&h),
                (S::Retro, "retro", true, None),
            ),
            (
                "d=wavatar",
                Subject::Fault(&h),
                (S::Retro, "retro", false, None),
            ),
            (
                "d=wavatar",
                Subject::InvalidKey,
                (S::Retro, "invalid-key", true, None),
            ),
            ("", Subject::NoIdentity, (S::Mp, "mp", true, None)),
            (
                "d=blank&name=Ada",
                Subject::NoIdentity,
                (S::Blank, "blank", true, None),
            ),
            (
                "name=Ada+Lovelace",
                Subject::NoIdentity,
                (S::Identicon, "identicon", true, None),
            ),
            (
                "d=initials&name=Ada+Lovelace",
                Subject::NoIdentity,
                (S::Initials, "initials", true, Some("AL")),
            ),
            (
                "d=initials&initials=zq",
                Subject::Unbound(&h),
                (S::Initials, "initials", true, Some("ZQ")),
            ),
            // Initials without letters fall back to an identicon.
            (
                "d=initials",
                Subject::Unbound(&h),
                (S::Identicon, "identicon", true, None),
            ),
        ];
        for (query, subject, (style, reason, cacheable, initials)) in cases {
            let req = spec::parse_identity(MD5, Some(query));
            let got = generated(plan(&req, subject, &policy));
            assert_eq!(
                got,
                (style, reason, cacheable, initials.map(String::from)),
                "{query:?} {subject:?}"
            );
        }
        let req = spec::parse_identity(MD5, Some("d=404"));
        assert_eq!(plan(&req, Subject::Unbound(&h), &policy), Plan::NotFound);
        assert_eq!(plan(&req, Subject::NoIdentity, &policy), Plan::NotFound);
        let req = spec::parse_identity(MD5, Some("d=https://cdn.example.org/a.png"));
        assert_eq!(
            plan(&req, Subject::Unbound(&h), &policy),
            Plan::Redirect("https://cdn.example.org/a.png".into())
        );
        // The server default is initials: a name without d= draws them.
        let initials = Policy {
            style: Style::Initials,
            url_allow: &[],
        };
        let req = spec::parse_identity("", Some("name=Grace+Hopper"));
        assert_eq!(
            generated(plan(&req, Subject::NoIdentity, &initials)),
            (S::Initials, "initials", true, Some("GH".into()))
        );
    }

    #[test]
    fn seeds_follow_the_subject() {
        let h: IdentityHash = MD5.parse().unwrap();
        let policy = Policy {
            style: Style::Identicon,
            url_allow: &[],
        };
        let seed = |q: &str, s: Subject| match plan(&spec::parse_identity(MD5, Some(q)), s, &policy)
        {
            Plan::Generate(g) => g.seed.as_slice().to_vec(),
            p => panic!("{p:?}"),
        };
        assert_eq!(seed("", Subject::Unbound(&h)), h.as_bytes());
        assert_eq!(seed("", Subject::Fault(&h)), h.as_bytes());
        assert_eq!(seed("", Subject::InvalidKey), b"invalid-key");
        assert_eq!(seed("", Subject::NoIdentity), b"");
        assert_eq!(
            seed("name=Ada", Subject::NoIdentity),
            blake3::hash(b"Ada").as_bytes()
        );
        assert_ne!(
            seed("name=Ada", Subject::NoIdentity),
            seed("name=Bob", Subject::NoIdentity)
        );
    }
}
