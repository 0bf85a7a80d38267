//! The content-addressed blob directory `blobs/sha256/<hex>`.
//!
//! A blob becomes visible only by `rename(2)` of a fully written, fsynced and verified
//! temp file, so a crash or kill at any point leaves either the whole blob or nothing.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::{fsync_dir, tmp_name, StoreError};
use crate::digest::{Digest, Hasher};

/// Blob storage under `<root>/blobs/sha256`, staging in `<root>/tmp`.
#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
    tmp: PathBuf,
}

impl BlobStore {
    pub(crate) fn new(root: &Path) -> Self {
        Self {
            dir: root.join("blobs/sha256"),
            tmp: root.join("tmp"),
        }
    }

    /// Path of the blob with `digest` (which may not exist).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.hex())
    }

    /// True when the blob is present.
    pub fn has(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// Size of a present blob.
    pub fn size(&self, digest: &Digest) -> Result<u64, StoreError> {
        let p = self.path(digest);
        fs::metadata(&p)
            .map(|m| m.len())
            .map_err(|e| missing_or_io(digest, &p, e))
    }

    /// Reads a whole blob into memory (manifests and configs).
    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let p = self.path(digest);
        fs::read(&p).map_err(|e| missing_or_io(digest, &p, e))
    }

    /// Opens a blob for streaming.
    pub fn open(&self, digest: &Digest) -> Result<File, StoreError> {
        let p = self.path(digest);
        File::open(&p).map_err(|e| missing_or_io(digest, &p, e))
    }

    /// Stores `data` and returns its digest.
    pub fn write_bytes(&self, data: &[u8]) -> Result<Digest, StoreError> {
        let digest = Digest::of(data);
        self.write(data, Some(&digest)).map(|(d, _)| d)
    }

    /// Streams `reader` into a blob, verifying `expected` when given.
    ///
    /// On mismatch or error the temp file is removed and nothing becomes visible.
    pub fn write<R: Read>(
        &self,
        mut reader: R,
        expected: Option<&Digest>,
    ) -> Result<(Digest, u64), StoreError> {
        let mut w = self.writer()?;
        io::copy(&mut reader, &mut w).map_err(|e| StoreError::Read {
            what: "blob".into(),
            source: e,
        })?;
        w.commit(expected)
    }

    /// A writer staging a new blob in `tmp/`; [`BlobWriter::commit`] makes it visible.
    pub fn writer(&self) -> Result<BlobWriter, StoreError> {
        fs::create_dir_all(&self.tmp).map_err(|e| StoreError::io("creating", &self.tmp, e))?;
        let tmp = tempfile::Builder::new()
            .prefix(&tmp_name("blob"))
            .tempfile_in(&self.tmp)
            .map_err(|e| StoreError::io("creating temp file in", &self.tmp, e))?;
        Ok(BlobWriter {
            out: io::BufWriter::new(tmp),
            hasher: Hasher::new(),
            store: self.clone(),
        })
    }

    /// Renames `file` (in the store's filesystem, content already hashed to `digest`) into place.
    pub(crate) fn adopt(&self, file: &Path, digest: &Digest) -> Result<(), StoreError> {
        if self.has(digest) {
            return Ok(());
        }
        File::open(file)
            .and_then(|f| f.sync_all())
            .map_err(|e| StoreError::io("syncing", file, e))?;
        let dest = self.path(digest);
        fs::rename(file, &dest).map_err(|e| StoreError::io("renaming blob to", &dest, e))?;
        fsync_dir(&self.dir)
    }

    /// Deletes a blob if present.
    pub(crate) fn remove(&self, digest: &Digest) -> Result<(), StoreError> {
        let p = self.path(digest);
        match fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(StoreError::io("removing", &p, e)),
            _ => Ok(()),
        }
    }

    /// Total bytes of all blobs.
    pub fn total_size(&self) -> u64 {
        fs::read_dir(&self.dir)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }
}

/// A blob being written: hashed as it goes, unlinked if dropped without [`Self::commit`].
pub struct BlobWriter {
    out: io::BufWriter<tempfile::NamedTempFile>,
    hasher: Hasher,
    store: BlobStore,
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.hasher.len()
    }

    /// True when nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.hasher.is_empty()
    }

    /// Verifies the content against `expected`, fsyncs and renames it into place.
    pub fn commit(self, expected: Option<&Digest>) -> Result<(Digest, u64), StoreError> {
        let size = self.hasher.len();
        let digest = self.hasher.finish();
        let tmp = self
            .out
            .into_inner()
            .map_err(|e| StoreError::io("writing", &self.store.tmp, e.into_error()))?;
        if let Some(expected) = expected {
            if *expected != digest {
                // Dropping `tmp` unlinks the temp file.
                return Err(StoreError::DigestMismatch {
                    what: "blob".into(),
                    expected: expected.clone(),
                    actual: digest,
                });
            }
        }
        let dir = &self.store.dir;
        let dest = self.store.path(&digest);
        if dest.is_file() {
            return Ok((digest, size));
        }
        fs::create_dir_all(dir).map_err(|e| StoreError::io("creating", dir, e))?;
        tmp.as_file()
            .sync_all()
            .map_err(|e| StoreError::io("syncing", tmp.path(), e))?;
        tmp.persist(&dest)
            .map_err(|e| StoreError::io("renaming blob to", &dest, e.error))?;
        fsync_dir(dir)?;
        Ok((digest, size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

fn missing_or_io(digest: &Digest, path: &Path, e: io::Error) -> StoreError {
    if e.kind() == io::ErrorKind::NotFound {
        StoreError::MissingBlob(digest.clone())
    } else {
        StoreError::io("reading", path, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_mismatch_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let blobs = BlobStore::new(tmp.path());
        let wrong = Digest::of(b"something else");
        let err = blobs.write(&b"payload"[..], Some(&wrong)).unwrap_err();
        assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
        assert!(err.to_string().contains(&wrong.to_string()));
        assert!(!blobs.has(&Digest::of(b"payload")));
        assert!(!blobs.has(&wrong));
        assert_eq!(fs::read_dir(tmp.path().join("tmp")).unwrap().count(), 0);
        assert!(
            !tmp.path().join("blobs/sha256").exists()
                || fs::read_dir(tmp.path().join("blobs/sha256"))
                    .unwrap()
                    .count()
                    == 0
        );

        let (d, n) = blobs
            .write(&b"payload"[..], Some(&Digest::of(b"payload")))
            .unwrap();
        assert_eq!((d.clone(), n), (Digest::of(b"payload"), 7));
        assert_eq!(blobs.read(&d).unwrap(), b"payload");
        assert_eq!(fs::read_dir(tmp.path().join("tmp")).unwrap().count(), 0);
    }
}
