//! `skiff server` and `skiff kubeconfig` as users run them: the real binary, a temporary
//! root (reset when the test ends, which removes the tables and bridges its kubelet and
//! service proxy made), a free port, the real kubectl.

use crate::common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `skiff server` process, killed on drop.
struct ServerProcess {
    child: Child,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(skiff: &common::Skiff, port: u16) -> (ServerProcess, Duration) {
    let root = skiff.root.path();
    let started = Instant::now();
    let name = root.file_name().unwrap().to_string_lossy().to_string();
    let child = skiff
        .cmd(&[
            "server",
            "--port",
            &port.to_string(),
            "--kubelet-port",
            &free_port().to_string(),
            "--service-cidr",
            &common::unique_service_cidr(),
        ])
        // The kubelet's cgroups apart from every other test's.
        .env("SKIFF_KUBELET_CGROUP_ROOT", format!("/skiff-test-{name}"))
        .env("SKIFF_INGRESS_BIND_ADDRESS", "127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = ServerProcess { child };
    let ca = root.join("server/tls/ca.crt");
    loop {
        let out = Command::new("curl")
            .args(["-s", "--cacert"])
            .arg(&ca)
            .arg(format!("https://127.0.0.1:{port}/readyz"))
            .output()
            .unwrap();
        if out.stdout == b"ok" {
            return (server, started.elapsed());
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "skiff server never became ready"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn server_writes_a_kubeconfig_kubectl_can_use_and_encrypts_secrets() {
    let skiff = common::Skiff::new();
    let root = &skiff.root;
    let port = free_port();
    let (server, cold_start) = start(&skiff, port);
    eprintln!("cold start to /readyz: {cold_start:?}");

    let kubeconfig = root.path().join("server/admin.kubeconfig");
    let printed = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .arg("--root")
        .arg(root.path())
        .arg("kubeconfig")
        .output()
        .unwrap();
    assert!(printed.status.success());
    assert_eq!(printed.stdout, std::fs::read(&kubeconfig).unwrap());

    let kubectl = |args: &[&str]| {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(args)
            .output()
            .unwrap()
    };
    let ns = kubectl(&["get", "namespaces", "-o", "name"]);
    assert!(String::from_utf8_lossy(&ns.stdout).contains("namespace/kube-system"));

    let secret = "plaintext-canary-5f1e2d";
    let created = kubectl(&[
        "create",
        "secret",
        "generic",
        "canary",
        &format!("--from-literal=v={secret}"),
    ]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let read = kubectl(&["get", "secret", "canary", "-o", "jsonpath={.data.v}"]);
    assert!(!read.stdout.is_empty());
    drop(server);
    for entry in std::fs::read_dir(root.path().join("server/db")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(secret), "secret stored in plaintext");
        assert!(
            !text.contains("cGxhaW50ZXh0LWNhbmFyeS01ZjFlMmQ"),
            "secret stored as base64"
        );
    }
}
