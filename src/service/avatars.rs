//! The avatar API's use cases: upload, describe, change the rating, delete.
//!
//! Every change goes through `Service::apply`: commit, then the one
//! post-commit path (forget cached manifests — any commit may garbage-collect
//! a master). The store announces the committed event itself.

use bytes::Bytes;
use serde::Serialize;

use super::{Service, ServiceError};
use crate::model::{IdentityKeys, Rating};
use crate::pipeline::{self, SourceFormat};
use crate::spec::UploadParams;
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
    ) -> Result<IdentityRecord, ServiceError> {
        let committed = self.store.commit(master, change).await;
        self.forget_manifests();
        let Committed { record, .. } = committed?;
        Ok(record)
    }

    /// Normalize and store an upload, then bind it to the key's identity.
    pub async fn upload(
        &self,
        key: &str,
        params: UploadParams,
        body: Bytes,
    ) -> Result<AvatarInfo, ServiceError> {
        let result = self.upload_inner(key, params, body).await;
        let counter = match &result {
            Ok(_) => &self.metrics.uploads,
            Err(_) => &self.metrics.upload_rejected,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        result
    }

    async fn upload_inner(
        &self,
        key: &str,
        params: UploadParams,
        body: Bytes,
    ) -> Result<AvatarInfo, ServiceError> {
        let keys = IdentityKeys::parse(key)?;
        let limits = self.config.limits;
        let crop = params.crop;
        let normalized = self
            .run_on(&self.uploads, 0, move || {
                pipeline::normalize(&body, crop, &limits)
            })
            .await??;
        let master = new_master(normalized);
        let manifest = master.manifest.clone();
        let change = Change::Bind {
            aliases: keys.aliases.clone(),
            avatar: AvatarRef {
                hash: manifest.hash,
                rating: params.rating.unwrap_or_default(),
                source: None,
            },
        };
        let record = self.apply(Some(master), change).await?;
        Ok(info(&keys.key, &record, &manifest))
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
    pub async fn set_rating(&self, key: &str, rating: Rating) -> Result<AvatarInfo, ServiceError> {
        let keys = IdentityKeys::parse(key)?;
        let change = Change::SetRating {
            alias: keys.aliases[0],
            rating,
        };
        let record = self.apply(None, change).await?;
        self.describe_record(&keys.key, &record).await
    }

    /// Unbind `key`'s identity from its avatar.
    pub async fn delete(&self, key: &str) -> Result<(), ServiceError> {
        let keys = IdentityKeys::parse(key)?;
        let change = Change::Unbind {
            alias: keys.aliases[0],
        };
        self.apply(None, change).await.map(|_| ())
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
pub(super) fn new_master(normalized: pipeline::Normalized) -> NewMaster {
    let manifest = Manifest {
        hash: normalized.ladder[0].hash,
        has_alpha: normalized.has_alpha,
        compression: Some(normalized.compression),
        source_format: source_format_name(normalized.source_format).into(),
        rungs: normalized
            .ladder
            .iter()
            .map(|r| RungRef {
                side: r.side,
                blob: r.hash,
                len: r.bytes.len() as u64,
            })
            .collect(),
    };
    NewMaster {
        manifest,
        rungs: normalized
            .ladder
            .into_iter()
            .map(|r| Bytes::from(r.bytes))
            .collect(),
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
        source: record
            .avatar
            .as_ref()
            .and_then(|a| a.source)
            .map(|s| s.as_str()),
    }
}
