//! Operators' tools: bulk import of a directory of avatars, and rendering of
//! generated defaults to files (for designers and the docs' contact sheet).
//!
//! Import goes through the same [`Service::upload`] as the HTTP API (same
//! normalization, limits and index transaction), file by file in name order,
//! so it is idempotent and safe to re-run after an interruption: files already
//! imported come back as "unchanged".
//!
//! Issue 17: [`import_from_upstream`] adopts avatars from an upstream
//! service for a list of hashes (`import --from-upstream`), a bounded number
//! at a time, skipping identities that have a local record (resumable).

use std::path::{Path, PathBuf};

use crate::fallback::{FallbackError, Upstreams};
use crate::model::IdentityHash;
use crate::service::Adopted;
use crate::service::{Actor, Service, ServiceError};
use crate::spec::UploadParams;

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileOutcome {
    Imported { version: u64 },
    Unchanged,
    Rejected(String),
}

/// The summary of an import run.
#[derive(Debug, Default)]
pub struct ImportReport {
    pub imported: usize,
    pub unchanged: usize,
    /// File and reason, for every rejected file.
    pub rejected: Vec<(PathBuf, String)>,
}

impl ImportReport {
    /// Human summary, one line per rejected file.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "imported {}, unchanged {}, rejected {}\n",
            self.imported,
            self.unchanged,
            self.rejected.len()
        );
        for (path, why) in &self.rejected {
            s.push_str(&format!("  rejected {}: {why}\n", path.display()));
        }
        s
    }
}

/// The identity key a file name stands for: `<email-or-hash>.<ext>` → the part
/// before the last dot (`a.b@example.org.jpg` → `a.b@example.org`).
pub fn key_of(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let (stem, _ext) = name.rsplit_once('.')?;
    (!stem.is_empty()).then(|| stem.to_string())
}

/// Regular files of `dir`, sorted by name (hidden files skipped).
pub fn list_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.starts_with('.'))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Import one file.
pub async fn import_file(service: &Service, path: &Path) -> FileOutcome {
    let Some(key) = key_of(path) else {
        return FileOutcome::Rejected("file name is not <email-or-hash>.<ext>".into());
    };
    let limit = service.max_upload_bytes() as u64;
    match std::fs::metadata(path) {
        Ok(m) if m.len() > limit => {
            return FileOutcome::Rejected(format!("{} bytes exceeds the limit of {limit}", m.len()))
        }
        Ok(_) => {}
        Err(e) => return FileOutcome::Rejected(e.to_string()),
    }
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => return FileOutcome::Rejected(e.to_string()),
    };
    let before = service.describe(&key).await.ok();
    match service
        .upload(&Actor::admin(), &key, UploadParams::default(), bytes.into())
        .await
    {
        Ok(info) => match before {
            Some(b) if b.hash == info.hash && b.version == info.version => FileOutcome::Unchanged,
            _ => FileOutcome::Imported {
                version: info.version,
            },
        },
        Err(ServiceError::Key(e)) => FileOutcome::Rejected(format!("bad key {key:?}: {e}")),
        Err(e) => FileOutcome::Rejected(e.to_string()),
    }
}

/// Import every file of `dir`, reporting progress through `on_file`.
pub async fn import_dir(
    service: &Service,
    dir: &Path,
    mut on_file: impl FnMut(&Path, &FileOutcome),
) -> std::io::Result<ImportReport> {
    let mut report = ImportReport::default();
    for path in list_files(dir)? {
        let outcome = import_file(service, &path).await;
        on_file(&path, &outcome);
        match outcome {
            FileOutcome::Imported { .. } => report.imported += 1,
            FileOutcome::Unchanged => report.unchanged += 1,
            FileOutcome::Rejected(why) => report.rejected.push((path, why)),
        }
    }
    Ok(report)
}

// --- Issue 17: `import --from-upstream URL --hashes FILE` ---

/// The hashes of a `--hashes` file: one 32- or 64-hex identity hash a line
/// (blank lines and `#` comments skipped), and the bad lines by number.
pub fn read_hashes(text: &str) -> (Vec<IdentityHash>, Vec<(usize, String)>) {
    let mut hashes = Vec::new();
    let mut bad = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.to_ascii_lowercase().parse::<IdentityHash>() {
            Ok(h) if !hashes.contains(&h) => hashes.push(h),
            Ok(_) => {}
            Err(_) => bad.push((n + 1, line.chars().take(80).collect())),
        }
    }
    (hashes, bad)
}

/// The summary of an upstream import run.
#[derive(Debug, Default)]
pub struct UpstreamReport {
    pub imported: usize,
    /// Identities with a local record already (imported by an earlier run,
    /// uploaded, or deleted): left alone.
    pub present: usize,
    /// No upstream has them.
    pub missing: usize,
    /// Hash and reason, for every failed fetch (a re-run asks again).
    pub failed: Vec<(IdentityHash, String)>,
}

impl UpstreamReport {
    /// Human summary, one line per failed hash.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "imported {}, already present {}, not found upstream {}, failed {}\n",
            self.imported,
            self.present,
            self.missing,
            self.failed.len()
        );
        for (hash, why) in &self.failed {
            s.push_str(&format!("  failed {hash}: {why}\n"));
        }
        s
    }
}

/// Adopt each of `hashes` from `upstreams` as the identity's own, at most
/// `concurrency` at a time, reporting each through `on_hash`. Identities
/// with a local record are skipped, so an interrupted run resumes by running
/// it again.
pub async fn import_from_upstream(
    service: &Service,
    upstreams: &Upstreams,
    hashes: Vec<IdentityHash>,
    concurrency: usize,
    mut on_hash: impl FnMut(&IdentityHash, &Result<Adopted, FallbackError>),
) -> UpstreamReport {
    use futures_util::StreamExt;
    let mut report = UpstreamReport::default();
    let mut results = futures_util::stream::iter(hashes)
        .map(|h| async move { (h, service.adopt_from(upstreams, &h).await) })
        .buffer_unordered(concurrency.max(1));
    while let Some((hash, result)) = results.next().await {
        on_hash(&hash, &result);
        match result {
            Ok(Adopted::Imported { .. }) => report.imported += 1,
            Ok(Adopted::Present) => report.present += 1,
            Ok(Adopted::Missing) => report.missing += 1,
            Err(e) => report.failed.push((hash, e.to_string())),
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_files_skip_comments_and_name_bad_lines() {
        let text = "# exported from the old platform\n\n0BC83CB571CD1C50BA6F3E8A78EF1346\n  0bc83cb571cd1c50ba6f3e8a78ef1346\nalice@example.org\nabc\n";
        let (hashes, bad) = read_hashes(text);
        assert_eq!(hashes.len(), 1, "case-insensitive, duplicates once");
        assert_eq!(hashes[0].to_hex(), "0bc83cb571cd1c50ba6f3e8a78ef1346");
        assert_eq!(
            bad,
            vec![(5, "alice@example.org".to_string()), (6, "abc".to_string())]
        );
    }

    #[test]
    fn key_of_table() {
        let cases = [
            ("alice@example.org.jpg", Some("alice@example.org")),
            ("a.b@example.org.png", Some("a.b@example.org")),
            (
                "0bc83cb571cd1c50ba6f3e8a78ef1346.webp",
                Some("0bc83cb571cd1c50ba6f3e8a78ef1346"),
            ),
            ("noext", None),
            (".jpg", None),
        ];
        for (name, want) in cases {
            assert_eq!(key_of(Path::new(name)).as_deref(), want, "{name}");
        }
    }
}
