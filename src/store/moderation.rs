//! Issue 16's durable values: takedown records (content that may not be
//! served or bound) and audit-log entries (who changed what, when).
//!
//! Both stores keep them (embedded: redb tables `takedowns` and `audit`; NATS:
//! `t.<hash>` keys in the index bucket, replicated by the index watch, and the
//! stream [`AUDIT_STREAM`]). What a takedown does to identities goes through
//! the one commit rule as [`super::Change::Block`].

use serde::{Deserialize, Serialize};

use crate::model::ContentHash;

/// The NATS stream holding the audit log (a stream, not a KV bucket: the
/// log is append-only, the stream sequence is a cluster-wide growing id, and
/// `max_age` is the retention).
pub const AUDIT_STREAM: &str = "avatar_edge_audit";
/// Its one subject.
pub const AUDIT_SUBJECT: &str = "avatar_edge.audit";
/// How long audit entries are kept unless configured (`--audit-retention-days`).
pub const DEFAULT_AUDIT_RETENTION: std::time::Duration =
    std::time::Duration::from_secs(365 * 24 * 3600);

/// Content taken down: why, by whom, when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Takedown {
    pub hash: ContentHash,
    pub reason: String,
    /// The token name that took it down.
    pub actor: String,
    /// Unix milliseconds.
    pub at: u64,
}

/// What an audit entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    Upload,
    Delete,
    Rating,
    Takedown,
    Lift,
    TokensReloaded,
}

/// One audit-log entry. `key` is the identity's primary hash (never an
/// email: the log outlives the account); `id` is assigned by the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: u64,
    /// Unix milliseconds.
    pub at: u64,
    /// A token name from `--token-file`, `admin`, or `signed-url`.
    pub actor: String,
    pub action: AuditAction,
    pub key: Option<String>,
    pub hash: Option<ContentHash>,
    pub detail: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_serialize_with_every_field_and_snake_case_actions() {
        let e = AuditEntry {
            id: 3,
            at: 9,
            actor: "ops".into(),
            action: AuditAction::TokensReloaded,
            key: None,
            hash: Some(ContentHash([1; 32])),
            detail: None,
        };
        let v: serde_json::Value = serde_json::to_value(&e).unwrap();
        for field in ["id", "at", "actor", "action", "key", "hash", "detail"] {
            assert!(v.get(field).is_some(), "{field} missing in {v}");
        }
        assert_eq!(v["action"], "tokens_reloaded");
        assert_eq!(v["hash"], "01".repeat(32));
        let back: AuditEntry = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }
}
