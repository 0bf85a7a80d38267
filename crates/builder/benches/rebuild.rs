//! Rebuild benchmark: `skiff build` against `buildah bud --layers` on the same
//! 10-step multi-stage Dockerfile, in the same run: an unchanged rebuild and a rebuild
//! after one source file changed. Prints medians and ratios.
//!
//! Needs root, a release `skiff` binary (`cargo build --release -p skiff`), buildah,
//! and the busybox test image tools (umoci, skopeo, busybox-static).
//! Run: `cargo bench -p skiff-builder --bench rebuild` (`BENCH_RUNS=N` to change the
//! number of timed runs, default 7).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DOCKERFILE: &str = "\
FROM busybox AS deps
WORKDIR /deps
COPY requirements.txt .
RUN sort requirements.txt > locked.txt && echo deps-ready

FROM busybox AS build
WORKDIR /src
COPY --from=deps /deps/locked.txt ./
COPY src/ ./src/
RUN cat src/*.txt > app.bin && wc -c app.bin

FROM busybox
ENV APP_ENV=production
COPY --from=build /src/app.bin /app/app.bin
COPY --from=deps /deps/locked.txt /app/
WORKDIR /app
CMD [\"cat\", \"/app/app.bin\"]
";

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("rebuild bench: needs root, skipped");
        return;
    }
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let skiff = workspace.join("target/release/skiff");
    if !skiff.exists() {
        eprintln!(
            "rebuild bench: {} missing: run `cargo build --release -p skiff` first",
            skiff.display()
        );
        std::process::exit(1);
    }
    let tmp = tempfile::Builder::new()
        .prefix("skiff-bench-")
        .tempdir()
        .unwrap();
    let fixture = tmp.path().join("fixture");
    sh(Command::new("sh")
        .arg(workspace.join("scripts/make-test-image.sh"))
        .arg(&fixture));
    let archive = fixture.join("busybox-docker.tar");

    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(ctx.join("src")).unwrap();
    std::fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
    std::fs::write(ctx.join("requirements.txt"), "zlib\nflask\nrequests\n").unwrap();
    for i in 0..20 {
        std::fs::write(
            ctx.join(format!("src/module{i:02}.txt")),
            format!("module {i}\n"),
        )
        .unwrap();
    }

    // skiff: its own root with the busybox image loaded.
    let skiff_root = tmp.path().join("skiff-root");
    sh(Command::new(&skiff)
        .arg("--root")
        .arg(&skiff_root)
        .args(["load", "-i"])
        .arg(&archive));
    let skiff_build = |ctx: &Path| {
        let mut c = Command::new(&skiff);
        c.arg("--root")
            .arg(&skiff_root)
            .args(["build", "--progress", "plain", "-t", "bench:latest"])
            .arg(ctx);
        c
    };

    // buildah: own root and runroot, overlay driver, the same image from the same archive.
    let b_root = tmp.path().join("buildah-root");
    let b_run = tmp.path().join("buildah-runroot");
    let buildah = |args: &[&str]| {
        let mut c = Command::new("buildah");
        c.arg("--root")
            .arg(&b_root)
            .arg("--runroot")
            .arg(&b_run)
            .args(["--storage-driver", "overlay"])
            .args(args);
        c
    };
    let archive_ref = format!("docker-archive:{}", archive.display());
    sh(&mut buildah(&["pull", "-q", &archive_ref]));
    let buildah_build = |ctx: &Path| {
        let mut c = buildah(&[
            "bud",
            "--layers",
            "--isolation",
            "chroot",
            "-q",
            "-t",
            "bench:latest",
        ]);
        c.arg(ctx);
        c
    };

    println!("rebuild bench: {runs} timed runs each, medians\n");
    let mut rows = Vec::new();
    for (name, make) in [
        ("skiff build", &skiff_build as &dyn Fn(&Path) -> Command),
        ("buildah bud --layers", &buildah_build),
    ] {
        // The first build fills the cache.
        let first = time(&mut make(&ctx));
        let noop: Vec<Duration> = (0..runs).map(|_| time(&mut make(&ctx))).collect();
        let edit: Vec<Duration> = (0..runs)
            .map(|i| {
                std::fs::write(
                    ctx.join("src/module07.txt"),
                    format!("module 7, edit {i} of {name}\n"),
                )
                .unwrap();
                time(&mut make(&ctx))
            })
            .collect();
        let (n, e) = (median(noop), median(edit));
        println!(
            "{name:<22} first {:>8.1} ms   no-op {:>8.1} ms   one file changed {:>8.1} ms",
            ms(first),
            ms(n),
            ms(e)
        );
        rows.push((n, e));
    }
    let (skiff_noop, skiff_edit) = rows[0];
    let (b_noop, b_edit) = rows[1];
    println!(
        "\nratio buildah/skiff: no-op {:.1}x, one file changed {:.1}x",
        ms(b_noop) / ms(skiff_noop),
        ms(b_edit) / ms(skiff_edit)
    );
    let _ = Command::new(&skiff)
        .arg("--root")
        .arg(&skiff_root)
        .args(["system", "prune", "-af"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = buildah(&["rm", "-a"]).stdout(Stdio::null()).status();
    let _ = Command::new("umount")
        .arg("-R")
        .arg(&b_root)
        .stderr(Stdio::null())
        .status();
}

fn sh(c: &mut Command) {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn time(c: &mut Command) -> Duration {
    let start = Instant::now();
    let out = c.output().unwrap();
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "{c:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
