//! `status.loadBalancer.ingress` of the Ingresses served: the node's address, written
//! only when it differs (level-triggered, retried on the next round when a write fails).

use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

/// The addresses in an Ingress's status, IPs and host names alike.
pub fn addresses(ingress: &Ingress) -> Vec<String> {
    ingress
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.clone().or_else(|| i.hostname.clone()))
        .collect()
}

/// The status patch `ingress` needs so that it shows `want` (`None`: nothing to do).
pub fn patch_for(ingress: &Ingress, want: &[String]) -> Option<serde_json::Value> {
    if addresses(ingress) == want {
        return None;
    }
    let list: Vec<_> = want.iter().map(|ip| json!({"ip": ip})).collect();
    Some(json!({"status": {"loadBalancer": {"ingress": list}}}))
}

/// Writes `patch` to the status of `namespace/name`.
pub async fn write(
    client: &Client,
    namespace: &str,
    name: &str,
    patch: &serde_json::Value,
) -> Result<(), kube::Error> {
    Api::<Ingress>::namespaced(client.clone(), namespace)
        .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_only_when_different() {
        let ing: Ingress = serde_json::from_value(json!({"metadata": {"name": "i"},
            "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.5"}]}}}))
        .unwrap();
        assert_eq!(patch_for(&ing, &["10.0.0.5".into()]), None);
        let p = patch_for(&ing, &["10.0.0.6".into()]).unwrap();
        assert_eq!(p["status"]["loadBalancer"]["ingress"][0]["ip"], "10.0.0.6");
        assert_eq!(
            patch_for(&ing, &[]).unwrap(),
            json!({"status": {"loadBalancer": {"ingress": []}}})
        );
    }
}
