//! The avatar API's use cases: upload, describe, change the rating, delete.
//!
//! Every change goes through `Service::apply`: commit, then the one
//! post-commit path (forget cached manifests — any commit may garbage-collect
//! a master). The store announces the committed event itself.

use bytes::Bytes;
use serde::Serialize;

use super::audit::{Actor, Audited};
use super::{Service, ServiceError};
use crate::model::{ContentHash, IdentityKeys, Rating};
use crate::pipeline::{self, SourceFormat};
use crate::spec::UploadParams;
use crate::store::moderation::AuditAction;
use crate::store::{AvatarRef, Change, Committed, IdentityRecord, Manifest, NewMaster, RungRef};

/// The JSON description of an identity's avatar (`/v1/avatars/{key}`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AvatarInfo {
    pub key: String,
    pub aliases: Vec<String>,
    pub hash: String,
    pub version: u64,
    pub url: String,
    pub width: u32,
    pub height: u32,
    /// Format the upload was sniffed as.
    pub format: String,
    pub rating: &'static str,
    /// Unix milliseconds of the last change.
    pub updated: u64,
    /// Issue 16: the content is taken down (the identity shows its default).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub blocked: bool,
    /// Issue 17: `fallback` for an avatar adopted from an upstream service;
    /// absent for uploads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<&'static str>,
}

impl Service {
    /// Commit a change (and the master it binds), then run the post-commit
    /// path: forget cached manifests (even when the commit failed: it may
    /// have collected blobs before failing). The store has announced the
    /// event through its publisher by the time this returns.
    pub(super) async fn apply(
        &self,
        master: Option<NewMaster>,
        change: Change,
    ) -> Result<Committed, ServiceError> {
        let committed = self.store.commit(master, change).await;
        self.forget_manifests();
        Ok(committed?)
    }

    /// Issue 16: the audit entry of a committed API change (none for a no-op).
    async fn audit_change(
        &self,
        actor: &Actor,
        action: AuditAction,
        c: &Committed,
        detail: String,
    ) {
        let Some(event) = &c.event else { return };
        let what = Audited {
            action,
            key: Some(event.key.to_hex()),
            hash: c.record.avatar.as_ref().map(|a| a.hash).or(event.previous),
            detail: Some(detail),
        };
        self.audit(actor, what).await;
    }

    /// Normalize and store an upload, then bind it to the key's identity.
    pub async fn upload(
        &self,
        actor: &Actor,
        key: &str,
        params: UploadParams,
        body: Bytes,
    ) -> Result<AvatarInfo, ServiceError> {
        let result = self.upload_inner(actor, key, params, body).await;
        let counter = match &result {
            Ok(_) => &self.metrics.uploads,
            Err(_) => &self.metrics.upload_rejected,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        result
    }

    async fn upload_inner(
        &self,
        actor: &Actor,
        key: &str,
        params: UploadParams,
        body: Bytes,
    ) -> Result<AvatarInfo, ServiceError> {
        let keys = IdentityKeys::parse(key)?;
        let limits = self.config.limits;
        let (crop, still_frame) = (params.crop, params.still_frame.unwrap_or(0));
        let normalized = self
            .run_on(&self.uploads, 0, move || {
                pipeline::normalize_upload(&body, crop, still_frame, &limits)
            })
            .await??;
        let master = new_master(normalized);
        let manifest = master.manifest.clone();
        let rating = params.rating.unwrap_or_default();
        // Issue 16: taken-down content is refused (451) under any key, before
        // the policy hook ever sees it.
        self.refuse_taken_down(&manifest.hash)?;
        // Issue 16: the operator's policy hook decides before anything is stored.
        self.check_policy(&keys.key, rating, &manifest, &master.rungs)
            .await?;
        let change = Change::Bind {
            aliases: keys.aliases.clone(),
            avatar: AvatarRef {
                hash: manifest.hash,
                rating,
                blocked: false,
                source: None,
            },
        };
        let c = self.apply(Some(master), change).await?;
        self.audit_change(
            actor,
            AuditAction::Upload,
            &c,
            format!("rating {}", rating.as_str()),
        )
        .await;
        Ok(info(&keys.key, &c.record, &manifest))
    }

    /// Describe the avatar bound to `key`.
    pub async fn describe(&self, key: &str) -> Result<AvatarInfo, ServiceError> {
        let keys = IdentityKeys::parse(key)?;
        let record = self
            .store
            .identity(&keys.aliases[0])
            .await?
            .filter(|r| r.avatar.is_some())
            .ok_or(ServiceError::NotFound("avatar"))?;
        self.describe_record(&keys.key, &record).await
    }

    /// Change the rating of `key`'s avatar (no re-upload needed).
    pub async fn set_rating(
        &self,
        actor: &Actor,
        key: &str,
        rating: Rating,
    ) -> Result<AvatarInfo, ServiceError> {
        let keys = IdentityKeys::parse(key)?;
        let change = Change::SetRating {
            alias: keys.aliases[0],
            rating,
        };
        let c = self.apply(None, change).await?;
        let detail = format!("rating {}", rating.as_str());
        self.audit_change(actor, AuditAction::Rating, &c, detail)
            .await;
        self.describe_record(&keys.key, &c.record).await
    }

    /// Unbind `key`'s identity from its avatar.
    pub async fn delete(&self, actor: &Actor, key: &str) -> Result<(), ServiceError> {
        let keys = IdentityKeys::parse(key)?;
        let change = Change::Unbind {
            alias: keys.aliases[0],
        };
        let c = self.apply(None, change).await?;
        self.audit_change(actor, AuditAction::Delete, &c, "unbound".into())
            .await;
        Ok(())
    }

    /// The API description of `record`'s avatar (`NotFound` when unbound).
    async fn describe_record(
        &self,
        key: &str,
        record: &IdentityRecord,
    ) -> Result<AvatarInfo, ServiceError> {
        let hash = record
            .avatar
            .as_ref()
            .map(|a| a.hash)
            .ok_or(ServiceError::NotFound("avatar"))?;
        let manifest = self
            .store
            .manifest(&hash)
            .await?
            .ok_or(ServiceError::ContentUnreadable)?;
        Ok(info(key, record, &manifest))
    }
}

/// A normalized upload as the store keeps it: its manifest and rungs.
/// An animated upload (issue 22) stores its animated master and smaller
/// animated rungs first, as rungs of side 0 (see `Manifest::rungs`); the
/// master's hash names the avatar.
pub(super) fn new_master(normalized: pipeline::Normalized) -> NewMaster {
    // (side, bytes, hash), largest first; the first one names the master.
    let mut rungs: Vec<(u32, Vec<u8>, ContentHash)> =
        Vec::with_capacity(normalized.ladder.len() + 1);
    let animation = normalized.animation.map(|a| {
        rungs.push((0, a.bytes, a.hash));
        rungs.extend(a.smaller.into_iter().map(|r| (0, r.bytes, r.hash)));
        a.info
    });
    rungs.extend(
        normalized
            .ladder
            .into_iter()
            .map(|r| (r.side, r.bytes, r.hash)),
    );
    let owner = rungs[0].2;
    let mut refs = Vec::with_capacity(rungs.len());
    let mut blobs = Vec::with_capacity(rungs.len());
    for (i, (side, bytes, hash)) in rungs.into_iter().enumerate() {
        // Issue 20: every rung but the master's own is salted with its hash.
        let (bytes, blob) = if i == 0 {
            (bytes, hash)
        } else {
            let salted = pipeline::salt::salt(bytes, &owner);
            let blob = ContentHash::of(&salted);
            (salted, blob)
        };
        refs.push(RungRef {
            side,
            blob,
            len: bytes.len() as u64,
        });
        blobs.push(Bytes::from(bytes));
    }
    let manifest = Manifest {
        hash: owner,
        salted: true,
        has_alpha: normalized.has_alpha,
        compression: Some(normalized.compression),
        source_format: source_format_name(normalized.source_format).into(),
        rungs: refs,
        animation,
    };
    NewMaster {
        manifest,
        rungs: blobs,
    }
}

fn source_format_name(f: SourceFormat) -> &'static str {
    match f {
        SourceFormat::Jpeg => "jpeg",
        SourceFormat::Png => "png",
        SourceFormat::Gif => "gif",
        SourceFormat::Webp => "webp",
    }
}

fn info(key: &str, record: &IdentityRecord, manifest: &Manifest) -> AvatarInfo {
    let rating = record.avatar.as_ref().map(|a| a.rating).unwrap_or_default();
    AvatarInfo {
        key: key.to_string(),
        aliases: record.aliases.iter().map(|a| a.to_hex()).collect(),
        hash: manifest.hash.to_hex(),
        version: record.version,
        url: format!("/c/{}", manifest.hash),
        width: manifest.side(),
        height: manifest.side(),
        format: manifest.source_format.clone(),
        rating: rating.as_str(),
        updated: record.updated_ms,
        blocked: record.avatar.as_ref().is_some_and(|a| a.blocked),
        source: record
            .avatar
            .as_ref()
            .and_then(|a| a.source)
            .map(|s| s.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{decode_rung, normalize, salt, Limits};

    fn stored(bytes: &[u8]) -> NewMaster {
        new_master(normalize(bytes, None, &Limits::default()).unwrap())
    }

    /// Issue 20: a re-upload of one of a master's rungs (a 128 px PNG saved
    /// from this server) is a master whose own blob is that rung's picture;
    /// salting keeps the two masters from sharing it.
    #[test]
    fn no_blob_is_shared_by_two_masters() {
        let photo = std::fs::read(format!(
            "{}/fixtures/photo_grace_hopper_512x600.jpg",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let a = stored(&photo);
        assert!(a.manifest.salted);
        let i = a.manifest.rungs.iter().position(|r| r.side == 128).unwrap();
        let px = decode_rung(&a.rungs[i]).unwrap();
        let mut png = Vec::new();
        image::RgbImage::from_raw(px.width, px.height, px.data)
            .unwrap()
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let b = stored(&png);
        // Unsalted, the two blobs would be one.
        assert_eq!(salt::payload(&a.rungs[i]), &b.rungs[0][..]);
        for m in [&a, &b] {
            assert_eq!(m.manifest.rungs[0].blob, m.manifest.hash);
            for (k, (r, bytes)) in m.manifest.rungs.iter().zip(&m.rungs).enumerate() {
                assert_eq!(r.blob, ContentHash::of(bytes));
                assert_eq!(r.len, bytes.len() as u64);
                let owner = salt::owner(bytes);
                assert_eq!(owner, (k > 0).then_some(m.manifest.hash), "rung {k}");
            }
        }
        let blobs = |m: &NewMaster| {
            m.manifest
                .rungs
                .iter()
                .map(|r| r.blob)
                .collect::<std::collections::HashSet<_>>()
        };
        assert!(blobs(&a).is_disjoint(&blobs(&b)));
    }
}
