//! Container networking through the CLI (issue 4): user networks with names,
//! published ports, outbound NAT, isolation, and no leaks.
//! Traffic goes only to loopback and to namespaces these tests create.

mod common;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::Skiff;

fn sh(cmd: &str) -> std::process::Output {
    Command::new("sh").args(["-c", cmd]).output().unwrap()
}

fn wait_for(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// A "remote host": its own network namespace, linked to the host by a veth
/// pair with addresses 10.251.N.1 (host side) and 10.251.N.2 (remote side).
/// Everything is removed on drop.
struct TestHost {
    ns: String,
    host_if: String,
    host_ip: String,
    remote_ip: String,
}

impl TestHost {
    fn new() -> TestHost {
        let n = std::process::id() % 200 + 20;
        let tag = format!("{:x}{:x}", std::process::id(), rand_u16());
        let ns = format!("skt-{tag}");
        let host_if = format!("skh{}", &tag[..tag.len().min(10)]);
        let peer_if = format!("skp{}", &tag[..tag.len().min(10)]);
        let octet = (u32::from(rand_u16()) + n) % 250 + 1;
        let host_ip = format!("10.251.{octet}.1");
        let remote_ip = format!("10.251.{octet}.2");
        let host = TestHost {
            ns: ns.clone(),
            host_if: host_if.clone(),
            host_ip: host_ip.clone(),
            remote_ip: remote_ip.clone(),
        };
        let script = format!(
            "set -e; ip netns add {ns}; ip link add {host_if} type veth peer name {peer_if}; \
             ip link set {peer_if} netns {ns}; ip addr add {host_ip}/24 dev {host_if}; ip link set {host_if} up; \
             ip -n {ns} addr add {remote_ip}/24 dev {peer_if}; ip -n {ns} link set {peer_if} up; ip -n {ns} link set lo up"
        );
        let out = sh(&script);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        host
    }

    /// Runs a one-shot TCP server in the namespace that answers with the
    /// client's address.
    fn peer_echo_server(&self, port: u16) -> Child {
        let code = format!(
            "import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('{}', {port})); s.listen(1)\nc,a=s.accept(); c.sendall((a[0]+'\\n').encode()); c.close()",
            self.remote_ip
        );
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns, "python3", "-c", &code])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        child
    }

    /// Runs `cmd` inside the namespace.
    fn exec(&self, cmd: &str) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns, "sh", "-c", cmd])
            .output()
            .unwrap()
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        let _ = sh(&format!(
            "ip link del {} 2>/dev/null; ip netns del {}",
            self.host_if, self.ns
        ));
    }
}

fn rand_u16() -> u16 {
    let mut b = [0u8; 2];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .unwrap();
    u16::from_le_bytes(b)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn containers_on_a_user_network_talk_by_name_and_are_isolated() {
    let s = Skiff::with_busybox();
    let octet = std::process::id() % 250;
    s.ok(&[
        "network",
        "create",
        "--subnet",
        &format!("10.252.{octet}.0/24"),
        "front",
    ]);
    s.ok(&[
        "network",
        "create",
        "--subnet",
        &format!("10.253.{octet}.0/24"),
        "back",
    ]);
    s.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "front",
        "--network-alias",
        "www",
        "busybox",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/var/www",
    ]);
    s.ok(&[
        "run",
        "-d",
        "--name",
        "db",
        "--network",
        "back",
        "busybox",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/var/www",
    ]);
    // By name and by alias, through the network's DNS.
    let out = s.ok(&[
        "run",
        "--rm",
        "--network",
        "front",
        "busybox",
        "sh",
        "-c",
        "timeout 5 wget -qO- http://web/ && timeout 5 wget -qO- http://www/",
    ]);
    assert_eq!(out, "hello from skiff\nhello from skiff\n");
    // Names of another network do not resolve, and its addresses do not answer.
    // (`timeout` must not be PID 1, which ignores the SIGTERM it sends: the
    // trailing `exit` keeps sh from exec'ing it.)
    let fetch = |url: &str| format!("timeout 2 wget -qO- {url}; exit $?");
    s.code(
        1,
        &[
            "run",
            "--rm",
            "--network",
            "front",
            "busybox",
            "sh",
            "-c",
            &fetch("http://db/"),
        ],
    );
    let db_ip = s.ok(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "db"]);
    assert!(db_ip.starts_with("10.253."), "{db_ip}");
    let db_url = format!("http://{}/", db_ip.trim());
    let out = s.run(&[
        "run",
        "--rm",
        "--network",
        "front",
        "busybox",
        "sh",
        "-c",
        &fetch(&db_url),
    ]);
    assert!(
        !out.status.success(),
        "isolation broken: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // A network in use cannot be removed.
    let (_, err) = s.code(1, &["network", "rm", "front"]);
    assert!(err.contains("active endpoints"), "{err}");
    let (_, err) = s.code(
        125,
        &["run", "--rm", "--network", "nowhere", "busybox", "true"],
    );
    assert!(err.contains("nowhere"), "{err}");
}

#[test]
fn published_port_serves_from_host_and_from_another_host() {
    let s = Skiff::with_busybox();
    let port = free_port();
    s.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        &format!("{port}:8080"),
        "busybox",
        "httpd",
        "-f",
        "-p",
        "8080",
        "-h",
        "/var/www",
    ]);
    assert!(s.ok(&["ps"]).contains(&format!("0.0.0.0:{port}->8080/tcp")));
    // From the host itself.
    assert!(wait_for(|| sh(&format!(
        "timeout 2 busybox wget -qO- http://127.0.0.1:{port}/"
    ))
    .stdout
        == b"hello from skiff\n"));
    // From another host (a network namespace) through the host's address.
    // (busybox's `wget -T` crashes in Debian's busybox-static: use `timeout`.)
    let remote = TestHost::new();
    let out = remote.exec(&format!(
        "timeout 3 busybox wget -qO- http://{}:{port}/",
        remote.host_ip
    ));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from skiff\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // From a container, through the published port on the host (hairpin).
    let out = s.ok(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        &format!("timeout 3 wget -qO- http://{}:{port}/", remote.host_ip),
    ]);
    assert_eq!(out, "hello from skiff\n");
    // The port closes with the container.
    s.ok(&["rm", "-f", "web"]);
    assert!(!sh(&format!(
        "timeout 1 busybox wget -qO- http://127.0.0.1:{port}/"
    ))
    .status
    .success());
    // A bad -p is refused before anything is created.
    let (_, err) = s.code(125, &["run", "-p", "notaport", "busybox", "true"]);
    assert!(err.contains("notaport"), "{err}");
    assert_eq!(s.ok(&["ps", "-aq"]), "");
}

#[test]
fn outbound_traffic_is_masqueraded() {
    let s = Skiff::with_busybox();
    let remote = TestHost::new();
    let mut server = remote.peer_echo_server(9000);
    let out = s.ok(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        &format!("nc {} 9000 </dev/null", remote.remote_ip),
    ]);
    let _ = server.wait();
    // The remote host saw the host's address, not the container's.
    assert_eq!(out.trim(), remote.host_ip);
    // --network none has no way out.
    s.code(
        1,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "busybox",
            "sh",
            "-c",
            &format!("nc -w 1 {} 9000 </dev/null", remote.remote_ip),
        ],
    );
    // --network host is the host's stack.
    let host_links = s.ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        "busybox",
        "ip",
        "-o",
        "link",
    ]);
    assert!(host_links.contains(&remote.host_if), "{host_links}");
}

#[test]
fn run_rm_cycles_leak_nothing() {
    let s = Skiff::with_busybox();
    let port = free_port().to_string();
    for _ in 0..200 {
        s.ok(&[
            "run",
            "--rm",
            "-p",
            &format!("{port}:80"),
            "busybox",
            "true",
        ]);
    }
    let inspect = s.ok(&["network", "inspect", "bridge"]);
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    let bridge = v[0]["network"]["bridge"].as_str().unwrap().to_string();
    assert_eq!(
        v[0]["attachments"].as_array().unwrap().len(),
        0,
        "{inspect}"
    );
    // No veth left on the bridge.
    let links = sh(&format!("ip -o link show master {bridge}"));
    assert_eq!(
        String::from_utf8_lossy(&links.stdout).trim(),
        "",
        "leaked interfaces"
    );
    // No address left in IPAM.
    let ipam = std::fs::read_to_string(s.root.path().join("networks/bridge/ipam.json"))
        .unwrap_or_default();
    let ipam: serde_json::Value = serde_json::from_str(&ipam).unwrap_or_default();
    assert!(
        ipam["allocations"].as_object().is_none_or(|a| a.is_empty()),
        "leaked addresses: {ipam}"
    );
    // No port left in the rules.
    let rules = sh("nft list ruleset");
    assert!(
        !String::from_utf8_lossy(&rules.stdout).contains(&format!(" {port} ")),
        "leaked port rule"
    );
    // No mount left under the root.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&s.root.path().display().to_string()),
        "leaked mount"
    );
    assert_eq!(s.ok(&["ps", "-aq"]), "");
}
