//! Issue 16 item 2: the upload policy hook, asked after normalizing and
//! before the commit (`avatars.rs` calls [`Service::check_policy`]).

use std::sync::Arc;

use bytes::Bytes;

use super::{Service, ServiceError};
use crate::model::{OutputFormat, Rating};
use crate::pipeline::{self, Encoding};
use crate::policy::{Upload, UploadHook, PREVIEW_SIDE};
use crate::store::Manifest;

impl Service {
    /// This service asking `hook` before every upload is accepted.
    pub fn with_upload_hook(mut self, hook: Option<Arc<UploadHook>>) -> Service {
        self.hook = hook;
        self
    }

    /// Ask the upload hook, when one is configured, about the normalized
    /// upload `manifest` with its `rungs` (largest first): a 256 px JPEG
    /// preview is rendered on the upload pool and sent with its facts.
    /// `Err` refuses the upload (the hook said no, or failed closed).
    pub(super) async fn check_policy(
        &self,
        key: &str,
        rating: Rating,
        manifest: &Manifest,
        rungs: &[Bytes],
    ) -> Result<(), ServiceError> {
        let Some(hook) = &self.hook else {
            return Ok(());
        };
        let sides: Vec<u32> = manifest.rungs.iter().map(|r| r.side).collect();
        let rung = rungs
            .get(pipeline::pick_rung(&sides, PREVIEW_SIDE))
            .cloned()
            .ok_or_else(|| pipeline::PipelineError::Internal("an upload without rungs".into()))?;
        let encoding = Encoding {
            compression: manifest.compression(),
            quality: self.config.quality,
        };
        let preview = self
            .run_on(&self.uploads, 0, move || {
                pipeline::render(&rung, PREVIEW_SIDE, OutputFormat::Jpeg, encoding)
            })
            .await??;
        let upload = Upload {
            key,
            hash: manifest.hash.to_hex(),
            width: manifest.side(),
            height: manifest.side(),
            format: &manifest.source_format,
            rating: rating.as_str(),
            preview: &preview,
        };
        Ok(hook.check(&upload).await?)
    }
}
