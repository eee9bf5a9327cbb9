//! The backup format and its two ends on disk: [`unpack`] (the
//! `avatar-edge backup <dir>` client writing a snapshot streamed by the
//! server) and [`restore`] (a backup into an empty data directory).
//!
//! A backup is a tar stream laid out like a data directory, so a backup
//! directory is readable with ordinary tools:
//!
//! ```text
//! index.redb               consistent copy of the index
//! blobs/ab/cd/<blake3>     every blob the index references (verified on both ends)
//! admin.token signing.key  the secrets, when the server generated them
//! BACKUP.json              last entry: counts, version; its absence means "incomplete"
//! ```
//!
//! The snapshot itself is taken by the store ([`super::Store::snapshot`]; the
//! embedded store's is in `embedded/backup.rs`).

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::blobs::BlobDir;
use super::embedded::EmbeddedStore;
use super::StoreError;
use crate::model::ContentHash;

/// The index copy's name inside a backup.
pub const INDEX: &str = "index.redb";
/// The completeness marker, always the last entry.
pub const MARKER: &str = "BACKUP.json";
/// Secret files of the data directory carried along.
pub const SECRETS: [&str; 2] = ["admin.token", "signing.key"];
/// Version of this layout.
pub const FORMAT: u32 = 1;
/// Largest single entry accepted when unpacking (the index may be large; a
/// blob is at most one stored rung).
const MAX_ENTRY: u64 = 64 << 30;

/// What a backup holds (the content of `BACKUP.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupInfo {
    pub format: u32,
    /// The avatar-edge version that wrote it.
    pub version: String,
    /// Unix milliseconds when the snapshot was taken.
    pub created_ms: u64,
    /// Identities with an avatar.
    pub identities: u64,
    pub blobs: u64,
    pub blob_bytes: u64,
    /// Blobs the index references that were missing or corrupt in the live
    /// store (also reported by its own verification): not in the backup.
    pub missing: Vec<String>,
}

impl BackupInfo {
    pub fn new(identities: u64) -> BackupInfo {
        BackupInfo {
            format: FORMAT,
            version: env!("CARGO_PKG_VERSION").to_string(),
            created_ms: super::now_ms(),
            identities,
            blobs: 0,
            blob_bytes: 0,
            missing: Vec::new(),
        }
    }
}

/// A pinned snapshot that writes itself as a backup stream (blocking I/O).
pub trait BackupWriter: Send {
    fn write_to(self: Box<Self>, out: &mut dyn Write) -> Result<BackupInfo, StoreError>;
}

/// Failures of unpacking and restoring, naming the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0} is not empty; {1} needs an empty or new directory")]
    NotEmpty(PathBuf, &'static str),
    #[error("incomplete backup: {0}")]
    Incomplete(String),
    #[error("corrupt backup: {0}")]
    Corrupt(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("restored store: {0}")]
    Store(#[from] StoreError),
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where a blob goes inside a backup (and a data directory): `blobs/ab/cd/<hex>`.
pub fn blob_path(hash: &ContentHash) -> String {
    let h = hash.to_hex();
    format!("blobs/{}/{}/{h}", &h[0..2], &h[2..4])
}

/// The hash a well-formed blob path names.
fn blob_of(path: &str) -> Option<ContentHash> {
    let rest = path.strip_prefix("blobs/")?;
    let mut parts = rest.split('/');
    let (a, b, name) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || name.len() != 64 || a != &name[0..2] || b != &name[2..4] {
        return None;
    }
    let bytes: [u8; 32] = hex::decode(name).ok()?.try_into().ok()?;
    Some(ContentHash(bytes))
}

/// Writes backup entries as tar.
pub struct Packer<'a> {
    tar: tar::Builder<&'a mut dyn Write>,
}

impl<'a> Packer<'a> {
    pub fn new(out: &'a mut dyn Write) -> Packer<'a> {
        Packer {
            tar: tar::Builder::new(out),
        }
    }

    /// Append one file (mode 0600: backups hold secrets).
    pub fn file(&mut self, path: &str, bytes: &[u8]) -> io::Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o600);
        h.set_mtime(super::now_ms() / 1000);
        h.set_entry_type(tar::EntryType::Regular);
        self.tar.append_data(&mut h, path, bytes)
    }

    /// Append the marker and end the archive.
    pub fn finish(mut self, info: &BackupInfo) -> io::Result<()> {
        let json = serde_json::to_vec_pretty(info).expect("backup info serializes");
        self.file(MARKER, &json)?;
        self.tar.finish()?;
        self.tar.get_mut().flush()
    }
}

fn require_empty(dir: &Path, what: &'static str) -> Result<(), BackupError> {
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(BackupError::NotEmpty(dir.to_path_buf(), what));
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir_all(dir).map_err(at(dir)),
        Err(e) => Err(at(dir)(e)),
    }
}

/// Write a file and make it durable; secrets get mode 0600.
fn write_durable(path: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(at(parent))?;
    }
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(at(path))?;
    f.write_all(bytes).map_err(at(path))?;
    f.sync_all().map_err(at(path))
}

fn sync_dir(dir: &Path) -> Result<(), BackupError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(at(dir))
}

/// Unpack a backup stream into `dir` (created; must be empty), verifying
/// every blob against its name. Fails unless the stream ends with the marker.
pub fn unpack(reader: impl Read, dir: &Path) -> Result<BackupInfo, BackupError> {
    require_empty(dir, "a backup")?;
    let mut archive = tar::Archive::new(reader);
    let mut marker: Option<BackupInfo> = None;
    let (mut blobs, mut index) = (0u64, false);
    let entries = archive.entries().map_err(at(dir))?;
    for entry in entries {
        let mut entry = entry.map_err(at(dir))?;
        let name = entry
            .path()
            .map_err(at(dir))?
            .to_str()
            .map(str::to_string)
            .ok_or_else(|| BackupError::Corrupt("an entry name is not UTF-8".into()))?;
        if marker.is_some() {
            return Err(BackupError::Corrupt(format!(
                "{name} after the {MARKER} marker"
            )));
        }
        let size = entry.header().size().map_err(at(dir))?;
        if size > MAX_ENTRY {
            return Err(BackupError::Corrupt(format!("{name}: {size} bytes")));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| BackupError::Incomplete(format!("{name}: {e}")))?;
        if name == MARKER {
            let info: BackupInfo = serde_json::from_slice(&bytes)
                .map_err(|e| BackupError::Corrupt(format!("{MARKER}: {e}")))?;
            if !index || info.blobs != blobs {
                return Err(BackupError::Incomplete(format!(
                    "{MARKER} announces {} blobs, the stream held {blobs}{}",
                    info.blobs,
                    if index { "" } else { " and no index" }
                )));
            }
            write_durable(&dir.join(MARKER), &bytes)?;
            marker = Some(info);
        } else if name == INDEX || SECRETS.contains(&name.as_str()) {
            index |= name == INDEX;
            write_durable(&dir.join(&name), &bytes)?;
        } else if let Some(hash) = blob_of(&name) {
            if ContentHash::of(&bytes) != hash {
                return Err(BackupError::Corrupt(format!(
                    "{name}: content does not match its hash"
                )));
            }
            write_durable(&dir.join(&name), &bytes)?;
            blobs += 1;
        } else {
            return Err(BackupError::Corrupt(format!("unexpected entry {name:?}")));
        }
    }
    let info = marker.ok_or_else(|| {
        BackupError::Incomplete(format!("the stream ended before {MARKER} ({blobs} blobs)"))
    })?;
    sync_dir(dir)?;
    Ok(info)
}

/// Every `blobs/ab/cd/<hash>` file under a backup directory.
fn backup_blobs(dir: &Path) -> Result<Vec<(PathBuf, ContentHash)>, BackupError> {
    let mut out = Vec::new();
    let root = dir.join("blobs");
    let mut stack = vec![root];
    while let Some(d) = stack.pop() {
        let entries = match fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(at(&d)(e)),
        };
        for entry in entries {
            let path = entry.map_err(at(&d))?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path
                .strip_prefix(dir)
                .ok()
                .and_then(|p| p.to_str())
                .and_then(blob_of)
                .ok_or_else(|| BackupError::Corrupt(format!("stray file {}", path.display())))?;
            out.push((path, rel));
        }
    }
    Ok(out)
}

/// The admin token of a data directory, for `avatar-edge backup` (read
/// only: never created here).
pub fn local_admin_token(data: &Path) -> Result<String, BackupError> {
    let path = data.join(SECRETS[0]);
    let token = fs::read_to_string(&path).map_err(at(&path))?;
    Ok(token.trim().to_string())
}

/// What [`restore`] put in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub info: BackupInfo,
    pub blobs: u64,
}

/// Restore the backup in `backup` into `data` (created; must be empty):
/// blobs verified and written durably, the secrets, then the index; finally
/// the restored store is opened and verified (every bound identity's blobs
/// present and intact).
pub fn restore(backup: &Path, data: &Path) -> Result<Restored, BackupError> {
    let marker = backup.join(MARKER);
    let text = fs::read(&marker).map_err(|e| {
        BackupError::Incomplete(format!("{} ({e}): not a complete backup", marker.display()))
    })?;
    let info: BackupInfo = serde_json::from_slice(&text)
        .map_err(|e| BackupError::Corrupt(format!("{}: {e}", marker.display())))?;
    if info.format != FORMAT {
        return Err(BackupError::Corrupt(format!(
            "backup format {} (this avatar-edge reads {FORMAT})",
            info.format
        )));
    }
    let index = backup.join(INDEX);
    if !index.is_file() {
        return Err(BackupError::Incomplete(format!(
            "{} is missing",
            index.display()
        )));
    }
    require_empty(data, "restore")?;
    let dir = BlobDir::open(data).map_err(at(data))?;
    let mut blobs = 0;
    for (path, hash) in backup_blobs(backup)? {
        let bytes = fs::read(&path).map_err(at(&path))?;
        if ContentHash::of(&bytes) != hash {
            return Err(BackupError::Corrupt(format!(
                "{}: content does not match its hash",
                path.display()
            )));
        }
        dir.put(&bytes).map_err(at(&path))?;
        blobs += 1;
    }
    for name in SECRETS {
        let from = backup.join(name);
        match fs::read(&from) {
            Ok(bytes) => write_durable(&data.join(name), &bytes)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(at(&from)(e)),
        }
    }
    let bytes = fs::read(&index).map_err(at(&index))?;
    write_durable(&data.join(INDEX), &bytes)?;
    sync_dir(data)?;
    let problems = EmbeddedStore::open(data)?.verify()?;
    if !problems.is_empty() {
        return Err(BackupError::Corrupt(problems.join("; ")));
    }
    Ok(Restored { info, blobs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_paths_round_trip_and_reject_lookalikes() {
        let h = ContentHash::of(b"x");
        assert_eq!(blob_of(&blob_path(&h)), Some(h));
        let hex = h.to_hex();
        for bad in [
            format!("blobs/{hex}"),
            format!("blobs/00/00/{hex}"),
            format!("blobs/{}/{}/{hex}/x", &hex[0..2], &hex[2..4]),
            format!("../blobs/{}/{}/{hex}", &hex[0..2], &hex[2..4]),
            format!("blobs/{}/{}/{}", &hex[0..2], &hex[2..4], &hex[..63]),
        ] {
            assert_eq!(blob_of(&bad), None, "{bad}");
        }
    }

    fn archive(entries: &[(&str, &[u8])], info: Option<&BackupInfo>) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut p = Packer::new(&mut out);
            for (name, bytes) in entries {
                if name.starts_with("..") {
                    // The tar crate refuses to write such a name: forge it.
                    let mut h = tar::Header::new_old();
                    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
                    h.set_size(bytes.len() as u64);
                    h.set_mode(0o600);
                    h.set_cksum();
                    p.tar.append(&h, *bytes).unwrap();
                } else {
                    p.file(name, bytes).unwrap();
                }
            }
            match info {
                Some(i) => p.finish(i).unwrap(),
                None => p.tar.finish().unwrap(),
            }
        }
        out
    }

    #[test]
    fn unpack_refuses_truncated_tampered_and_foreign_streams() {
        let blob = b"some blob".as_slice();
        let h = ContentHash::of(blob);
        let mut info = BackupInfo::new(1);
        info.blobs = 1;
        let path = blob_path(&h);
        let good: Vec<(&str, &[u8])> = vec![(INDEX, b"idx"), (&path, blob)];
        let dir = tempfile::tempdir().unwrap();

        let ok = archive(&good, Some(&info));
        assert_eq!(unpack(&ok[..], &dir.path().join("ok")).unwrap(), info);
        assert!(matches!(
            unpack(&ok[..], &dir.path().join("ok")),
            Err(BackupError::NotEmpty(..))
        ));

        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("no marker", archive(&good, None)),
            ("cut short", ok[..ok.len() / 2].to_vec()),
            (
                "tampered blob",
                archive(&[(INDEX, b"idx"), (good[1].0, b"other bytes")], Some(&info)),
            ),
            (
                "path escape",
                archive(&[(INDEX, b"idx"), ("../evil", b"x")], Some(&info)),
            ),
            ("blob count", archive(&good[..1], Some(&info))),
        ];
        for (i, (what, bytes)) in cases.iter().enumerate() {
            let r = unpack(&bytes[..], &dir.path().join(format!("bad{i}")));
            assert!(
                matches!(
                    r,
                    Err(BackupError::Incomplete(_) | BackupError::Corrupt(_))
                        | Err(BackupError::Io { .. })
                ),
                "{what}: {r:?}"
            );
        }
    }

    #[test]
    fn restore_needs_a_complete_backup_and_an_empty_target() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        fs::create_dir_all(&empty).unwrap();
        let e = restore(&empty, &dir.path().join("data")).unwrap_err();
        assert!(e.to_string().contains("not a complete backup"), "{e}");

        let used = dir.path().join("used");
        fs::create_dir_all(&used).unwrap();
        fs::write(used.join("index.redb"), b"x").unwrap();
        let b = dir.path().join("b");
        fs::create_dir_all(&b).unwrap();
        fs::write(
            b.join(MARKER),
            serde_json::to_vec(&BackupInfo::new(0)).unwrap(),
        )
        .unwrap();
        fs::write(b.join(INDEX), b"").unwrap();
        assert!(matches!(restore(&b, &used), Err(BackupError::NotEmpty(..))));
    }
}
