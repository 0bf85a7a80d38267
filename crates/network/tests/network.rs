//! Integration tests against the real kernel: rtnetlink, nftables, sysctls,
//! namespaces. They need root. Each test has its own namespaces, bridges,
//! subnets and nftables table (see `common`), so they run in parallel.

mod common;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;

use common::*;
use hickory_proto::op::ResponseCode;
use skiff_network::ipam::Ipam;
use skiff_network::{dns, netns, AttachRequest, Error, PortMapping};

fn attach(env: &Env, network: &str, ns: &Netns, id: &str) -> skiff_network::Attachment {
    env.net
        .attach(&AttachRequest::new(network, id, ns.path()))
        .unwrap()
}

#[test]
fn two_containers_on_one_network_talk() {
    let env = Env::new();
    let n = env.network(true, false);
    let (ns1, ns2) = (Netns::new(), Netns::new());
    let a1 = attach(&env, &n.name, &ns1, &format!("c1{}", unique()));
    let a2 = attach(&env, &n.name, &ns2, &format!("c2{}", unique()));
    assert_ne!(a1.ip, a2.ip);
    assert!(n.subnet.contains(&a1.ip) && n.subnet.contains(&a2.ip));

    // Inside: eth0 with the address and MAC, lo up, default route via the gateway.
    let addr = ns1.ip(&["-o", "-4", "addr", "show", "dev", "eth0"]);
    assert!(addr.contains(&format!("{}/24", a1.ip)), "{addr}");
    assert!(ns1
        .ip(&["link", "show", "eth0"])
        .contains(&format!("link/ether {}", a1.mac)));
    assert!(ns1.ip(&["link", "show", "lo"]).contains("UP"));
    assert!(ns1
        .ip(&["route", "show", "default"])
        .contains(&format!("default via {} dev eth0", n.gateway)));
    assert_eq!(bridge_ports(&n.bridge).len(), 2);

    assert!(ping(&ns1, a2.ip), "ping {} from ns1", a2.ip);
    let server = tcp_server(Some(&ns2.path()), 7000);
    let seen = tcp_request(Some(&ns1.path()), SocketAddr::from((a2.ip, server.port()))).unwrap();
    // Same bridge: no NAT.
    assert_eq!(seen, a1.ip.to_string());

    env.net.check(&n.name, &a1.container_id, None).unwrap();
    env.net
        .check(&n.name, &a2.container_id, Some(&ns2.path()))
        .unwrap();
}

#[test]
fn published_port_is_reachable_from_host_outside_and_itself() {
    let env = Env::new();
    let n = env.network(true, false);
    let ext = ExternalHost::new();
    let (ns1, ns2) = (Netns::new(), Netns::new());
    let tcp_port = random_port();
    let udp_port = tcp_port.wrapping_add(1);
    let mut req = AttachRequest::new(&n.name, format!("c1{}", unique()), ns1.path());
    req.ports = vec![
        format!("{tcp_port}:80")
            .parse::<PortMapping>()
            .unwrap()
            .into(),
        format!("127.0.0.1:{udp_port}:53/udp")
            .parse::<PortMapping>()
            .unwrap()
            .into(),
    ];
    let a1 = env.net.attach(&req).unwrap();
    let a2 = attach(&env, &n.name, &ns2, &format!("c2{}", unique()));
    tcp_server(Some(&ns1.path()), 80);
    udp_server(&ns1.path(), 53);

    // From the host itself: loopback and its own addresses.
    let seen = tcp_request(None, SocketAddr::from((Ipv4Addr::LOCALHOST, tcp_port))).unwrap();
    assert_eq!(seen, n.gateway.to_string(), "loopback is masqueraded");
    let seen = tcp_request(None, SocketAddr::from((ext.host_ip, tcp_port))).unwrap();
    assert_eq!(seen, ext.host_ip.to_string());
    // From another machine: its own address is seen, no NAT.
    let seen = tcp_request(
        Some(&ext.ns.path()),
        SocketAddr::from((ext.host_ip, tcp_port)),
    )
    .unwrap();
    assert_eq!(seen, ext.ip.to_string());
    // Hairpin: the container through its own published port, and a neighbour.
    for (ns, via) in [(&ns1, ext.host_ip), (&ns2, n.gateway)] {
        let seen = tcp_request(Some(&ns.path()), SocketAddr::from((via, tcp_port))).unwrap();
        assert_eq!(seen, n.gateway.to_string());
    }
    // UDP bound to 127.0.0.1 only.
    let seen = udp_request(SocketAddr::from((Ipv4Addr::LOCALHOST, udp_port))).unwrap();
    assert_eq!(seen, n.gateway.to_string());
    assert!(tcp_request(
        Some(&ext.ns.path()),
        SocketAddr::from((ext.host_ip, udp_port))
    )
    .is_err());
    // An unpublished port stays closed.
    assert!(tcp_request(
        Some(&ext.ns.path()),
        SocketAddr::from((ext.host_ip, tcp_port.wrapping_add(2)))
    )
    .is_err());

    // A second owner of the port is refused; after detach the port is free.
    let mut clash = AttachRequest::new(&n.name, format!("c3{}", unique()), ns2.path());
    clash.interface = "eth1".into();
    clash.ports = vec![format!("{tcp_port}:80")
        .parse::<PortMapping>()
        .unwrap()
        .into()];
    assert!(matches!(
        env.net.attach(&clash),
        Err(Error::HostPort(
            skiff_network::hostports::HostPortError::Allocated { .. }
        ))
    ));
    env.net.detach(&n.name, &a1.container_id).unwrap();
    assert!(tcp_request(None, SocketAddr::from((Ipv4Addr::LOCALHOST, tcp_port))).is_err());
    let _ = a2;
}

#[test]
fn outbound_traffic_is_masqueraded() {
    let env = Env::new();
    let n = env.network(true, false);
    let ext = ExternalHost::new();
    let ns = Netns::new();
    let a = attach(&env, &n.name, &ns, &format!("c{}", unique()));
    let server = tcp_server(Some(&ext.ns.path()), 0);
    let seen = tcp_request(Some(&ns.path()), SocketAddr::from((ext.ip, server.port()))).unwrap();
    assert_eq!(
        seen,
        ext.host_ip.to_string(),
        "the host's address, not {}",
        a.ip
    );
    assert!(ping(&ns, ext.ip));
}

#[test]
fn networks_are_isolated_from_each_other() {
    let env = Env::new();
    let (a, b) = (env.network(true, false), env.network(true, false));
    let (c, d) = (env.network(false, false), env.network(false, false));
    let (nsa, nsb, nsc, nsd) = (Netns::new(), Netns::new(), Netns::new(), Netns::new());
    let aa = attach(&env, &a.name, &nsa, &format!("a{}", unique()));
    let ab = attach(&env, &b.name, &nsb, &format!("b{}", unique()));
    let ac = attach(&env, &c.name, &nsc, &format!("c{}", unique()));
    let ad = attach(&env, &d.name, &nsd, &format!("d{}", unique()));
    for (ns, ip) in [(&nsa, ab.ip), (&nsb, aa.ip), (&nsc, aa.ip), (&nsa, ac.ip)] {
        let server = tcp_server(
            Some(
                &[&nsa, &nsb, &nsc, &nsd][[aa.ip, ab.ip, ac.ip, ad.ip]
                    .iter()
                    .position(|i| *i == ip)
                    .unwrap()]
                .path(),
            ),
            0,
        );
        assert!(
            tcp_request(Some(&ns.path()), SocketAddr::from((ip, server.port()))).is_err(),
            "{} reached {ip} across an isolated network",
            ns.name
        );
    }
    // Control: two networks without isolation route to each other, so the
    // failures above come from the isolation rules.
    let server = tcp_server(Some(&nsd.path()), 0);
    let seen = tcp_request(Some(&nsc.path()), SocketAddr::from((ad.ip, server.port()))).unwrap();
    assert_eq!(seen, ac.ip.to_string());
}

/// Not a test: the resolver process of `names_resolve_through_embedded_dns`,
/// which runs this binary with `dns_child --exact`.
#[test]
fn dns_child() {
    if std::env::var_os(dns::CONFIG_ENV).is_some() {
        let err = dns::serve_inherited().unwrap_err();
        panic!("resolver ended: {err}");
    }
}

#[test]
fn names_resolve_through_embedded_dns() {
    let upstream = upstream_dns(Ipv4Addr::new(192, 0, 2, 77));
    let env = Env::with(|c| {
        c.dns_command = Some(vec![
            std::env::current_exe().unwrap().display().to_string(),
            "dns_child".into(),
            "--exact".into(),
            "--nocapture".into(),
        ]);
        c.dns_upstreams = Some(vec![upstream]);
    });
    let n = env.network(true, true);
    let other = env.network(true, true);
    let (ns1, ns2, ns3) = (Netns::new(), Netns::new(), Netns::new());
    let mut r1 = AttachRequest::new(&n.name, format!("c1{}", unique()), ns1.path());
    r1.name = Some("alpha".into());
    r1.aliases = vec!["db".into()];
    let a1 = env.net.attach(&r1).unwrap();
    let mut r2 = AttachRequest::new(&n.name, format!("c2{}", unique()), ns2.path());
    r2.name = Some("beta".into());
    let a2 = env.net.attach(&r2).unwrap();
    let mut r3 = AttachRequest::new(&other.name, format!("c3{}", unique()), ns3.path());
    r3.name = Some("gamma".into());
    env.net.attach(&r3).unwrap();
    assert_eq!(a1.dns_server, Some(n.gateway));
    let server = SocketAddr::from((n.gateway, 53));

    for tcp in [false, true] {
        assert_eq!(
            dns_query(&ns2.path(), server, "alpha", tcp).unwrap(),
            (ResponseCode::NoError, vec![a1.ip])
        );
        assert_eq!(
            dns_query(&ns1.path(), server, "BETA.", tcp).unwrap(),
            (ResponseCode::NoError, vec![a2.ip])
        );
        assert_eq!(
            dns_query(&ns2.path(), server, "db", tcp).unwrap().1,
            vec![a1.ip]
        );
        // Other names go upstream.
        assert_eq!(
            dns_query(&ns1.path(), server, "upstream.test", tcp)
                .unwrap()
                .1,
            vec![Ipv4Addr::new(192, 0, 2, 77)]
        );
    }
    // Short id, and a container that joins later.
    let short: String = a1.container_id.chars().take(12).collect();
    assert_eq!(
        dns_query(&ns2.path(), server, &short, false).unwrap().1,
        vec![a1.ip]
    );
    let ns4 = Netns::new();
    let mut r4 = AttachRequest::new(&n.name, format!("c4{}", unique()), ns4.path());
    r4.name = Some("delta".into());
    let a4 = env.net.attach(&r4).unwrap();
    assert_eq!(
        dns_query(&ns1.path(), server, "delta", false).unwrap().1,
        vec![a4.ip]
    );
    // Names of another network are not visible.
    let other_server = SocketAddr::from((other.gateway, 53));
    assert_eq!(
        dns_query(&ns3.path(), other_server, "alpha", false)
            .unwrap()
            .1,
        vec![Ipv4Addr::new(192, 0, 2, 77)],
        "alpha must come from upstream on the other network"
    );

    // The resolver stops with the last container.
    let dir = env.dir.path().join("networks").join(&n.name);
    assert!(dns::is_running(&dir).unwrap());
    for id in [&a1.container_id, &a2.container_id, &a4.container_id] {
        env.net.detach(&n.name, id).unwrap();
    }
    assert!(!dns::is_running(&dir).unwrap());
}

#[test]
fn no_leaks_after_200_attach_detach_cycles() {
    let env = Env::new();
    let n = env.network(true, false);
    let ns = Netns::new();
    let port = random_port();
    let mut host_interfaces = Vec::new();
    for i in 0..200 {
        let mut req = AttachRequest::new(&n.name, format!("leak{i}"), ns.path());
        req.ports = vec![format!("{port}:80").parse::<PortMapping>().unwrap().into()];
        let a = env.net.attach(&req).unwrap();
        assert!(n.subnet.contains(&a.ip));
        host_interfaces.push(a.host_interface.clone());
        env.net.detach(&n.name, &a.container_id).unwrap();
    }
    // The bridge stays (it belongs to the network); nothing else does.
    assert!(bridge_ports(&n.bridge).is_empty());
    let links = sh(&["ip", "-o", "link"]);
    for name in &host_interfaces {
        assert!(!links.contains(&format!(" {name}@")), "{name} leaked");
    }
    let inside = ns.ip(&["-o", "link"]);
    assert_eq!(inside.lines().count(), 1, "only lo: {inside}");
    assert!(!ns
        .ip(&["-o", "-4", "addr"])
        .contains(&n.subnet.to_string()[..6]));
    let ipam = Ipam::new(
        env.dir.path().join("networks").join(&n.name),
        n.subnet,
        n.gateway,
    );
    assert!(ipam.allocations().unwrap().is_empty());
    assert!(env.net.inspect(&n.name).unwrap().attachments.is_empty());
    let table = sh(&["nft", "list", "table", "ip", &env.table]);
    assert!(!table.contains(&port.to_string()), "{table}");
    let none: [&str; 0] = [];
    assert_eq!(env.net.gc(&none).unwrap(), Default::default());
}

#[test]
fn concurrent_attaches_get_distinct_addresses() {
    let env = Env::new();
    let n = env.network(true, false);
    let namespaces: Vec<Netns> = (0..12).map(|_| Netns::new()).collect();
    let ips: Vec<Ipv4Addr> = std::thread::scope(|s| {
        let handles: Vec<_> = namespaces
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                let env = &env;
                let n = &n;
                s.spawn(move || {
                    env.net
                        .attach(&AttachRequest::new(&n.name, format!("par{i}"), ns.path()))
                        .unwrap()
                        .ip
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let unique: BTreeSet<_> = ips.iter().collect();
    assert_eq!(unique.len(), ips.len(), "{ips:?}");
    assert_eq!(bridge_ports(&n.bridge).len(), 12);
}

/// Not a test: one process of `ipam_is_safe_across_processes`.
#[test]
fn ipam_child() {
    let Ok(dir) = std::env::var("SKT_IPAM_DIR") else {
        return;
    };
    let ipam = Ipam::new(
        dir,
        "10.0.0.0/20".parse().unwrap(),
        Ipv4Addr::new(10, 0, 0, 1),
    );
    std::thread::scope(|s| {
        for t in 0..4 {
            let ipam = ipam.clone();
            s.spawn(move || {
                for i in 0..10 {
                    ipam.allocate(&format!("p{}-t{t}-{i}", std::process::id()), None)
                        .unwrap();
                }
            });
        }
    });
}

#[test]
fn ipam_is_safe_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let children: Vec<_> = (0..8)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .args(["ipam_child", "--exact", "--quiet"])
                .env("SKT_IPAM_DIR", dir.path())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let ipam = Ipam::new(
        dir.path(),
        "10.0.0.0/20".parse().unwrap(),
        Ipv4Addr::new(10, 0, 0, 1),
    );
    let allocations = ipam.allocations().unwrap();
    // 8 processes x 4 threads x 10: every one recorded, none shared.
    assert_eq!(allocations.len(), 320);
    let owners: BTreeSet<_> = allocations.values().collect();
    assert_eq!(owners.len(), 320);
}

#[test]
fn gc_cleans_up_after_dead_containers_and_killed_setups() {
    let env = Env::new();
    let n = env.network(true, false);
    let live_ns = Netns::new();
    let live = attach(&env, &n.name, &live_ns, "live");
    let port = random_port();
    let dead_ns = Netns::new();
    let mut req = AttachRequest::new(&n.name, "dead", dead_ns.path());
    req.ports = vec![format!("{port}:80").parse::<PortMapping>().unwrap().into()];
    env.net.attach(&req).unwrap();
    // A setup killed half-way: an address and a veth on the bridge, no record.
    let dir = env.dir.path().join("networks").join(&n.name);
    Ipam::new(&dir, n.subnet, n.gateway)
        .allocate("killed", None)
        .unwrap();
    let stray = format!("sk{}", unique());
    sh(&[
        "ip",
        "link",
        "add",
        &stray,
        "type",
        "veth",
        "peer",
        "name",
        &format!("{stray}p"),
    ]);
    sh(&["ip", "link", "set", &stray, "master", &n.bridge]);
    drop(dead_ns);

    let report = env.net.gc(&["live"]).unwrap();
    assert_eq!(
        report.attachments,
        vec![(n.name.clone(), "dead".to_string())]
    );
    assert_eq!(report.addresses.len(), 1);
    assert_eq!(report.links, vec![stray.clone()]);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(bridge_ports(&n.bridge), vec![live.host_interface.clone()]);
    let table = sh(&["nft", "list", "table", "ip", &env.table]);
    assert!(!table.contains(&port.to_string()), "{table}");
    env.net.check(&n.name, "live", None).unwrap();
}

#[test]
fn check_and_reconcile_after_tampering() {
    let env = Env::new();
    let n = env.network(true, false);
    let ns = Netns::new();
    let port = random_port();
    let mut req = AttachRequest::new(&n.name, "tampered", ns.path());
    req.ports = vec![format!("{port}:80").parse::<PortMapping>().unwrap().into()];
    env.net.attach(&req).unwrap();
    env.net.check(&n.name, "tampered", None).unwrap();
    ns.ip(&["route", "del", "default"]);
    assert!(matches!(
        env.net.check(&n.name, "tampered", None),
        Err(Error::Check { .. })
    ));
    ns.ip(&["route", "add", "default", "via", &n.gateway.to_string()]);
    sh(&["nft", "delete", "table", "ip", &env.table]);
    assert!(env.net.check(&n.name, "tampered", None).is_err());
    env.net.reconcile(&["tampered"]).unwrap();
    env.net.check(&n.name, "tampered", None).unwrap();
    tcp_server(Some(&ns.path()), 80);
    assert!(tcp_request(None, SocketAddr::from((Ipv4Addr::LOCALHOST, port))).is_ok());
}

#[test]
fn persistent_namespaces() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("netns").join(format!("skt-{}", unique()));
    netns::create(&path).unwrap();
    let env = Env::new();
    let n = env.network(true, false);
    let a = env
        .net
        .attach(&AttachRequest::new(&n.name, "pod", &path))
        .unwrap();
    let server = tcp_server(Some(&path), 0);
    let seen = tcp_request(None, SocketAddr::from((a.ip, server.port()))).unwrap();
    assert_eq!(seen, n.gateway.to_string());
    env.net.detach(&n.name, "pod").unwrap();
    netns::remove(&path).unwrap();
    assert!(!path.exists());
    netns::remove(&path).unwrap();
    let _ = Command::new("umount")
        .arg(dir.path().join("netns"))
        .status();
}

/// The service table's periodic check lists only chains and the `endpoints` map (not every
/// rule), and still notices a chain or element removed behind skiff's back. Runs the real
/// `nft` inside a network namespace of its own.
#[test]
fn the_service_table_check_lists_chains_and_the_map_only() {
    use skiff_network::nft::NftCli;
    use skiff_network::ports::Protocol;
    use skiff_network::service_proxy::{ServiceMap, ServicePort, ServiceProxy};
    use std::net::SocketAddrV4;
    use std::sync::Arc;

    let ns = Netns::new();
    let dir = tempfile::tempdir().unwrap();
    let wrapper = dir.path().join("nft");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nexec ip netns exec {} nft \"$@\"\n", ns.name),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let nft = Arc::new(NftCli::new(&wrapper));
    // A table of someone else's beside ours: its chains must not count.
    sh(&[
        "ip",
        "netns",
        "exec",
        &ns.name,
        "nft",
        "add table ip other; add chain ip other c",
    ]);

    let services: ServiceMap = (0..3)
        .map(|i| {
            let mut port = ServicePort::new(
                "",
                Protocol::Tcp,
                Some(Ipv4Addr::new(10, 43, 0, 10 + i)),
                80,
            );
            port.endpoints = vec![SocketAddrV4::new(Ipv4Addr::new(10, 88, 0, 10 + i), 8080)];
            (format!("default/s{i}"), vec![port])
        })
        .collect();
    let mut proxy = ServiceProxy::new("svc_check", nft.clone()).unwrap();
    proxy.sync(&services).unwrap();
    let listing = skiff_network::nft::Nft::list_chains_and_map(&*nft, "svc_check", "endpoints")
        .unwrap()
        .unwrap();
    let items = listing["nftables"].as_array().unwrap();
    assert!(
        items.iter().all(|i| i.get("rule").is_none()),
        "no rules listed"
    );
    assert!(items
        .iter()
        .all(|i| i.pointer("/chain/table").is_none_or(|t| t == "svc_check")));
    assert!(proxy.verify().unwrap(), "the table as applied passes");

    // An element deleted by hand is noticed, and the next sync rebuilds.
    sh(&[
        "ip",
        "netns",
        "exec",
        &ns.name,
        "nft",
        "delete element ip svc_check endpoints { 10.43.0.10 . tcp . 80 . 0 }",
    ]);
    assert!(!proxy.verify().unwrap(), "a missing element is noticed");
    assert!(proxy.sync(&services).unwrap().rebuilt);
    assert!(proxy.verify().unwrap());
    proxy.remove().unwrap();
    assert!(
        skiff_network::nft::Nft::list_chains_and_map(&*nft, "svc_check", "endpoints")
            .unwrap()
            .is_none()
    );
}

/// A direct Service (a cluster IP only: map elements, no chain of its own) reaches its
/// endpoints from the node, and from a pod that is itself an endpoint: that connection
/// is masqueraded (hairpin), so the pod sees the node's address and its reply comes
/// back through the NAT. Moving an endpoint updates elements only. Runs the real `nft`
/// in namespaces of its own.
#[test]
fn a_direct_service_reaches_its_endpoints_and_hairpins() {
    use skiff_network::nft::NftCli;
    use skiff_network::ports::Protocol;
    use skiff_network::service_proxy::{ServiceMap, ServicePort, ServiceProxy};
    use std::net::SocketAddrV4;
    use std::sync::Arc;

    let (node, pod) = (Netns::new(), Netns::new());
    let subnet = random_subnet();
    let host = |i: u32| Ipv4Addr::from(u32::from(subnet.network()) + i);
    let (node_ip, pod_ip) = (host(1), host(2));
    let veth = format!("sv{}", unique());
    node.ip(&[
        "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &pod.name,
    ]);
    node.ip(&["addr", "add", &format!("{node_ip}/24"), "dev", &veth]);
    pod.ip(&["addr", "add", &format!("{pod_ip}/24"), "dev", "eth0"]);
    for (ns, dev) in [
        (&node, veth.as_str()),
        (&pod, "eth0"),
        (&node, "lo"),
        (&pod, "lo"),
    ] {
        ns.ip(&["link", "set", dev, "up"]);
    }
    pod.ip(&["route", "add", "default", "via", &node_ip.to_string()]);
    // The node routes the cluster IPs towards the pods (only DNAT makes them answer).
    node.ip(&["route", "add", "10.43.7.0/24", "dev", &veth]);
    sh(&[
        "ip",
        "netns",
        "exec",
        &node.name,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
    ]);
    let (a, b) = (
        tcp_server(Some(&pod.path()), 0).port(),
        tcp_server(Some(&pod.path()), 0).port(),
    );

    let dir = tempfile::tempdir().unwrap();
    let wrapper = dir.path().join("nft");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nexec ip netns exec {} nft \"$@\"\n", node.name),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let nft = Arc::new(NftCli::new(&wrapper));
    let cluster_ip = Ipv4Addr::new(10, 43, 7, 10);
    let mut port = ServicePort::new("", Protocol::Tcp, Some(cluster_ip), 80);
    port.endpoints = vec![SocketAddrV4::new(pod_ip, a), SocketAddrV4::new(pod_ip, b)];
    let mut services = ServiceMap::from([("default/web".to_string(), vec![port])]);
    let mut proxy = ServiceProxy::new(&format!("svd{}", unique()), nft.clone()).unwrap();
    proxy.sync(&services).unwrap();
    let listing = skiff_network::nft::Nft::list_table(&*nft, proxy.table())
        .unwrap()
        .unwrap()
        .to_string();
    assert!(
        !listing.contains("svc_") && !listing.contains("ep_"),
        "{listing}"
    );

    let vip = SocketAddr::from((cluster_ip, 80));
    for _ in 0..10 {
        assert_eq!(
            tcp_request(Some(&node.path()), vip).unwrap(),
            node_ip.to_string()
        );
        // The pod reaches itself through the Service: masqueraded to the node's address.
        assert_eq!(
            tcp_request(Some(&pod.path()), vip).unwrap(),
            node_ip.to_string()
        );
    }
    // One endpoint left: an element update, and still reachable.
    services.get_mut("default/web").unwrap()[0].endpoints.pop();
    assert!(!proxy.sync(&services).unwrap().rebuilt);
    assert!(proxy.verify().unwrap());
    for _ in 0..5 {
        assert_eq!(
            tcp_request(Some(&pod.path()), vip).unwrap(),
            node_ip.to_string()
        );
    }
    proxy.remove().unwrap();
    assert!(tcp_request(Some(&node.path()), vip).is_err());
}

/// A listener in `ns` answering each line with `<tag> <client address>`: which endpoint
/// a connection reached, and from where it seemed to come.
fn tagged_server(ns: &Netns, tag: &'static str) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let listener = skiff_network::netns::run_in(&ns.path(), || {
        std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap()
    })
    .unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let peer = stream.peer_addr().unwrap().ip();
                let mut line = String::new();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                if reader.read_line(&mut line).unwrap_or(0) > 0 {
                    // `tcp_request` wants its line back after the address.
                    let _ = (&stream).write_all(format!("{peer} {tag} {line}").as_bytes());
                }
            });
        }
    });
    port
}

/// Node ports, load-balancer addresses, both Local traffic policies and ClientIP
/// affinity send connections where Kubernetes says, through map elements and shared
/// chains only: from another host (namespace `outside`) a Cluster policy node port
/// reaches every endpoint masqueraded, a Local one this node's endpoint with the
/// client's address kept, while the host itself still reaches every endpoint; an
/// affinity client keeps its endpoint; moving the Local endpoint writes only elements.
/// Runs the real `nft` in namespaces of its own.
#[test]
fn every_kind_of_service_port_goes_where_it_must() {
    use skiff_network::nft::{Nft, NftCli, NftError};
    use skiff_network::ports::Protocol;
    use skiff_network::service_proxy::{ServiceMap, ServicePort, ServiceProxy};
    use std::net::SocketAddrV4;
    use std::sync::{Arc, Mutex};

    /// The real nft, remembering every transaction.
    struct Recording(NftCli, Mutex<Vec<String>>);
    impl Nft for Recording {
        fn apply(&self, table: &str, script: &str) -> Result<(), NftError> {
            self.1.lock().unwrap().push(script.to_string());
            self.0.apply(table, script)
        }
        fn list_table(&self, table: &str) -> Result<Option<serde_json::Value>, NftError> {
            self.0.list_table(table)
        }
        fn list_chains_and_map(
            &self,
            table: &str,
            map: &str,
        ) -> Result<Option<serde_json::Value>, NftError> {
            self.0.list_chains_and_map(table, map)
        }
    }

    let (node, pod, outside) = (Netns::new(), Netns::new(), Netns::new());
    let (inner, outer) = (random_subnet(), random_subnet());
    let at = |net: ipnet::Ipv4Net, i: u32| Ipv4Addr::from(u32::from(net.network()) + i);
    let (node_ip, here, elsewhere) = (at(inner, 1), at(inner, 2), at(inner, 3));
    let (node_outer_ip, client_ip) = (at(outer, 1), at(outer, 2));
    let (to_pod, to_outside) = (format!("sp{}", unique()), format!("so{}", unique()));
    for (dev, peer) in [(&to_pod, &pod), (&to_outside, &outside)] {
        node.ip(&[
            "link", "add", dev, "type", "veth", "peer", "name", "eth0", "netns", &peer.name,
        ]);
    }
    node.ip(&["addr", "add", &format!("{node_ip}/24"), "dev", &to_pod]);
    node.ip(&[
        "addr",
        "add",
        &format!("{node_outer_ip}/24"),
        "dev",
        &to_outside,
    ]);
    // Both endpoints live in `pod`; the Services treat `here` as this node's.
    for ip in [here, elsewhere] {
        pod.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
    }
    outside.ip(&["addr", "add", &format!("{client_ip}/24"), "dev", "eth0"]);
    for (ns, dev) in [
        (&node, to_pod.as_str()),
        (&node, to_outside.as_str()),
        (&node, "lo"),
        (&pod, "eth0"),
        (&pod, "lo"),
        (&outside, "eth0"),
        (&outside, "lo"),
    ] {
        ns.ip(&["link", "set", dev, "up"]);
    }
    pod.ip(&["route", "add", "default", "via", &node_ip.to_string()]);
    outside.ip(&["route", "add", "default", "via", &node_outer_ip.to_string()]);
    // Cluster IPs towards the pods, load-balancer IPs towards the outside (as a router
    // would send them to the node; only DNAT makes either answer).
    node.ip(&["route", "add", "10.43.9.0/24", "dev", &to_pod]);
    node.ip(&["route", "add", "10.44.9.0/24", "dev", &to_outside]);
    for range in ["10.43.9.0/24", "10.44.9.0/24"] {
        outside.ip(&["route", "add", range, "via", &node_outer_ip.to_string()]);
    }
    sh(&[
        "ip",
        "netns",
        "exec",
        &node.name,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
    ]);
    let (a, b) = (tagged_server(&pod, "a"), tagged_server(&pod, "b"));
    let (ep_a, ep_b) = (SocketAddrV4::new(here, a), SocketAddrV4::new(elsewhere, b));

    let dir = tempfile::tempdir().unwrap();
    let wrapper = dir.path().join("nft");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nexec ip netns exec {} nft \"$@\"\n", node.name),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let nft = Arc::new(Recording(NftCli::new(&wrapper), Mutex::new(Vec::new())));

    let service = |last: u8, node_port: Option<u16>| {
        let mut p = ServicePort::new("", Protocol::Tcp, Some(Ipv4Addr::new(10, 43, 9, last)), 80);
        p.node_port = node_port;
        p.endpoints = vec![ep_a, ep_b];
        p.local_endpoints = vec![ep_a];
        p
    };
    let (np_cluster, np_local) = (
        30000 + rand::random::<u16>() % 1000,
        31000 + rand::random::<u16>() % 1000,
    );
    let cluster = service(10, Some(np_cluster));
    let mut local = service(20, Some(np_local));
    local.load_balancer_ips = vec![Ipv4Addr::new(10, 44, 9, 20)];
    local.external_local = true;
    let mut sticky = service(30, None);
    sticky.affinity_timeout = Some(10800);
    let mut internal = service(40, None);
    internal.internal_local = true;
    let mut services = ServiceMap::from([
        ("default/cluster".to_string(), vec![cluster]),
        ("default/local".to_string(), vec![local]),
        ("default/sticky".to_string(), vec![sticky]),
        ("default/internal".to_string(), vec![internal]),
    ]);
    let mut proxy = ServiceProxy::new(&format!("svk{}", unique()), nft.clone()).unwrap();
    proxy.sync(&services).unwrap();

    // Which endpoints `tries` connections reached, and the client addresses they saw.
    let reach = |from: &Netns, to: SocketAddr, tries: usize| {
        let mut tags = BTreeSet::new();
        let mut seen = BTreeSet::new();
        for _ in 0..tries {
            let answer = tcp_request(Some(&from.path()), to)
                .unwrap_or_else(|e| panic!("{to} from {}: {e}", from.name));
            let (peer, tag) = answer.split_once(' ').unwrap();
            seen.insert(peer.to_string());
            tags.insert(tag.to_string());
        }
        (tags, seen)
    };
    let set = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    let from_node = set(&[&node_ip.to_string()]);

    // externalTrafficPolicy Cluster node port, from elsewhere: every endpoint, masqueraded.
    let (tags, seen) = reach(&outside, SocketAddr::from((node_outer_ip, np_cluster)), 24);
    assert_eq!((tags, &seen), (set(&["a", "b"]), &from_node));
    // externalTrafficPolicy Local: this node's endpoint, the client's address kept, by
    // node port and by load-balancer IP.
    let lb = SocketAddr::from((Ipv4Addr::new(10, 44, 9, 20), 80));
    let client = set(&[&client_ip.to_string()]);
    for to in [SocketAddr::from((node_outer_ip, np_local)), lb] {
        let (tags, seen) = reach(&outside, to, 12);
        assert_eq!((tags, &seen), (set(&["a"]), &client), "{to}");
    }
    // ... while the host itself reaches every endpoint, masqueraded.
    for to in [SocketAddr::from((node_outer_ip, np_local)), lb] {
        let (tags, _) = reach(&node, to, 24);
        assert_eq!(tags, set(&["a", "b"]), "{to} from the node");
    }
    // The cluster IP of the Local-policy Service (internalTrafficPolicy Cluster): both.
    let (tags, _) = reach(
        &node,
        SocketAddr::from((Ipv4Addr::new(10, 43, 9, 20), 80)),
        24,
    );
    assert_eq!(tags, set(&["a", "b"]));
    // internalTrafficPolicy Local: this node's endpoint only.
    let (tags, _) = reach(
        &node,
        SocketAddr::from((Ipv4Addr::new(10, 43, 9, 40), 80)),
        12,
    );
    assert_eq!(tags, set(&["a"]));
    // ClientIP affinity: every connection of a client to the endpoint it had first, for
    // the node and for a client elsewhere alike (each its own).
    let sticky_ip = SocketAddr::from((Ipv4Addr::new(10, 43, 9, 30), 80));
    assert_eq!(reach(&node, sticky_ip, 12).0.len(), 1);
    assert_eq!(reach(&outside, sticky_ip, 12).0.len(), 1);
    // The client is remembered in one slot's set (and nft can list the table).
    let table = sh(&[
        "ip",
        "netns",
        "exec",
        &node.name,
        "nft",
        "list",
        "table",
        "ip",
        proxy.table(),
    ]);
    assert!(
        table.contains(&format!("10.43.9.30 . tcp . 80 . {client_ip} timeout 3h")),
        "{table}"
    );

    // The Local endpoint moves to the other address: only elements are written, and
    // outside traffic follows.
    let before = nft.1.lock().unwrap().len();
    services.get_mut("default/local").unwrap()[0].local_endpoints = vec![ep_b];
    assert!(!proxy.sync(&services).unwrap().rebuilt);
    let scripts = nft.1.lock().unwrap()[before..].to_vec();
    assert_eq!(scripts.len(), 1);
    assert!(
        scripts[0]
            .lines()
            .all(|l| l.starts_with("add element ") || l.starts_with("delete element ")),
        "{}",
        scripts[0]
    );
    assert!(proxy.verify().unwrap());
    for to in [SocketAddr::from((node_outer_ip, np_local)), lb] {
        let (tags, seen) = reach(&outside, to, 12);
        assert_eq!((tags, &seen), (set(&["b"]), &client), "{to}");
    }
    proxy.remove().unwrap();
    assert!(tcp_request(Some(&outside.path()), lb).is_err());
}
