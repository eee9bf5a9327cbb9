//! Content-addressed blob files: `<root>/blobs/ab/cd/<hash>`.
//!
//! Writes are atomic and durable: temp file in `<root>/tmp`, write, fsync,
//! rename into place, fsync of the directory. A crash leaves either the whole
//! blob or nothing visible (stale temp files are removed at open). Reads are
//! verified against the name; a mismatch is counted and reported as missing.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::model::ContentHash;

/// The blob directory of a data root.
#[derive(Debug)]
pub struct BlobDir {
    blobs: PathBuf,
    tmp: PathBuf,
    seq: AtomicU64,
    pub(crate) corrupt: AtomicU64,
    pub(crate) written: AtomicU64,
    pub(crate) deleted: AtomicU64,
}

impl BlobDir {
    /// Open (creating) `<root>/blobs` and `<root>/tmp`; clear leftover temp files.
    pub fn open(root: &Path) -> io::Result<BlobDir> {
        let blobs = root.join("blobs");
        let tmp = root.join("tmp");
        fs::create_dir_all(&blobs)?;
        fs::create_dir_all(&tmp)?;
        for entry in fs::read_dir(&tmp)? {
            let entry = entry?;
            // A temp file is a write that never completed: nobody references it.
            let _ = fs::remove_file(entry.path());
        }
        Ok(BlobDir {
            blobs,
            tmp,
            seq: AtomicU64::new(0),
            corrupt: AtomicU64::new(0),
            written: AtomicU64::new(0),
            deleted: AtomicU64::new(0),
        })
    }

    /// The data directory this blob directory belongs to.
    pub fn root(&self) -> &Path {
        self.blobs.parent().expect("blobs live under a root")
    }

    /// Scratch space on the same file system (emptied at every open).
    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    /// Where the blob named `hash` lives.
    pub fn path_of(&self, hash: &ContentHash) -> PathBuf {
        let h = hash.to_hex();
        self.blobs.join(&h[0..2]).join(&h[2..4]).join(h)
    }

    /// True when a blob file of the right length exists (cheap: no hashing).
    pub fn exists(&self, hash: &ContentHash, len: u64) -> bool {
        fs::metadata(self.path_of(hash)).is_ok_and(|m| m.len() == len)
    }

    /// Write `bytes` under its own hash, atomically and durably. Idempotent:
    /// an existing blob of the right length is left alone.
    pub fn put(&self, bytes: &[u8]) -> io::Result<ContentHash> {
        let hash = ContentHash::of(bytes);
        if self.exists(&hash, bytes.len() as u64) {
            return Ok(hash);
        }
        let final_path = self.path_of(&hash);
        let dir = final_path.parent().expect("blob paths have a parent");
        fs::create_dir_all(dir)?;
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let tmp_path = self
            .tmp
            .join(format!("{}.{}.{n}", hash.to_hex(), std::process::id()));
        let result = (|| {
            let mut f = File::create(&tmp_path)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            drop(f);
            fs::rename(&tmp_path, &final_path)?;
            File::open(dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp_path);
        }
        result?;
        self.written.fetch_add(1, Ordering::Relaxed);
        Ok(hash)
    }

    /// Read and verify a blob. `Ok(None)` when missing or corrupt.
    pub fn get(&self, hash: &ContentHash) -> io::Result<Option<Bytes>> {
        let path = self.path_of(hash);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if ContentHash::of(&bytes) != *hash {
            self.corrupt.fetch_add(1, Ordering::Relaxed);
            tracing::error!(blob = %hash, path = %path.display(), "blob content does not match its hash; treated as missing");
            return Ok(None);
        }
        Ok(Some(Bytes::from(bytes)))
    }

    /// Remove a blob (missing is fine).
    pub fn remove(&self, hash: &ContentHash) -> io::Result<()> {
        match fs::remove_file(self.path_of(hash)) {
            Ok(()) => {
                self.deleted.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_round_trip_is_idempotent_and_verified() {
        let dir = tempfile::tempdir().unwrap();
        let b = BlobDir::open(dir.path()).unwrap();
        let h = b.put(b"hello").unwrap();
        assert_eq!(h, ContentHash::of(b"hello"));
        assert_eq!(b.put(b"hello").unwrap(), h);
        assert_eq!(
            b.written.load(Ordering::Relaxed),
            1,
            "second put wrote nothing"
        );
        assert_eq!(b.get(&h).unwrap().unwrap(), Bytes::from_static(b"hello"));
        let p = b.path_of(&h);
        assert!(p.starts_with(dir.path().join("blobs")));
        // Corrupt it on disk: never served.
        fs::write(&p, b"HELLO").unwrap();
        assert_eq!(b.get(&h).unwrap(), None);
        assert_eq!(b.corrupt.load(Ordering::Relaxed), 1);
        b.remove(&h).unwrap();
        assert_eq!(b.get(&h).unwrap(), None);
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn open_clears_stale_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("tmp")).unwrap();
        fs::write(dir.path().join("tmp").join("half-written"), b"x").unwrap();
        BlobDir::open(dir.path()).unwrap();
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }
}
