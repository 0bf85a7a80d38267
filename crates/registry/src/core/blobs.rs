//! Blobs: existence, (ranged) reads, deletion and cross-repository mounts.

use skiff_images::Digest;

use super::{CoreError, Registry};
use crate::name::RepoName;
use crate::storage::{ByteReader, LinkKind};

/// A `Range: bytes=...` request (one range; several are served as the whole blob, as
/// RFC 9110 allows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=first-` or `bytes=first-last` (inclusive).
    From {
        /// The first byte.
        first: u64,
        /// The last byte, inclusive; the end of the blob when `None`.
        last: Option<u64>,
    },
    /// `bytes=-n`: the last `n` bytes.
    Suffix(u64),
}

impl ByteRange {
    /// Parses a `Range` header value; `None` for anything but one byte range, which the
    /// caller then ignores (serving the whole blob).
    pub fn parse(header: &str) -> Option<Self> {
        let spec = header.trim().strip_prefix("bytes=")?;
        if spec.contains(',') {
            return None;
        }
        let (first, last) = spec.split_once('-')?;
        let (first, last) = (first.trim(), last.trim());
        if first.is_empty() {
            return last.parse().ok().map(Self::Suffix);
        }
        let first = first.parse().ok()?;
        let last = if last.is_empty() {
            None
        } else {
            Some(last.parse().ok()?)
        };
        if last.is_some_and(|l| l < first) {
            return None;
        }
        Some(Self::From { first, last })
    }

    /// The `(offset, len)` this range selects in a blob of `size` bytes.
    pub fn resolve(self, size: u64) -> Result<(u64, u64), CoreError> {
        let unsatisfiable = CoreError::RangeNotSatisfiable { size };
        match self {
            Self::From { first, .. } if first >= size => Err(unsatisfiable),
            Self::From { first, last } => {
                let last = last.map_or(size - 1, |l| l.min(size - 1));
                Ok((first, last - first + 1))
            }
            Self::Suffix(0) => Err(unsatisfiable),
            Self::Suffix(n) => {
                let n = n.min(size);
                if n == 0 {
                    return Err(unsatisfiable);
                }
                Ok((size - n, n))
            }
        }
    }
}

/// A blob being served.
pub struct BlobContent {
    /// The blob's digest.
    pub digest: Digest,
    /// Its full size.
    pub size: u64,
    /// `(offset, len)` when a range was served.
    pub range: Option<(u64, u64)>,
    /// The bytes (of the range, or all).
    pub reader: ByteReader,
}

impl Registry {
    /// The size of a blob the repository holds (HEAD).
    pub async fn stat_blob(&self, repo: &RepoName, digest: &Digest) -> Result<u64, CoreError> {
        let unknown = || CoreError::BlobUnknown {
            repo: repo.clone(),
            digest: digest.clone(),
        };
        if self
            .storage
            .linked(repo, LinkKind::Blob, digest)
            .await?
            .is_none()
        {
            return Err(unknown());
        }
        self.storage.blob_size(digest).await?.ok_or_else(unknown)
    }

    /// Opens a blob the repository holds, or a range of it (GET).
    pub async fn get_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        range: Option<ByteRange>,
    ) -> Result<BlobContent, CoreError> {
        let size = self.stat_blob(repo, digest).await?;
        let range = range.map(|r| r.resolve(size)).transpose()?;
        let read = self.storage.read_blob(digest, range).await?;
        Ok(BlobContent {
            digest: digest.clone(),
            size,
            range,
            reader: read.reader,
        })
    }

    /// Removes a blob from the repository; the content stays while others link it.
    pub async fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<(), CoreError> {
        if self.storage.unlink(repo, LinkKind::Blob, digest).await? {
            Ok(())
        } else {
            Err(CoreError::BlobUnknown {
                repo: repo.clone(),
                digest: digest.clone(),
            })
        }
    }

    /// Links a blob of repository `from` into `repo` without uploading it again; false
    /// when `from` does not hold it (the caller then starts an ordinary upload).
    pub async fn mount_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        from: &RepoName,
    ) -> Result<bool, CoreError> {
        match self.stat_blob(from, digest).await {
            Ok(_) => {
                self.storage.link(repo, LinkKind::Blob, digest, b"").await?;
                Ok(true)
            }
            Err(CoreError::BlobUnknown { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let r = |s| ByteRange::parse(s).unwrap().resolve(10);
        assert_eq!(r("bytes=0-4").unwrap(), (0, 5));
        assert_eq!(r("bytes=5-").unwrap(), (5, 5));
        assert_eq!(r("bytes=8-100").unwrap(), (8, 2));
        assert_eq!(r("bytes=-3").unwrap(), (7, 3));
        assert_eq!(r("bytes=-30").unwrap(), (0, 10));
        assert!(matches!(
            r("bytes=10-"),
            Err(CoreError::RangeNotSatisfiable { size: 10 })
        ));
        assert!(r("bytes=-0").is_err());
        for ignored in ["bytes=5-1", "bytes=0-1,3-4", "items=0-1", "bytes=a-"] {
            assert_eq!(ByteRange::parse(ignored), None, "{ignored}");
        }
    }
}
