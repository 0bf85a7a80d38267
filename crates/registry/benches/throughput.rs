//! Push/pull throughput of a ~200 MB image through skiff's registry and through Debian's
//! docker-registry, with the same client (skopeo) in the same run.
//!
//! `cargo bench -p skiff-registry --bench throughput` (env `SKIFF_BENCH_RUNS`, default 5;
//! `SKIFF_BENCH_MB`, default 200). Each run starts both registries afresh on empty storage,
//! pushes the image from an OCI layout and pulls it into a new OCI layout; the times are
//! skopeo's wall clock. The image is four layers of random (incompressible) bytes, stored
//! gzip-framed so skopeo copies them as they are, generated once under target/tmp.

#[path = "../tests/common/mod.rs"]
mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::RngCore;
use serde_json::json;
use skiff_images::manifest::media_type;
use skiff_images::Digest;

use common::{DockerRegistry, Registry};

const LAYERS: usize = 4;

/// Writes `data` as an OCI blob; returns its descriptor JSON.
fn write_blob(layout: &Path, media_type: &str, data: &[u8]) -> serde_json::Value {
    let d = Digest::of(data);
    fs::write(layout.join("blobs/sha256").join(d.hex()), data).unwrap();
    json!({"mediaType": media_type, "digest": d.to_string(), "size": data.len()})
}

/// The benchmark image as an OCI layout (tag `bench`); returns its path and blob bytes.
fn bench_image(total_mb: usize) -> (PathBuf, u64) {
    let layout =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("registry-bench-{total_mb}mb"));
    let marker = layout.join("index.json");
    if !marker.exists() {
        let _ = fs::remove_dir_all(&layout);
        fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
        let mut rng = rand::thread_rng();
        let (mut layers, mut diff_ids) = (Vec::new(), Vec::new());
        for i in 0..LAYERS {
            let mut content = vec![0u8; total_mb * (1 << 20) / LAYERS];
            rng.fill_bytes(&mut content);
            let mut tar = tar::Builder::new(Vec::new());
            let mut header = tar::Header::new_gnu();
            header.set_size(content.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            tar.append_data(&mut header, format!("data-{i}.bin"), &content[..])
                .unwrap();
            let tar = tar.into_inner().unwrap();
            diff_ids.push(Digest::of(&tar).to_string());
            // Stored (level 0) deflate: valid gzip, as large as the random content.
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
            gz.write_all(&tar).unwrap();
            layers.push(write_blob(
                &layout,
                media_type::OCI_LAYER_GZIP,
                &gz.finish().unwrap(),
            ));
        }
        let config = json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        let config = write_blob(
            &layout,
            media_type::OCI_CONFIG,
            config.to_string().as_bytes(),
        );
        let manifest = json!({
            "schemaVersion": 2, "mediaType": media_type::OCI_MANIFEST,
            "config": config, "layers": layers,
        });
        let mut desc = write_blob(
            &layout,
            media_type::OCI_MANIFEST,
            manifest.to_string().as_bytes(),
        );
        desc["annotations"] = json!({"org.opencontainers.image.ref.name": "bench"});
        fs::write(
            layout.join("oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        let index = json!({"schemaVersion": 2, "manifests": [desc]});
        fs::write(&marker, index.to_string()).unwrap();
    }
    let size = fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    (layout, size)
}

/// Runs skopeo and returns its wall-clock time.
fn timed_skopeo(args: &[&str]) -> Duration {
    let start = Instant::now();
    let out = Command::new("skopeo")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let elapsed = start.elapsed();
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    elapsed
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this with no such flag.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let runs = env("SKIFF_BENCH_RUNS", 5);
    let (layout, bytes) = bench_image(env("SKIFF_BENCH_MB", 200));
    let mb = bytes as f64 / 1e6;
    let source = format!("oci:{}:bench", layout.display());
    println!("image: {mb:.1} MB in {LAYERS} layers + config, {runs} runs");
    let names = ["skiff-registry", "docker-registry"];
    let mut push = [Vec::new(), Vec::new()];
    let mut pull = [Vec::new(), Vec::new()];
    for run in 0..runs {
        // Alternate which registry goes first, so neither always meets a warm page cache.
        let order = if run % 2 == 0 { [0, 1] } else { [1, 0] };
        for which in order {
            let dir = tempfile::tempdir().unwrap();
            // Each registry stops when its guard drops at the end of the run.
            let (host, running): (String, Box<dyn std::any::Any>) = match which {
                0 => {
                    let r = Registry::start();
                    (r.host.clone(), Box::new(r))
                }
                _ => {
                    let r = DockerRegistry::start();
                    (r.host.clone(), Box::new(r))
                }
            };
            let image = format!("docker://{host}/bench/image:latest");
            let p = timed_skopeo(&["copy", "-q", "--dest-tls-verify=false", &source, &image]);
            let out = format!("oci:{}:x", dir.path().join("pulled").display());
            let q = timed_skopeo(&["copy", "-q", "--src-tls-verify=false", &image, &out]);
            println!(
                "run {run} {:<16} push {:>6.2}s ({:>6.1} MB/s)  pull {:>6.2}s ({:>6.1} MB/s)",
                names[which],
                p.as_secs_f64(),
                mb / p.as_secs_f64(),
                q.as_secs_f64(),
                mb / q.as_secs_f64()
            );
            push[which].push(p);
            pull[which].push(q);
            drop(running);
        }
    }
    println!("\n| registry | push median | push MB/s | pull median | pull MB/s |");
    println!("|---|---|---|---|---|");
    let mut medians = Vec::new();
    for which in 0..2 {
        let (p, q) = (median(push[which].clone()), median(pull[which].clone()));
        println!(
            "| {} | {:.2} s | {:.1} | {:.2} s | {:.1} |",
            names[which],
            p.as_secs_f64(),
            mb / p.as_secs_f64(),
            q.as_secs_f64(),
            mb / q.as_secs_f64()
        );
        medians.push((p, q));
    }
    println!(
        "\nratio docker-registry time / skiff-registry time: push {:.2}x, pull {:.2}x",
        medians[1].0.as_secs_f64() / medians[0].0.as_secs_f64(),
        medians[1].1.as_secs_f64() / medians[0].1.as_secs_f64()
    );
}
