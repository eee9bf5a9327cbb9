//! Issue 16: the audit trail. Every mutation — upload, delete, rating,
//! takedown, lift, token-file reload — is appended to the store's audit log
//! after it commits, naming who did it ([`Actor`]); `GET /v1/audit` pages
//! through it.
//!
//! The entry is written after the change it records: a crash in between
//! loses that one entry, never the change; a failed append is logged as an
//! error with the entry's action, actor and key.

use serde::Serialize;

use super::{Service, ServiceError};
use crate::model::ContentHash;
use crate::store::moderation::{AuditAction, AuditEntry};
use crate::store::now_ms;

/// Who asks for a change: the name of the bearer token (`admin`, or a name
/// from `--token-file`), or a signed upload URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    Token(String),
    SignedUrl,
}

impl Actor {
    /// The operator on the command line (import, offline tools).
    pub fn admin() -> Actor {
        Actor::Token("admin".into())
    }

    pub fn name(&self) -> &str {
        match self {
            Actor::Token(name) => name,
            Actor::SignedUrl => "signed-url",
        }
    }
}

/// One page of the audit log (`GET /v1/audit`).
#[derive(Debug, Clone, Serialize)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// The `after=` of the next page; `null` on the last one.
    pub next: Option<u64>,
}

/// What one audit entry says besides who and when.
pub(super) struct Audited {
    pub action: AuditAction,
    pub key: Option<String>,
    pub hash: Option<ContentHash>,
    pub detail: Option<String>,
}

impl Service {
    /// Append an entry for a mutation that has committed. A failure is
    /// logged: the change itself stands.
    pub(super) async fn audit(&self, actor: &Actor, what: Audited) {
        let entry = AuditEntry {
            id: 0,
            at: now_ms(),
            actor: actor.name().to_string(),
            action: what.action,
            key: what.key,
            hash: what.hash,
            detail: what.detail,
        };
        if let Err(e) = self.store.append_audit(entry.clone()).await {
            tracing::error!(error = %e, action = ?entry.action, actor = %entry.actor, key = ?entry.key, "could not append to the audit log");
        }
    }

    /// Record a reload of the token file (SIGHUP), by the operator.
    pub async fn audit_tokens_reloaded(&self, count: usize) {
        let what = Audited {
            action: AuditAction::TokensReloaded,
            key: None,
            hash: None,
            detail: Some(format!("{count} named tokens")),
        };
        self.audit(&Actor::admin(), what).await
    }

    /// Entries after `after`, at most `limit`, and where the next page starts.
    pub async fn audit_page(&self, after: u64, limit: usize) -> Result<AuditPage, ServiceError> {
        let mut entries = self.store.audit_after(after, limit + 1).await?;
        let next = if entries.len() > limit {
            entries.truncate(limit);
            entries.last().map(|e| e.id)
        } else {
            None
        };
        Ok(AuditPage { entries, next })
    }
}
