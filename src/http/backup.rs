//! `GET /v1/backup` (admin token only): a consistent online snapshot of the
//! store, streamed as tar (see [`crate::store::backup`] for the layout;
//! `avatar-edge backup <dir>` is the client). The snapshot is taken before
//! the answer starts, so an unsupported store or a failing index is a plain
//! error response; a failure while streaming ends the stream before its
//! `BACKUP.json` marker, which the client reports as an incomplete backup.

use std::io::{self, Write};

use bytes::{Bytes, BytesMut};
use http::{header, HeaderValue, Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::Either;
use tokio::sync::mpsc;

use super::api::count_auth_failure;
use super::error::{error_response, HttpError};
use super::events::ChannelBody;
use super::response::NO_STORE;
use super::{App, Body};

/// Bytes gathered before a chunk is handed to the connection.
const CHUNK: usize = 256 << 10;

/// A blocking writer feeding the response body; fails with `BrokenPipe`
/// when the client went away (which ends the snapshot and its GC pin).
struct ChannelWriter {
    tx: mpsc::Sender<Bytes>,
    buf: BytesMut,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.tx
            .blocking_send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "backup client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// Answer `GET /v1/backup`.
pub(super) async fn backup<B>(app: &App, req: &Request<B>) -> Response<Body> {
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    // The backup carries the admin token and the signing key: admin only.
    if app.tokens.check(auth).as_deref() != Some("admin") {
        count_auth_failure(app);
        return error_response(HttpError::Unauthorized);
    }
    let snapshot = match app.service.backup_snapshot().await {
        Ok(s) => s,
        Err(e) => return error_response(e),
    };
    let (tx, rx) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let mut out = ChannelWriter {
            tx,
            buf: BytesMut::with_capacity(CHUNK),
        };
        match snapshot.write_to(&mut out) {
            Ok(info) => tracing::info!(
                identities = info.identities,
                blobs = info.blobs,
                bytes = info.blob_bytes,
                missing = info.missing.len(),
                "backup streamed"
            ),
            Err(e) => tracing::error!(error = %e, "backup stream failed"),
        }
    });
    let mut r = Response::new(Either::Right(BoxBody::new(ChannelBody(rx))));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"avatar-edge-backup.tar\""),
    );
    h.insert(header::CACHE_CONTROL, NO_STORE);
    r
}
