//! The signer of kube-controller-manager's `csrsigning`, run by the API server because it
//! holds the cluster CA: an approved CertificateSigningRequest for one of Kubernetes'
//! built-in signers gets a certificate from the cluster CA in `status.certificate`; one the
//! signer must refuse gets a `Failed` condition (reason `SignerValidationFailure`).
//! Requests for other signers are left to whoever serves them. Level-triggered: every
//! change of the mirrored requests re-checks them all.

use std::sync::Arc;

use base64::Engine as _;
use rcgen::{
    CertificateSigningRequestParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use serde_json::{json, Value};
use time::{Duration, OffsetDateTime};

use crate::cache::Reflector;
use crate::kinds::certificates::{
    has_condition, parse_request, KUBELET_SERVING, KUBE_APISERVER_CLIENT,
    KUBE_APISERVER_CLIENT_KUBELET,
};
use crate::kinds::{array_at, str_at, REGISTRY};
use crate::pki::CertAndKey;
use crate::storage::Storage;

/// The longest certificate issued (kube-controller-manager's `--cluster-signing-duration`).
const MAX_DURATION: Duration = Duration::days(365);
/// How far back a certificate's validity starts, for clocks that lag (as Kubernetes).
const BACKDATE: Duration = Duration::minutes(5);

/// Signs with the cluster CA.
pub struct Signer {
    issuer: Issuer<'static, KeyPair>,
    ca_not_after: OffsetDateTime,
}

impl Signer {
    /// A signer with the CA's certificate and key.
    pub fn new(ca: &CertAndKey) -> Result<Signer, String> {
        let key = KeyPair::from_pem(&ca.key_pem).map_err(|e| e.to_string())?;
        let (_, pem) =
            x509_parser::pem::parse_x509_pem(ca.cert_pem.as_bytes()).map_err(|e| e.to_string())?;
        let cert = pem.parse_x509().map_err(|e| e.to_string())?;
        let ca_not_after = cert.validity().not_after.to_datetime();
        let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, key).map_err(|e| e.to_string())?;
        Ok(Signer {
            issuer,
            ca_not_after,
        })
    }

    /// The PEM certificate for `csr` (a stored CertificateSigningRequest), or why the
    /// signer refuses it.
    pub fn sign(&self, csr: &Value, now: OffsetDateTime) -> Result<String, String> {
        let signer = str_at(csr, "/spec/signerName");
        let usages: Vec<&str> = array_at(csr, "/spec/usages")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let subject = parse_request(csr)?;
        let der = rustls::pki_types::CertificateSigningRequestDer::from(subject.der.clone());
        let mut request = CertificateSigningRequestParams::from_der(&der)
            .map_err(|e| format!("parsing the certificate request: {e}"))?;
        let sans = &request.params.subject_alt_names;
        match signer {
            KUBE_APISERVER_CLIENT => {
                check_usages(&usages, "client auth", "client")?;
            }
            KUBE_APISERVER_CLIENT_KUBELET => {
                check_node_subject(&subject.common_name, &subject.organizations)?;
                if !sans.is_empty() {
                    return Err(
                        "subjectAltNames are not allowed for kubelet client certificates".into(),
                    );
                }
                check_usages(&usages, "client auth", "client")?;
            }
            KUBELET_SERVING => {
                check_node_subject(&subject.common_name, &subject.organizations)?;
                if sans.is_empty() {
                    return Err("DNS or IP subjectAltName is required".into());
                }
                if sans
                    .iter()
                    .any(|s| !matches!(s, SanType::DnsName(_) | SanType::IpAddress(_)))
                {
                    return Err("only DNS and IP subjectAltNames are allowed".into());
                }
                check_usages(&usages, "server auth", "serving")?;
            }
            other => return Err(format!("unsupported signer {other:?}")),
        }
        let wanted = csr
            .pointer("/spec/expirationSeconds")
            .and_then(Value::as_i64)
            .map_or(MAX_DURATION, Duration::seconds)
            .min(MAX_DURATION);
        let params = &mut request.params;
        params.not_before = now - BACKDATE;
        params.not_after = (now + wanted).min(self.ca_not_after);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = usages.iter().filter_map(|u| key_usage(u)).collect();
        params.extended_key_usages = usages.iter().filter_map(|u| extended_usage(u)).collect();
        params.use_authority_key_identifier_extension = true;
        let cert = request
            .signed_by(&self.issuer)
            .map_err(|e| format!("signing: {e}"))?;
        Ok(cert.pem())
    }
}

/// A node's certificate names `system:node:<name>` in the group `system:nodes` alone.
fn check_node_subject(common_name: &str, organizations: &[String]) -> Result<(), String> {
    if organizations != ["system:nodes"] {
        return Err(format!(
            "subject organization is not system:nodes: {organizations:?}"
        ));
    }
    if !common_name.starts_with("system:node:") {
        return Err(format!(
            "subject common name does not begin with system:node: {common_name:?}"
        ));
    }
    Ok(())
}

/// The usages of a client or serving certificate: `required`, with at most digital
/// signature and key encipherment besides.
fn check_usages(usages: &[&str], required: &str, kind: &str) -> Result<(), String> {
    if let Some(bad) = usages
        .iter()
        .find(|u| !matches!(**u, "digital signature" | "key encipherment") && **u != required)
    {
        return Err(format!("invalid usage for {kind} certificate: {bad}"));
    }
    if !usages.contains(&required) {
        return Err(format!(
            "missing required usage for {kind} certificate: {required}"
        ));
    }
    Ok(())
}

fn key_usage(usage: &str) -> Option<KeyUsagePurpose> {
    Some(match usage {
        "digital signature" | "signing" => KeyUsagePurpose::DigitalSignature,
        "key encipherment" => KeyUsagePurpose::KeyEncipherment,
        "content commitment" => KeyUsagePurpose::ContentCommitment,
        "key agreement" => KeyUsagePurpose::KeyAgreement,
        "data encipherment" => KeyUsagePurpose::DataEncipherment,
        "cert sign" => KeyUsagePurpose::KeyCertSign,
        "crl sign" => KeyUsagePurpose::CrlSign,
        "encipher only" => KeyUsagePurpose::EncipherOnly,
        "decipher only" => KeyUsagePurpose::DecipherOnly,
        _ => return None,
    })
}

fn extended_usage(usage: &str) -> Option<ExtendedKeyUsagePurpose> {
    Some(match usage {
        "server auth" => ExtendedKeyUsagePurpose::ServerAuth,
        "client auth" => ExtendedKeyUsagePurpose::ClientAuth,
        "code signing" => ExtendedKeyUsagePurpose::CodeSigning,
        "email protection" => ExtendedKeyUsagePurpose::EmailProtection,
        "timestamping" => ExtendedKeyUsagePurpose::TimeStamping,
        "ocsp signing" => ExtendedKeyUsagePurpose::OcspSigning,
        "any" => ExtendedKeyUsagePurpose::Any,
        _ => return None,
    })
}

/// Whether `csr` waits for this signer: approved, not denied or failed, not yet issued, and
/// for a built-in signer.
fn waiting(csr: &Value) -> bool {
    has_condition(csr, "Approved")
        && !has_condition(csr, "Denied")
        && !has_condition(csr, "Failed")
        && str_at(csr, "/status/certificate").is_empty()
        && matches!(
            str_at(csr, "/spec/signerName"),
            KUBE_APISERVER_CLIENT | KUBE_APISERVER_CLIENT_KUBELET | KUBELET_SERVING
        )
}

/// Signs approved requests until the runtime ends (see the module's documentation).
pub async fn run(storage: Storage, cache: Arc<Reflector>, ca: CertAndKey) {
    let signer = match Signer::new(&ca) {
        Ok(signer) => signer,
        Err(e) => {
            tracing::error!("the certificate signer cannot use the cluster CA: {e}");
            return;
        }
    };
    let Some(def) = REGISTRY.by_kind("certificates.k8s.io", "v1", "CertificateSigningRequest")
    else {
        return;
    };
    let mut changes = cache.changes();
    loop {
        for csr in cache.list(def).into_iter().filter(|c| waiting(c)) {
            let name = str_at(&csr, "/metadata/name").to_string();
            // The stored object, for its revision; the mirror may be a step behind.
            let (mut stored, revision) = match storage.get(def, "", &name).await {
                Ok(Some(found)) if waiting(&found.0) => found,
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(%name, "reading the certificate signing request: {}", e.message);
                    continue;
                }
            };
            let status = crate::kinds::object_mut(&mut stored, "status");
            match signer.sign(&csr, OffsetDateTime::now_utc()) {
                Ok(pem) => {
                    status.insert(
                        "certificate".into(),
                        json!(base64::engine::general_purpose::STANDARD.encode(pem)),
                    );
                }
                Err(why) => {
                    let now = crate::handlers::now_rfc3339();
                    let conditions = status.entry("conditions").or_insert_with(|| json!([]));
                    if let Some(list) = conditions.as_array_mut() {
                        list.push(json!({
                            "type": "Failed",
                            "status": "True",
                            "reason": "SignerValidationFailure",
                            "message": why,
                            "lastUpdateTime": now,
                            "lastTransitionTime": now,
                        }));
                    }
                }
            }
            if let Err(e) = storage.update(def, "", &name, stored, revision).await {
                // A conflict: the next change brings the request round again.
                tracing::debug!(%name, "writing the certificate: {}", e.message);
            }
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(cn: &str, org: Option<&str>, signer: &str, usages: &[&str], dns: &[&str]) -> Value {
        let key = KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        if let Some(org) = org {
            params
                .distinguished_name
                .push(rcgen::DnType::OrganizationName, org);
        }
        let pem = params.serialize_request(&key).unwrap().pem().unwrap();
        json!({"metadata": {"name": "r"}, "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(pem),
            "signerName": signer, "usages": usages, "expirationSeconds": 3600},
            "status": {"conditions": [{"type": "Approved", "status": "True"}]}})
    }

    fn test_ca() -> CertAndKey {
        let key = KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test-ca");
        let cert = params.self_signed(&key).unwrap();
        CertAndKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    #[test]
    fn client_requests_get_a_certificate_of_the_asked_lifetime() {
        let signer = Signer::new(&test_ca()).unwrap();
        let csr = request(
            "jane",
            Some("dev"),
            KUBE_APISERVER_CLIENT,
            &["digital signature", "client auth"],
            &[],
        );
        assert!(waiting(&csr));
        let now = OffsetDateTime::now_utc();
        let pem = signer.sign(&csr, now).unwrap();
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let cert = block.parse_x509().unwrap();
        assert_eq!(
            cert.subject()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            "jane"
        );
        assert_eq!(
            cert.issuer()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            "test-ca"
        );
        let lifetime = cert.validity().not_after.to_datetime() - now;
        assert!((lifetime - Duration::hours(1)).abs() < Duration::seconds(2));
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
    }

    #[test]
    fn the_signer_refuses_what_its_rules_forbid() {
        let signer = Signer::new(&test_ca()).unwrap();
        let now = OffsetDateTime::now_utc();
        let serving_client = request("jane", None, KUBE_APISERVER_CLIENT, &["server auth"], &[]);
        assert_eq!(
            signer.sign(&serving_client, now).unwrap_err(),
            "invalid usage for client certificate: server auth"
        );
        let not_a_node = request(
            "jane",
            Some("system:nodes"),
            KUBELET_SERVING,
            &["server auth"],
            &["n1.example"],
        );
        assert!(signer
            .sign(&not_a_node, now)
            .unwrap_err()
            .contains("does not begin with system:node:"));
        let node = request(
            "system:node:n1",
            Some("system:nodes"),
            KUBELET_SERVING,
            &["digital signature", "key encipherment", "server auth"],
            &["n1.example"],
        );
        assert!(signer.sign(&node, now).is_ok());
    }

    #[test]
    fn only_approved_unissued_builtin_requests_wait() {
        let mut csr = request("jane", None, KUBE_APISERVER_CLIENT, &["client auth"], &[]);
        assert!(waiting(&csr));
        csr["spec"]["signerName"] = json!("example.com/other");
        assert!(!waiting(&csr));
        csr["spec"]["signerName"] = json!(KUBE_APISERVER_CLIENT);
        csr["status"]["certificate"] = json!("eA==");
        assert!(!waiting(&csr));
        csr["status"] = json!({});
        assert!(!waiting(&csr));
    }
}
