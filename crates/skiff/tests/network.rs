//! Container networking through the CLI (issue 4): user networks with names,
//! published ports, outbound NAT, isolation, and no leaks.
//! Traffic goes only to loopback and to namespaces these tests create.

use crate::common;

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

/// Two consecutive host ports that are free now.
fn free_port_pair() -> u16 {
    loop {
        let p = free_port();
        if p < 65535 && std::net::TcpListener::bind(("0.0.0.0", p + 1)).is_ok() {
            return p;
        }
    }
}

/// The body served at `127.0.0.1:port`, if any (within 2 seconds).
fn fetch_local(port: u16) -> Option<String> {
    let out = sh(&format!(
        "timeout 2 busybox wget -qO- http://127.0.0.1:{port}/"
    ));
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).to_string())
}

/// The bridge device of network `name`, from `network inspect`.
fn bridge_of(s: &Skiff, name: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&s.ok(&["network", "inspect", name])).unwrap();
    v[0]["Options"]["com.docker.network.bridge.name"]
        .as_str()
        .unwrap()
        .to_string()
}

/// This root's own nftables table: the skiff table that names its default
/// bridge (only read here; other roots' tables are left alone).
fn table_of(s: &Skiff) -> String {
    let bridge = bridge_of(s, "bridge");
    let tables = String::from_utf8(sh("nft list tables").stdout).unwrap();
    tables
        .lines()
        .filter_map(|l| l.strip_prefix("table ip "))
        .filter(|t| t.starts_with("skiff"))
        .find(|t| {
            String::from_utf8_lossy(&sh(&format!("nft list table ip {t}")).stdout)
                .contains(&format!("\"{bridge}\""))
        })
        .unwrap_or_else(|| panic!("no nftables table names {bridge}: {tables}"))
        .to_string()
}

/// Host ports as `skiff port` prints them: (container port/proto, host address).
fn port_lines(s: &Skiff, container: &str) -> Vec<(String, String)> {
    s.ok(&["port", container])
        .lines()
        .map(|l| {
            let (c, h) = l.split_once(" -> ").unwrap_or_else(|| panic!("{l}"));
            (c.to_string(), h.to_string())
        })
        .collect()
}

fn ephemeral_range() -> (u16, u16) {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let mut it = text.split_whitespace().map(|p| p.parse().unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

#[test]
fn any_host_port_ranges_and_the_port_command() {
    let s = Skiff::with_busybox();
    let pair = free_port_pair();
    let range = format!("127.0.0.1:{}-{}:80-81/tcp", pair, pair + 1);
    s.ok(&[
        "run", "-d", "--name", "web", "-p", "80", "-p", "53/udp", "-p", &range, "busybox", "httpd",
        "-f", "-p", "80", "-h", "/var/www",
    ]);
    let lines = port_lines(&s, "web");
    assert_eq!(lines.len(), 4, "{lines:?}");
    let any = |proto: &str| -> u16 {
        let (_, host) = lines
            .iter()
            .find(|(c, h)| c == proto && h.starts_with("0.0.0.0:"))
            .unwrap_or_else(|| panic!("{proto} in {lines:?}"));
        host.trim_start_matches("0.0.0.0:").parse().unwrap()
    };
    let (tcp, udp) = (any("80/tcp"), any("53/udp"));
    let (low, high) = ephemeral_range();
    for p in [tcp, udp] {
        assert!((low..=high).contains(&p), "{p} outside {low}-{high}");
    }
    assert!(lines.contains(&("80/tcp".into(), format!("127.0.0.1:{pair}"))));
    assert!(lines.contains(&("81/tcp".into(), format!("127.0.0.1:{}", pair + 1))));
    // Sorted by private port, as docker prints them.
    assert_eq!(lines[0].0, "53/udp");
    // One private port: its host addresses only.
    let out = s.ok(&["port", "web", "80"]);
    assert_eq!(out, format!("0.0.0.0:{tcp}\n127.0.0.1:{pair}\n"));
    assert_eq!(
        s.ok(&["port", "web", "81/tcp"]),
        format!("127.0.0.1:{}\n", pair + 1)
    );
    let (_, err) = s.code(1, &["port", "web", "99"]);
    assert!(
        err.contains("No public port '99/tcp' published for web"),
        "{err}"
    );
    // ps and inspect show the chosen ports.
    let ps = s.ok(&["ps"]);
    assert!(ps.contains(&format!("0.0.0.0:{tcp}->80/tcp")), "{ps}");
    assert!(
        ps.contains(&format!("127.0.0.1:{}-{}->80-81/tcp", pair, pair + 1)),
        "{ps}"
    );
    let ports = s.ok(&["inspect", "-f", "{{json .NetworkSettings.Ports}}", "web"]);
    let ports: serde_json::Value = serde_json::from_str(&ports).unwrap();
    assert_eq!(ports["53/udp"][0]["HostPort"], udp.to_string());
    assert_eq!(ports["80/tcp"][0]["HostIp"], "0.0.0.0");
    let bindings = s.ok(&["inspect", "-f", "{{json .HostConfig.PortBindings}}", "web"]);
    let bindings: serde_json::Value = serde_json::from_str(&bindings).unwrap();
    assert_eq!(bindings["53/udp"][0]["HostPort"], "");
    // The chosen port and the range serve.
    assert!(wait_for(
        || fetch_local(tcp).as_deref() == Some("hello from skiff\n")
    ));
    assert_eq!(fetch_local(pair).as_deref(), Some("hello from skiff\n"));
    // The port stays the container's: the next container gets another one.
    s.ok(&[
        "run", "-d", "--name", "other", "-p", "80", "busybox", "sleep", "60",
    ]);
    let other = port_lines(&s, "other");
    assert_eq!(other.len(), 1);
    assert_ne!(other[0].1, format!("0.0.0.0:{tcp}"));
    // Ranges of different lengths are refused as Docker does, before anything exists.
    let (_, err) = s.code(
        125,
        &["run", "-d", "-p", "8000-8001:80-82", "busybox", "true"],
    );
    assert!(
        err.contains("invalid ranges specified for container and host Ports: 80-82 and 8000-8001"),
        "{err}"
    );
    assert_eq!(s.ok(&["ps", "-aq"]).lines().count(), 2);
    // Gone with the container.
    s.ok(&["rm", "-f", "web"]);
    assert!(fetch_local(tcp).is_none());
    let (_, err) = s.code(1, &["port", "web"]);
    assert!(err.contains("No such container: web"), "{err}");
    // A host range with one container port: a free port of the range (Docker's rule).
    s.ok(&[
        "run",
        "-d",
        "--name",
        "ranged",
        "-p",
        &format!("{}-{}:90", pair, pair + 1),
        "busybox",
        "sleep",
        "60",
    ]);
    let ranged = port_lines(&s, "ranged");
    assert_eq!(ranged.len(), 1);
    assert!(
        [pair, pair + 1]
            .iter()
            .any(|p| ranged[0] == ("90/tcp".to_string(), format!("0.0.0.0:{p}"))),
        "{ranged:?}"
    );
}

#[test]
fn publish_all_publishes_the_exposed_ports() {
    let s = Skiff::with_busybox();
    s.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-P",
        "--expose",
        "80",
        "--expose",
        "7000-7001/udp",
        "busybox",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/var/www",
    ]);
    let lines = port_lines(&s, "web");
    let private: Vec<&str> = lines.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(private, ["80/tcp", "7000/udp", "7001/udp"], "{lines:?}");
    let tcp: u16 = lines[0].1.trim_start_matches("0.0.0.0:").parse().unwrap();
    assert!(wait_for(
        || fetch_local(tcp).as_deref() == Some("hello from skiff\n")
    ));
    assert_eq!(
        s.ok(&["inspect", "-f", "{{.HostConfig.PublishAllPorts}}", "web"]),
        "true\n"
    );
    // --expose alone publishes nothing.
    s.ok(&[
        "run", "-d", "--name", "quiet", "--expose", "80", "busybox", "sleep", "60",
    ]);
    assert_eq!(s.ok(&["port", "quiet"]), "");
}

#[test]
fn host_port_conflicts_fail_and_create_nothing() {
    let s = Skiff::with_busybox();
    let port = free_port();
    s.ok(&[
        "run",
        "-d",
        "--name",
        "first",
        "-p",
        &format!("{port}:80"),
        "busybox",
        "sleep",
        "60",
    ]);
    // Published by another container (any address overlaps one address).
    for spec in [format!("{port}:80"), format!("127.0.0.1:{port}:81")] {
        let (_, err) = s.code(
            125,
            &[
                "run", "-d", "--name", "second", "-p", &spec, "busybox", "true",
            ],
        );
        assert!(err.contains("failed: port is already allocated"), "{err}");
    }
    let (_, err) = s.code(
        125,
        &["run", "-d", "-p", &format!("{port}:80"), "busybox", "true"],
    );
    assert!(
        err.contains(&format!(
            "Bind for 0.0.0.0:{port} failed: port is already allocated"
        )),
        "{err}"
    );
    // Bound by a host process.
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let busy = listener.local_addr().unwrap().port();
    let (_, err) = s.code(
        125,
        &["run", "-d", "-p", &format!("{busy}:80"), "busybox", "true"],
    );
    assert!(
        err.contains(&format!(
            "listen tcp4 0.0.0.0:{busy}: bind: address already in use"
        )),
        "{err}"
    );
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let busy_udp = udp.local_addr().unwrap().port();
    let (_, err) = s.code(
        125,
        &[
            "create",
            "-p",
            &format!("127.0.0.1:{busy_udp}:53/udp"),
            "busybox",
            "true",
        ],
    );
    assert!(err.contains("address already in use"), "{err}");
    // Nothing but the first container exists.
    assert_eq!(s.ok(&["ps", "-aq"]).lines().count(), 1);
    drop((listener, udp));
}

#[test]
fn internal_networks_keep_their_containers_in() {
    let s = Skiff::with_busybox();
    let octet = std::process::id() % 250;
    s.ok(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        &format!("10.254.{octet}.0/24"),
        "inner",
    ]);
    let v: serde_json::Value =
        serde_json::from_str(&s.ok(&["network", "inspect", "inner"])).unwrap();
    assert_eq!(v[0]["Internal"], true);
    assert_eq!(v[0]["Name"], "inner");
    // Publishing is accepted and publishes nothing, as in Docker.
    let port = free_port();
    s.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "inner",
        "-p",
        &format!("{port}:80"),
        "busybox",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/var/www",
    ]);
    assert_eq!(s.ok(&["port", "web"]), "");
    assert!(!s.ok(&["ps"]).contains(&format!("{port}->")));
    // Containers talk to each other by name.
    let out = s.ok(&[
        "run",
        "--rm",
        "--network",
        "inner",
        "busybox",
        "sh",
        "-c",
        "timeout 5 wget -qO- http://web/; exit $?",
    ]);
    assert_eq!(out, "hello from skiff\n");
    assert!(fetch_local(port).is_none());
    // No default route, and no way to another host even with one.
    let routes = s.ok(&[
        "run",
        "--rm",
        "--network",
        "inner",
        "busybox",
        "ip",
        "route",
    ]);
    assert!(!routes.contains("default"), "{routes}");
    let remote = TestHost::new();
    let mut server = remote.peer_echo_server(9000);
    let escape = format!(
        "ip route add default via $(ip route | awk '/src/ {{print $NF; exit}}' | sed 's/[0-9]*$/1/') 2>/dev/null; \
         nc -w 2 {} 9000 </dev/null; exit $?",
        remote.remote_ip
    );
    let out = s.run(&[
        "run",
        "--rm",
        "--network",
        "inner",
        "--cap-add",
        "NET_ADMIN",
        "busybox",
        "sh",
        "-c",
        &escape,
    ]);
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        !out.status.success() || String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "an internal container reached another host: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The same from the default network works (so the check above is meaningful).
    let mut server = remote.peer_echo_server(9000);
    let out = s.ok(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        &format!("nc -w 2 {} 9000 </dev/null", remote.remote_ip),
    ]);
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(out.trim(), remote.host_ip);
}

#[test]
fn deleted_rules_are_rebuilt_by_the_next_command() {
    let s = Skiff::with_busybox();
    let port = free_port();
    s.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        &format!("{port}:80"),
        "busybox",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/var/www",
    ]);
    assert!(wait_for(
        || fetch_local(port).as_deref() == Some("hello from skiff\n")
    ));
    let table = table_of(&s);
    let out = sh(&format!("nft delete table ip {table}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        fetch_local(port).is_none(),
        "the port still served without rules"
    );
    // Any command that touches networking puts the whole table back.
    s.ok(&["run", "--rm", "busybox", "true"]);
    assert!(wait_for(
        || fetch_local(port).as_deref() == Some("hello from skiff\n")
    ));
    // Also after a chain is lost, through `network create`.
    let out = sh(&format!("nft delete chain ip {table} prerouting"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.ok(&["network", "create", "another"]);
    let listing = String::from_utf8(sh(&format!("nft list table ip {table}")).stdout).unwrap();
    assert!(listing.contains("chain prerouting"), "{listing}");
    assert!(wait_for(
        || fetch_local(port).as_deref() == Some("hello from skiff\n")
    ));
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
    let bridge = bridge_of(&s, "bridge");
    assert_eq!(
        v[0]["Containers"].as_object().unwrap().len(),
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
