//! Network namespaces: running code inside one, and persistent named ones
//! (bind-mounted like `ip netns add`) for pod sandboxes.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

/// Errors entering, creating or removing a network namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The namespace file cannot be opened.
    #[error("opening network namespace {path}: {source}")]
    Open {
        /// The namespace file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A namespace syscall failed.
    #[error("{op} for network namespace {path}: {source}")]
    Syscall {
        /// Which call (`setns`, `unshare`, `mount`, `umount`).
        op: &'static str,
        /// The namespace file.
        path: PathBuf,
        /// The errno.
        source: nix::Error,
    },
    /// The helper thread panicked.
    #[error("thread working in network namespace {0} panicked")]
    Panicked(PathBuf),
}

/// Runs `f` on a new thread that joined the network namespace at `netns`, and
/// returns its result. Sockets opened by `f` (netlink included) stay in that
/// namespace after the thread ends; the caller's threads never move.
pub fn run_in<T: Send>(netns: &Path, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
    let file = File::open(netns).map_err(|source| NetnsError::Open {
        path: netns.to_path_buf(),
        source,
    })?;
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Syscall {
                op: "setns",
                path: netns.to_path_buf(),
                source,
            })?;
            Ok(f())
        })
        .join()
        .map_err(|_| NetnsError::Panicked(netns.to_path_buf()))?
    })
}

/// Creates a new, empty network namespace kept alive by a bind mount at
/// `path` (like `ip netns add`), for a pod sandbox whose namespace outlives
/// its processes. The directory of `path` is made a shared mount point, as
/// iproute2 does, so that mount namespaces created later (containers) see the
/// unmount in [`remove`] and do not pin the namespace.
pub fn create(path: &Path) -> Result<(), NetnsError> {
    let sys = |op: &'static str| {
        let path = path.to_path_buf();
        move |source| NetnsError::Syscall { op, path, source }
    };
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(|source| NetnsError::Open {
        path: dir.to_path_buf(),
        source,
    })?;
    // Make the directory its own shared mount once.
    if mount::<str, Path, str, str>(None, dir, None, MsFlags::MS_SHARED | MsFlags::MS_REC, None)
        .is_err()
    {
        mount::<Path, Path, str, str>(
            Some(dir),
            dir,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )
        .map_err(sys("mount"))?;
        mount::<str, Path, str, str>(None, dir, None, MsFlags::MS_SHARED | MsFlags::MS_REC, None)
            .map_err(sys("mount"))?;
    }
    File::create(path).map_err(|source| NetnsError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let result = std::thread::scope(|s| {
        s.spawn(|| -> Result<(), NetnsError> {
            unshare(CloneFlags::CLONE_NEWNET).map_err(sys("unshare"))?;
            mount::<str, Path, str, str>(
                Some("/proc/thread-self/ns/net"),
                path,
                None,
                MsFlags::MS_BIND,
                None,
            )
            .map_err(sys("mount"))
        })
        .join()
        .map_err(|_| NetnsError::Panicked(path.to_path_buf()))?
    });
    if result.is_err() {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// Removes a namespace made by [`create`]; a missing one is not an error.
pub fn remove(path: &Path) -> Result<(), NetnsError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(source) => {
            return Err(NetnsError::Syscall {
                op: "umount",
                path: path.to_path_buf(),
                source,
            })
        }
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(NetnsError::Open {
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}
