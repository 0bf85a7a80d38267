//! Exclusive advisory file locks (`flock`), so several skiff processes can
//! share one state root.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Holds an exclusive `flock` until dropped.
///
/// `flock` locks belong to the open file description, so a child process that
/// inherits the descriptor keeps the lock after the parent let go of it; the
/// DNS resolver relies on this (see [`crate::dns`]).
#[derive(Debug)]
pub(crate) struct FileLock {
    file: File,
}

fn open(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
}

fn flock(file: &File, op: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: flock on a descriptor owned by `file`, which outlives the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

impl FileLock {
    /// Blocks until the exclusive lock on `path` (created if missing) is held.
    pub(crate) fn exclusive(path: &Path) -> io::Result<FileLock> {
        let file = open(path)?;
        flock(&file, libc::LOCK_EX)?;
        Ok(FileLock { file })
    }

    /// Takes the exclusive lock on `path` if nobody holds it, without waiting.
    pub(crate) fn try_exclusive(path: &Path) -> io::Result<Option<FileLock>> {
        let file = open(path)?;
        match flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
            Ok(()) => Ok(Some(FileLock { file })),
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The locked file, e.g. to hand the lock to a child process.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }
}

/// How much a write must survive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// A crash of the writing process: rename over the old file, no fsync.
    /// For state that describes kernel objects (addresses, veths), which a
    /// power loss wipes out as well; gc reconciles it after a reboot.
    Process,
    /// A power loss too: fsync before the rename (network definitions).
    Power,
}

/// Writes `data` to `path` through a temporary file and a rename, so readers
/// never see a half-written file and a crash leaves the old or the new content.
pub(crate) fn write_atomic(path: &Path, data: &[u8], durability: Durability) -> io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("state"),
        rand::random::<u64>()
    ));
    let mut file = File::create(&tmp)?;
    file.write_all(data)?;
    if durability == Durability::Power {
        file.sync_data()?;
    }
    std::fs::rename(&tmp, path)
}
