//! The kubelet API through the API server, driven by the real kubectl, oldest (1.27:
//! SPDY) and newest (1.33: WebSocket first, SPDY tunnelled in WebSocket for
//! port-forward): `logs`, `exec`, `cp`, `attach`, `port-forward`, and RBAC on
//! `pods/exec`. Needs root.

use crate::common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::Skiff;

/// A `skiff server` process, killed on drop.
struct ServerProcess(Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `kubectl.1.VERSION`, installed beside the default kubectl.
fn kubectl(version: &str) -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", "readlink -f \"$(command -v kubectl)\""])
        .output()
        .unwrap();
    let default = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    default.parent().unwrap().join(format!("kubectl.{version}"))
}

/// The oldest and the newest kubectl.
const KUBECTLS: &[&str] = &["1.27", "1.33"];

/// Fields drop in order: the server stops before the root is reset, or its kubelet
/// would start the pods again on the host after the reset.
struct Cluster {
    _server: ServerProcess,
    skiff: Skiff,
    kubeconfig: PathBuf,
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

impl Cluster {
    fn start() -> Cluster {
        let skiff = Skiff::with_busybox();
        let (port, kubelet_port) = (free_port(), free_port());
        let child = skiff
            .cmd(&[
                "server",
                "--port",
                &port.to_string(),
                "--node-name",
                "node-a",
                "--kubelet-port",
                &kubelet_port.to_string(),
                "--service-cidr",
                &common::unique_service_cidr(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let kubeconfig = skiff.root.path().join("server/admin.kubeconfig");
        let cluster = Cluster {
            skiff,
            kubeconfig,
            _server: ServerProcess(child),
        };
        // Tests start servers side by side on few cores: allow a slow start.
        let deadline = Instant::now() + Duration::from_secs(90);
        while !cluster.kubeconfig.exists()
            || cluster.jsonpath(
                "node/node-a",
                "{.status.conditions[?(@.type==\"Ready\")].status}",
            ) != "True"
        {
            assert!(Instant::now() < deadline, "node-a never became Ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(
            cluster.jsonpath(
                "node/node-a",
                "{.status.daemonEndpoints.kubeletEndpoint.Port}"
            ),
            kubelet_port.to_string()
        );
        cluster
    }

    fn command(&self, version: &str, args: &[&str]) -> Command {
        let mut c = Command::new(kubectl(version));
        c.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        c
    }

    fn run(&self, version: &str, args: &[&str]) -> Output {
        self.command(version, args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs kubectl with `input` on stdin.
    fn run_with_input(&self, version: &str, args: &[&str], input: &[u8]) -> Output {
        let mut child = self
            .command(version, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }

    fn ok(&self, version: &str, args: &[&str]) -> String {
        let out = self.run(version, args);
        let (stdout, stderr) = text(&out);
        assert!(
            out.status.success(),
            "kubectl {version} {args:?}: {stderr}\n{stdout}"
        );
        stdout
    }

    /// Runs kubectl expecting failure; returns stderr.
    fn fails(&self, version: &str, args: &[&str]) -> String {
        let out = self.run(version, args);
        let (stdout, stderr) = text(&out);
        assert!(
            !out.status.success(),
            "kubectl {version} {args:?} succeeded: {stdout}"
        );
        stderr
    }

    /// Runs kubectl on a pseudo-terminal (`script`) after setting its size, feeding
    /// `input`; returns the terminal's output.
    fn in_terminal(&self, version: &str, args: &str, input: &[u8]) -> String {
        let cmd = format!(
            "stty rows 30 cols 100; {} --kubeconfig {} {args}",
            kubectl(version).display(),
            self.kubeconfig.display()
        );
        let mut child = Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        std::thread::spawn(move || {
            // Typed after kubectl had time to connect.
            std::thread::sleep(Duration::from_secs(2));
            let _ = stdin.write_all(&input);
            std::thread::sleep(Duration::from_secs(20));
        });
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    fn apply(&self, yaml: &str) {
        let out = self.run_with_input("1.33", &["apply", "-f", "-"], yaml.as_bytes());
        assert!(out.status.success(), "{}", text(&out).1);
    }

    fn jsonpath(&self, object: &str, path: &str) -> String {
        let out = self.run("1.33", &["get", object, "-o", &format!("jsonpath={path}")]);
        text(&out).0
    }

    /// Polls `path` of `object` until it equals `want`.
    fn wait_for(&self, object: &str, path: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let got = self.jsonpath(object, path);
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{object} {path}: {got:?}, want {want:?}\n{}",
                self.ok("1.33", &["get", object, "-o", "yaml"])
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn pod(&self, name: &str, spec: &str) {
        self.apply(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n{spec}"
        ));
    }

    fn wait_running(&self, name: &str) {
        self.wait_for(
            &format!("pod/{name}"),
            "{.status.conditions[?(@.type==\"ContainersReady\")].status}",
            "True",
        );
    }
}

/// One busybox container running `script`.
fn busybox(name: &str, script: &str) -> String {
    format!(
        "  containers:\n  - name: {name}\n    image: busybox\n    imagePullPolicy: Never\n    command: [\"sh\", \"-c\", {script:?}]\n"
    )
}

#[test]
fn kubectl_logs() {
    let c = Cluster::start();
    c.pod(
        "lines",
        &busybox(
            "lines",
            "for i in 1 2 3 4 5; do echo line $i; done; sleep 3600",
        ),
    );
    c.pod(
        "follow",
        &format!(
            "  restartPolicy: Never\n{}",
            busybox("follow", "echo start; sleep 6; echo end")
        ),
    );
    c.pod(
        "multi",
        &format!(
            "{}  - name: b\n    image: busybox\n    imagePullPolicy: Never\n    command: [\"sh\", \"-c\", \"echo from-b; sleep 3600\"]\n",
            busybox("a", "echo from-a; sleep 3600")
        ),
    );
    c.pod("crash", &busybox("crash", "echo attempt; sleep 1; exit 1"));
    c.pod(
        "waiting",
        "  containers:\n  - name: w\n    image: no-such-image:1\n    imagePullPolicy: Never\n",
    );
    c.wait_running("follow");
    c.wait_running("lines");
    c.wait_running("multi");
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.ok("1.33", &["logs", "lines"]).lines().count() < 5 {
        assert!(Instant::now() < deadline, "lines never printed its lines");
        std::thread::sleep(Duration::from_millis(100));
    }

    for v in KUBECTLS {
        // logs -f ends when the container exits.
        assert_eq!(c.ok(v, &["logs", "-f", "follow"]), "start\nend\n", "{v}");

        let all: String = (1..=5).map(|i| format!("line {i}\n")).collect();
        assert_eq!(c.ok(v, &["logs", "lines"]), all, "{v}");
        assert_eq!(
            c.ok(v, &["logs", "lines", "--tail", "2"]),
            "line 4\nline 5\n",
            "{v}"
        );
        assert_eq!(
            c.ok(v, &["logs", "lines", "--limit-bytes", "9"]),
            "line 1\nli",
            "{v}"
        );
        assert_eq!(c.ok(v, &["logs", "lines", "--since", "1h"]), all, "{v}");
        assert_eq!(
            c.ok(
                v,
                &["logs", "lines", "--since-time", "2999-01-01T00:00:00Z"]
            ),
            "",
            "{v}"
        );
        let stamped = c.ok(v, &["logs", "lines", "--timestamps", "-c", "lines"]);
        let first = stamped.lines().next().unwrap();
        let (time, rest) = first.split_once(' ').unwrap();
        assert!(
            time.starts_with("20") && time.ends_with('Z') && time.contains('T'),
            "{v}: {first}"
        );
        assert_eq!(rest, "line 1", "{v}");
        let err = c.fails(v, &["logs", "lines", "--previous"]);
        assert!(
            err.contains(r#"previous terminated container "lines" in pod "lines" not found"#),
            "{v}: {err}"
        );

        // Several containers.
        assert_eq!(c.ok(v, &["logs", "multi", "-c", "b"]), "from-b\n", "{v}");
        let both = c.ok(v, &["logs", "multi", "--all-containers"]);
        assert!(
            both.contains("from-a") && both.contains("from-b"),
            "{v}: {both}"
        );
        let err = c.fails(
            v,
            &["get", "--raw", "/api/v1/namespaces/default/pods/multi/log"],
        );
        assert!(
            err.contains("a container name must be specified for pod multi, choose one of: [a b]"),
            "{v}: {err}"
        );

        let err = c.fails(v, &["logs", "waiting"]);
        assert!(
            err.contains(r#"container "w" in pod "waiting" is waiting to start: "#),
            "{v}: {err}"
        );
    }

    // --previous after a restart shows the last run's output.
    c.wait_for(
        "pod/crash",
        "{.status.containerStatuses[0].restartCount}",
        "1",
    );
    for v in KUBECTLS {
        assert_eq!(
            c.ok(v, &["logs", "crash", "--previous"]),
            "attempt\n",
            "{v}"
        );
    }
}

#[test]
fn kubectl_exec_cp_and_attach() {
    let c = Cluster::start();
    c.pod("shell", &busybox("shell", "sleep 3600"));
    for v in KUBECTLS {
        c.pod(
            &format!("interactive-{}", v.replace('.', "-")),
            "  restartPolicy: Never\n  containers:\n  - name: sh\n    image: busybox\n    imagePullPolicy: Never\n    command: [\"sh\"]\n    stdin: true\n    tty: true\n",
        );
        c.pod(
            &format!("once-{}", v.replace('.', "-")),
            "  restartPolicy: Never\n  containers:\n  - name: cat\n    image: busybox\n    imagePullPolicy: Never\n    command: [\"sh\", \"-c\", \"cat; echo after-eof; sleep 1\"]\n    stdin: true\n    stdinOnce: true\n",
        );
    }
    c.wait_running("shell");
    let dir = tempfile::tempdir().unwrap();

    for v in KUBECTLS {
        assert_eq!(
            c.ok(v, &["exec", "shell", "--", "echo", "hi"]),
            "hi\n",
            "{v}"
        );
        // Exit codes propagate.
        let out = c.run(
            v,
            &[
                "exec",
                "shell",
                "--",
                "sh",
                "-c",
                "echo out; echo err >&2; exit 3",
            ],
        );
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(3), "{v}: {stderr}");
        assert_eq!(stdout, "out\n", "{v}");
        assert!(stderr.contains("err\n"), "{v}: {stderr}");
        assert!(
            stderr.contains("command terminated with exit code 3"),
            "{v}: {stderr}"
        );
        // Stdin.
        let out = c.run_with_input(v, &["exec", "-i", "shell", "--", "cat"], b"from stdin\n");
        assert_eq!(text(&out).0, "from stdin\n", "{v}: {}", text(&out).1);
        // A terminal, of the client's size.
        let out = c.in_terminal(v, "exec -it shell -- sh -c \"sleep 1; stty size\"", b"");
        assert!(out.contains("30 100"), "{v}: {out:?}");

        // cp in and out.
        let local = dir.path().join(format!("in-{v}.txt"));
        std::fs::write(&local, format!("copied by {v}\n").repeat(20000)).unwrap();
        c.ok(v, &["cp", local.to_str().unwrap(), "shell:/tmp/in.txt"]);
        let inside = c.ok(v, &["exec", "shell", "--", "cat", "/tmp/in.txt"]);
        assert_eq!(inside, format!("copied by {v}\n").repeat(20000), "{v}");
        let back = dir.path().join(format!("out-{v}.txt"));
        c.ok(v, &["cp", "shell:/tmp/in.txt", back.to_str().unwrap()]);
        assert_eq!(
            std::fs::read_to_string(&back).unwrap(),
            format!("copied by {v}\n").repeat(20000),
            "{v}"
        );
    }

    // attach to the container's own terminal; the shell exits at "exit".
    for v in KUBECTLS {
        let pod = format!("interactive-{}", v.replace('.', "-"));
        c.wait_running(&pod);
        let out = c.in_terminal(
            v,
            &format!("attach -it {pod}"),
            b"echo attached-$((40+2))\rexit\r",
        );
        assert!(out.contains("attached-42"), "{v}: {out:?}");
        c.wait_for(&format!("pod/{pod}"), "{.status.phase}", "Succeeded");

        // attach -i from a pipe (`kubectl run -i` does the same): the session goes on
        // after the client's stdin ends, and with `stdinOnce` the container's stdin
        // closes then, so `cat` ends and what follows it still reaches the client.
        let pod = format!("once-{}", v.replace('.', "-"));
        c.wait_running(&pod);
        let out = c.run_with_input(v, &["attach", "-i", &pod], b"piped\n");
        let (stdout, stderr) = text(&out);
        assert!(
            stdout.contains("piped\nafter-eof\n"),
            "{v}: {stdout:?} {stderr}"
        );
        c.wait_for(&format!("pod/{pod}"), "{.status.phase}", "Succeeded");
    }
}

#[test]
fn kubectl_port_forward() {
    let c = Cluster::start();
    c.pod("web", &busybox("web", "exec httpd -f -p 8080 -h /var/www"));
    c.wait_running("web");
    // httpd listens a moment after it starts.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !c
        .run(
            "1.33",
            &[
                "exec",
                "web",
                "--",
                "wget",
                "-qO-",
                "http://127.0.0.1:8080/index.html",
            ],
        )
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "httpd never listened");
        std::thread::sleep(Duration::from_millis(200));
    }
    for v in KUBECTLS {
        let local = free_port();
        let mut child = c
            .command(v, &["port-forward", "pod/web", &format!("{local}:8080")])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // kubectl's output is drained to the end: it dies of SIGPIPE otherwise.
        let (first_tx, first_rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = first_tx.send(line);
            }
        });
        let first = first_rx.recv_timeout(Duration::from_secs(30)).unwrap();
        assert!(first.starts_with("Forwarding from"), "{v}: {first}");
        for _ in 0..3 {
            let out = Command::new("curl")
                .args(["-s", "--max-time", "10"])
                .arg(format!("http://127.0.0.1:{local}/index.html"))
                .output()
                .unwrap();
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                "hello from skiff",
                "{v}"
            );
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[test]
fn exec_needs_rbac_permission() {
    let c = Cluster::start();
    c.pod("shell", &busybox("shell", "echo hi; sleep 3600"));
    c.wait_running("shell");
    c.ok(
        "1.33",
        &[
            "create",
            "rolebinding",
            "alice-view",
            "--clusterrole=view",
            "--user=alice",
        ],
    );
    for v in KUBECTLS {
        // Viewing logs is allowed, exec is not.
        assert_eq!(c.ok(v, &["logs", "shell", "--as=alice"]), "hi\n", "{v}");
        let err = c.fails(v, &["exec", "shell", "--as=alice", "--", "true"]);
        assert!(
            err.contains("Forbidden") || err.contains("forbidden"),
            "{v}: {err}"
        );
        assert!(err.contains(r#"resource "pods/exec""#), "{v}: {err}");
    }
}

#[test]
fn kubelet_refuses_anonymous_requests() {
    let c = Cluster::start();
    let port = c.jsonpath(
        "node/node-a",
        "{.status.daemonEndpoints.kubeletEndpoint.Port}",
    );
    let ip = c.jsonpath(
        "node/node-a",
        "{.status.addresses[?(@.type==\"InternalIP\")].address}",
    );
    let out = Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("https://{ip}:{port}/containerLogs/default/x/y"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "401");
    let _ = &c.skiff;
}
