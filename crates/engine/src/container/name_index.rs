//! Container names as files: `<data>/names/<name>` holds the id of the container
//! that has the name, so a create reserves its name atomically and a lookup by name
//! reads one file, instead of both reading every container's record under one lock.
//!
//! A reservation is a marker linked into place already holding the id and an
//! exclusive `flock`, which the creating process keeps until the container's record
//! is written ([`Reservation::commit`]). Whoever finds a marker can therefore tell a
//! create in progress (locked), a container that has the name (its record exists)
//! and the leftover of a create that died (neither: the marker is reclaimed).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The directory of name markers below the data root.
pub(crate) const DIR: &str = "names";

/// The name markers of one root.
pub(crate) struct NameIndex {
    dir: PathBuf,
}

/// What reserving a name found.
pub(crate) enum Reserve {
    /// The name is ours until the reservation is committed or dropped.
    Reserved(Reservation),
    /// The name belongs to this container (or to a create in progress).
    Taken(String),
}

/// A name held for a container being created; dropped without
/// [`commit`](Reservation::commit), the name is free again.
pub(crate) struct Reservation {
    path: PathBuf,
    file: Option<File>,
}

impl Reservation {
    /// The container's record is written: the marker stays, its lock goes.
    pub(crate) fn commit(mut self) {
        self.file.take();
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            // Still ours: nobody reclaims a locked marker.
            if same_file(&file, &self.path) {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Takes an exclusive `flock` on `file`; `false` when another holds it and `wait` is off.
fn lock(file: &File, wait: bool) -> std::io::Result<bool> {
    let op = if wait {
        libc::LOCK_EX
    } else {
        libc::LOCK_EX | libc::LOCK_NB
    };
    loop {
        // SAFETY: flock on a descriptor owned by `file`, which outlives the call.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(true);
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) if !wait => return Ok(false),
            _ => return Err(err),
        }
    }
}

/// True when `path` still names the inode `file` has open.
fn same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
}

fn read_id(file: &mut File) -> std::io::Result<String> {
    let mut id = String::new();
    file.read_to_string(&mut id)?;
    Ok(id.trim().to_string())
}

impl NameIndex {
    /// The markers in `dir`.
    pub(crate) fn new(dir: PathBuf) -> NameIndex {
        NameIndex { dir }
    }

    /// True once the index exists (it is built once per root, see [`NameIndex::build`]).
    pub(crate) fn exists(&self) -> bool {
        self.dir.is_dir()
    }

    /// Writes the markers of the existing containers (`(name, id)`) into a new
    /// directory and moves it into place; a concurrent build that won is kept.
    pub(crate) fn build(&self, names: &[(String, String)]) -> std::io::Result<()> {
        let parent = self.dir.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent)?;
        let tmp = parent.join(format!(".{DIR}.tmp{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)?;
        for (name, id) in names {
            std::fs::write(tmp.join(name), id)?;
        }
        match std::fs::rename(&tmp, &self.dir) {
            Ok(()) => Ok(()),
            Err(_) if self.exists() => {
                let _ = std::fs::remove_dir_all(&tmp);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn marker(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The id the name belongs to, if any (possibly a create in progress or a
    /// leftover: the caller loads the container to be sure).
    pub(crate) fn lookup(&self, name: &str) -> Option<String> {
        let id = std::fs::read_to_string(self.marker(name)).ok()?;
        let id = id.trim();
        (!id.is_empty()).then(|| id.to_string())
    }

    /// Reserves `name` for container `id`. `exists(other)` tells whether container
    /// `other` has a record, i.e. really holds the name.
    pub(crate) fn reserve(
        &self,
        name: &str,
        id: &str,
        exists: impl Fn(&str) -> bool,
    ) -> std::io::Result<Reserve> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.marker(name);
        // The marker is complete (id written, lock held) before it has its name.
        let staged = self.dir.join(format!(".reserve-{id}"));
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&staged)?;
        lock(&file, true)?;
        file.write_all(id.as_bytes())?;
        let linked = loop {
            match std::fs::hard_link(&staged, &path) {
                Ok(()) => break Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => break Err(e),
            }
            let mut other = match File::open(&path) {
                Ok(f) => f,
                // Removed meanwhile: try again.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => break Err(e),
            };
            if !lock(&other, false)? {
                // A create in progress holds it.
                break Ok(false);
            }
            if !same_file(&other, &path) {
                // Reclaimed by someone else while we waited for it.
                continue;
            }
            let holder = read_id(&mut other)?;
            if !holder.is_empty() && exists(&holder) {
                break Ok(false);
            }
            // A create that died before its record: the name is free.
            tracing::debug!(name, stale = %holder, "reclaiming a stale name marker");
            std::fs::remove_file(&path)?;
        };
        let _ = std::fs::remove_file(&staged);
        match linked? {
            true => Ok(Reserve::Reserved(Reservation {
                path,
                file: Some(file),
            })),
            false => Ok(Reserve::Taken(self.lookup(name).unwrap_or_default())),
        }
    }

    /// Frees `name` if container `id` holds it.
    pub(crate) fn release(&self, name: &str, id: &str) -> std::io::Result<()> {
        let path = self.marker(name);
        loop {
            let mut file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            };
            lock(&file, true)?;
            if !same_file(&file, &path) {
                continue;
            }
            if read_id(&mut file)? == id {
                std::fs::remove_file(&path)?;
            }
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> (tempfile::TempDir, NameIndex) {
        let dir = tempfile::tempdir().unwrap();
        let index = NameIndex::new(dir.path().join(DIR));
        (dir, index)
    }

    fn reserved(r: Reserve) -> Reservation {
        match r {
            Reserve::Reserved(r) => r,
            Reserve::Taken(id) => panic!("taken by {id}"),
        }
    }

    fn taken(r: Reserve) -> String {
        match r {
            Reserve::Reserved(_) => panic!("reserved"),
            Reserve::Taken(id) => id,
        }
    }

    #[test]
    fn a_committed_name_is_taken_until_released() {
        let (_dir, index) = index();
        let all = |_: &str| true;
        reserved(index.reserve("web", "aaa", all).unwrap()).commit();
        assert_eq!(index.lookup("web").as_deref(), Some("aaa"));
        assert_eq!(taken(index.reserve("web", "bbb", all).unwrap()), "aaa");
        // Only the holder frees it.
        index.release("web", "bbb").unwrap();
        assert_eq!(index.lookup("web").as_deref(), Some("aaa"));
        index.release("web", "aaa").unwrap();
        assert_eq!(index.lookup("web"), None);
        reserved(index.reserve("web", "bbb", all).unwrap()).commit();
        assert_eq!(index.lookup("web").as_deref(), Some("bbb"));
    }

    #[test]
    fn a_create_in_progress_holds_the_name_and_a_failed_one_frees_it() {
        let (_dir, index) = index();
        // The record does not exist yet: only the lock tells the name is in use.
        let none = |_: &str| false;
        let first = reserved(index.reserve("db", "aaa", none).unwrap());
        assert_eq!(taken(index.reserve("db", "bbb", none).unwrap()), "aaa");
        drop(first);
        assert_eq!(index.lookup("db"), None);
        reserved(index.reserve("db", "bbb", none).unwrap()).commit();
    }

    #[test]
    fn the_marker_of_a_create_that_died_is_reclaimed() {
        let (_dir, index) = index();
        std::fs::create_dir_all(&index.dir).unwrap();
        std::fs::write(index.marker("cache"), "dead").unwrap();
        let exists = |id: &str| id != "dead";
        reserved(index.reserve("cache", "ccc", exists).unwrap()).commit();
        assert_eq!(index.lookup("cache").as_deref(), Some("ccc"));
    }

    #[test]
    fn concurrent_creates_of_one_name_reserve_it_once() {
        let (_dir, index) = index();
        let index = std::sync::Arc::new(index);
        let wins: Vec<bool> = (0..8)
            .map(|i| {
                let index = index.clone();
                std::thread::spawn(move || {
                    match index.reserve("same", &format!("id{i}"), |_| true).unwrap() {
                        Reserve::Reserved(r) => {
                            r.commit();
                            true
                        }
                        Reserve::Taken(_) => false,
                    }
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        assert_eq!(wins.iter().filter(|w| **w).count(), 1, "{wins:?}");
    }

    #[test]
    fn the_index_is_built_from_existing_containers() {
        let (_dir, index) = index();
        assert!(!index.exists());
        index
            .build(&[("a".into(), "111".into()), ("b".into(), "222".into())])
            .unwrap();
        assert!(index.exists());
        assert_eq!(index.lookup("b").as_deref(), Some("222"));
        // A second build (another process) keeps the first.
        index.build(&[]).unwrap();
        assert_eq!(index.lookup("a").as_deref(), Some("111"));
    }
}
