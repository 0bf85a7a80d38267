//! Untagging, removal and pruning with Docker's `rmi` semantics, and garbage collection
//! (images and holds are the roots).

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

use super::metadata::Db;
use super::records::{ImageRecord, PruneReport, RemoveEvent};
use super::{find, ImageStore, Matched, StoreError};
use crate::digest::{Digest, ImageId};
use crate::reference::Reference;

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

    /// Removes only the name `reference` (tag or `name@digest`), never the image, which
    /// may become dangling. Returns false when no image had that name.
    pub fn untag(&self, reference: &Reference) -> Result<bool, StoreError> {
        self.update_and_collect(|db| {
            let mut found = false;
            for rec in db.images.values_mut() {
                let before = rec.repo_tags.len() + rec.repo_digests.len();
                rec.repo_tags.retain(|t| t != reference);
                rec.repo_digests.retain(|t| t != reference);
                found |= before != rec.repo_tags.len() + rec.repo_digests.len();
            }
            Ok((found, Vec::new()))
        })
        .map(|(found, _, _)| found)
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

    /// Runs `f` under the lock, saves, then sweeps content no image references.
    ///
    /// The sweep runs after the metadata is durable (a crash leaves garbage, never a
    /// record pointing at deleted content) and only when no import is in flight (see
    /// [`ImageStore::import_guard`]); otherwise the garbage waits for the next sweep.
    pub(crate) fn update_and_collect<R>(
        &self,
        f: impl FnOnce(&mut Db) -> Result<(R, Vec<ImageRecord>), StoreError>,
    ) -> Result<(R, Vec<RemoveEvent>, u64), StoreError> {
        let _guard = self.meta.lock()?;
        let mut db = self.meta.read()?;
        let (out, removed) = f(&mut db)?;
        self.meta.write(&db)?;
        let (events, reclaimed) = self.sweep(&db, &removed)?;
        Ok((out, events, reclaimed))
    }

    /// Holds off sweeps while an import (pull, load) writes blobs and layers it has not
    /// committed yet: a shared flock on `gc.lock`, which a sweep needs exclusively.
    pub(crate) fn import_guard(&self) -> Result<Flock<File>, StoreError> {
        Flock::lock(self.gc_lock_file()?, FlockArg::LockShared)
            .map_err(|(_, e)| StoreError::io("locking", &self.root.join(GC_LOCK), e.into()))
    }

    fn gc_lock_file(&self) -> Result<File, StoreError> {
        let path = self.root.join(GC_LOCK);
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::io("opening", &path, e))
    }

    /// Deletes every layer and blob no image in `db` references (mark and sweep), if no
    /// import is in flight. Reports the deleted layers of `removed`, top first, as Docker does.
    fn sweep(
        &self,
        db: &Db,
        removed: &[ImageRecord],
    ) -> Result<(Vec<RemoveEvent>, u64), StoreError> {
        let gc = match Flock::lock(self.gc_lock_file()?, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Ok((Vec::new(), 0)),
            Err((_, e)) => {
                return Err(StoreError::io(
                    "locking",
                    &self.root.join(GC_LOCK),
                    e.into(),
                ))
            }
        };
        let mut blobs_in_use: HashSet<String> = HashSet::new();
        let mut layers_in_use: HashSet<String> = HashSet::new();
        for rec in db.images.values() {
            blobs_in_use.insert(rec.manifest.digest.hex().to_owned());
            blobs_in_use.insert(rec.config.digest.hex().to_owned());
            for l in &rec.layers {
                blobs_in_use.insert(l.blob.digest.hex().to_owned());
                layers_in_use.insert(l.diff_id.hex().to_owned());
            }
        }
        for l in self.held_layers() {
            blobs_in_use.insert(l.blob.digest.hex().to_owned());
            layers_in_use.insert(l.diff_id.hex().to_owned());
        }
        let mut reclaimed = 0;
        let mut deleted_layers: HashSet<Digest> = HashSet::new();
        for name in dir_names(&self.root.join("layers/sha256")) {
            let Ok(diff_id) = Digest::from_hex(&name) else {
                continue;
            };
            if !layers_in_use.contains(&name) {
                reclaimed += self.layer_size(&diff_id);
                self.remove_layer(&diff_id)?;
                deleted_layers.insert(diff_id);
            }
        }
        for name in dir_names(&self.root.join("blobs/sha256")) {
            let Ok(digest) = Digest::from_hex(&name) else {
                continue;
            };
            if !blobs_in_use.contains(&name) {
                reclaimed += self.blobs.size(&digest).unwrap_or(0);
                self.blobs.remove(&digest)?;
            }
        }
        drop(gc);
        let events = removed
            .iter()
            .flat_map(|r| r.layers.iter().rev())
            .filter(|l| deleted_layers.remove(&l.diff_id))
            .map(|l| RemoveEvent::Deleted(l.diff_id.clone()))
            .collect();
        Ok((events, reclaimed))
    }
}

const GC_LOCK: &str = "gc.lock";

fn dir_names(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}
