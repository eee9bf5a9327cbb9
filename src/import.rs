//! Operators' tools: bulk import of a directory of avatars, and rendering of
//! generated defaults to files (for designers and the docs' contact sheet).
//!
//! Import goes through the same [`Service::upload`] as the HTTP API (same
//! normalization, limits and index transaction), file by file in name order,
//! so it is idempotent and safe to re-run after an interruption: files already
//! imported come back as "unchanged".

use std::path::{Path, PathBuf};

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

#[cfg(test)]
mod tests {
    use super::*;

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
