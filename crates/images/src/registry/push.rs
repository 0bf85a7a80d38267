//! `push`: upload an image's blobs (skipping those the registry has) and its manifest.

use std::io::Read;

use futures::channel::mpsc;
use futures::SinkExt;

use super::auth::find_credentials;
use super::client::Client;
use super::{PushOptions, RegistryError};
use crate::digest::Digest;
use crate::manifest::Descriptor;
use crate::progress::Progress;
use crate::reference::Reference;
use crate::store::{ImageRecord, ImageStore, StoreError};

const CHUNK: usize = 1 << 20;

/// Pushes `image` to `target` and returns the manifest digest the registry stored (`docker push`).
pub async fn push(
    store: &ImageStore,
    image: &ImageRecord,
    target: &Reference,
    opts: &PushOptions,
    progress: &dyn Progress,
) -> Result<Digest, RegistryError> {
    let auth_file = opts.auth_file.clone().unwrap_or_else(|| store.auth_file());
    let creds = find_credentials(
        target.registry(),
        opts.credentials.as_ref(),
        Some(&auth_file),
    );
    let client = Client::connect(
        target.registry(),
        target.repository(),
        "pull,push",
        creds,
        opts.insecure,
    )
    .await?;
    progress.message(&format!(
        "The push refers to repository [{}]",
        target.name()
    ));

    for blob in image
        .layers
        .iter()
        .map(|l| &l.blob)
        .chain(std::iter::once(&image.config))
    {
        let id = blob.digest.short().to_owned();
        if client.blob_exists(&blob.digest).await? {
            progress.message(&format!("{id}: Layer already exists"));
            continue;
        }
        upload_blob(&client, store, blob, progress).await?;
        progress.message(&format!("{id}: Pushed"));
    }

    let manifest = store.blobs().read(&image.manifest.digest)?;
    let digest = Digest::of(&manifest);
    let shown = target.familiar_string();
    let stored = client
        .put_manifest(
            &target.tag_or_digest(),
            &image.manifest.media_type,
            &manifest,
            &shown,
        )
        .await?;
    if let Some(stored) = stored {
        if stored != digest {
            return Err(RegistryError::DigestMismatch {
                what: format!("manifest pushed to {shown}"),
                expected: digest,
                actual: stored,
            });
        }
    }
    let store2 = store.clone();
    let (id, repo_digest) = (image.id.clone(), target.with_digest(digest.clone()));
    tokio::task::spawn_blocking(move || store2.add_repo_digest(&id, repo_digest))
        .await
        .map_err(|e| RegistryError::Http {
            registry: target.registry().to_owned(),
            detail: format!("record task failed: {e}"),
        })??;
    progress.message(&format!(
        "{}: digest: {digest} size: {}",
        target.tag_or_digest(),
        manifest.len()
    ));
    Ok(digest)
}

/// POST for an upload URL, then one monolithic PUT streaming the blob file.
async fn upload_blob(
    client: &Client,
    store: &ImageStore,
    blob: &Descriptor,
    progress: &dyn Progress,
) -> Result<(), RegistryError> {
    let id = blob.digest.short().to_owned();
    let size = store.blobs().size(&blob.digest)?;
    let mut file = store.blobs().open(&blob.digest)?;
    let url = client.start_upload(&blob.digest).await?;
    progress.started(&id, Some(size));
    // The body must be 'static; feed it from here so progress (borrowed) sees every chunk.
    let (mut tx, rx) = mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(rx);
    let feed = async move {
        loop {
            let mut buf = vec![0u8; CHUNK];
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    break;
                }
            };
            buf.truncate(n);
            if tx.send(Ok(buf)).await.is_err() {
                break;
            }
            progress.advanced(&id, n as u64);
        }
    };
    let (res, ()) = futures::join!(client.finish_upload(url, &blob.digest, size, body), feed);
    res?;
    progress.finished(blob.digest.short());
    Ok(())
}

impl ImageStore {
    /// Records `name@digest` as a repo digest of the image (after a push, as Docker does).
    pub(crate) fn add_repo_digest(
        &self,
        id: &crate::digest::ImageId,
        name: Reference,
    ) -> Result<(), StoreError> {
        self.update_and_collect(|db| {
            if let Some(rec) = db.images.get_mut(&id.to_string()) {
                if !rec.repo_digests.contains(&name) {
                    rec.repo_digests.push(name);
                }
            }
            Ok(((), Vec::new()))
        })
        .map(|_| ())
    }
}
