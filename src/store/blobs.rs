//! Content-addressed blob files: `<root>/blobs/ab/cd/<hash>`.
//!
//! Writes are atomic and durable: temp file in `<root>/tmp`, write, fsync,
//! rename into place, fsync of the directory. A crash leaves either the whole
//! blob or nothing visible (stale temp files are removed at open). Reads are
//! verified against the name; a mismatch is counted and reported as missing.

use std::cell::RefCell;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::model::ContentHash;

/// Largest read buffer a thread keeps between [`BlobDir::with`] calls: the
/// stored rungs renders up to 512 px read (an uncompressed 512 px rung is
/// 768 KiB, 1 MiB with alpha, plus its header and salt); a larger blob's
/// buffer is freed after its read.
pub const KEEP_READ_BUFFER: usize = 1 << 20 | 1 << 16;

thread_local! {
    /// This thread's read buffer ([`BlobDir::with`]).
    static READ: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

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
        let mut bytes = Vec::new();
        Ok(self
            .read_into(hash, &mut bytes)?
            .then(|| Bytes::from(bytes)))
    }

    /// [`BlobDir::get`] lent to `f` from a buffer this thread keeps between
    /// calls (up to [`KEEP_READ_BUFFER`]): a cold render reads its rung
    /// without a fresh allocation, whose pages the allocator (page decay 0)
    /// would otherwise fault in on every read. `Ok(None)` when missing or
    /// corrupt (`f` not called).
    pub fn with<R>(&self, hash: &ContentHash, f: impl FnOnce(&[u8]) -> R) -> io::Result<Option<R>> {
        READ.with(|cell| {
            let mut buf = cell.take();
            let found = self.read_into(hash, &mut buf);
            let out = match found {
                Ok(true) => Ok(Some(f(&buf))),
                Ok(false) => Ok(None),
                Err(e) => Err(e),
            };
            if buf.capacity() <= KEEP_READ_BUFFER {
                buf.clear();
                cell.replace(buf);
            }
            out
        })
    }

    /// Read `hash`'s file into `buf` (cleared first) and verify it:
    /// `Ok(false)` when missing or corrupt.
    fn read_into(&self, hash: &ContentHash, buf: &mut Vec<u8>) -> io::Result<bool> {
        buf.clear();
        let path = self.path_of(hash);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let len = file.metadata().map_or(0, |m| m.len());
        buf.reserve(usize::try_from(len).unwrap_or(0));
        file.read_to_end(buf)?;
        if ContentHash::of(buf) != *hash {
            self.corrupt.fetch_add(1, Ordering::Relaxed);
            tracing::error!(blob = %hash, path = %path.display(), "blob content does not match its hash; treated as missing");
            return Ok(false);
        }
        Ok(true)
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
    fn lent_reads_are_verified_and_keep_only_a_small_buffer() {
        let kept_capacity = || READ.with(|c| c.borrow().capacity());
        let dir = tempfile::tempdir().unwrap();
        let b = BlobDir::open(dir.path()).unwrap();
        // Sizes around the kept buffer's limit, larger ones first: a read
        // never sees an earlier blob's bytes.
        let big = vec![7u8; KEEP_READ_BUFFER + 1];
        let cases: [&[u8]; 4] = [&big, &[1u8; 300_000], b"hello", b""];
        for bytes in cases {
            let h = b.put(bytes).unwrap();
            let lent = b.with(&h, |read| read.to_vec()).unwrap();
            assert_eq!(lent.as_deref(), Some(bytes), "{} bytes", bytes.len());
            assert_eq!(lent.map(Bytes::from), b.get(&h).unwrap());
            let kept = kept_capacity();
            assert!(kept <= KEEP_READ_BUFFER, "{kept} bytes kept");
            if bytes.len() <= KEEP_READ_BUFFER {
                assert!(kept >= bytes.len(), "the buffer is kept for the next read");
            }
        }
        let kept = |b: &BlobDir, h| b.with(h, |_| ()).unwrap();
        let h = b.put(b"world").unwrap();
        fs::write(b.path_of(&h), b"WORLD").unwrap();
        assert_eq!(kept(&b, &h), None, "a corrupt blob is not lent");
        assert_eq!(b.corrupt.load(Ordering::Relaxed), 1);
        b.remove(&h).unwrap();
        assert_eq!(kept(&b, &h), None, "a missing blob is not lent");
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
