//! `pull`: fetch a manifest (choosing a platform from an index), its config and layers.
//!
//! Every blob is staged and verified against its digest before it enters the store, and
//! the image record is written last, so a failed pull leaves no image behind (at most
//! complete, verified blobs and layers that a later pull reuses).

use std::io::Write;

use futures::{StreamExt, TryStreamExt};

use super::auth::find_credentials;
use super::client::Client;
use super::{PullOptions, RegistryError};
use crate::digest::Digest;
use crate::manifest::{
    is_index_type, parse_manifest, Descriptor, ImageManifest, Manifest, Platform,
};
use crate::progress::Progress;
use crate::reference::Reference;
use crate::store::{
    diff_ids, parse_config, ImageRecord, ImageStore, LayerRecord, NewImage, StoreError,
};

/// Layers downloaded at once, as Docker's default `max-concurrent-downloads` is 3.
const CONCURRENT_DOWNLOADS: usize = 3;

/// Pulls `reference` into `store` and returns the image record (`docker pull`).
pub async fn pull(
    store: &ImageStore,
    reference: &Reference,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<ImageRecord, RegistryError> {
    let auth_file = opts.auth_file.clone().unwrap_or_else(|| store.auth_file());
    let creds = find_credentials(
        reference.registry(),
        opts.credentials.as_ref(),
        Some(&auth_file),
    );
    let client = Client::connect(
        reference.registry(),
        reference.repository(),
        "pull",
        creds,
        opts.insecure,
    )
    .await?;
    let shown = reference.familiar_string();
    progress.message(&format!(
        "{}: Pulling from {}",
        reference.tag_or_digest(),
        reference.familiar()
    ));

    let (bytes, content_type, header_digest) = client
        .get_manifest(&reference.tag_or_digest(), &shown)
        .await?;
    let top_digest = verify_manifest(&bytes, reference.digest(), header_digest.as_ref(), &shown)?;
    let platform = opts.platform.clone().unwrap_or_else(Platform::host);
    let bad = |source| RegistryError::Manifest {
        reference: shown.clone(),
        source,
    };
    let (manifest_desc, manifest_bytes, manifest) = match parse_manifest(&bytes).map_err(bad)? {
        Manifest::Image(m) => {
            let mt = manifest_media_type(&m, content_type.as_deref());
            (
                Descriptor::new(&mt, top_digest.clone(), bytes.len() as u64),
                bytes,
                m,
            )
        }
        Manifest::Index(index) => {
            let child = index
                .select(&platform)
                .ok_or_else(|| RegistryError::NoMatchingPlatform {
                    reference: shown.clone(),
                    platform: platform.to_string(),
                    available: index.platforms().join(", "),
                })?
                .clone();
            let (child_bytes, child_ct, child_header) = client
                .get_manifest(&child.digest.to_string(), &shown)
                .await?;
            verify_manifest(
                &child_bytes,
                Some(&child.digest),
                child_header.as_ref(),
                &shown,
            )?;
            match parse_manifest(&child_bytes).map_err(bad)? {
                Manifest::Image(m) => {
                    let mt = manifest_media_type(
                        &m,
                        child_ct.as_deref().or(Some(child.media_type.as_str())),
                    );
                    (
                        Descriptor::new(&mt, child.digest.clone(), child_bytes.len() as u64),
                        child_bytes,
                        m,
                    )
                }
                Manifest::Index(_) => {
                    return Err(bad(crate::manifest::ManifestError::MediaType(
                        child.media_type,
                    )));
                }
            }
        }
    };

    // Config first: it names the diff-ids the layers must unpack to.
    if !store.blobs().has(&manifest.config.digest) {
        download_blob(&client, store, &manifest.config, progress, false).await?;
    }
    let config_bytes = store.blobs().read(&manifest.config.digest)?;
    let config_json = parse_config(&manifest.config.digest, &config_bytes)?;
    let diff_ids = diff_ids(&manifest.config.digest, &config_json)?;
    if diff_ids.len() != manifest.layers.len() {
        return Err(StoreError::Config {
            digest: manifest.config.digest.clone(),
            reason: format!(
                "{} diff-ids for {} layers in manifest {}",
                diff_ids.len(),
                manifest.layers.len(),
                manifest_desc.digest
            ),
        }
        .into());
    }

    let layers: Vec<LayerRecord> =
        futures::stream::iter(manifest.layers.iter().cloned().zip(diff_ids))
            .map(|(layer, diff_id)| fetch_layer(&client, store, layer, diff_id, progress))
            .buffered(CONCURRENT_DOWNLOADS)
            .try_collect()
            .await?;

    store
        .blobs()
        .write(&manifest_bytes[..], Some(&manifest_desc.digest))?;
    let tags = if reference.digest().is_none() {
        vec![reference.clone()]
    } else {
        Vec::new()
    };
    let repo_digest = reference.with_digest(top_digest.clone());
    let new = NewImage {
        manifest: manifest_desc,
        config: manifest.config.clone(),
        config_json,
        layers,
        tags,
        repo_digests: vec![repo_digest],
    };
    let store2 = store.clone();
    let rec = tokio::task::spawn_blocking(move || store2.commit(new))
        .await
        .map_err(|e| RegistryError::Http {
            registry: reference.registry().to_owned(),
            detail: format!("commit task failed: {e}"),
        })??;
    progress.message(&format!("Digest: {top_digest}"));
    progress.message(&format!("Status: Downloaded image for {shown}"));
    Ok(rec)
}

/// The manifest's own media type, else the Content-Type, else OCI.
fn manifest_media_type(m: &ImageManifest, content_type: Option<&str>) -> String {
    m.media_type
        .clone()
        .or_else(|| {
            content_type
                .filter(|c| !is_index_type(c) && c.starts_with("application/"))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| crate::manifest::media_type::OCI_MANIFEST.to_owned())
}

/// Checks a manifest body against the digest asked for and the one the registry announced.
fn verify_manifest(
    bytes: &[u8],
    expected: Option<&Digest>,
    header: Option<&Digest>,
    what: &str,
) -> Result<Digest, RegistryError> {
    let actual = Digest::of(bytes);
    for want in [expected, header].into_iter().flatten() {
        if *want != actual {
            return Err(RegistryError::DigestMismatch {
                what: format!("manifest of {what}"),
                expected: want.clone(),
                actual,
            });
        }
    }
    Ok(actual)
}

/// Downloads (if missing) and unpacks (if missing) one layer.
async fn fetch_layer(
    client: &Client,
    store: &ImageStore,
    layer: Descriptor,
    diff_id: Digest,
    progress: &dyn Progress,
) -> Result<LayerRecord, RegistryError> {
    let id = layer.digest.short().to_owned();
    if store.blobs().has(&layer.digest) && store.has_layer(&diff_id) {
        progress.message(&format!("{id}: Already exists"));
    } else if !store.blobs().has(&layer.digest) {
        download_blob(client, store, &layer, progress, true).await?;
    }
    let store2 = store.clone();
    let rec = tokio::task::spawn_blocking(move || store2.ensure_layer(&layer, &diff_id))
        .await
        .map_err(|e| RegistryError::Http {
            registry: String::new(),
            detail: format!("unpack task failed: {e}"),
        })??;
    progress.message(&format!("{id}: Pull complete"));
    Ok(rec)
}

/// Streams a blob into a staged file, verifying size and digest before it becomes visible.
async fn download_blob(
    client: &Client,
    store: &ImageStore,
    desc: &Descriptor,
    progress: &dyn Progress,
    report: bool,
) -> Result<(), RegistryError> {
    let id = desc.digest.short().to_owned();
    let resp = client.get_blob(&desc.digest).await?;
    let mut writer = store.blobs().writer()?;
    if report {
        progress.started(&id, Some(desc.size));
    }
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| RegistryError::Http {
            registry: client.base().to_string(),
            detail: format!("downloading {}: {}", desc.digest, super::error_chain(&e)),
        })?;
        writer.write_all(&chunk).map_err(|e| StoreError::Read {
            what: format!("blob {}", desc.digest),
            source: e,
        })?;
        if writer.len() > desc.size {
            return Err(RegistryError::Registry {
                what: format!("blob {}", desc.digest),
                status: 200,
                code: "SIZE_INVALID".into(),
                message: format!("more than the {} bytes the manifest announced", desc.size),
            });
        }
        if report {
            progress.advanced(&id, chunk.len() as u64);
        }
    }
    let expected = desc.digest.clone();
    tokio::task::spawn_blocking(move || writer.commit(Some(&expected)))
        .await
        .map_err(|e| RegistryError::Http {
            registry: String::new(),
            detail: format!("blob commit task failed: {e}"),
        })??;
    if report {
        progress.finished(&id);
    }
    Ok(())
}
