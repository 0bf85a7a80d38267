//! Engine benchmarks against runc, podman/conmon and skopeo+umoci, measured in one run.
//!
//! `cargo bench -p skiff --bench engine` (as root). Prints a Markdown table
//! with medians and ratios; docs/benchmarks.md records the figures.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn skiff() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_skiff"))
}

fn sh(cmd: &mut Command) -> String {
    let out = cmd.stderr(Stdio::inherit()).output().expect("spawn");
    assert!(out.status.success(), "{cmd:?} failed");
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn quiet(cmd: &mut Command) {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn time_n(n: usize, mut f: impl FnMut(usize)) -> f64 {
    for i in 0..3 {
        f(1_000_000 + i);
    }
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        f(i);
        samples.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    median(samples)
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

struct Bench {
    dir: tempfile::TempDir,
}

impl Drop for Bench {
    fn drop(&mut self) {
        // Bridges and nftables tables live outside the temp dir: remove them.
        let _ = self.skiff(&["system", "reset", "-f"]).output();
    }
}

impl Bench {
    fn root(&self) -> PathBuf {
        self.dir.path().join("skiff")
    }
    fn skiff(&self, args: &[&str]) -> Command {
        let mut c = Command::new(skiff());
        c.arg("--root").arg(self.root()).args(args);
        c
    }
    fn podman(&self, args: &[&str]) -> Command {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(self.dir.path().join("podman/storage"))
            .arg("--runroot")
            .arg(self.dir.path().join("podman/run"))
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "none"])
            .args(args);
        c
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let image_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-image");
    if !image_dir.join("busybox-docker.tar").exists() {
        quiet(
            Command::new("sh")
                .arg(
                    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                        .join("../../scripts/make-test-image.sh"),
                )
                .arg(&image_dir),
        );
    }
    let b = Bench {
        dir: tempfile::Builder::new()
            .prefix("skb")
            .tempdir_in("/tmp")
            .unwrap(),
    };
    let archive = image_dir.join("busybox-docker.tar");
    quiet(&mut b.skiff(&["load", "-q", "-i", archive.to_str().unwrap()]));
    let n: usize = std::env::var("SKIFF_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);

    println!("| benchmark | skiff | peer | ratio |");
    println!("|---|---|---|---|");

    // 1. `run --rm IMAGE /bin/true`, end to end.
    let skiff_run = time_n(n, |_| {
        quiet(&mut b.skiff(&["run", "--rm", "--network", "none", "busybox", "/bin/true"]))
    });
    let bundle = b.dir.path().join("runc-bundle");
    quiet(Command::new("umoci").args([
        "unpack",
        "--image",
        &format!("{}:busybox", image_dir.join("oci").display()),
        bundle.to_str().unwrap(),
    ]));
    let config = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    spec["process"]["args"] = serde_json::json!(["/bin/true"]);
    spec["process"]["terminal"] = serde_json::json!(false);
    // The same seccomp profile skiff applies, so both runtimes do the same work
    // (`runc spec` and umoci's bundles come without one).
    let caps: Vec<String> = skiff_runtime::capabilities::DEFAULT_CAPABILITIES
        .iter()
        .map(|c| c.to_string())
        .collect();
    spec["linux"]["seccomp"] = skiff_runtime::seccomp::default_profile(&caps);
    std::fs::write(&config, serde_json::to_vec(&spec).unwrap()).unwrap();
    let runc_root = b.dir.path().join("runc-state");
    let runc = if have("runc") {
        Some(time_n(n, |i| {
            quiet(
                Command::new("runc")
                    .arg("--root")
                    .arg(&runc_root)
                    .args([
                        "run",
                        "--bundle",
                        bundle.to_str().unwrap(),
                        &format!("bench-{}-{i}", std::process::id()),
                    ])
                    .stdin(Stdio::null()),
            )
        }))
    } else {
        None
    };
    if let Some(r) = runc {
        println!(
            "| run --rm /bin/true (median ms), vs `runc run` | {skiff_run:.1} | {r:.1} | {:.2}x of runc |",
            skiff_run / r
        );
    }
    let podman_ok = have("podman")
        && b.podman(&["load", "-q", "-i", archive.to_str().unwrap()])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
    if podman_ok {
        let p = time_n(n.min(15), |_| {
            quiet(
                b.podman(&[
                    "run",
                    "--rm",
                    "--ulimit",
                    "nofile=1024:1024",
                    "--ulimit",
                    "nproc=1024:1024",
                    "--network",
                    "none",
                    "busybox",
                    "/bin/true",
                ])
                .stdin(Stdio::null()),
            )
        });
        println!(
            "| run --rm /bin/true (median ms), vs `podman run --rm --network none` | {skiff_run:.1} | {p:.1} | podman {:.1}x slower |",
            p / skiff_run
        );
    }

    // 2. Shim memory per running container.
    let mut shim_rss = Vec::new();
    for i in 0..5 {
        let name = format!("rss{i}");
        quiet(&mut b.skiff(&["run", "-d", "--name", &name, "busybox", "sleep", "120"]));
        let state = b
            .skiff(&["inspect", "-f", "{{.Id}}", &name])
            .output()
            .unwrap();
        let id = String::from_utf8_lossy(&state.stdout).trim().to_string();
        let shim: serde_json::Value = serde_json::from_slice(
            &std::fs::read(b.root().join("containers").join(&id).join("shim.json")).unwrap(),
        )
        .unwrap();
        shim_rss.push(rss_kib(shim["shim_pid"].as_u64().unwrap() as u32) as f64);
    }
    let shim = median(shim_rss);
    let conmon = if podman_ok {
        let mut v = Vec::new();
        for i in 0..3 {
            let name = format!("rss{i}");
            quiet(&mut b.podman(&[
                "run",
                "-d",
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=1024:1024",
                "--network",
                "none",
                "--name",
                &name,
                "busybox",
                "sleep",
                "120",
            ]));
            let pid = sh(&mut b.podman(&["inspect", "-f", "{{.State.ConmonPid}}", &name]));
            v.push(rss_kib(pid.trim().parse().unwrap()) as f64);
        }
        let _ = b.podman(&["rm", "-f", "-t", "0", "-a"]).output();
        Some(median(v))
    } else {
        None
    };
    match conmon {
        Some(c) => println!(
            "| shim RSS per running container (median KiB), vs conmon | {shim:.0} | {c:.0} | {:.2}x of conmon |",
            shim / c
        ),
        None => println!("| shim RSS per running container (median KiB) | {shim:.0} | - | - |"),
    }
    for i in 0..5 {
        let _ = b.skiff(&["rm", "-f", &format!("rss{i}")]).output();
    }

    // 3. Pull and unpack a ~200 MB multi-layer image from a loopback registry.
    if have("docker-registry") && have("skopeo") && have("umoci") {
        pull_bench(&b, &image_dir);
    }
}

fn pull_bench(b: &Bench, image_dir: &Path) {
    let big = b.dir.path().join("big");
    let layout = format!("{}:big", big.display());
    quiet(Command::new("umoci").args(["init", "--layout", big.to_str().unwrap()]));
    quiet(Command::new("umoci").args(["new", "--image", &layout]));
    let base = b.dir.path().join("base-bundle");
    quiet(Command::new("umoci").args([
        "unpack",
        "--image",
        &format!("{}:busybox", image_dir.join("oci").display()),
        base.to_str().unwrap(),
    ]));
    // Four 50 MB layers of incompressible data.
    for layer in 0..4 {
        let bundle = b.dir.path().join(format!("layer{layer}"));
        quiet(Command::new("umoci").args(["unpack", "--image", &layout, bundle.to_str().unwrap()]));
        let data = bundle.join("rootfs").join(format!("data{layer}"));
        quiet(Command::new("dd").args([
            "if=/dev/urandom",
            &format!("of={}", data.display()),
            "bs=1M",
            "count=50",
            "status=none",
        ]));
        quiet(Command::new("umoci").args(["repack", "--image", &layout, bundle.to_str().unwrap()]));
        let _ = std::fs::remove_dir_all(&bundle);
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let regdir = b.dir.path().join("registry");
    std::fs::create_dir_all(&regdir).unwrap();
    let config = regdir.join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            regdir.join("data").display()
        ),
    )
    .unwrap();
    let mut registry = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let remote = format!("127.0.0.1:{port}/bench/big:1");
    quiet(Command::new("skopeo").args([
        "copy",
        "-q",
        "--dest-tls-verify=false",
        &format!("oci:{layout}"),
        &format!("docker://{remote}"),
    ]));
    let size_mb = 200.0;
    let runs = 3;
    let skiff_ms = time_runs(runs, |i| {
        let root = b.dir.path().join(format!("pull-root-{i}"));
        quiet(
            Command::new(skiff())
                .arg("--root")
                .arg(&root)
                .args(["pull", "-q", &remote]),
        );
        let _ = std::fs::remove_dir_all(&root);
    });
    let peer_ms = time_runs(runs, |i| {
        let dest = b.dir.path().join(format!("peer-{i}"));
        quiet(Command::new("skopeo").args([
            "copy",
            "-q",
            "--src-tls-verify=false",
            &format!("docker://{remote}"),
            &format!("oci:{}:big", dest.display()),
        ]));
        quiet(Command::new("umoci").args([
            "unpack",
            "--image",
            &format!("{}:big", dest.display()),
            dest.join("bundle").to_str().unwrap(),
        ]));
        let _ = std::fs::remove_dir_all(&dest);
    });
    println!(
        "| pull + unpack 200 MB, 4 layers (median ms; MB/s), vs skopeo copy + umoci unpack | {skiff_ms:.0} ({:.0} MB/s) | {peer_ms:.0} ({:.0} MB/s) | {:.2}x faster |",
        size_mb / (skiff_ms / 1000.0),
        size_mb / (peer_ms / 1000.0),
        peer_ms / skiff_ms
    );
    let _ = registry.kill();
    let _ = registry.wait();
}

fn time_runs(n: usize, mut f: impl FnMut(usize)) -> f64 {
    let mut samples = Vec::new();
    for i in 0..n {
        let start = Instant::now();
        f(i);
        samples.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    median(samples)
}
