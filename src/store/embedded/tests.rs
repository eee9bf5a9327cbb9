//! The embedded store against its contract.

use super::*;
use crate::model::{IdentityKeys, Rating};
use crate::store::AvatarRef;
use crate::store::RungRef;
use crate::store::{now_ms, Store};

fn master(seed: &[u8]) -> NewMaster {
    let rung0 = Bytes::from([b"rung0:", seed].concat());
    let rung1 = Bytes::from([b"rung1:", seed].concat());
    let manifest = Manifest {
        hash: ContentHash::of(&rung0),
        has_alpha: false,
        source_format: "png".into(),
        compression: None,
        animation: None,
        salted: false,
        rungs: vec![
            RungRef {
                side: 128,
                blob: ContentHash::of(&rung0),
                len: rung0.len() as u64,
            },
            RungRef {
                side: 64,
                blob: ContentHash::of(&rung1),
                len: rung1.len() as u64,
            },
        ],
    };
    NewMaster {
        manifest,
        rungs: vec![rung0, rung1],
    }
}

fn temp_store() -> (tempfile::TempDir, EmbeddedStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = EmbeddedStore::open(dir.path()).unwrap();
    (dir, s)
}

async fn unbind(s: &EmbeddedStore, alias: IdentityHash) -> Result<Committed, StoreError> {
    s.commit(None, Change::Unbind { alias }).await
}

fn bind(keys: &IdentityKeys, m: &NewMaster) -> Change {
    Change::Bind {
        aliases: keys.aliases.clone(),
        avatar: AvatarRef {
            hash: m.manifest.hash,
            rating: Rating::G,
            blocked: false,
            source: None,
        },
    }
}

#[tokio::test]
async fn bind_rebind_unbind_keeps_versions_events_and_refcounts() {
    let (_dir, s) = temp_store();
    let alice = IdentityKeys::parse("alice@example.org").unwrap();
    let (a, b) = (master(b"a"), master(b"b"));

    let c1 = s.commit(Some(a.clone()), bind(&alice, &a)).await.unwrap();
    assert_eq!(c1.record.version, 1);
    assert_eq!(c1.event.as_ref().unwrap().id, 1);
    // Both aliases resolve to the same record.
    for alias in &alice.aliases {
        let r = s.identity(alias).await.unwrap().unwrap();
        assert_eq!(r.avatar.as_ref().unwrap().hash, a.manifest.hash);
    }
    // Identical re-upload: no new version, no event.
    let again = s.commit(Some(a.clone()), bind(&alice, &a)).await.unwrap();
    assert!(again.event.is_none());
    assert_eq!(again.record.version, 1);

    // Replace: old master's blobs are collected, new ones present.
    let c2 = s.commit(Some(b.clone()), bind(&alice, &b)).await.unwrap();
    assert_eq!(c2.record.version, 2);
    assert!(c2.record.updated_ms > c1.record.updated_ms);
    assert!(s.blob(&a.manifest.hash).await.unwrap().is_none());
    assert!(s.manifest(&a.manifest.hash).await.unwrap().is_none());
    assert!(s.blob(&b.manifest.hash).await.unwrap().is_some());

    // Unbind leaves a tombstone with a higher version.
    let c3 = unbind(&s, alice.aliases[1]).await.unwrap();
    assert_eq!(c3.record.version, 3);
    assert!(c3.record.avatar.is_none());
    assert_eq!(c3.event.as_ref().unwrap().hash, None);
    assert!(s.blob(&b.manifest.hash).await.unwrap().is_none());
    assert!(matches!(
        unbind(&s, alice.aliases[0]).await,
        Err(StoreError::NotFound)
    ));
    // Rebinding continues the version sequence.
    let c4 = s.commit(Some(a.clone()), bind(&alice, &a)).await.unwrap();
    assert_eq!(c4.record.version, 4);

    let evs = s.events_after(0, 100).await.unwrap();
    assert_eq!(
        evs.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert_eq!(s.events_after(2, 100).await.unwrap().len(), 2);
    assert!(s.verify().unwrap().is_empty());
}

#[tokio::test]
async fn shared_masters_survive_until_the_last_reference() {
    let (_dir, s) = temp_store();
    let (alice, bob) = (
        IdentityKeys::parse("alice@example.org").unwrap(),
        IdentityKeys::parse("bob@example.org").unwrap(),
    );
    let (a, b) = (master(b"a"), master(b"b"));
    s.commit(Some(a.clone()), bind(&alice, &a)).await.unwrap();
    s.commit(Some(a.clone()), bind(&bob, &a)).await.unwrap();
    unbind(&s, alice.aliases[0]).await.unwrap();
    assert!(
        s.blob(&a.manifest.hash).await.unwrap().is_some(),
        "bob still uses it"
    );
    s.commit(Some(b.clone()), bind(&bob, &b)).await.unwrap();
    assert!(s.blob(&a.manifest.hash).await.unwrap().is_none());
}

#[tokio::test]
async fn md5_only_identity_merges_with_a_later_email_upload() {
    let (_dir, s) = temp_store();
    let email = IdentityKeys::parse("carol@example.org").unwrap();
    let md5_only = IdentityKeys::parse(&email.aliases[0].to_hex()).unwrap();
    let (a, b) = (master(b"a"), master(b"b"));
    s.commit(Some(a.clone()), bind(&md5_only, &a))
        .await
        .unwrap();
    let c = s.commit(Some(b.clone()), bind(&email, &b)).await.unwrap();
    assert_eq!(c.record.version, 2);
    assert_eq!(c.record.aliases, email.aliases);
    let via_sha = s.identity(&email.aliases[1]).await.unwrap().unwrap();
    assert_eq!(via_sha.avatar.unwrap().hash, b.manifest.hash);
}

#[tokio::test]
async fn reopen_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let alice = IdentityKeys::parse("alice@example.org").unwrap();
    let a = master(b"a");
    {
        let s = EmbeddedStore::open(dir.path()).unwrap();
        s.commit(Some(a.clone()), bind(&alice, &a)).await.unwrap();
    }
    let s = EmbeddedStore::open(dir.path()).unwrap();
    let r = s.identity(&alice.aliases[0]).await.unwrap().unwrap();
    assert_eq!(r.version, 1);
    assert_eq!(s.blob(&a.manifest.hash).await.unwrap().unwrap(), a.rungs[0]);
    let c = unbind(&s, alice.aliases[0]).await.unwrap();
    assert_eq!(c.event.unwrap().id, 2, "event ids continue after reopen");
}

#[tokio::test]
async fn merging_two_identities_releases_the_absorbed_master() {
    // An md5-only and a sha256-only identity, then the email that joins them:
    // one record with both aliases, the absorbed record gone, both replaced
    // masters collected (the absorbed one used to stay referenced for ever).
    let (_dir, s) = temp_store();
    let email = IdentityKeys::parse("dave@example.org").unwrap();
    let md5 = IdentityKeys::parse(&email.aliases[0].to_hex()).unwrap();
    let sha = IdentityKeys::parse(&email.aliases[1].to_hex()).unwrap();
    let (a, b, c) = (master(b"a"), master(b"b"), master(b"c"));
    s.commit(Some(a.clone()), bind(&md5, &a)).await.unwrap();
    for _ in 0..3 {
        s.commit(Some(b.clone()), bind(&sha, &b)).await.unwrap();
        unbind(&s, sha.aliases[0]).await.unwrap();
    }
    s.commit(Some(b.clone()), bind(&sha, &b)).await.unwrap(); // sha at version 7
    let merged = s.commit(Some(c.clone()), bind(&email, &c)).await.unwrap();
    assert_eq!(merged.record.aliases, email.aliases);
    assert_eq!(merged.record.version, 8, "above both merged versions");
    for alias in &email.aliases {
        let r = s.identity(alias).await.unwrap().unwrap();
        assert_eq!(r, merged.record);
    }
    assert!(s.blob(&a.manifest.hash).await.unwrap().is_none());
    assert!(s.blob(&b.manifest.hash).await.unwrap().is_none());
    assert!(s.manifest(&b.manifest.hash).await.unwrap().is_none());
    assert!(s.blob(&c.manifest.hash).await.unwrap().is_some());
    assert!(s.verify().unwrap().is_empty());
}

#[tokio::test]
async fn every_committed_event_is_published_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let s = EmbeddedStore::open(dir.path())
        .unwrap()
        .publishing(Publish::new(move |e| sink.lock().unwrap().push(e)));
    let alice = IdentityKeys::parse("alice@example.org").unwrap();
    let a = master(b"a");
    let c1 = s.commit(Some(a.clone()), bind(&alice, &a)).await.unwrap();
    let again = s.commit(Some(a.clone()), bind(&alice, &a)).await.unwrap();
    assert!(again.event.is_none());
    let c2 = unbind(&s, alice.aliases[0]).await.unwrap();
    assert!(unbind(&s, alice.aliases[0]).await.is_err());
    let seen = seen.lock().unwrap();
    assert_eq!(*seen, vec![c1.event.unwrap(), c2.event.unwrap()]);
}

fn takedown(m: &NewMaster) -> crate::store::moderation::Takedown {
    crate::store::moderation::Takedown {
        hash: m.manifest.hash,
        reason: "test".into(),
        actor: "admin".into(),
        at: 1,
    }
}

#[tokio::test]
async fn taken_down_content_binds_nowhere_and_the_takedown_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let alice = IdentityKeys::parse("alice@example.org").unwrap();
    let bob = IdentityKeys::parse("bob@example.org").unwrap();
    let a = master(b"a");
    {
        let s = EmbeddedStore::open(dir.path()).unwrap();
        s.commit(Some(a.clone()), bind(&alice, &a)).await.unwrap();
        assert_eq!(s.put_takedown(takedown(&a)).await.unwrap(), None);
        assert_eq!(
            s.put_takedown(takedown(&a)).await.unwrap(),
            Some(takedown(&a)),
            "a second takedown answers the first"
        );
        assert!(s.blocked(&a.manifest.hash));
        assert_eq!(
            s.bound_to(&a.manifest.hash).await.unwrap(),
            vec![alice.aliases[0]]
        );
    }
    let s = EmbeddedStore::open(dir.path()).unwrap();
    assert!(s.blocked(&a.manifest.hash), "loaded at open");
    let refused = s.commit(Some(a.clone()), bind(&bob, &a)).await;
    assert!(matches!(refused, Err(StoreError::Blocked(h)) if h == a.manifest.hash));
    assert_eq!(s.identity(&bob.aliases[0]).await.unwrap(), None);
    let listed = s.takedowns(None, 10).await.unwrap();
    assert_eq!(listed, vec![takedown(&a)]);
    assert_eq!(
        s.remove_takedown(&a.manifest.hash).await.unwrap(),
        Some(takedown(&a))
    );
    assert_eq!(s.remove_takedown(&a.manifest.hash).await.unwrap(), None);
    assert!(!s.blocked(&a.manifest.hash));
    s.commit(Some(a.clone()), bind(&bob, &a)).await.unwrap();
}

#[tokio::test]
async fn audit_entries_get_growing_ids_and_expire_after_the_retention() {
    use crate::store::moderation::{AuditAction, AuditEntry};
    let (_dir, s) = temp_store();
    let s = s.audit_retention(std::time::Duration::from_secs(3600));
    let entry = |at: u64| AuditEntry {
        id: 0,
        at,
        actor: "admin".into(),
        action: AuditAction::Upload,
        key: None,
        hash: None,
        detail: None,
    };
    let old = now_ms() - 7200 * 1000;
    assert_eq!(s.append_audit(entry(old)).await.unwrap(), 1);
    assert_eq!(s.append_audit(entry(old + 1)).await.unwrap(), 2);
    // Expired entries go as appends pass them (these two at once).
    assert_eq!(s.append_audit(entry(now_ms())).await.unwrap(), 3);
    let ids: Vec<u64> = s
        .audit_after(0, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, vec![3]);
    assert_eq!(s.append_audit(entry(now_ms())).await.unwrap(), 4);
    let page = s.audit_after(3, 10).await.unwrap();
    assert_eq!(
        (page.len(), page[0].id, page[0].actor.as_str()),
        (1, 4, "admin")
    );
}

#[tokio::test]
async fn orphans_a_crash_left_are_swept_and_bound_blobs_stay() {
    let (_dir, s) = temp_store();
    let alice = IdentityKeys::parse("alice@example.org").unwrap();
    let a = master(b"a");
    s.commit(Some(a.clone()), bind(&alice, &a)).await.unwrap();
    // A crash between a commit and its collection leaves files like this.
    let orphan = s.inner.blobs.put(b"orphan rung").unwrap();
    let gone = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = gone.clone();
    s.on_content_gone(std::sync::Arc::new(move |h| seen.lock().unwrap().push(h)));
    assert_eq!(s.sweep_orphans().unwrap(), 1);
    assert!(!s.blob_path(&orphan).exists());
    for r in &a.manifest.rungs {
        assert!(s.blob_path(&r.blob).exists(), "bound rung kept");
    }
    assert!(s.verify().unwrap().is_empty());
    // Unbinding collects the master and says so.
    unbind(&s, alice.aliases[0]).await.unwrap();
    assert_eq!(*gone.lock().unwrap(), vec![a.manifest.hash]);
    assert!(!s.blob_path(&a.manifest.hash).exists());
    assert_eq!(s.sweep_orphans().unwrap(), 0);
}
