//! Untagging, removal and pruning with Docker's `rmi` semantics, and garbage collection.

use std::collections::HashSet;

use super::metadata::Db;
use super::records::{ImageRecord, PruneReport, RemoveEvent};
use super::{find, ImageStore, Matched, StoreError};
use crate::digest::{Digest, ImageId};

impl ImageStore {
    /// Removes a name, or the image when it was its last name (`docker rmi`).
    ///
    /// - by tag or `name@digest`: only that name goes; the image is deleted once it has no
    ///   tag left (its remaining digest names go with it);
    /// - by ID: all names go and the image is deleted, but an image tagged in several
    ///   repositories needs `force`, as in Docker.
    ///
    /// Layers and blobs no other image uses are deleted too. The caller checks first that
    /// no container uses the image: its layers would vanish under the overlay mount.
    pub fn remove(&self, name_or_id: &str, force: bool) -> Result<Vec<RemoveEvent>, StoreError> {
        let (mut events, gc, _) = self.update_and_collect(|db| {
            let (rec, matched) = find(db, name_or_id)?;
            let key = rec.id.to_string();
            let mut events = Vec::new();
            let rec = db
                .images
                .get_mut(&key)
                .ok_or_else(|| StoreError::NotFound(name_or_id.to_owned()))?;
            match matched {
                Matched::Tag(t) => {
                    rec.repo_tags.retain(|x| *x != t);
                    events.push(RemoveEvent::Untagged(t.familiar_string()));
                    if !rec.repo_tags.is_empty() {
                        return Ok((events, Vec::new()));
                    }
                }
                Matched::Digest(d) => {
                    rec.repo_digests.retain(|x| *x != d);
                    events.push(RemoveEvent::Untagged(d.familiar_string()));
                    if !rec.repo_tags.is_empty() || !rec.repo_digests.is_empty() {
                        return Ok((events, Vec::new()));
                    }
                }
                Matched::Id => {
                    let repos: HashSet<String> = rec.repo_tags.iter().map(|t| t.name()).collect();
                    if repos.len() > 1 && !force {
                        return Err(StoreError::Conflict {
                            id: rec.id.short().to_owned(),
                            reason: "image is referenced in multiple repositories".into(),
                        });
                    }
                }
            }
            for name in rec.repo_tags.drain(..).chain(rec.repo_digests.drain(..)) {
                events.push(RemoveEvent::Untagged(name.familiar_string()));
            }
            let rec = db
                .images
                .remove(&key)
                .ok_or_else(|| StoreError::NotFound(name_or_id.to_owned()))?;
            events.push(RemoveEvent::Deleted(rec.id.digest().clone()));
            Ok((events, vec![rec]))
        })?;
        events.extend(gc);
        Ok(events)
    }

    /// Deletes dangling (untagged) images except those in `keep` (e.g. used by containers).
    pub fn prune(&self, keep: &[ImageId]) -> Result<PruneReport, StoreError> {
        let (mut events, gc, reclaimed) = self.update_and_collect(|db| {
            let doomed: Vec<String> = db
                .images
                .values()
                .filter(|r| r.is_dangling() && !keep.contains(&r.id))
                .map(|r| r.id.to_string())
                .collect();
            let mut events = Vec::new();
            let mut removed = Vec::new();
            for key in doomed {
                if let Some(rec) = db.images.remove(&key) {
                    for d in &rec.repo_digests {
                        events.push(RemoveEvent::Untagged(d.familiar_string()));
                    }
                    events.push(RemoveEvent::Deleted(rec.id.digest().clone()));
                    removed.push(rec);
                }
            }
            Ok((events, removed))
        })?;
        events.extend(gc);
        Ok(PruneReport { events, reclaimed })
    }

    /// Runs `f` under the lock, saves, then deletes what the removed records alone used.
    ///
    /// Deletion happens after the metadata is durable (a crash leaves garbage, never a
    /// record pointing at deleted content) and before the lock is released (a concurrent
    /// commit cannot reference content we are about to delete).
    pub(crate) fn update_and_collect<R>(
        &self,
        f: impl FnOnce(&mut Db) -> Result<(R, Vec<ImageRecord>), StoreError>,
    ) -> Result<(R, Vec<RemoveEvent>, u64), StoreError> {
        let _guard = self.meta.lock()?;
        let mut db = self.meta.read()?;
        let (out, removed) = f(&mut db)?;
        self.meta.write(&db)?;
        let (events, reclaimed) = self.delete_unreferenced(&db, &removed)?;
        Ok((out, events, reclaimed))
    }

    /// Deletes layers and blobs of `removed` that no image in `db` references.
    fn delete_unreferenced(
        &self,
        db: &Db,
        removed: &[ImageRecord],
    ) -> Result<(Vec<RemoveEvent>, u64), StoreError> {
        let mut blobs_in_use: HashSet<&Digest> = HashSet::new();
        let mut layers_in_use: HashSet<&Digest> = HashSet::new();
        for rec in db.images.values() {
            blobs_in_use.insert(&rec.manifest.digest);
            blobs_in_use.insert(&rec.config.digest);
            for l in &rec.layers {
                blobs_in_use.insert(&l.blob.digest);
                layers_in_use.insert(&l.diff_id);
            }
        }
        let mut events = Vec::new();
        let mut reclaimed = 0;
        // Separate sets: an uncompressed layer's blob digest equals its diff-id.
        let mut layers_done: HashSet<&Digest> = HashSet::new();
        let mut blobs_done: HashSet<&Digest> = HashSet::new();
        for rec in removed {
            for l in &rec.layers {
                if !layers_in_use.contains(&l.diff_id)
                    && layers_done.insert(&l.diff_id)
                    && self.has_layer(&l.diff_id)
                {
                    self.remove_layer(&l.diff_id)?;
                    reclaimed += l.size;
                    events.push(RemoveEvent::Deleted(l.diff_id.clone()));
                }
            }
            let blobs = [&rec.manifest.digest, &rec.config.digest]
                .into_iter()
                .chain(rec.layers.iter().map(|l| &l.blob.digest));
            for b in blobs {
                if !blobs_in_use.contains(b) && blobs_done.insert(b) {
                    reclaimed += self.blobs.size(b).unwrap_or(0);
                    self.blobs.remove(b)?;
                }
            }
        }
        Ok((events, reclaimed))
    }
}
