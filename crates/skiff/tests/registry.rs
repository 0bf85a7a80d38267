//! The user story of the engine issue, through the CLI: push to and pull from
//! a registry on loopback (Debian's docker-registry), then run, exec, log,
//! stop and remove.

use crate::common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Skiff;

/// Debian's docker-registry on a free loopback port, killed on drop.
struct Registry {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry is installed by the README's test command");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn push_pull_run_exec_logs_stop_rm() {
    let registry = Registry::start();
    let image = format!("localhost:{}/tools/busybox:1.0", registry.port);

    let publisher = Skiff::with_busybox();
    publisher.ok(&["tag", "busybox", &image]);
    let out = publisher.ok(&["push", &image]);
    assert!(out.contains("digest: sha256:"), "{out}");
    // An independent client sees what skiff pushed.
    let inspect = Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            &format!("docker://{image}"),
        ])
        .output()
        .unwrap();
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );

    // A fresh machine: `run` pulls what it does not have.
    let user = Skiff::new();
    let name = "from-registry";
    let out = user.run(&[
        "run",
        "-d",
        "--name",
        name,
        &image,
        "sh",
        "-c",
        "echo ready; sleep 30",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("Unable to find image"));
    let images = user.ok(&["images"]);
    assert!(
        images.contains(&format!("localhost:{}/tools/busybox", registry.port)),
        "{images}"
    );
    assert_eq!(user.ok(&["exec", name, "echo", "inside"]), "inside\n");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !user.ok(&["logs", name]).contains("ready") {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    user.ok(&["stop", "-t", "1", name]);
    user.ok(&["rm", name]);
    assert_eq!(user.ok(&["ps", "-aq"]), "");

    // Pull by digest, and a missing tag fails clearly without touching the store.
    let digest = out_digest(&publisher.ok(&["push", &image]));
    let by_digest = format!("localhost:{}/tools/busybox@{digest}", registry.port);
    user.ok(&["pull", &by_digest]);
    let before = user.ok(&["images", "-q"]);
    let (_, err) = user.code(
        125,
        &[
            "pull",
            &format!("localhost:{}/tools/busybox:nope", registry.port),
        ],
    );
    assert!(err.contains("manifest unknown"), "{err}");
    assert_eq!(user.ok(&["images", "-q"]), before);
}

fn out_digest(push_output: &str) -> String {
    push_output
        .split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .unwrap()
        .to_string()
}

#[test]
fn save_and_load_round_trip_through_skopeo() {
    let s = Skiff::with_busybox();
    let dir = tempfile::tempdir().unwrap();
    for (format, transport) in [
        ("docker-archive", "docker-archive"),
        ("oci-archive", "oci-archive"),
    ] {
        let file = dir.path().join(format!("{format}.tar"));
        s.ok(&[
            "save",
            "--format",
            format,
            "-o",
            file.to_str().unwrap(),
            "busybox",
        ]);
        let out = Command::new("skopeo")
            .args(["inspect", &format!("{transport}:{}", file.display())])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let other = Skiff::new();
        let loaded = other.ok(&["load", "-i", file.to_str().unwrap()]);
        assert!(loaded.contains("busybox"), "{loaded}");
        assert_eq!(other.ok(&["run", "--rm", "busybox", "echo", "ok"]), "ok\n");
    }
    // A corrupt archive is refused and leaves the store as it was.
    let bad = dir.path().join("bad.tar");
    std::fs::write(&bad, b"this is not a tar archive").unwrap();
    let before = s.ok(&["images", "-q"]);
    s.code(125, &["load", "-i", bad.to_str().unwrap()]);
    assert_eq!(s.ok(&["images", "-q"]), before);
}

#[test]
fn pull_shows_progress_bars_on_a_terminal_only() {
    let registry = Registry::start();
    let image = format!("localhost:{}/progress/busybox:1", registry.port);
    let publisher = Skiff::with_busybox();
    publisher.ok(&["tag", "busybox", &image]);
    publisher.ok(&["push", &image]);

    // Through a pseudo-terminal (as a user's shell): bars are drawn.
    let user = Skiff::new();
    let (ok, text) = user.in_terminal(&format!("pull {image}"));
    assert!(ok, "{text}");
    assert!(text.contains('[') && text.contains("Complete"), "{text}");

    // Piped: no bars, no escape sequences.
    let other = Skiff::new();
    let out = other.run(&["pull", &image]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    assert!(
        !all.contains('\u{1b}') && !all.contains("Complete"),
        "{all}"
    );
}

/// `skiff registry` on a free loopback port, killed on drop.
struct SkiffRegistry {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl SkiffRegistry {
    fn start() -> SkiffRegistry {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(common::skiff_bin())
            .arg("--root")
            .arg(dir.path())
            .args(["registry", "--addr", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .expect(&line)
            .to_string();
        let addr = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        SkiffRegistry {
            child,
            addr,
            _dir: dir,
        }
    }
}

impl Drop for SkiffRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn skiff_registry_serves_skiff_and_skopeo() {
    let registry = SkiffRegistry::start();
    let image = format!("{}/team/busybox:2", registry.addr);
    let s = Skiff::with_busybox();
    s.ok(&["tag", "busybox", &image]);
    s.ok(&["push", &image]);
    // skopeo reads what skiff pushed, and copies it to Debian's registry and back.
    let other = Registry::start();
    let copy = |from: &str, to: &str| {
        let out = Command::new("skopeo")
            .args([
                "copy",
                "-q",
                "--preserve-digests",
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
            ])
            .arg(from)
            .arg(to)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    copy(
        &format!("docker://{image}"),
        &format!("docker://127.0.0.1:{}/copied/busybox:2", other.port),
    );
    copy(
        &format!("docker://127.0.0.1:{}/copied/busybox:2", other.port),
        &format!("docker://{}/back/busybox:2", registry.addr),
    );
    let fresh = Skiff::new();
    assert_eq!(
        fresh.ok(&[
            "run",
            "--rm",
            &format!("{}/back/busybox:2", registry.addr),
            "echo",
            "round trip"
        ]),
        "round trip\n"
    );
    assert_eq!(
        fresh.ok(&["images", "-q"]).trim(),
        s.ok(&["images", "-q"]).trim(),
        "the image id survives the round trip"
    );
}
