//! [`FsStorage`]: the registry's content in a directory tree.
//!
//! ```text
//! ROOT/blobs/sha256/<hex>                                 verified content, immutable
//! ROOT/repositories/<name>/_blobs/<hex>                   link: the repository holds a blob
//! ROOT/repositories/<name>/_manifests/<hex>               link: payload is the media type
//! ROOT/repositories/<name>/_tags/<tag>                    the tagged digest, `sha256:<hex>`
//! ROOT/repositories/<name>/_referrers/<subject>/<hex>     the referrer's descriptor (JSON)
//! ROOT/uploads/<id>/{repo,data}                           uploads in progress
//! ROOT/tmp/                                               staging for atomic replaces
//! ```
//!
//! Crash safety comes from three rules: blob content is fsynced in `uploads/` or `tmp/` and
//! renamed into `blobs/` (same filesystem) only once complete; every small file (link, tag,
//! manifest) is written to `tmp/`, fsynced and renamed over its target, then its directory is
//! fsynced; nothing under `blobs/` is ever written in place. A process killed at any point
//! leaves either the old state or the new one, plus garbage in `uploads/` or `tmp/` that no
//! request can see (`tmp/` is emptied at start; uploads remain resumable).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use skiff_images::Digest;

use super::{BlobRead, ByteReader, LinkKind, Storage, StorageError, UploadInfo};
use crate::name::{RepoName, Tag};

/// Bytes gathered from the request body before each write to an upload file.
const WRITE_CHUNK: usize = 1 << 20;

/// Uploads untouched for this long are removed at start, as Docker's registry purges them.
const UPLOAD_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// The filesystem storage rooted at one directory.
#[derive(Debug, Clone)]
pub struct FsStorage {
    root: PathBuf,
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StorageError {
    let path = path.display().to_string();
    move |source| StorageError::Io { op, path, source }
}

/// Runs blocking filesystem code off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// Reads a file, `None` when it does not exist.
fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, StorageError> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", path)(e)),
    }
}

/// Removes a file; true if it existed.
fn remove_optional(path: &Path) -> Result<bool, StorageError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err("remove", path)(e)),
    }
}

/// Fsyncs a directory so a rename into it survives a crash.
fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync", dir))
}

/// Names in a directory, empty when it does not exist.
fn list_dir(dir: &Path) -> Result<Vec<String>, StorageError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("list", dir)(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err("list", dir))?;
        if let Some(n) = entry.file_name().to_str() {
            names.push(n.to_owned());
        }
    }
    Ok(names)
}

impl FsStorage {
    /// Opens (creating if needed) the storage at `root` and empties its `tmp/`.
    pub fn open(root: &Path) -> Result<Self, StorageError> {
        let s = Self {
            root: root.to_path_buf(),
        };
        let tmp = s.root.join("tmp");
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io_err("clean", &tmp))?;
        }
        for dir in [
            s.root.join("blobs/sha256"),
            s.root.join("repositories"),
            s.root.join("uploads"),
            tmp,
        ] {
            fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        }
        s.purge_uploads(UPLOAD_EXPIRY)?;
        Ok(s)
    }

    /// Removes uploads whose data was last written more than `age` ago.
    fn purge_uploads(&self, age: Duration) -> Result<(), StorageError> {
        let uploads = self.root.join("uploads");
        for id in list_dir(&uploads)? {
            let dir = uploads.join(&id);
            let modified = fs::metadata(dir.join("data"))
                .or_else(|_| fs::metadata(&dir))
                .and_then(|m| m.modified());
            let expired = modified
                .ok()
                .and_then(|m| SystemTime::now().duration_since(m).ok())
                .is_none_or(|elapsed| elapsed > age);
            if expired {
                fs::remove_dir_all(&dir).map_err(io_err("purge", &dir))?;
            }
        }
        Ok(())
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    fn repo_dir(&self, repo: &RepoName) -> PathBuf {
        self.root.join("repositories").join(repo.as_str())
    }

    fn link_path(&self, repo: &RepoName, kind: LinkKind, digest: &Digest) -> PathBuf {
        let dir = match kind {
            LinkKind::Blob => "_blobs",
            LinkKind::Manifest => "_manifests",
        };
        self.repo_dir(repo).join(dir).join(digest.hex())
    }

    fn tag_path(&self, repo: &RepoName, tag: &Tag) -> PathBuf {
        self.repo_dir(repo).join("_tags").join(tag.as_str())
    }

    fn referrers_dir(&self, repo: &RepoName, subject: &Digest) -> PathBuf {
        self.repo_dir(repo).join("_referrers").join(subject.hex())
    }

    fn upload_dir(&self, id: &str) -> PathBuf {
        self.root.join("uploads").join(id)
    }

    /// Replaces `dest` with `data`: staged in `tmp/`, fsynced, renamed, directory fsynced.
    fn write_atomic(&self, dest: &Path, data: &[u8]) -> Result<(), StorageError> {
        let parent = dest.parent().expect("storage paths have a parent");
        fs::create_dir_all(parent).map_err(io_err("create", parent))?;
        let tmp = self
            .root
            .join("tmp")
            .join(hex::encode(rand::random::<[u8; 16]>()));
        let result = (|| {
            let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
            f.write_all(data).map_err(io_err("write", &tmp))?;
            f.sync_all().map_err(io_err("fsync", &tmp))?;
            fs::rename(&tmp, dest).map_err(io_err("rename", dest))?;
            sync_dir(parent)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// True when `dir` is a repository (holds links or tags), not only a parent of one.
    fn is_repo_dir(dir: &Path) -> bool {
        ["_blobs", "_manifests", "_tags"]
            .iter()
            .any(|d| dir.join(d).is_dir())
    }

    fn collect_repos(
        dir: &Path,
        prefix: &str,
        out: &mut Vec<RepoName>,
    ) -> Result<(), StorageError> {
        for name in list_dir(dir)? {
            if name.starts_with('_') {
                continue;
            }
            let path = dir.join(&name);
            if !path.is_dir() {
                continue;
            }
            let full = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            if Self::is_repo_dir(&path) {
                if let Ok(r) = full.parse() {
                    out.push(r);
                }
            }
            Self::collect_repos(&path, &full, out)?;
        }
        Ok(())
    }
}

#[async_trait]
impl Storage for FsStorage {
    async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>, StorageError> {
        let path = self.blob_path(digest);
        match tokio::fs::metadata(&path).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("stat", &path)(e)),
        }
    }

    async fn read_blob(
        &self,
        digest: &Digest,
        range: Option<(u64, u64)>,
    ) -> Result<BlobRead, StorageError> {
        let path = self.blob_path(digest);
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StorageError::BlobNotFound(digest.clone()))
            }
            Err(e) => return Err(io_err("open", &path)(e)),
        };
        let size = file.metadata().await.map_err(io_err("stat", &path))?.len();
        let reader: ByteReader = match range {
            None => Box::pin(file),
            Some((offset, len)) => {
                file.seek(io::SeekFrom::Start(offset))
                    .await
                    .map_err(io_err("seek", &path))?;
                Box::pin(file.take(len))
            }
        };
        Ok(BlobRead { size, reader })
    }

    async fn read_blob_bytes(&self, digest: &Digest) -> Result<Vec<u8>, StorageError> {
        let path = self.blob_path(digest);
        match tokio::fs::read(&path).await {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StorageError::BlobNotFound(digest.clone()))
            }
            Err(e) => Err(io_err("read", &path)(e)),
        }
    }

    async fn put_blob_bytes(&self, digest: &Digest, data: &[u8]) -> Result<(), StorageError> {
        let (s, dest, data) = (self.clone(), self.blob_path(digest), data.to_vec());
        blocking(move || {
            if dest.exists() {
                return Ok(());
            }
            s.write_atomic(&dest, &data)
        })
        .await
    }

    async fn link(
        &self,
        repo: &RepoName,
        kind: LinkKind,
        digest: &Digest,
        payload: &[u8],
    ) -> Result<(), StorageError> {
        let (s, dest, data) = (
            self.clone(),
            self.link_path(repo, kind, digest),
            payload.to_vec(),
        );
        blocking(move || s.write_atomic(&dest, &data)).await
    }

    async fn linked(
        &self,
        repo: &RepoName,
        kind: LinkKind,
        digest: &Digest,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        let path = self.link_path(repo, kind, digest);
        blocking(move || read_optional(&path)).await
    }

    async fn unlink(
        &self,
        repo: &RepoName,
        kind: LinkKind,
        digest: &Digest,
    ) -> Result<bool, StorageError> {
        let path = self.link_path(repo, kind, digest);
        blocking(move || remove_optional(&path)).await
    }

    async fn set_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        digest: &Digest,
    ) -> Result<(), StorageError> {
        let (s, dest, data) = (self.clone(), self.tag_path(repo, tag), digest.to_string());
        blocking(move || s.write_atomic(&dest, data.as_bytes())).await
    }

    async fn tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>, StorageError> {
        let path = self.tag_path(repo, tag);
        let data = blocking(move || read_optional(&path)).await?;
        // A tag file is only ever replaced whole, so garbage means outside interference;
        // treat it as absent rather than failing every request for the tag.
        Ok(data.and_then(|d| String::from_utf8(d).ok()?.trim().parse().ok()))
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool, StorageError> {
        let path = self.tag_path(repo, tag);
        blocking(move || remove_optional(&path)).await
    }

    async fn tags(&self, repo: &RepoName) -> Result<Option<Vec<(Tag, Digest)>>, StorageError> {
        let dir = self.repo_dir(repo);
        blocking(move || {
            if !Self::is_repo_dir(&dir) {
                return Ok(None);
            }
            let tags_dir = dir.join("_tags");
            let mut tags = Vec::new();
            for name in list_dir(&tags_dir)? {
                let (Ok(tag), Some(data)) =
                    (name.parse::<Tag>(), read_optional(&tags_dir.join(&name))?)
                else {
                    continue;
                };
                if let Some(d) = String::from_utf8(data)
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                {
                    tags.push((tag, d));
                }
            }
            Ok(Some(tags))
        })
        .await
    }

    async fn repositories(&self) -> Result<Vec<RepoName>, StorageError> {
        let dir = self.root.join("repositories");
        blocking(move || {
            let mut out = Vec::new();
            Self::collect_repos(&dir, "", &mut out)?;
            Ok(out)
        })
        .await
    }

    async fn add_referrer(
        &self,
        repo: &RepoName,
        subject: &Digest,
        referrer: &Digest,
        descriptor: &[u8],
    ) -> Result<(), StorageError> {
        let (s, dest, data) = (
            self.clone(),
            self.referrers_dir(repo, subject).join(referrer.hex()),
            descriptor.to_vec(),
        );
        blocking(move || s.write_atomic(&dest, &data)).await
    }

    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
    ) -> Result<Vec<Vec<u8>>, StorageError> {
        let dir = self.referrers_dir(repo, subject);
        blocking(move || {
            let mut out = Vec::new();
            for name in list_dir(&dir)? {
                if let Some(data) = read_optional(&dir.join(name))? {
                    out.push(data);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn remove_referrer(
        &self,
        repo: &RepoName,
        subject: &Digest,
        referrer: &Digest,
    ) -> Result<(), StorageError> {
        let path = self.referrers_dir(repo, subject).join(referrer.hex());
        blocking(move || remove_optional(&path).map(drop)).await
    }

    async fn create_upload(&self, repo: &RepoName, id: &str) -> Result<(), StorageError> {
        let dir = self.upload_dir(id);
        let repo = repo.to_string();
        blocking(move || {
            fs::create_dir(&dir).map_err(io_err("create", &dir))?;
            fs::write(dir.join("repo"), repo).map_err(io_err("write", &dir))?;
            File::create(dir.join("data")).map_err(io_err("create", &dir))?;
            Ok(())
        })
        .await
    }

    async fn upload_info(&self, id: &str) -> Result<Option<UploadInfo>, StorageError> {
        let dir = self.upload_dir(id);
        blocking(move || {
            let Some(repo) = read_optional(&dir.join("repo"))? else {
                return Ok(None);
            };
            let Some(repo) = String::from_utf8(repo).ok().and_then(|r| r.parse().ok()) else {
                return Ok(None);
            };
            let data = dir.join("data");
            match fs::metadata(&data) {
                Ok(m) => Ok(Some(UploadInfo {
                    repo,
                    size: m.len(),
                })),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(io_err("stat", &data)(e)),
            }
        })
        .await
    }

    async fn append_upload(
        &self,
        id: &str,
        data: &mut (dyn tokio::io::AsyncRead + Send + Unpin),
    ) -> Result<u64, StorageError> {
        let path = self.upload_dir(id).join("data");
        let mut file = match tokio::fs::OpenOptions::new().append(true).open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StorageError::UploadNotFound(id.to_owned()))
            }
            Err(e) => return Err(io_err("open", &path)(e)),
        };
        // Gather frames into large writes: each write is a trip to the blocking pool.
        let mut buf = vec![0u8; WRITE_CHUNK];
        loop {
            let mut filled = 0;
            while filled < WRITE_CHUNK / 2 {
                let n = data
                    .read(&mut buf[filled..])
                    .await
                    .map_err(StorageError::Body)?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                break;
            }
            file.write_all(&buf[..filled])
                .await
                .map_err(io_err("write", &path))?;
        }
        file.flush().await.map_err(io_err("write", &path))?;
        Ok(file.metadata().await.map_err(io_err("stat", &path))?.len())
    }

    async fn read_upload(&self, id: &str) -> Result<ByteReader, StorageError> {
        let path = self.upload_dir(id).join("data");
        match tokio::fs::File::open(&path).await {
            Ok(f) => Ok(Box::pin(f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StorageError::UploadNotFound(id.to_owned()))
            }
            Err(e) => Err(io_err("open", &path)(e)),
        }
    }

    async fn commit_upload(&self, id: &str, digest: &Digest) -> Result<(), StorageError> {
        let dir = self.upload_dir(id);
        let dest = self.blob_path(digest);
        let id = id.to_owned();
        blocking(move || {
            let data = dir.join("data");
            let file = match File::open(&data) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(StorageError::UploadNotFound(id))
                }
                Err(e) => return Err(io_err("open", &data)(e)),
            };
            if !dest.exists() {
                file.sync_all().map_err(io_err("fsync", &data))?;
                fs::rename(&data, &dest).map_err(io_err("rename", &dest))?;
                sync_dir(dest.parent().expect("blob paths have a parent"))?;
            }
            fs::remove_dir_all(&dir).map_err(io_err("remove", &dir))
        })
        .await
    }

    async fn delete_upload(&self, id: &str) -> Result<bool, StorageError> {
        let dir = self.upload_dir(id);
        blocking(move || match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("remove", &dir)(e)),
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(s: &str) -> RepoName {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn uploads_commit_by_rename_and_tmp_is_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStorage::open(dir.path()).unwrap();
        s.create_upload(&repo("a/b"), "u1").await.unwrap();
        let n = s.append_upload("u1", &mut &b"hello"[..]).await.unwrap();
        assert_eq!(n, 5);
        let d = Digest::of(b"hello");
        assert_eq!(
            s.blob_size(&d).await.unwrap(),
            None,
            "not visible before commit"
        );
        s.commit_upload("u1", &d).await.unwrap();
        assert_eq!(s.blob_size(&d).await.unwrap(), Some(5));
        assert_eq!(s.upload_info("u1").await.unwrap(), None);

        std::fs::write(dir.path().join("tmp/leftover"), b"x").unwrap();
        s.create_upload(&repo("a/b"), "u2").await.unwrap();
        let s = FsStorage::open(dir.path()).unwrap();
        assert!(list_dir(&s.root.join("tmp")).unwrap().is_empty());
        assert!(
            s.upload_info("u2").await.unwrap().is_some(),
            "recent uploads stay"
        );
        s.purge_uploads(Duration::ZERO).unwrap();
        assert!(s.upload_info("u2").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn nested_repositories_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStorage::open(dir.path()).unwrap();
        let d = Digest::of(b"x");
        for r in ["a", "a/b", "c/d/e"] {
            s.link(&repo(r), LinkKind::Blob, &d, b"").await.unwrap();
        }
        let mut names: Vec<String> = s
            .repositories()
            .await
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        names.sort();
        assert_eq!(names, ["a", "a/b", "c/d/e"]);
        assert!(s.tags(&repo("c/d")).await.unwrap().is_none());
        assert_eq!(s.tags(&repo("c/d/e")).await.unwrap(), Some(vec![]));
    }
}
