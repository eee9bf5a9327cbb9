//! Issue 22: animated variants — an animated master resized to an animated
//! WebP or GIF, cached and coalesced like every variant (its key says
//! `animated`), rendered from the smallest animated rung at least as large
//! as asked, charged to the render memory budget by frames × pixels
//! (`pipeline::animated_render_cost`).

use std::time::Instant;

use super::render::{Variant, VariantKey};
use super::{Service, ServiceError};
use crate::cache::Outcome;
use crate::pipeline::{self, Encoding};
use crate::store::Manifest;

impl Service {
    /// The animated variant of `key` (cached, coalesced).
    pub(super) async fn animated_variant(
        &self,
        manifest: &Manifest,
        key: VariantKey,
    ) -> Result<(Variant, Outcome), ServiceError> {
        let VariantKey::Content { size, format, .. } = key else {
            unreachable!("animated_variant takes content keys")
        };
        let rungs = manifest.animated_rungs();
        let sides: Vec<u32> = rungs.iter().map(|r| r.0).collect();
        let (Some(info), Some(&(side, blob))) = (
            manifest.animation,
            rungs.get(pipeline::pick_rung(&sides, size)),
        ) else {
            return Err(ServiceError::ContentUnreadable);
        };
        let cost = pipeline::animated_render_cost(&info, side, size);
        let encoding = Encoding {
            compression: manifest.compression(),
            quality: self.config.quality,
        };
        let etag_key = key.clone();
        self.cache
            .get_or_produce(key, || async move {
                let etag = etag_key.etag();
                let started = Instant::now();
                let bytes = self
                    .store
                    .blob(&blob)
                    .await?
                    .ok_or(ServiceError::ContentUnreadable)?;
                let job = self.on_pool(cost, move || {
                    pipeline::render_animated(&bytes, size, format, encoding)
                });
                let body = self.render_result(job.await.and_then(|r| Ok(r?)))?;
                Ok(self.rendered(started, body, etag, format))
            })
            .await
    }
}
