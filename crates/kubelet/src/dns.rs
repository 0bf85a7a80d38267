//! Pods' resolv.conf: what the kubelet's DNS configurer decides from `dnsPolicy` and
//! `dnsConfig`, handed to the runtime as the sandbox's [`DnsConfig`].
//!
//! - `ClusterFirst` (the default): the cluster DNS, `search <ns>.svc.<domain>
//!   svc.<domain> <domain>` then the node's search list, `options ndots:5`. Pods on the
//!   host network get `Default` instead, unless the policy is `ClusterFirstWithHostNet`.
//! - `Default`: the node's resolv.conf (its loopback nameservers dropped, as a pod's
//!   network namespace cannot reach them).
//! - `None`: only `dnsConfig`.
//!
//! `dnsConfig` is merged last: its nameservers and searches are appended, its options
//! replace those of the same name.

use k8s_openapi::api::core::v1::Pod;

use crate::cri::DnsConfig;

/// The cluster DNS as the kubelet's `--cluster-dns` and `--cluster-domain` give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDns {
    /// Nameserver addresses (the `kube-dns` Service's cluster IP).
    pub servers: Vec<String>,
    /// The cluster domain, `cluster.local`.
    pub domain: String,
}

/// The node's resolv.conf, or nothing if it cannot be read.
pub fn host_resolv_conf() -> String {
    std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()
}

fn words<'a>(resolv: &'a str, key: &str) -> Vec<&'a str> {
    resolv
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some(key)).then_some(w)
        })
        .flatten()
        .collect()
}

/// The DNS configuration of `pod`'s sandbox, given the cluster DNS (none: pods use the
/// node's) and the node's resolv.conf text.
pub fn pod_dns(pod: &Pod, cluster: Option<&ClusterDns>, host_resolv: &str) -> DnsConfig {
    let spec = pod.spec.as_ref();
    let policy = spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst");
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let host_searches: Vec<String> = words(host_resolv, "search")
        .into_iter()
        .map(String::from)
        .collect();
    let host_default = || DnsConfig {
        servers: words(host_resolv, "nameserver")
            .into_iter()
            .filter(|ip| !ip.starts_with("127.") && *ip != "::1")
            .map(String::from)
            .collect(),
        searches: host_searches.clone(),
        options: words(host_resolv, "options")
            .into_iter()
            .map(String::from)
            .collect(),
    };
    let mut config = match (policy, cluster) {
        ("None", _) => DnsConfig::default(),
        ("ClusterFirst", _) if host_network => host_default(),
        ("ClusterFirst" | "ClusterFirstWithHostNet", Some(c)) => {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            let d = &c.domain;
            let mut searches = vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.clone()];
            searches.extend(host_searches.iter().cloned());
            DnsConfig {
                servers: c.servers.clone(),
                searches,
                options: vec!["ndots:5".into()],
            }
        }
        _ => host_default(),
    };
    if let Some(extra) = spec.and_then(|s| s.dns_config.as_ref()) {
        config
            .servers
            .extend(extra.nameservers.iter().flatten().cloned());
        config
            .searches
            .extend(extra.searches.iter().flatten().cloned());
        for opt in extra.options.iter().flatten() {
            let Some(name) = opt.name.as_deref() else {
                continue;
            };
            config.options.retain(|o| o.split(':').next() != Some(name));
            config.options.push(match &opt.value {
                Some(v) => format!("{name}:{v}"),
                None => name.to_string(),
            });
        }
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const HOST: &str =
        "nameserver 127.0.0.53\nnameserver 192.0.2.1\nsearch corp.example\noptions edns0\n";

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "p", "namespace": "team"}, "spec": spec}),
        )
        .unwrap()
    }

    fn cluster() -> ClusterDns {
        ClusterDns {
            servers: vec!["10.43.0.10".into()],
            domain: "cluster.local".into(),
        }
    }

    #[test]
    fn cluster_first_is_the_default() {
        let c = pod_dns(&pod(json!({"containers": []})), Some(&cluster()), HOST);
        assert_eq!(c.servers, ["10.43.0.10"]);
        assert_eq!(
            c.searches,
            [
                "team.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "corp.example"
            ]
        );
        assert_eq!(c.options, ["ndots:5"]);
        // Without a cluster DNS, or on the host network, the node's.
        let host = pod_dns(&pod(json!({"containers": []})), None, HOST);
        assert_eq!(host.servers, ["192.0.2.1"]);
        let host_net = pod_dns(&pod(json!({"hostNetwork": true})), Some(&cluster()), HOST);
        assert_eq!(host_net, host);
        let with_host_net = pod_dns(
            &pod(json!({"hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"})),
            Some(&cluster()),
            HOST,
        );
        assert_eq!(with_host_net.servers, ["10.43.0.10"]);
    }

    #[test]
    fn default_none_and_dns_config() {
        let c = pod_dns(
            &pod(json!({"dnsPolicy": "Default"})),
            Some(&cluster()),
            HOST,
        );
        assert_eq!(
            (c.servers, c.searches, c.options),
            (
                vec!["192.0.2.1".to_string()],
                vec!["corp.example".to_string()],
                vec!["edns0".to_string()]
            )
        );
        let c = pod_dns(
            &pod(json!({"dnsPolicy": "None", "dnsConfig": {
                "nameservers": ["1.2.3.4"], "searches": ["a.example"],
                "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}})),
            Some(&cluster()),
            HOST,
        );
        assert_eq!(c.servers, ["1.2.3.4"]);
        assert_eq!(c.searches, ["a.example"]);
        assert_eq!(c.options, ["ndots:2", "edns0"]);
        let c = pod_dns(
            &pod(json!({"dnsConfig": {"options": [{"name": "ndots", "value": "1"}]}})),
            Some(&cluster()),
            HOST,
        );
        assert_eq!(c.options, ["ndots:1"]);
    }
}
