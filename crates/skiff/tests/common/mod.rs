//! Shared harness for end-to-end tests: each test gets its own skiff root.

#![allow(dead_code)]

pub mod cluster;
pub mod web;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// A Service range no other server of this test run uses: every server's proxy programs
/// its cluster IPs (the cluster DNS's among them) into host-wide nftables hooks, so two
/// clusters on one range would answer each other's pods (Kubernetes never runs two
/// kube-proxies on one host). `/24`s in 10.44.0.0-10.88.255.0: below the engine's and
/// the kubelet's pod subnets (10.89 and up) and apart from the default 10.42/10.43.
pub fn unique_service_cidr() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const SLOTS: u32 = 45 * 256;
    let slot = (std::process::id().wrapping_mul(97) + NEXT.fetch_add(1, Ordering::Relaxed)) % SLOTS;
    format!("10.{}.{}.0/24", 44 + slot / 256, slot % 256)
}

/// The skiff binary under test.
pub fn skiff_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_skiff"))
}

/// Builds the busybox test image once per test run, with umoci and skopeo.
pub fn fixture_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("busybox-image");
        let marker = dir.join("busybox-docker.tar");
        let lock = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("busybox-image.lock");
        let lock_file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock)
            .unwrap();
        // SAFETY: flock on an fd we own; several test binaries may build at once.
        unsafe { libc_flock(&lock_file) };
        if !marker.exists() {
            let script =
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/make-test-image.sh");
            let status = Command::new("sh").arg(script).arg(&dir).status().unwrap();
            assert!(status.success(), "building the test image failed");
        }
        dir
    })
}

unsafe fn libc_flock(f: &std::fs::File) {
    use std::os::fd::AsRawFd;
    extern "C" {
        fn flock(fd: i32, op: i32) -> i32;
    }
    flock(f.as_raw_fd(), 2);
}

/// Appends `<table tag> <root> <test>` to `$SKIFF_TEST_ROOTS_LOG` when set, so that an
/// nftables table or bridge a test leaves behind (`skiff_<tag>_svc`, `sk0-<tag>`) can be
/// traced to the test that made it.
fn note_root(root: &Path) {
    let Ok(log) = std::env::var("SKIFF_TEST_ROOTS_LOG") else {
        return;
    };
    // The engine's tag of a root: FNV-1a of its path, as 8 hex digits.
    let mut hash: u32 = 0x811c_9dc5;
    for b in root.to_string_lossy().as_bytes() {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    let test = std::thread::current().name().unwrap_or("?").to_string();
    let line = format!("{hash:08x} {} {test}\n", root.display());
    let _ = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
}

/// One isolated skiff installation.
pub struct Skiff {
    pub root: tempfile::TempDir,
}

impl Default for Skiff {
    fn default() -> Self {
        Self::new()
    }
}

impl Skiff {
    /// A fresh root.
    pub fn new() -> Self {
        let base = std::env::var("SKIFF_TEST_TMP").unwrap_or_else(|_| "/tmp".into());
        let root = tempfile::Builder::new()
            .prefix("skt")
            .tempdir_in(base)
            .unwrap();
        note_root(root.path());
        Skiff { root }
    }

    /// A fresh root with the busybox image loaded as `busybox:latest`.
    pub fn with_busybox() -> Self {
        let s = Self::new();
        let tar = fixture_dir().join("busybox-docker.tar");
        s.ok(&["load", "-i", tar.to_str().unwrap()]);
        s
    }

    /// The default network's subnet for this root: unique among the tests
    /// of this process (and, by pid, likely among processes).
    pub fn subnet(&self) -> String {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        static SUBNETS: std::sync::Mutex<Vec<(PathBuf, String)>> =
            std::sync::Mutex::new(Vec::new());
        let mut known = SUBNETS.lock().unwrap();
        if let Some((_, s)) = known.iter().find(|(p, _)| p == self.root.path()) {
            return s.clone();
        }
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let s = format!("10.{}.{}.0/24", 120 + std::process::id() % 100, n % 256);
        known.push((self.root.path().to_path_buf(), s.clone()));
        s
    }

    /// A command with `--root` set.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(skiff_bin());
        c.env("SKIFF_DEFAULT_SUBNET", self.subnet());
        c.arg("--root").arg(self.root.path()).args(args);
        c.stdin(Stdio::null());
        c
    }

    /// Runs skiff and returns its output.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs skiff, asserting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "skiff {args:?} failed with {:?}\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Runs `skiff ARGS` (a shell word list) on a pseudo-terminal, as from a
    /// user's shell (`script` provides the pty); returns success and output.
    pub fn in_terminal(&self, args: &str) -> (bool, String) {
        let cmd = format!(
            "{} --root {} {args}",
            skiff_bin().display(),
            self.root.path().display()
        );
        let out = Command::new("script")
            .env("SKIFF_DEFAULT_SUBNET", self.subnet())
            .args(["-qec", &cmd, "/dev/null"])
            .stdin(Stdio::piped())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    }

    /// Runs skiff, expecting exit `code`; returns (stdout, stderr).
    pub fn code(&self, code: i32, args: &[&str]) -> (String, String) {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "skiff {args:?}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }
}

impl Drop for Skiff {
    fn drop(&mut self) {
        // Remove whatever the test left: containers (mounts, cgroups), and the
        // bridges and nftables table of this root's networks.
        let _ = self.cmd(&["system", "reset", "-f"]).output();
    }
}
