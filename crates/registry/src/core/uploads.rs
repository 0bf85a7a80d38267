//! Blob uploads: sessions started by POST, fed by PATCH, finished by PUT with the digest
//! the client claims, which is checked before the blob becomes visible.
//!
//! The session keeps a running sha256 of what was appended, so finishing a 1 GB upload
//! does not read it back. After a restart (or a failed append) the hash is unknown and the
//! staged bytes are hashed again from storage at the end.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use skiff_images::digest::Hasher;
use skiff_images::Digest;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use super::{parse_digest, CoreError, Registry};
use crate::name::RepoName;
use crate::storage::{LinkKind, StorageError};

/// Where an upload stands, as the `Location`/`Range` headers report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadStatus {
    /// The session id (`Docker-Upload-UUID`).
    pub id: String,
    /// Bytes received so far.
    pub size: u64,
}

/// An upload session in this process; its mutex serialises requests on one upload.
pub(super) struct Session {
    repo: RepoName,
    state: tokio::sync::Mutex<SessionState>,
}

struct SessionState {
    size: u64,
    /// The hash of the first `size` bytes, when this process saw all of them.
    hasher: Option<Hasher>,
    /// Finished or cancelled: requests that queued behind the last one find it gone.
    closed: bool,
}

/// Hashes what it reads.
struct HashingRead<'a> {
    inner: &'a mut (dyn AsyncRead + Send + Unpin),
    hasher: &'a mut Hasher,
}

impl AsyncRead for HashingRead<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let poll = Pin::new(&mut *this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            this.hasher.update(&buf.filled()[before..]);
        }
        poll
    }
}

/// Upload ids are 32 lowercase hex characters; anything else is unknown (and never
/// reaches the storage as a path).
fn valid_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Registry {
    /// Starts an upload session in `repo` (POST without `digest`).
    pub async fn start_upload(&self, repo: &RepoName) -> Result<UploadStatus, CoreError> {
        let id = hex::encode(rand::random::<[u8; 16]>());
        self.storage.create_upload(repo, &id).await?;
        let session = Arc::new(Session {
            repo: repo.clone(),
            state: tokio::sync::Mutex::new(SessionState {
                size: 0,
                hasher: Some(Hasher::new()),
                closed: false,
            }),
        });
        self.sessions_lock().insert(id.clone(), session);
        Ok(UploadStatus { id, size: 0 })
    }

    fn sessions_lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The session `id` of `repo`, loaded from storage when this process has not seen it.
    async fn session(&self, repo: &RepoName, id: &str) -> Result<Arc<Session>, CoreError> {
        let unknown = || CoreError::UploadUnknown(id.to_owned());
        if !valid_id(id) {
            return Err(unknown());
        }
        let known = self.sessions_lock().get(id).cloned();
        let session = match known {
            Some(s) => s,
            None => {
                let info = self.storage.upload_info(id).await?.ok_or_else(unknown)?;
                let loaded = Arc::new(Session {
                    repo: info.repo,
                    state: tokio::sync::Mutex::new(SessionState {
                        size: info.size,
                        hasher: (info.size == 0).then(Hasher::new),
                        closed: false,
                    }),
                });
                self.sessions_lock()
                    .entry(id.to_owned())
                    .or_insert(loaded)
                    .clone()
            }
        };
        if session.repo != *repo {
            return Err(unknown());
        }
        Ok(session)
    }

    /// Appends `data` to a locked session, keeping size and hash consistent on failure.
    async fn append(
        &self,
        id: &str,
        state: &mut SessionState,
        data: &mut (dyn AsyncRead + Send + Unpin),
    ) -> Result<(), CoreError> {
        let result = match state.hasher.as_mut() {
            Some(hasher) => {
                let mut hashing = HashingRead {
                    inner: data,
                    hasher,
                };
                self.storage.append_upload(id, &mut hashing).await
            }
            None => self.storage.append_upload(id, data).await,
        };
        match result {
            Ok(size) => {
                state.size = size;
                if state.hasher.as_ref().is_some_and(|h| h.len() != size) {
                    state.hasher = None;
                }
                Ok(())
            }
            Err(e) => {
                // Part of the data may have landed: trust the storage's size, rehash later.
                state.hasher = None;
                if let Ok(Some(info)) = self.storage.upload_info(id).await {
                    state.size = info.size;
                }
                Err(match e {
                    StorageError::Body(e) => CoreError::UploadInvalid(e.to_string()),
                    StorageError::UploadNotFound(id) => CoreError::UploadUnknown(id),
                    e => e.into(),
                })
            }
        }
    }

    /// The state of an upload (GET on the session).
    pub async fn upload_status(
        &self,
        repo: &RepoName,
        id: &str,
    ) -> Result<UploadStatus, CoreError> {
        let session = self.session(repo, id).await?;
        let state = session.state.lock().await;
        if state.closed {
            return Err(CoreError::UploadUnknown(id.to_owned()));
        }
        Ok(UploadStatus {
            id: id.to_owned(),
            size: state.size,
        })
    }

    /// Appends a chunk (PATCH); `start` is where the client's `Content-Range` says it begins.
    pub async fn patch_upload(
        &self,
        repo: &RepoName,
        id: &str,
        start: Option<u64>,
        data: &mut (dyn AsyncRead + Send + Unpin),
    ) -> Result<UploadStatus, CoreError> {
        let session = self.session(repo, id).await?;
        let mut state = session.state.lock().await;
        if state.closed {
            return Err(CoreError::UploadUnknown(id.to_owned()));
        }
        if let Some(start) = start {
            if start != state.size {
                return Err(CoreError::ChunkOutOfOrder {
                    start,
                    size: state.size,
                });
            }
        }
        self.append(id, &mut state, data).await?;
        Ok(UploadStatus {
            id: id.to_owned(),
            size: state.size,
        })
    }

    /// Finishes an upload (PUT): appends the last chunk, checks the content against
    /// `digest` and only then makes it the blob. On a mismatch the upload is discarded and
    /// nothing is stored.
    pub async fn finish_upload(
        &self,
        repo: &RepoName,
        id: &str,
        digest: Option<&str>,
        data: Option<&mut (dyn AsyncRead + Send + Unpin)>,
    ) -> Result<Digest, CoreError> {
        let session = self.session(repo, id).await?;
        let expected = match digest {
            Some(d) => parse_digest(d)?,
            None => {
                return Err(CoreError::DigestInvalid(
                    "the digest query parameter is required to finish an upload".into(),
                ))
            }
        };
        let mut state = session.state.lock().await;
        if state.closed {
            return Err(CoreError::UploadUnknown(id.to_owned()));
        }
        if let Some(data) = data {
            self.append(id, &mut state, data).await?;
        }
        let actual = match state.hasher.take() {
            Some(h) => h.finish(),
            None => self.rehash(id).await?,
        };
        state.closed = true;
        self.sessions_lock().remove(id);
        if actual != expected {
            self.storage.delete_upload(id).await?;
            return Err(CoreError::DigestInvalid(format!(
                "uploaded content has digest {actual}, not {expected}: nothing was stored"
            )));
        }
        self.storage.commit_upload(id, &actual).await?;
        self.storage
            .link(repo, LinkKind::Blob, &actual, b"")
            .await?;
        Ok(actual)
    }

    /// Hashes an upload's staged bytes.
    async fn rehash(&self, id: &str) -> Result<Digest, CoreError> {
        let mut reader = self.storage.read_upload(id).await?;
        let mut hasher = Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = reader.read(&mut buf).await.map_err(|source| {
                CoreError::Storage(StorageError::Io {
                    op: "read upload",
                    path: id.to_owned(),
                    source,
                })
            })?;
            if n == 0 {
                return Ok(hasher.finish());
            }
            hasher.update(&buf[..n]);
        }
    }

    /// Discards an upload (DELETE on the session).
    pub async fn cancel_upload(&self, repo: &RepoName, id: &str) -> Result<(), CoreError> {
        let session = self.session(repo, id).await?;
        let mut state = session.state.lock().await;
        if state.closed {
            return Err(CoreError::UploadUnknown(id.to_owned()));
        }
        state.closed = true;
        self.sessions_lock().remove(id);
        self.storage.delete_upload(id).await?;
        Ok(())
    }

    /// A whole blob in one request (POST with `digest`).
    pub async fn upload_monolithic(
        &self,
        repo: &RepoName,
        digest: &str,
        data: &mut (dyn AsyncRead + Send + Unpin),
    ) -> Result<Digest, CoreError> {
        parse_digest(digest)?;
        let status = self.start_upload(repo).await?;
        self.finish_upload(repo, &status.id, Some(digest), Some(data))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemStorage;

    fn registry() -> Registry {
        Registry::new(Arc::new(MemStorage::default()))
    }

    fn repo(s: &str) -> RepoName {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn chunked_upload_in_order_then_verified() {
        let r = registry();
        let a = repo("a");
        let s = r.start_upload(&a).await.unwrap();
        r.patch_upload(&a, &s.id, Some(0), &mut &b"hello "[..])
            .await
            .unwrap();
        let err = r
            .patch_upload(&a, &s.id, Some(3), &mut &b"x"[..])
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            CoreError::ChunkOutOfOrder { start: 3, size: 6 }
        ));
        assert_eq!(err.status(), 416);
        let st = r
            .patch_upload(&a, &s.id, Some(6), &mut &b"world"[..])
            .await
            .unwrap();
        assert_eq!(st.size, 11);
        let want = Digest::of(b"hello world").to_string();
        let d = r.finish_upload(&a, &s.id, Some(&want), None).await.unwrap();
        assert_eq!(r.stat_blob(&a, &d).await.unwrap(), 11);
        // Visible in `a` only.
        assert!(matches!(
            r.stat_blob(&repo("b"), &d).await,
            Err(CoreError::BlobUnknown { .. })
        ));
        assert!(matches!(
            r.upload_status(&a, &s.id).await,
            Err(CoreError::UploadUnknown(_))
        ));
    }

    #[tokio::test]
    async fn digest_mismatch_stores_nothing() {
        let r = registry();
        let a = repo("a");
        let claimed = Digest::of(b"something else");
        let err = r
            .upload_monolithic(&a, &claimed.to_string(), &mut &b"data"[..])
            .await
            .unwrap_err();
        assert_eq!(err.code().as_str(), "DIGEST_INVALID");
        assert_eq!(r.storage.blob_size(&claimed).await.unwrap(), None);
        assert_eq!(
            r.storage.blob_size(&Digest::of(b"data")).await.unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn sessions_survive_a_restart_and_are_rehashed() {
        let storage = Arc::new(MemStorage::default());
        let a = repo("a");
        let first = Registry::new(storage.clone());
        let s = first.start_upload(&a).await.unwrap();
        first
            .patch_upload(&a, &s.id, None, &mut &b"abc"[..])
            .await
            .unwrap();
        drop(first);
        let second = Registry::new(storage);
        assert_eq!(second.upload_status(&a, &s.id).await.unwrap().size, 3);
        assert!(second.upload_status(&repo("b"), &s.id).await.is_err());
        let d = second
            .finish_upload(
                &a,
                &s.id,
                Some(&Digest::of(b"abcd").to_string()),
                Some(&mut &b"d"[..]),
            )
            .await
            .unwrap();
        assert_eq!(d, Digest::of(b"abcd"));
    }

    #[tokio::test]
    async fn mount_links_only_what_the_source_holds() {
        let r = registry();
        let (a, b) = (repo("a"), repo("b"));
        let d = Digest::of(b"x");
        r.upload_monolithic(&a, &d.to_string(), &mut &b"x"[..])
            .await
            .unwrap();
        assert!(!r.mount_blob(&b, &Digest::of(b"y"), &a).await.unwrap());
        assert!(r.mount_blob(&b, &d, &a).await.unwrap());
        assert_eq!(r.stat_blob(&b, &d).await.unwrap(), 1);
        for bad in ["../../etc", "ABC", ""] {
            assert!(r.upload_status(&a, bad).await.is_err());
        }
    }
}
