//! A pod's host name, domain and `/etc/hosts`, as the kubelet makes them: the host name is
//! `spec.hostname` or the pod's name (at most 63 characters), the domain
//! `<subdomain>.<namespace>.svc.<cluster domain>` when `spec.subdomain` is set, and every
//! container of the pod sees one managed hosts file naming the pod's addresses and its
//! `spec.hostAliases`.

use k8s_openapi::api::core::v1::Pod;

/// The longest host name a pod gets (a DNS label).
const MAX_HOSTNAME: usize = 63;
/// The longest fully qualified host name `setHostnameAsFQDN` may give.
const MAX_FQDN: usize = 64;

/// What a pod's containers are called on the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodHostname {
    /// The host name the containers see (`hostname`).
    pub hostname: String,
    /// The domain of a pod with a subdomain.
    pub domain: Option<String>,
}

impl PodHostname {
    /// The host name and domain of `pod` in `cluster_domain`.
    pub fn of(pod: &Pod, cluster_domain: &str) -> PodHostname {
        let spec = pod.spec.as_ref();
        let hostname = match spec
            .and_then(|s| s.hostname.as_deref())
            .filter(|h| !h.is_empty())
        {
            Some(h) => h.to_string(),
            None => {
                let name = pod.metadata.name.clone().unwrap_or_default();
                if name.len() > MAX_HOSTNAME {
                    name[..MAX_HOSTNAME]
                        .trim_end_matches(['-', '.'])
                        .to_string()
                } else {
                    name
                }
            }
        };
        let domain = spec
            .and_then(|s| s.subdomain.as_deref())
            .filter(|s| !s.is_empty())
            .map(|sub| {
                let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
                format!("{sub}.{namespace}.svc.{cluster_domain}")
            });
        PodHostname { hostname, domain }
    }

    /// The host name the containers' kernel reports: the fully qualified one when the pod
    /// asks for it (`setHostnameAsFQDN`) and has a domain.
    pub fn kernel_hostname(&self, pod: &Pod) -> Result<String, String> {
        let as_fqdn = pod
            .spec
            .as_ref()
            .and_then(|s| s.set_hostname_as_fqdn)
            .unwrap_or(false);
        match (&self.domain, as_fqdn) {
            (Some(domain), true) => {
                let fqdn = format!("{}.{domain}", self.hostname);
                if fqdn.len() > MAX_FQDN {
                    return Err(format!(
                        "Failed to construct FQDN from pod hostname and cluster domain, FQDN {fqdn} is too long ({MAX_FQDN} characters is the max, {} characters requested)",
                        fqdn.len()
                    ));
                }
                Ok(fqdn)
            }
            _ => Ok(self.hostname.clone()),
        }
    }
}

/// The managed `/etc/hosts` of a pod on the pod network with addresses `pod_ips`.
pub fn managed_hosts(pod: &Pod, name: &PodHostname, pod_ips: &[String]) -> String {
    let mut hosts = String::from(
        "# Kubernetes-managed hosts file.\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n",
    );
    for ip in pod_ips {
        match &name.domain {
            Some(domain) => hosts.push_str(&format!(
                "{ip}\t{}.{domain}\t{}\n",
                name.hostname, name.hostname
            )),
            None => hosts.push_str(&format!("{ip}\t{}\n", name.hostname)),
        }
    }
    hosts.push_str(&host_aliases(pod));
    hosts
}

/// The `/etc/hosts` of a pod on the host's network: the host's own file and the pod's
/// aliases.
pub fn host_network_hosts(pod: &Pod, host_file: &str) -> String {
    let mut hosts = String::from("# Kubernetes-managed hosts file (host network).\n");
    hosts.push_str(host_file);
    if !host_file.is_empty() && !host_file.ends_with('\n') {
        hosts.push('\n');
    }
    hosts.push_str(&host_aliases(pod));
    hosts
}

fn host_aliases(pod: &Pod) -> String {
    let aliases = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_aliases.as_deref())
        .unwrap_or_default();
    if aliases.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n# Entries added by HostAliases.\n");
    for alias in aliases {
        let names = alias.hostnames.as_deref().unwrap_or_default();
        out.push_str(&format!("{}\t{}\n", alias.ip, names.join("\t")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web-0", "namespace": "shop"},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn the_host_name_is_the_pods_name_or_its_spec_hostname() {
        let plain = pod(json!({"containers": []}));
        let name = PodHostname::of(&plain, "cluster.local");
        assert_eq!(name.hostname, "web-0");
        assert_eq!(name.domain, None);
        assert_eq!(name.kernel_hostname(&plain).unwrap(), "web-0");

        let named = pod(json!({"containers": [], "hostname": "host1", "subdomain": "sub"}));
        let name = PodHostname::of(&named, "cluster.local");
        assert_eq!(name.hostname, "host1");
        assert_eq!(name.domain.as_deref(), Some("sub.shop.svc.cluster.local"));
        assert_eq!(name.kernel_hostname(&named).unwrap(), "host1");

        let fqdn = pod(
            json!({"containers": [], "hostname": "host1", "subdomain": "sub",
            "setHostnameAsFQDN": true}),
        );
        let name = PodHostname::of(&fqdn, "cluster.local");
        assert_eq!(
            name.kernel_hostname(&fqdn).unwrap(),
            "host1.sub.shop.svc.cluster.local"
        );
    }

    #[test]
    fn long_names_are_cut_to_a_dns_label_and_long_fqdns_refused() {
        let long: Pod = serde_json::from_value(json!({
            "metadata": {"name": format!("{}-{}", "a".repeat(62), "b".repeat(10)), "namespace": "ns"},
            "spec": {"containers": [], "subdomain": "s".repeat(40), "setHostnameAsFQDN": true},
        }))
        .unwrap();
        let name = PodHostname::of(&long, "cluster.local");
        // 63 characters would end in '-': trimmed.
        assert_eq!(name.hostname, "a".repeat(62));
        let err = name.kernel_hostname(&long).unwrap_err();
        assert!(
            err.contains("is too long (64 characters is the max"),
            "{err}"
        );
    }

    #[test]
    fn the_managed_file_names_the_pod_and_its_aliases() {
        let p = pod(
            json!({"containers": [], "hostname": "host1", "subdomain": "sub",
            "hostAliases": [{"ip": "10.1.2.3", "hostnames": ["foo.local", "bar.local"]}]}),
        );
        let name = PodHostname::of(&p, "cluster.local");
        let hosts = managed_hosts(&p, &name, &["10.42.0.7".into()]);
        assert!(hosts.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"));
        assert!(
            hosts.contains("10.42.0.7\thost1.sub.shop.svc.cluster.local\thost1\n"),
            "{hosts}"
        );
        assert!(
            hosts.ends_with("\n# Entries added by HostAliases.\n10.1.2.3\tfoo.local\tbar.local\n")
        );
        let plain = pod(json!({"containers": []}));
        let name = PodHostname::of(&plain, "cluster.local");
        assert!(managed_hosts(&plain, &name, &["10.42.0.8".into()]).ends_with("10.42.0.8\tweb-0\n"));
        let host = host_network_hosts(&p, "127.0.0.1 localhost");
        assert!(host
            .starts_with("# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost\n"));
        assert!(host.contains("10.1.2.3\tfoo.local\tbar.local"));
    }
}
