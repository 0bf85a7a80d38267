//! `load`: import docker-archive and OCI archive tars, staged then verified into the store.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read};
use std::path::PathBuf;

use super::{ArchiveError, DockerManifestEntry, ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME};
use crate::digest::{Digest, HashingWriter};
use crate::layer::compression;
use crate::manifest::{
    media_type, parse_manifest, Descriptor, ImageIndex, ImageManifest, Manifest, Platform,
};
use crate::progress::Progress;
use crate::reference::Reference;
use crate::store::{diff_ids, parse_config, ImageStore, LoadedImage, NewImage, StagingDir};

/// A regular file of the archive, staged on disk with its digest.
struct Staged {
    path: PathBuf,
    digest: Digest,
    size: u64,
}

/// The archive's files by normalised path, with links resolved on lookup.
struct ArchiveFiles {
    files: HashMap<String, Staged>,
    links: HashMap<String, String>,
    _dir: StagingDir,
}

/// Normalises an archive path; `..` may not climb above the archive root.
fn normalise(base: &[&str], path: &str) -> Option<String> {
    let mut out: Vec<&str> = if path.starts_with('/') {
        Vec::new()
    } else {
        base.to_vec()
    };
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            c => out.push(c),
        }
    }
    Some(out.join("/"))
}

impl ArchiveFiles {
    fn read<R: Read>(reader: R, store: &ImageStore) -> Result<Self, ArchiveError> {
        let dir = StagingDir::create(&store.root().join("tmp"), "load")?;
        let mut files = HashMap::new();
        let mut links = HashMap::new();
        let mut archive = tar::Archive::new(reader);
        for (i, entry) in archive.entries().map_err(ArchiveError::Read)?.enumerate() {
            let mut entry = entry.map_err(ArchiveError::Read)?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            if raw.split('/').any(|c| c == "..") {
                return Err(ArchiveError::UnsafePath(raw));
            }
            let name = normalise(&[], &raw).ok_or_else(|| ArchiveError::UnsafePath(raw.clone()))?;
            match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let path = dir.path.join(i.to_string());
                    let file = File::create(&path).map_err(ArchiveError::Write)?;
                    let mut w = HashingWriter::new(BufWriter::new(file));
                    io::copy(&mut entry, &mut w).map_err(ArchiveError::Read)?;
                    let (buf, digest, size) = w.finish();
                    buf.into_inner()
                        .map_err(|e| ArchiveError::Write(e.into_error()))?;
                    files.insert(name, Staged { path, digest, size });
                }
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    let target = entry
                        .link_name_bytes()
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default();
                    // Docker's legacy format symlinks duplicate layers: `<id>/layer.tar -> ../<other>/layer.tar`.
                    let base: Vec<&str> = if entry.header().entry_type() == tar::EntryType::Symlink
                    {
                        let mut b: Vec<&str> = name.split('/').collect();
                        b.pop();
                        b
                    } else {
                        Vec::new()
                    };
                    let resolved = normalise(&base, &target)
                        .ok_or_else(|| ArchiveError::UnsafePath(raw.clone()))?;
                    links.insert(name, resolved);
                }
                _ => {}
            }
        }
        Ok(Self {
            files,
            links,
            _dir: dir,
        })
    }

    fn get(&self, path: &str) -> Result<&Staged, ArchiveError> {
        let mut p =
            normalise(&[], path).ok_or_else(|| ArchiveError::UnsafePath(path.to_owned()))?;
        for _ in 0..16 {
            if let Some(f) = self.files.get(&p) {
                return Ok(f);
            }
            match self.links.get(&p) {
                Some(next) => p = next.clone(),
                None => break,
            }
        }
        Err(ArchiveError::Missing(path.to_owned()))
    }

    /// Parses a small JSON file of the archive (`manifest.json`, `index.json`).
    fn json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, ArchiveError> {
        let bytes = fs::read(&self.get(path)?.path).map_err(ArchiveError::Read)?;
        serde_json::from_slice(&bytes).map_err(|e| ArchiveError::Invalid {
            file: path.to_owned(),
            reason: e.to_string(),
        })
    }

    /// An OCI layout blob, checked against the digest in its name.
    fn blob(&self, digest: &Digest) -> Result<&Staged, ArchiveError> {
        let path = format!("blobs/sha256/{}", digest.hex());
        let f = self.get(&path)?;
        if f.digest != *digest {
            return Err(ArchiveError::DigestMismatch {
                path,
                actual: f.digest.clone(),
            });
        }
        Ok(f)
    }
}

impl ImageStore {
    /// Imports a docker-archive or OCI archive (optionally gzip/zstd compressed), as `docker load`.
    pub fn load<R: Read>(
        &self,
        reader: R,
        progress: &dyn Progress,
    ) -> Result<Vec<LoadedImage>, ArchiveError> {
        let mut reader = reader;
        let (head, c) = compression::sniff(&mut reader).map_err(ArchiveError::Read)?;
        let c = c.map_err(|name| ArchiveError::Invalid {
            file: "archive".into(),
            reason: format!("{name} compression is not supported"),
        })?;
        let reader = compression::decoder(head, reader, c).map_err(ArchiveError::Read)?;
        let _importing = self.import_guard()?;
        let files = ArchiveFiles::read(reader, self)?;
        if files.get("manifest.json").is_ok() {
            self.load_docker(&files, progress)
        } else if files.get("index.json").is_ok() {
            self.load_oci(&files, progress)
        } else {
            Err(ArchiveError::UnknownFormat)
        }
    }

    /// Moves a staged archive file into the blob store (same filesystem: a rename).
    ///
    /// Its digest was computed while staging, so the content is verified. Later calls for
    /// the same content find the blob present and do nothing.
    fn adopt(&self, f: &Staged) -> Result<(), ArchiveError> {
        Ok(self.blobs().adopt(&f.path, &f.digest)?)
    }

    /// Content of a staged file, which may already have been moved into the blob store.
    fn read_staged(&self, f: &Staged) -> Result<Vec<u8>, ArchiveError> {
        if self.blobs().has(&f.digest) {
            Ok(self.blobs().read(&f.digest)?)
        } else {
            fs::read(&f.path).map_err(ArchiveError::Read)
        }
    }

    fn load_docker(
        &self,
        files: &ArchiveFiles,
        progress: &dyn Progress,
    ) -> Result<Vec<LoadedImage>, ArchiveError> {
        let entries: Vec<DockerManifestEntry> = files.json("manifest.json")?;
        let mut loaded = Vec::new();
        for entry in entries {
            let config_file = files.get(&entry.config)?;
            let config_bytes = self.read_staged(config_file)?;
            let config_digest = config_file.digest.clone();
            let config_json = parse_config(&config_digest, &config_bytes)?;
            let diff_ids = diff_ids(&config_digest, &config_json)?;
            if diff_ids.len() != entry.layers.len() {
                return Err(ArchiveError::Invalid {
                    file: "manifest.json".into(),
                    reason: format!(
                        "image {} lists {} layers but its config has {} diff-ids",
                        entry.config,
                        entry.layers.len(),
                        diff_ids.len()
                    ),
                });
            }
            self.adopt(config_file)?;
            let mut layers = Vec::new();
            for (path, diff_id) in entry.layers.iter().zip(&diff_ids) {
                let f = files.get(path)?;
                let id = f.digest.short().to_owned();
                progress.started(&id, Some(f.size));
                self.adopt(f)?;
                let mut head = Vec::new();
                self.blobs()
                    .open(&f.digest)?
                    .take(6)
                    .read_to_end(&mut head)
                    .map_err(ArchiveError::Read)?;
                let mt = compression::detect(&head)
                    .unwrap_or(compression::Compression::None)
                    .oci_media_type();
                let desc = Descriptor::new(mt, f.digest.clone(), f.size);
                layers.push(self.ensure_layer(&desc, diff_id)?);
                progress.advanced(&id, f.size);
                progress.finished(&id);
            }
            let manifest = ImageManifest {
                schema_version: 2,
                media_type: Some(media_type::OCI_MANIFEST.into()),
                config: Descriptor::new(
                    media_type::OCI_CONFIG,
                    config_digest.clone(),
                    config_file.size,
                ),
                layers: layers.iter().map(|l| l.blob.clone()).collect(),
                annotations: Default::default(),
            };
            let manifest_bytes = serde_json::to_vec(&manifest).unwrap_or_default();
            let manifest_digest = self.blobs().write_bytes(&manifest_bytes)?;
            let tags = entry
                .repo_tags
                .unwrap_or_default()
                .iter()
                .map(|t| Reference::parse(t).map_err(crate::store::StoreError::from))
                .collect::<Result<Vec<_>, _>>()?;
            let rec = self.commit(NewImage {
                manifest: Descriptor::new(
                    media_type::OCI_MANIFEST,
                    manifest_digest,
                    manifest_bytes.len() as u64,
                ),
                config: manifest.config.clone(),
                config_json,
                layers,
                tags: tags.clone(),
                repo_digests: Vec::new(),
            })?;
            push_loaded(&mut loaded, &rec.id, tags, progress);
        }
        Ok(loaded)
    }

    fn load_oci(
        &self,
        files: &ArchiveFiles,
        progress: &dyn Progress,
    ) -> Result<Vec<LoadedImage>, ArchiveError> {
        let index: ImageIndex = files.json("index.json")?;
        let mut loaded = Vec::new();
        for desc in &index.manifests {
            let name = desc
                .annotations
                .get(ANNOTATION_CONTAINERD_NAME)
                .or_else(|| desc.annotations.get(ANNOTATION_REF_NAME))
                .and_then(|n| Reference::parse(n).ok());
            let bytes = self.read_staged(files.blob(&desc.digest)?)?;
            let invalid = |e: crate::manifest::ManifestError| ArchiveError::Invalid {
                file: format!("blobs/sha256/{}", desc.digest.hex()),
                reason: e.to_string(),
            };
            let (mdesc, manifest) = match parse_manifest(&bytes).map_err(invalid)? {
                Manifest::Image(m) => (desc.clone(), m),
                Manifest::Index(idx) => {
                    let host = Platform::host();
                    let child = idx.select(&host).ok_or_else(|| ArchiveError::Invalid {
                        file: format!("blobs/sha256/{}", desc.digest.hex()),
                        reason: format!(
                            "no manifest for {host} (has: {})",
                            idx.platforms().join(", ")
                        ),
                    })?;
                    let child_bytes = self.read_staged(files.blob(&child.digest)?)?;
                    match parse_manifest(&child_bytes).map_err(invalid)? {
                        Manifest::Image(m) => (child.clone(), m),
                        Manifest::Index(_) => {
                            return Err(invalid(crate::manifest::ManifestError::MediaType(
                                child.media_type.clone(),
                            )))
                        }
                    }
                }
            };
            let manifest_file = files.blob(&mdesc.digest)?;
            let config_file = files.blob(&manifest.config.digest)?;
            let config_bytes = self.read_staged(config_file)?;
            let config_json = parse_config(&manifest.config.digest, &config_bytes)?;
            let diff_ids = diff_ids(&manifest.config.digest, &config_json)?;
            if diff_ids.len() != manifest.layers.len() {
                return Err(ArchiveError::Invalid {
                    file: format!("blobs/sha256/{}", mdesc.digest.hex()),
                    reason: format!(
                        "{} layers but the config has {} diff-ids",
                        manifest.layers.len(),
                        diff_ids.len()
                    ),
                });
            }
            self.adopt(manifest_file)?;
            self.adopt(config_file)?;
            let mut layers = Vec::new();
            for (l, diff_id) in manifest.layers.iter().zip(&diff_ids) {
                let f = files.blob(&l.digest)?;
                let id = l.digest.short().to_owned();
                progress.started(&id, Some(f.size));
                self.adopt(f)?;
                layers.push(self.ensure_layer(l, diff_id)?);
                progress.advanced(&id, f.size);
                progress.finished(&id);
            }
            let tags: Vec<Reference> = name.into_iter().filter(|r| r.digest().is_none()).collect();
            let manifest_mt = manifest
                .media_type
                .clone()
                .unwrap_or_else(|| mdesc.media_type.clone());
            let rec = self.commit(NewImage {
                manifest: Descriptor::new(&manifest_mt, mdesc.digest.clone(), manifest_file.size),
                config: manifest.config.clone(),
                config_json,
                layers,
                tags: tags.clone(),
                repo_digests: Vec::new(),
            })?;
            push_loaded(&mut loaded, &rec.id, tags, progress);
        }
        Ok(loaded)
    }
}

fn push_loaded(
    loaded: &mut Vec<LoadedImage>,
    id: &crate::digest::ImageId,
    tags: Vec<Reference>,
    progress: &dyn Progress,
) {
    let before = loaded.len();
    if tags.is_empty() {
        loaded.push(LoadedImage {
            id: id.clone(),
            reference: None,
        });
    }
    for t in tags {
        loaded.push(LoadedImage {
            id: id.clone(),
            reference: Some(t),
        });
    }
    for l in &loaded[before..] {
        progress.message(&l.to_string());
    }
}
