use std::process::{Command, Stdio};

use super::render::{allow_rules, Direction};
use super::*;
use crate::nft::FakeNft;
use crate::sysctl::FakeSysctl;

fn tcp(a: u16, b: u16) -> PortMatch {
    PortMatch {
        protocol: "tcp".into(),
        range: Some((a, b)),
    }
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 88, 0, last)
}

fn two_pods() -> PolicyMap {
    PolicyMap::from([
        (
            "default/server".to_string(),
            PodPolicy {
                ip: Some(ip(2)),
                ingress: Some(vec![Allow {
                    peer: Peer::Addrs(BTreeSet::from([ip(3)])),
                    ports: vec![tcp(80, 80)],
                }]),
                egress: None,
            },
        ),
        (
            "default/client".to_string(),
            PodPolicy {
                ip: Some(ip(3)),
                ingress: None,
                egress: Some(vec![]),
            },
        ),
    ])
}

#[test]
fn peers_and_ports_render_to_returns() {
    let block = Allow {
        peer: Peer::Block {
            cidr: "10.0.0.0/8".parse().unwrap(),
            except: vec!["10.1.0.0/16".parse().unwrap()],
        },
        ports: vec![
            tcp(8000, 8080),
            PortMatch {
                protocol: "udp".into(),
                range: None,
            },
        ],
    };
    assert_eq!(
        allow_rules(&block, Direction::Ingress),
        [
            "ip saddr 10.0.0.0/8 ip saddr != { 10.1.0.0/16 } meta l4proto tcp th dport 8000-8080 return",
            "ip saddr 10.0.0.0/8 ip saddr != { 10.1.0.0/16 } meta l4proto udp return",
        ]
    );
    let pods = Allow {
        peer: Peer::Addrs(BTreeSet::from([ip(3), ip(4)])),
        ports: vec![tcp(80, 80)],
    };
    assert_eq!(
        allow_rules(&pods, Direction::Egress),
        ["ip daddr { 10.88.0.3, 10.88.0.4 } meta l4proto tcp th dport 80 return"]
    );
    // A selector that matches no pod allows nothing (not everything).
    let nobody = Allow {
        peer: Peer::Addrs(BTreeSet::new()),
        ports: vec![],
    };
    assert!(allow_rules(&nobody, Direction::Ingress).is_empty());
    let anyone = Allow {
        peer: Peer::Any,
        ports: vec![],
    };
    assert_eq!(allow_rules(&anyone, Direction::Ingress), ["return"]);
}

#[test]
fn isolated_pods_get_chains_that_end_in_drop() {
    let rules = PolicyRules::new("pol").unwrap();
    let script = rules.replace(&two_pods());
    let server_in = PolicyRules::pod_chain("default/server", Direction::Ingress);
    let client_eg = PolicyRules::pod_chain("default/client", Direction::Egress);
    assert!(script.contains("add rule ip pol forward ct state established,related accept"));
    assert!(script.contains(&format!(
        "add element ip pol ingress {{ 10.88.0.2 : jump {server_in} }}"
    )));
    assert!(script.contains(&format!(
        "add element ip pol egress {{ 10.88.0.3 : jump {client_eg} }}"
    )));
    assert!(script.contains(&format!(
        "add rule ip pol {server_in} ip saddr 10.88.0.2 return"
    )));
    assert!(script.contains(&format!("add rule ip pol {client_eg} drop")));
    // Not isolated: no chain.
    assert!(!script.contains(&PolicyRules::pod_chain("default/server", Direction::Egress)));
    for line in script.lines() {
        assert!(
            line.contains(" ip pol ") || line.ends_with(" ip pol"),
            "{line}"
        );
    }
}

#[test]
fn one_pod_change_rewrites_only_that_pod() {
    let nft = Arc::new(FakeNft::default());
    let mut enforcer = PolicyEnforcer::new("t", nft.clone()).unwrap();
    let mut desired = two_pods();
    assert!(enforcer.sync(&desired).unwrap().rebuilt);
    assert_eq!(nft.elements("t", "ingress"), 1);
    assert_eq!(nft.elements("t", "egress"), 1);
    assert!(enforcer.verify().unwrap());
    let before = nft.scripts().len();
    assert_eq!(enforcer.sync(&desired).unwrap(), SyncReport::default());
    assert_eq!(nft.scripts().len(), before);

    // The client is no longer isolated: its chain and element go, the server's stay.
    desired.remove("default/client");
    let report = enforcer.sync(&desired).unwrap();
    assert_eq!(report.pods_changed, 1);
    let script = nft.scripts().last().unwrap().clone();
    assert!(!script.contains(&PolicyRules::pod_chain(
        "default/server",
        Direction::Ingress
    )));
    assert!(script.contains(&format!(
        "delete chain ip t {}",
        PolicyRules::pod_chain("default/client", Direction::Egress)
    )));
    assert_eq!(nft.elements("t", "egress"), 0);
    assert!(enforcer.verify().unwrap());

    // A new address: the element moves.
    desired.get_mut("default/server").unwrap().ip = Some(ip(9));
    enforcer.sync(&desired).unwrap();
    assert_eq!(nft.elements("t", "ingress"), 1);
    let script = nft.scripts().last().unwrap().clone();
    assert!(
        script.contains("delete element ip t ingress { 10.88.0.2 }"),
        "{script}"
    );

    // Someone deletes the table: verify notices, the next sync rebuilds.
    nft.apply("t", &PolicyRules::new("t").unwrap().delete_table())
        .unwrap();
    assert!(!enforcer.verify().unwrap());
    assert!(enforcer.sync(&desired).unwrap().rebuilt);
    enforcer.remove().unwrap();
    assert!(nft.list_table("t").unwrap().is_none());
}

#[test]
fn bridge_netfilter_is_turned_on_once() {
    let sysctl = FakeSysctl::default();
    assert!(ensure_bridge_netfilter(&sysctl).unwrap());
    assert_eq!(sysctl.get(BRIDGE_NF_CALL_IPTABLES).unwrap(), "1");
    assert!(!ensure_bridge_netfilter(&sysctl).unwrap());
}

/// The scripts are accepted by the real nft, in a network namespace of their own (root
/// only; skipped otherwise).
#[test]
fn real_nft_accepts_the_scripts() {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let rules = PolicyRules::new("pol_test").unwrap();
    let old = two_pods();
    let mut script = rules.replace(&old);
    let mut new = old.clone();
    new.remove("default/client");
    new.get_mut("default/server").unwrap().ip = Some(ip(9));
    for key in ["default/server", "default/client"] {
        script.push_str(&rules.pod(key, old.get(key), new.get(key)));
    }
    let mut child = match Command::new("unshare")
        .args(["-n", "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(_) => return,
    };
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
}
