//! Shared helpers for the integration tests: the busybox test image and tool checks.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// True when `tool` is on PATH; prints why the calling test is skipped otherwise.
pub fn have(tools: &[&str]) -> bool {
    for tool in tools {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false);
        if !found {
            eprintln!("SKIPPED: {tool} is not installed");
            return false;
        }
    }
    true
}

/// Directory with `oci/`, `busybox-docker.tar` and `busybox-oci.tar`, built by
/// scripts/make-test-image.sh (umoci + skopeo, never skiff) once under Cargo's test tmp dir
/// and reused; a flock serialises test binaries that get here at the same time.
pub fn test_image() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("skiff-images-busybox");
        std::fs::create_dir_all(&dir).unwrap();
        let lock = std::fs::File::create(dir.with_extension("lock")).unwrap();
        let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive).unwrap();
        let done = dir.join("done");
        if !done.exists() {
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/make-test-image.sh");
            let out = Command::new("sh")
                .arg(&script)
                .arg(&dir)
                .output()
                .expect("running make-test-image.sh");
            assert!(
                out.status.success(),
                "make-test-image.sh failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::fs::write(&done, b"").unwrap();
        }
        dir
    })
}

/// A fresh store in a temp dir (the TempDir must outlive the store).
pub fn store() -> (tempfile::TempDir, skiff_images::ImageStore) {
    let tmp = tempfile::tempdir().unwrap();
    let store = skiff_images::ImageStore::open(&tmp.path().join("images")).unwrap();
    (tmp, store)
}

/// Runs a command, panicking with its stderr on failure; returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Number of entries in a directory.
pub fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|r| r.count()).unwrap_or(0)
}
