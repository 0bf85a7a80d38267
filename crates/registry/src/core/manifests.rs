//! Manifests and indexes: push with reference checks, fetch by tag or digest, delete.
//!
//! The registry stores any OCI or Docker schema 2 manifest or index, including artifacts
//! (`artifactType`, non-image configs), so it reads documents loosely here rather than with
//! `skiff_images::parse_manifest`, which accepts only runnable images; the descriptor type
//! and media type names are shared with skiff-images.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use skiff_images::manifest::{is_index_type, is_manifest_type, media_type, Descriptor};
use skiff_images::Digest;

use super::{CoreError, Registry};
use crate::name::{ManifestRef, RepoName};
use crate::storage::LinkKind;

/// Largest manifest accepted; the spec asks registries to take at least 4 MiB.
pub const MAX_MANIFEST_SIZE: usize = 4 << 20;

/// A manifest as stored: its bytes exactly as pushed, digest and media type.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    /// The digest of `bytes`.
    pub digest: Digest,
    /// The media type it was pushed with.
    pub media_type: String,
    /// The manifest.
    pub bytes: Vec<u8>,
}

/// What a pushed manifest turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedManifest {
    /// Its digest.
    pub digest: Digest,
    /// The manifest its `subject` names, if any (the `OCI-Subject` response header).
    pub subject: Option<Digest>,
}

/// The fields of a manifest or index the registry checks; unknown fields are kept in the
/// stored bytes, never re-serialised.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Document {
    schema_version: Option<u32>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    pub(super) subject: Option<Descriptor>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// A referrer's entry in a referrers index.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ReferrerDescriptor {
    pub(super) media_type: String,
    pub(super) digest: Digest,
    pub(super) size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) annotations: BTreeMap<String, String>,
}

fn known_type(mt: &str) -> bool {
    is_manifest_type(mt) || is_index_type(mt)
}

impl Document {
    /// Parses and checks a pushed manifest; returns it with its effective media type.
    pub(super) fn parse(
        bytes: &[u8],
        content_type: Option<&str>,
    ) -> Result<(Self, String), CoreError> {
        let doc: Document =
            serde_json::from_slice(bytes).map_err(|e| CoreError::ManifestInvalid(e.to_string()))?;
        let content_type = content_type
            .map(|c| c.split(';').next().unwrap_or("").trim())
            .filter(|c| !c.is_empty());
        if content_type == Some(media_type::DOCKER_SCHEMA1_SIGNED) || doc.schema_version == Some(1)
        {
            return Err(CoreError::Unsupported(
                "Docker schema 1 manifests are not supported: push schema 2 or OCI".into(),
            ));
        }
        if doc.schema_version != Some(2) {
            return Err(CoreError::ManifestInvalid("schemaVersion must be 2".into()));
        }
        let mt = match (&doc.media_type, content_type) {
            (Some(body), Some(header)) if known_type(header) && body != header => {
                return Err(CoreError::ManifestInvalid(format!(
                    "mediaType {body:?} differs from the Content-Type {header:?}"
                )))
            }
            (Some(body), _) => body.clone(),
            (None, Some(header)) if known_type(header) => header.to_owned(),
            // OCI allows omitting mediaType; the shape tells an index from a manifest.
            (None, _) if doc.manifests.is_some() => media_type::OCI_INDEX.to_owned(),
            (None, _) => media_type::OCI_MANIFEST.to_owned(),
        };
        if !known_type(&mt) {
            return Err(CoreError::Unsupported(format!(
                "manifest media type {mt:?} is not supported: use an OCI or Docker schema 2 manifest or index"
            )));
        }
        if is_index_type(&mt) {
            if doc.manifests.is_none() {
                return Err(CoreError::ManifestInvalid(
                    "an index needs `manifests`".into(),
                ));
            }
        } else if doc.config.is_none() || doc.layers.is_none() {
            return Err(CoreError::ManifestInvalid(
                "an image manifest needs `config` and `layers`".into(),
            ));
        }
        Ok((doc, mt))
    }

    /// The descriptor of this manifest in a referrers index.
    fn referrer(&self, media_type: &str, digest: &Digest, size: usize) -> ReferrerDescriptor {
        // The image spec: artifactType, else the config's media type for image manifests.
        let artifact_type = self
            .artifact_type
            .clone()
            .or_else(|| self.config.as_ref().map(|c| c.media_type.clone()));
        ReferrerDescriptor {
            media_type: media_type.to_owned(),
            digest: digest.clone(),
            size: size as u64,
            artifact_type,
            annotations: self.annotations.clone(),
        }
    }
}

impl Registry {
    /// Resolves a reference to a manifest digest the repository holds, with its media type.
    async fn resolve_manifest(
        &self,
        repo: &RepoName,
        reference: &ManifestRef,
    ) -> Result<(Digest, String), CoreError> {
        let found = match reference {
            ManifestRef::Tag(tag) => self.storage.tag(repo, tag).await?,
            ManifestRef::Digest(d) => Some(d.clone()),
        };
        if let Some(digest) = found {
            if let Some(mt) = self
                .storage
                .linked(repo, LinkKind::Manifest, &digest)
                .await?
            {
                return Ok((digest, String::from_utf8_lossy(&mt).into_owned()));
            }
        }
        Err(self.missing(repo, reference).await)
    }

    /// The error for a manifest that is not there: NAME_UNKNOWN when the whole repository
    /// is missing, as Docker's registry answers.
    async fn missing(&self, repo: &RepoName, reference: &ManifestRef) -> CoreError {
        match self.repo_exists(repo).await {
            Ok(false) => CoreError::NameUnknown(repo.clone()),
            Ok(true) => CoreError::ManifestUnknown {
                repo: repo.clone(),
                reference: reference.to_string(),
            },
            Err(e) => e,
        }
    }

    /// Fetches a manifest by tag or digest (GET/HEAD).
    pub async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &ManifestRef,
    ) -> Result<StoredManifest, CoreError> {
        let (digest, media_type) = self.resolve_manifest(repo, reference).await?;
        let bytes = self.storage.read_blob_bytes(&digest).await?;
        Ok(StoredManifest {
            digest,
            media_type,
            bytes,
        })
    }

    /// Stores a manifest under a tag or its digest (PUT), once every blob and manifest it
    /// references is in the repository.
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &ManifestRef,
        content_type: Option<&str>,
        bytes: &[u8],
    ) -> Result<PushedManifest, CoreError> {
        if bytes.len() > MAX_MANIFEST_SIZE {
            return Err(CoreError::SizeInvalid(format!(
                "manifest of {} bytes exceeds the limit of {MAX_MANIFEST_SIZE}",
                bytes.len()
            )));
        }
        let digest = Digest::of(bytes);
        if let ManifestRef::Digest(d) = reference {
            if *d != digest {
                return Err(CoreError::DigestInvalid(format!(
                    "manifest has digest {digest}, not {d}"
                )));
            }
        }
        let (doc, mt) = Document::parse(bytes, content_type)?;
        self.check_references(repo, &doc).await?;

        self.storage.put_blob_bytes(&digest, bytes).await?;
        self.storage
            .link(repo, LinkKind::Manifest, &digest, mt.as_bytes())
            .await?;
        let subject = doc.subject.as_ref().map(|s| s.digest.clone());
        if let Some(subject) = &subject {
            let entry = serde_json::to_vec(&doc.referrer(&mt, &digest, bytes.len()))
                .expect("descriptors serialise");
            self.storage
                .add_referrer(repo, subject, &digest, &entry)
                .await?;
        }
        if let ManifestRef::Tag(tag) = reference {
            self.storage.set_tag(repo, tag, &digest).await?;
        }
        Ok(PushedManifest { digest, subject })
    }

    /// MANIFEST_BLOB_UNKNOWN unless the config and layers (images) or the child manifests
    /// (indexes) are in the repository. Foreign layers (with `urls`) are not required, and
    /// neither is the subject, which may be pushed after its referrers.
    async fn check_references(&self, repo: &RepoName, doc: &Document) -> Result<(), CoreError> {
        let blobs = doc
            .config
            .iter()
            .chain(doc.layers.iter().flatten())
            .filter(|d| d.urls.is_empty());
        for d in blobs {
            if self
                .storage
                .linked(repo, LinkKind::Blob, &d.digest)
                .await?
                .is_none()
            {
                return Err(CoreError::ManifestBlobUnknown(d.digest.clone()));
            }
        }
        for d in doc.manifests.iter().flatten() {
            if self
                .storage
                .linked(repo, LinkKind::Manifest, &d.digest)
                .await?
                .is_none()
            {
                return Err(CoreError::ManifestBlobUnknown(d.digest.clone()));
            }
        }
        Ok(())
    }

    /// Deletes a manifest (by digest: the revision, its tags and its referrer entry) or a
    /// tag (by tag: only the tag).
    pub async fn delete_manifest(
        &self,
        repo: &RepoName,
        reference: &ManifestRef,
    ) -> Result<(), CoreError> {
        let digest = match reference {
            ManifestRef::Tag(tag) => {
                if self.storage.delete_tag(repo, tag).await? {
                    return Ok(());
                }
                return Err(self.missing(repo, reference).await);
            }
            ManifestRef::Digest(d) => d,
        };
        self.resolve_manifest(repo, reference).await?;
        let bytes = self.storage.read_blob_bytes(digest).await?;
        if let Ok(Document {
            subject: Some(subject),
            ..
        }) = serde_json::from_slice::<Document>(&bytes)
        {
            self.storage
                .remove_referrer(repo, &subject.digest, digest)
                .await?;
        }
        for (tag, target) in self.storage.tags(repo).await?.unwrap_or_default() {
            if target == *digest {
                self.storage.delete_tag(repo, &tag).await?;
            }
        }
        self.storage
            .unlink(repo, LinkKind::Manifest, digest)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::storage::memory::MemStorage;

    fn repo() -> RepoName {
        "app".parse().unwrap()
    }

    async fn blob(r: &Registry, data: &[u8]) -> Digest {
        let d = Digest::of(data);
        r.upload_monolithic(&repo(), &d.to_string(), &mut &data[..])
            .await
            .unwrap()
    }

    fn image(config: &Digest, layer: &Digest) -> Vec<u8> {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{config}","size":2}},"layers":[{{"mediaType":"{}","digest":"{layer}","size":5}}]}}"#,
            media_type::OCI_MANIFEST,
            media_type::OCI_CONFIG,
            media_type::OCI_LAYER_GZIP
        )
        .into_bytes()
    }

    #[tokio::test]
    async fn push_requires_blobs_then_fetch_by_tag_and_digest() {
        let r = Registry::new(Arc::new(MemStorage::default()));
        let config = blob(&r, b"{}").await;
        let layer = Digest::of(b"layer");
        let m = image(&config, &layer);
        let tag = ManifestRef::Tag("v1".parse().unwrap());
        let err = r.put_manifest(&repo(), &tag, None, &m).await.unwrap_err();
        assert!(matches!(err, CoreError::ManifestBlobUnknown(ref d) if *d == layer));
        assert!(matches!(
            r.get_manifest(&repo(), &tag).await,
            Err(CoreError::ManifestUnknown { .. })
        ));
        blob(&r, b"layer").await;
        let pushed = r.put_manifest(&repo(), &tag, None, &m).await.unwrap();
        let got = r.get_manifest(&repo(), &tag).await.unwrap();
        assert_eq!((got.digest, got.bytes), (pushed.digest.clone(), m.clone()));
        assert_eq!(got.media_type, media_type::OCI_MANIFEST);
        let by_digest = ManifestRef::Digest(pushed.digest.clone());
        assert!(r.get_manifest(&repo(), &by_digest).await.is_ok());

        r.delete_manifest(&repo(), &by_digest).await.unwrap();
        assert!(
            r.get_manifest(&repo(), &tag).await.is_err(),
            "tag went with it"
        );
        let other: RepoName = "nothing".parse().unwrap();
        assert!(matches!(
            r.get_manifest(&other, &tag).await,
            Err(CoreError::NameUnknown(_))
        ));
    }

    #[test]
    fn media_type_checks() {
        let d = Digest::of(b"");
        let idx = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","digest":"{d}","size":1}}]}}"#,
            media_type::OCI_MANIFEST
        );
        let (_, mt) = Document::parse(idx.as_bytes(), None).unwrap();
        assert_eq!(mt, media_type::OCI_INDEX);
        let (_, mt) =
            Document::parse(idx.as_bytes(), Some(media_type::DOCKER_MANIFEST_LIST)).unwrap();
        assert_eq!(mt, media_type::DOCKER_MANIFEST_LIST);
        let typed = image(&d, &d);
        assert!(matches!(
            Document::parse(&typed, Some(media_type::DOCKER_MANIFEST)),
            Err(CoreError::ManifestInvalid(_))
        ));
        assert!(matches!(
            Document::parse(br#"{"schemaVersion":1}"#, None),
            Err(CoreError::Unsupported(_))
        ));
        assert!(matches!(
            Document::parse(br#"{"schemaVersion":2,"mediaType":"text/plain"}"#, None),
            Err(CoreError::Unsupported(_))
        ));
        assert!(Document::parse(b"nope", None).is_err());
    }
}
