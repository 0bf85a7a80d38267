//! `save`: export images as docker-archive or OCI archive.

use std::collections::{BTreeMap, HashSet};
use std::io::{self, Read, Write};

use super::{
    ArchiveError, ArchiveFormat, DockerManifestEntry, OciLayout, ANNOTATION_CONTAINERD_NAME,
    ANNOTATION_REF_NAME,
};
use crate::digest::{Digest, HashingReader};
use crate::layer::compression;
use crate::manifest::{media_type, Descriptor, ImageIndex};
use crate::progress::Progress;
use crate::reference::Reference;
use crate::store::{ImageRecord, ImageStore, StoreError};

fn header(size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h
}

fn append<W: Write>(
    b: &mut tar::Builder<W>,
    path: &str,
    size: u64,
    data: impl Read,
) -> Result<(), ArchiveError> {
    b.append_data(&mut header(size, 0o644), path, data)
        .map_err(ArchiveError::Write)
}

fn append_dir<W: Write>(b: &mut tar::Builder<W>, path: &str) -> Result<(), ArchiveError> {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    h.set_mtime(0);
    b.append_data(&mut h, path, io::empty())
        .map_err(ArchiveError::Write)
}

impl ImageStore {
    /// Writes the images `names` (names or IDs) to `writer` as `docker save` would.
    ///
    /// An image named by tag carries that tag in the archive; one named by ID carries none.
    pub fn save<W: Write>(
        &self,
        names: &[&str],
        writer: W,
        format: ArchiveFormat,
        progress: &dyn Progress,
    ) -> Result<(), ArchiveError> {
        // Images in argument order, each once, with the tags asked for.
        let mut images: Vec<(ImageRecord, Vec<Reference>)> = Vec::new();
        for name in names {
            let (rec, matched) = self.resolve_named(name)?;
            let tag = matched.filter(|r| r.digest().is_none());
            match images.iter_mut().find(|(r, _)| r.id == rec.id) {
                Some((_, tags)) => tags.extend(tag),
                None => images.push((rec, tag.into_iter().collect())),
            }
        }
        let mut b = tar::Builder::new(writer);
        match format {
            ArchiveFormat::DockerArchive => self.save_docker(&mut b, &images, progress)?,
            ArchiveFormat::OciArchive => self.save_oci(&mut b, &images, progress)?,
        }
        b.into_inner()
            .map_err(ArchiveError::Write)?
            .flush()
            .map_err(ArchiveError::Write)
    }

    fn save_docker<W: Write>(
        &self,
        b: &mut tar::Builder<W>,
        images: &[(ImageRecord, Vec<Reference>)],
        progress: &dyn Progress,
    ) -> Result<(), ArchiveError> {
        let mut written: HashSet<Digest> = HashSet::new();
        let mut manifest = Vec::new();
        let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for (rec, tags) in images {
            let config_path = format!("{}.json", rec.config.digest.hex());
            if written.insert(rec.config.digest.clone()) {
                let bytes = self.blobs().read(&rec.config.digest)?;
                append(b, &config_path, bytes.len() as u64, &bytes[..])?;
            }
            let mut layer_paths = Vec::new();
            for l in &rec.layers {
                // Docker's layout: one directory per layer holding the uncompressed tar.
                let dir = l.diff_id.hex().to_owned();
                let path = format!("{dir}/layer.tar");
                if written.insert(l.diff_id.clone()) {
                    let id = l.diff_id.short().to_owned();
                    progress.started(&id, Some(l.diff_size));
                    append_dir(b, &format!("{dir}/"))?;
                    let mut blob = self.blobs().open(&l.blob.digest)?;
                    let (head, c) = compression::sniff(&mut blob).map_err(ArchiveError::Read)?;
                    let c = c.unwrap_or(compression::Compression::None);
                    let decoded =
                        compression::decoder(head, blob, c).map_err(ArchiveError::Read)?;
                    let mut hashing = HashingReader::new(decoded.take(l.diff_size));
                    append(b, &path, l.diff_size, &mut hashing)?;
                    let (actual, _) = hashing.finish().map_err(ArchiveError::Read)?;
                    if actual != l.diff_id {
                        return Err(StoreError::DigestMismatch {
                            what: format!("stored layer {}", l.blob.digest.short()),
                            expected: l.diff_id.clone(),
                            actual,
                        }
                        .into());
                    }
                    progress.advanced(&id, l.diff_size);
                    progress.finished(&id);
                }
                layer_paths.push(path);
            }
            let repo_tags: Vec<String> = tags.iter().map(Reference::familiar_string).collect();
            if let Some(top) = rec.layers.last() {
                for t in tags {
                    repositories.entry(t.familiar()).or_default().insert(
                        t.tag().unwrap_or("latest").to_owned(),
                        top.diff_id.hex().to_owned(),
                    );
                }
            }
            manifest.push(DockerManifestEntry {
                config: config_path,
                repo_tags: Some(repo_tags),
                layers: layer_paths,
            });
        }
        let json = serde_json::to_vec(&manifest).unwrap_or_default();
        append(b, "manifest.json", json.len() as u64, &json[..])?;
        if !repositories.is_empty() {
            let json = serde_json::to_vec(&repositories).unwrap_or_default();
            append(b, "repositories", json.len() as u64, &json[..])?;
        }
        Ok(())
    }

    fn save_oci<W: Write>(
        &self,
        b: &mut tar::Builder<W>,
        images: &[(ImageRecord, Vec<Reference>)],
        progress: &dyn Progress,
    ) -> Result<(), ArchiveError> {
        let layout = serde_json::to_vec(&OciLayout {
            image_layout_version: "1.0.0".into(),
        })
        .unwrap_or_default();
        append(b, "oci-layout", layout.len() as u64, &layout[..])?;
        append_dir(b, "blobs/")?;
        append_dir(b, "blobs/sha256/")?;
        let mut written: HashSet<Digest> = HashSet::new();
        let mut index = ImageIndex {
            schema_version: 2,
            media_type: Some(media_type::OCI_INDEX.into()),
            manifests: Vec::new(),
            annotations: BTreeMap::new(),
        };
        for (rec, tags) in images {
            let blobs = std::iter::once(&rec.manifest)
                .chain(std::iter::once(&rec.config))
                .chain(rec.layers.iter().map(|l| &l.blob));
            for d in blobs {
                if written.insert(d.digest.clone()) {
                    let id = d.digest.short().to_owned();
                    progress.started(&id, Some(d.size));
                    let size = self.blobs().size(&d.digest)?;
                    let file = self.blobs().open(&d.digest)?;
                    append(b, &format!("blobs/sha256/{}", d.digest.hex()), size, file)?;
                    progress.advanced(&id, size);
                    progress.finished(&id);
                }
            }
            let base = Descriptor::new(
                &rec.manifest.media_type,
                rec.manifest.digest.clone(),
                rec.manifest.size,
            );
            if tags.is_empty() {
                index.manifests.push(base.clone());
            }
            for t in tags {
                // As containerd and Docker write it: the full name, and the tag as ref.name.
                let mut d = base.clone();
                d.annotations
                    .insert(ANNOTATION_CONTAINERD_NAME.into(), t.to_string());
                d.annotations.insert(
                    ANNOTATION_REF_NAME.into(),
                    t.tag().unwrap_or("latest").to_owned(),
                );
                index.manifests.push(d);
            }
        }
        let json = serde_json::to_vec(&index).unwrap_or_default();
        append(b, "index.json", json.len() as u64, &json[..])
    }
}
