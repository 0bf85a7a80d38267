//! `images.json`: the store's names and image records, replaced atomically under a flock.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::records::ImageRecord;
use super::{fsync_dir, StoreError};

const DB_VERSION: u32 = 1;

/// The whole metadata document.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Db {
    pub version: u32,
    /// Image records by ID string (`sha256:<hex>`).
    pub images: BTreeMap<String, ImageRecord>,
}

/// Reads and rewrites `images.json`; writers hold `images.lock` exclusively.
#[derive(Debug, Clone)]
pub(crate) struct Metadata {
    file: PathBuf,
    lock: PathBuf,
    dir: PathBuf,
}

impl Metadata {
    pub(crate) fn new(root: &Path) -> Self {
        Self {
            file: root.join("images.json"),
            lock: root.join("images.lock"),
            dir: root.to_path_buf(),
        }
    }

    /// A consistent snapshot; lock-free because writers replace the file by rename.
    pub(crate) fn read(&self) -> Result<Db, StoreError> {
        match fs::read(&self.file) {
            Ok(bytes) => {
                let db: Db = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                    path: self.file.clone(),
                    reason: e.to_string(),
                })?;
                if db.version > DB_VERSION {
                    return Err(StoreError::Corrupt {
                        path: self.file.clone(),
                        reason: format!(
                            "version {} is newer than this skiff understands ({DB_VERSION})",
                            db.version
                        ),
                    });
                }
                Ok(db)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Db {
                version: DB_VERSION,
                images: BTreeMap::new(),
            }),
            Err(e) => Err(StoreError::io("reading", &self.file, e)),
        }
    }

    /// Runs `f` on the current document under the exclusive lock and saves the result.
    ///
    /// Nothing is written when `f` fails, so an error changes nothing.
    pub(crate) fn update<R>(
        &self,
        f: impl FnOnce(&mut Db) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let _guard = self.lock()?;
        let mut db = self.read()?;
        let out = f(&mut db)?;
        db.version = DB_VERSION;
        self.write(&db)?;
        Ok(out)
    }

    /// Takes the exclusive lock; released when the guard drops (or the process dies).
    pub(crate) fn lock(&self) -> Result<Flock<File>, StoreError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock)
            .map_err(|e| StoreError::io("opening", &self.lock, e))?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| StoreError::io("locking", &self.lock, e.into()))
    }

    /// Replaces `images.json` with `db` (temp file, fsync, rename, fsync dir); hold the lock.
    pub(crate) fn write(&self, db: &Db) -> Result<(), StoreError> {
        let tmp = self
            .file
            .with_extension(format!("json.tmp-{}", std::process::id()));
        let res = (|| {
            let mut f = File::create(&tmp)?;
            serde_json::to_writer_pretty(&mut f, db)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            fs::rename(&tmp, &self.file)
        })();
        if let Err(e) = res {
            let _ = fs::remove_file(&tmp);
            return Err(StoreError::io("writing", &self.file, e));
        }
        fsync_dir(&self.dir)
    }
}
