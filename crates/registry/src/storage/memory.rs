//! An in-memory [`Storage`] for unit tests of the protocol core.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use tokio::io::AsyncReadExt;

use skiff_images::Digest;

use super::{BlobRead, ByteReader, LinkKind, Storage, StorageError, UploadInfo};
use crate::name::{RepoName, Tag};

#[derive(Default)]
struct State {
    blobs: HashMap<Digest, Vec<u8>>,
    links: HashMap<(RepoName, LinkKind, Digest), Vec<u8>>,
    tags: BTreeMap<RepoName, BTreeMap<Tag, Digest>>,
    referrers: HashMap<(RepoName, Digest), BTreeMap<Digest, Vec<u8>>>,
    uploads: HashMap<String, (RepoName, Vec<u8>)>,
}

/// Everything in one mutex-guarded map set.
#[derive(Default)]
pub struct MemStorage(Mutex<State>);

impl MemStorage {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.0.lock().unwrap())
    }
}

fn reader(data: Vec<u8>) -> ByteReader {
    Box::pin(std::io::Cursor::new(data))
}

#[async_trait]
impl Storage for MemStorage {
    async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>, StorageError> {
        Ok(self.with(|s| s.blobs.get(digest).map(|b| b.len() as u64)))
    }

    async fn read_blob(
        &self,
        digest: &Digest,
        range: Option<(u64, u64)>,
    ) -> Result<BlobRead, StorageError> {
        let data = self.read_blob_bytes(digest).await?;
        let size = data.len() as u64;
        let part = match range {
            None => data,
            Some((o, l)) => data[o as usize..(o + l) as usize].to_vec(),
        };
        Ok(BlobRead {
            size,
            reader: reader(part),
        })
    }

    async fn read_blob_bytes(&self, digest: &Digest) -> Result<Vec<u8>, StorageError> {
        self.with(|s| s.blobs.get(digest).cloned())
            .ok_or_else(|| StorageError::BlobNotFound(digest.clone()))
    }

    async fn put_blob_bytes(&self, digest: &Digest, data: &[u8]) -> Result<(), StorageError> {
        self.with(|s| s.blobs.insert(digest.clone(), data.to_vec()));
        Ok(())
    }

    async fn link(
        &self,
        repo: &RepoName,
        kind: LinkKind,
        digest: &Digest,
        payload: &[u8],
    ) -> Result<(), StorageError> {
        self.with(|s| {
            s.tags.entry(repo.clone()).or_default();
            s.links
                .insert((repo.clone(), kind, digest.clone()), payload.to_vec())
        });
        Ok(())
    }

    async fn linked(
        &self,
        repo: &RepoName,
        kind: LinkKind,
        digest: &Digest,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.with(|s| s.links.get(&(repo.clone(), kind, digest.clone())).cloned()))
    }

    async fn unlink(
        &self,
        repo: &RepoName,
        kind: LinkKind,
        digest: &Digest,
    ) -> Result<bool, StorageError> {
        Ok(self.with(|s| {
            s.links
                .remove(&(repo.clone(), kind, digest.clone()))
                .is_some()
        }))
    }

    async fn set_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        digest: &Digest,
    ) -> Result<(), StorageError> {
        self.with(|s| {
            s.tags
                .entry(repo.clone())
                .or_default()
                .insert(tag.clone(), digest.clone())
        });
        Ok(())
    }

    async fn tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>, StorageError> {
        Ok(self.with(|s| s.tags.get(repo).and_then(|t| t.get(tag)).cloned()))
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool, StorageError> {
        Ok(self.with(|s| s.tags.get_mut(repo).and_then(|t| t.remove(tag)).is_some()))
    }

    async fn tags(&self, repo: &RepoName) -> Result<Option<Vec<(Tag, Digest)>>, StorageError> {
        Ok(self.with(|s| {
            s.tags
                .get(repo)
                .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        }))
    }

    async fn repositories(&self) -> Result<Vec<RepoName>, StorageError> {
        Ok(self.with(|s| s.tags.keys().cloned().collect()))
    }

    async fn add_referrer(
        &self,
        repo: &RepoName,
        subject: &Digest,
        referrer: &Digest,
        descriptor: &[u8],
    ) -> Result<(), StorageError> {
        self.with(|s| {
            s.referrers
                .entry((repo.clone(), subject.clone()))
                .or_default()
                .insert(referrer.clone(), descriptor.to_vec())
        });
        Ok(())
    }

    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
    ) -> Result<Vec<Vec<u8>>, StorageError> {
        Ok(self.with(|s| {
            s.referrers
                .get(&(repo.clone(), subject.clone()))
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default()
        }))
    }

    async fn remove_referrer(
        &self,
        repo: &RepoName,
        subject: &Digest,
        referrer: &Digest,
    ) -> Result<(), StorageError> {
        self.with(|s| {
            if let Some(m) = s.referrers.get_mut(&(repo.clone(), subject.clone())) {
                m.remove(referrer);
            }
        });
        Ok(())
    }

    async fn create_upload(&self, repo: &RepoName, id: &str) -> Result<(), StorageError> {
        self.with(|s| s.uploads.insert(id.to_owned(), (repo.clone(), Vec::new())));
        Ok(())
    }

    async fn upload_info(&self, id: &str) -> Result<Option<UploadInfo>, StorageError> {
        Ok(self.with(|s| {
            s.uploads.get(id).map(|(repo, data)| UploadInfo {
                repo: repo.clone(),
                size: data.len() as u64,
            })
        }))
    }

    async fn append_upload(
        &self,
        id: &str,
        data: &mut (dyn tokio::io::AsyncRead + Send + Unpin),
    ) -> Result<u64, StorageError> {
        let mut buf = Vec::new();
        let read = data.read_to_end(&mut buf).await;
        self.with(|s| {
            let (_, d) = s
                .uploads
                .get_mut(id)
                .ok_or_else(|| StorageError::UploadNotFound(id.to_owned()))?;
            // Like a file, keep what arrived before a failed read.
            d.extend_from_slice(&buf);
            read.map_err(StorageError::Body)?;
            Ok(d.len() as u64)
        })
    }

    async fn read_upload(&self, id: &str) -> Result<ByteReader, StorageError> {
        self.with(|s| s.uploads.get(id).map(|(_, d)| reader(d.clone())))
            .ok_or_else(|| StorageError::UploadNotFound(id.to_owned()))
    }

    async fn commit_upload(&self, id: &str, digest: &Digest) -> Result<(), StorageError> {
        self.with(|s| {
            let (_, data) = s
                .uploads
                .remove(id)
                .ok_or_else(|| StorageError::UploadNotFound(id.to_owned()))?;
            s.blobs.entry(digest.clone()).or_insert(data);
            Ok(())
        })
    }

    async fn delete_upload(&self, id: &str) -> Result<bool, StorageError> {
        Ok(self.with(|s| s.uploads.remove(id).is_some()))
    }
}
