//! certificates.k8s.io: CertificateSigningRequest, as Kubernetes' `pkg/registry/certificates`
//! and `pkg/apis/certificates/validation`: the requester recorded at creation, a spec that
//! never changes, approval conditions only through `/approval`, the certificate only
//! through `/status`, once.

use base64::Engine as _;
use serde_json::{json, Value};

use super::{array_at, str_at};
use crate::authn::UserInfo;
use crate::registry::Strategy;
use crate::table::{self, Column};
use crate::validation::FieldError;

/// The signers skiff's own signer serves (kube-controller-manager's csrsigning).
pub const KUBE_APISERVER_CLIENT: &str = "kubernetes.io/kube-apiserver-client";
/// Client certificates of kubelets.
pub const KUBE_APISERVER_CLIENT_KUBELET: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// Serving certificates of kubelets.
pub const KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";

/// The key usages a request may ask for (`KeyUsage` in certificates/v1).
const USAGES: &[&str] = &[
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
];

/// The condition types only `/approval` may add, and never remove.
const APPROVAL_CONDITIONS: &[&str] = &["Approved", "Denied"];

/// What a request asks to have signed, read from `spec.request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedSubject {
    /// The subject's common name.
    pub common_name: String,
    /// The subject's organizations (groups, for client certificates).
    pub organizations: Vec<String>,
    /// The DER of the PKCS#10 request.
    pub der: Vec<u8>,
}

/// Decodes and checks `spec.request` (base64 of a PEM `CERTIFICATE REQUEST`): its signature
/// must verify.
pub fn parse_request(obj: &Value) -> Result<RequestedSubject, String> {
    let encoded = str_at(obj, "/spec/request");
    let pem = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| format!("decoding the request: {e}"))?;
    let (_, block) = x509_parser::pem::parse_x509_pem(&pem)
        .map_err(|_| "PEM block type must be CERTIFICATE REQUEST".to_string())?;
    if block.label != "CERTIFICATE REQUEST" && block.label != "NEW CERTIFICATE REQUEST" {
        return Err("PEM block type must be CERTIFICATE REQUEST".into());
    }
    use x509_parser::prelude::FromDer as _;
    let (_, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&block.contents)
            .map_err(|e| format!("parsing the certificate request: {e}"))?;
    csr.verify_signature()
        .map_err(|_| "the certificate request's signature does not verify".to_string())?;
    let subject = &csr.certification_request_info.subject;
    let common_name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_string();
    let organizations = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Ok(RequestedSubject {
        common_name,
        organizations,
        der: block.contents.clone(),
    })
}

fn condition_types(obj: &Value) -> Vec<String> {
    array_at(obj, "/status/conditions")
        .iter()
        .map(|c| str_at(c, "/type").to_string())
        .collect()
}

/// Whether the request carries the condition `kind` with status True.
pub fn has_condition(obj: &Value, kind: &str) -> bool {
    array_at(obj, "/status/conditions")
        .iter()
        .any(|c| str_at(c, "/type") == kind && str_at(c, "/status") == "True")
}

/// The strategy of `certificatesigningrequests`.
pub struct CsrStrategy;

impl Strategy for CsrStrategy {
    fn prepare_for_create(&self, obj: &mut Value) {
        if let Some(o) = obj.as_object_mut() {
            o.remove("status");
        }
    }

    fn set_requester(&self, obj: &mut Value, user: &UserInfo) {
        let spec = super::object_mut(obj, "spec");
        spec.insert("username".into(), json!(user.name));
        spec.insert("groups".into(), json!(user.groups));
        if user.uid.is_empty() {
            spec.remove("uid");
        } else {
            spec.insert("uid".into(), json!(user.uid));
        }
        if user.extra.is_empty() {
            spec.remove("extra");
        } else {
            spec.insert("extra".into(), json!(user.extra));
        }
    }

    fn prepare_for_update(&self, old: &Value, new: &mut Value) {
        // The spec is fixed at creation.
        new["spec"] = old.get("spec").cloned().unwrap_or(Value::Null);
    }

    fn prepare_for_subresource(&self, subresource: &str, old: &Value, new: &mut Value) {
        let old_conditions = array_at(old, "/status/conditions").to_vec();
        match subresource {
            // Approval changes the conditions, nothing else.
            "approval" => {
                let conditions = new
                    .pointer("/status/conditions")
                    .cloned()
                    .unwrap_or(json!([]));
                let mut status = old.get("status").cloned().unwrap_or(json!({}));
                status["conditions"] = conditions;
                new["status"] = status;
            }
            // The status endpoint keeps the approval conditions as they were.
            "status" => {
                let mut conditions: Vec<Value> = array_at(new, "/status/conditions")
                    .iter()
                    .filter(|c| !APPROVAL_CONDITIONS.contains(&str_at(c, "/type")))
                    .cloned()
                    .collect();
                conditions.extend(
                    old_conditions
                        .into_iter()
                        .filter(|c| APPROVAL_CONDITIONS.contains(&str_at(c, "/type"))),
                );
                if !conditions.is_empty() || new.pointer("/status/conditions").is_some() {
                    super::object_mut(new, "status").insert("conditions".into(), json!(conditions));
                }
            }
            _ => {}
        }
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if str_at(obj, "/spec/request").is_empty() {
            errs.push(FieldError::required("spec.request", ""));
        } else if let Err(why) = parse_request(obj) {
            errs.push(FieldError::invalid(
                "spec.request",
                json!(str_at(obj, "/spec/request")),
                why,
            ));
        }
        let signer = str_at(obj, "/spec/signerName");
        if signer.is_empty() {
            errs.push(FieldError::required("spec.signerName", ""));
        } else {
            errs.extend(validate_signer_name(signer));
        }
        match obj.pointer("/spec/usages").and_then(Value::as_array) {
            Some(usages) if !usages.is_empty() => {
                let mut seen = Vec::new();
                for (i, usage) in usages.iter().enumerate() {
                    let text = usage.as_str().unwrap_or_default();
                    if !USAGES.contains(&text) {
                        errs.push(FieldError::not_supported(
                            format!("spec.usages[{i}]"),
                            usage.clone(),
                            USAGES,
                        ));
                    } else if seen.contains(&text) {
                        errs.push(FieldError::duplicate(
                            format!("spec.usages[{i}]"),
                            usage.clone(),
                        ));
                    }
                    seen.push(text);
                }
            }
            _ => errs.push(FieldError::required("spec.usages", "")),
        }
        if let Some(seconds) = obj
            .pointer("/spec/expirationSeconds")
            .and_then(Value::as_i64)
        {
            if seconds < 600 {
                errs.push(FieldError::invalid(
                    "spec.expirationSeconds",
                    json!(seconds),
                    "may not specify a duration less than 600 seconds (10 minutes)",
                ));
            }
        }
        errs.extend(validate_conditions(obj));
        let certificate = str_at(obj, "/status/certificate");
        if !certificate.is_empty() {
            if let Err(why) = check_certificate(certificate) {
                errs.push(FieldError::invalid(
                    "status.certificate",
                    json!("<certificate data>"),
                    why,
                ));
            }
        }
        errs
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let now = condition_types(new);
        for kind in APPROVAL_CONDITIONS {
            if has_condition(old, kind) && !now.iter().any(|t| t == kind) {
                errs.push(FieldError::forbidden(
                    "status.conditions",
                    format!("updates may not remove a condition of type \"{kind}\""),
                ));
            }
        }
        let (was, is) = (
            str_at(old, "/status/certificate"),
            str_at(new, "/status/certificate"),
        );
        if !was.is_empty() && was != is {
            errs.push(FieldError::forbidden(
                "status.certificate",
                "updates may not modify existing certificate content",
            ));
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::name(),
            Column::age(),
            Column::text("SignerName", "The signer the request is for."),
            Column::text("Requestor", "Who created the request."),
            Column::text("RequestedDuration", "The lifetime asked for."),
            Column::text("Condition", "The request's state."),
        ]
    }

    fn row(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        let duration = obj
            .pointer("/spec/expirationSeconds")
            .and_then(Value::as_i64)
            .map_or("<none>".to_string(), table::human_duration);
        vec![
            table::name_cell(obj),
            table::age_cell(obj, now),
            json!(str_at(obj, "/spec/signerName")),
            json!(str_at(obj, "/spec/username")),
            json!(duration),
            json!(condition_text(obj)),
        ]
    }
}

/// kubectl's CONDITION column: the condition types, `Issued` once there is a certificate,
/// `Pending` before anything happened.
fn condition_text(obj: &Value) -> String {
    let mut parts: Vec<String> = array_at(obj, "/status/conditions")
        .iter()
        .map(|c| str_at(c, "/type").to_string())
        .collect();
    if !str_at(obj, "/status/certificate").is_empty() {
        parts.push("Issued".into());
    }
    if parts.is_empty() {
        "Pending".into()
    } else {
        parts.join(",")
    }
}

/// A signer name is a qualified name with a domain: `example.com/my-signer`.
fn validate_signer_name(signer: &str) -> Vec<FieldError> {
    let invalid = |why: &str| {
        vec![FieldError::invalid(
            "spec.signerName",
            json!(signer),
            why.to_string(),
        )]
    };
    let Some((domain, path)) = signer.split_once('/') else {
        return invalid(
            "must be a fully qualified domain and path of the form 'example.com/signer-name'",
        );
    };
    if !crate::validation::dns1123_subdomain(domain).is_empty() || !domain.contains('.') {
        return invalid("should be a domain with at least two segments separated by dots");
    }
    if path.is_empty() || path.len() > 571 {
        return invalid("validating path: path must not be empty and at most 571 characters");
    }
    Vec::new()
}

fn validate_conditions(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for (i, condition) in array_at(obj, "/status/conditions").iter().enumerate() {
        let kind = str_at(condition, "/type");
        let field = format!("status.conditions[{i}]");
        if kind.is_empty() {
            errs.push(FieldError::required(format!("{field}.type"), ""));
            continue;
        }
        if seen.contains(&kind) {
            errs.push(FieldError::duplicate(format!("{field}.type"), json!(kind)));
        }
        seen.push(kind);
        let status = str_at(condition, "/status");
        if APPROVAL_CONDITIONS.contains(&kind) || kind == "Failed" {
            if status != "True" {
                errs.push(FieldError::not_supported(
                    format!("{field}.status"),
                    json!(status),
                    &["True"],
                ));
            }
        } else if !matches!(status, "True" | "False" | "Unknown") {
            errs.push(FieldError::not_supported(
                format!("{field}.status"),
                json!(status),
                &["False", "True", "Unknown"],
            ));
        }
    }
    if seen.contains(&"Approved") && seen.contains(&"Denied") {
        errs.push(FieldError::invalid(
            "status.conditions",
            json!(seen),
            "Approved and Denied conditions are mutually exclusive",
        ));
    }
    errs
}

/// `status.certificate` (base64 in JSON) must be PEM `CERTIFICATE` blocks only.
fn check_certificate(encoded: &str) -> Result<(), String> {
    let pem = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| format!("decoding the certificate: {e}"))?;
    let mut rest: &[u8] = &pem;
    let mut blocks = 0;
    while rest.iter().any(|b| !b.is_ascii_whitespace()) {
        let (left, block) = x509_parser::pem::parse_x509_pem(rest)
            .map_err(|e| format!("parsing the certificate: {e}"))?;
        if block.label != "CERTIFICATE" {
            return Err(format!(
                "only CERTIFICATE PEM blocks are allowed, found \"{}\"",
                block.label
            ));
        }
        block
            .parse_x509()
            .map_err(|e| format!("parsing the certificate: {e}"))?;
        blocks += 1;
        rest = left;
    }
    if blocks == 0 {
        return Err("must contain at least one CERTIFICATE PEM block".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CSR object for `cn` in `orgs` asking `signer` for `usages`.
    pub(crate) fn csr(cn: &str, orgs: &[&str], signer: &str, usages: &[&str]) -> Value {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        for org in orgs {
            params
                .distinguished_name
                .push(rcgen::DnType::OrganizationName, *org);
        }
        let pem = params.serialize_request(&key).unwrap().pem().unwrap();
        json!({
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "CertificateSigningRequest",
            "metadata": {"name": "r"},
            "spec": {
                "request": base64::engine::general_purpose::STANDARD.encode(pem),
                "signerName": signer,
                "usages": usages,
            },
        })
    }

    #[test]
    fn a_valid_request_parses_and_validates() {
        // (rcgen keeps one value per attribute: one organization.)
        let obj = csr("jane", &["dev"], KUBE_APISERVER_CLIENT, &["client auth"]);
        assert!(CsrStrategy.validate(&obj).is_empty());
        let subject = parse_request(&obj).unwrap();
        assert_eq!(subject.common_name, "jane");
        assert_eq!(subject.organizations, vec!["dev"]);
    }

    #[test]
    fn bad_requests_are_invalid_with_kubernetes_field_paths() {
        let mut obj = csr("jane", &[], "nodomain", &["client auth", "flying"]);
        obj["spec"]["expirationSeconds"] = json!(60);
        obj["spec"]["request"] = json!(base64::engine::general_purpose::STANDARD.encode("junk"));
        let errs: Vec<String> = CsrStrategy
            .validate(&obj)
            .iter()
            .map(|e| e.field.clone())
            .collect();
        assert_eq!(
            errs,
            vec![
                "spec.request",
                "spec.signerName",
                "spec.usages[1]",
                "spec.expirationSeconds"
            ]
        );
    }

    #[test]
    fn the_requester_is_recorded_and_the_spec_never_changes() {
        let mut obj = csr("jane", &[], KUBE_APISERVER_CLIENT, &["client auth"]);
        obj["spec"]["username"] = json!("someone-else");
        let user = UserInfo {
            name: "jane".into(),
            groups: vec!["system:authenticated".into()],
            ..UserInfo::default()
        };
        CsrStrategy.set_requester(&mut obj, &user);
        assert_eq!(obj["spec"]["username"], "jane");
        assert_eq!(obj["spec"]["groups"], json!(["system:authenticated"]));
        let mut changed = obj.clone();
        changed["spec"]["signerName"] = json!("example.com/other");
        CsrStrategy.prepare_for_update(&obj, &mut changed);
        assert_eq!(changed["spec"], obj["spec"]);
    }

    #[test]
    fn approval_changes_only_conditions_and_status_keeps_them() {
        let mut old = csr("jane", &[], KUBE_APISERVER_CLIENT, &["client auth"]);
        old["status"] = json!({"certificate": "Y2VydA=="});
        let mut new = old.clone();
        new["status"] = json!({"conditions": [{"type": "Approved", "status": "True"}]});
        CsrStrategy.prepare_for_subresource("approval", &old, &mut new);
        assert_eq!(new["status"]["certificate"], "Y2VydA==");
        assert!(has_condition(&new, "Approved"));

        // The status endpoint cannot take the approval away.
        let mut by_signer = new.clone();
        by_signer["status"]["conditions"] = json!([{"type": "Failed", "status": "True"}]);
        CsrStrategy.prepare_for_subresource("status", &new, &mut by_signer);
        assert_eq!(
            condition_types(&by_signer),
            vec!["Failed".to_string(), "Approved".to_string()]
        );
    }

    #[test]
    fn approval_conditions_are_exclusive_and_permanent() {
        let mut obj = csr("jane", &[], KUBE_APISERVER_CLIENT, &["client auth"]);
        obj["status"] = json!({"conditions": [
            {"type": "Approved", "status": "True"}, {"type": "Denied", "status": "True"}]});
        let errs = CsrStrategy.validate(&obj);
        assert!(errs
            .iter()
            .any(|e| e.detail == "Approved and Denied conditions are mutually exclusive"));
        let mut approved = obj.clone();
        approved["status"] = json!({"conditions": [{"type": "Approved", "status": "True"}]});
        let cleared = csr("jane", &[], KUBE_APISERVER_CLIENT, &["client auth"]);
        let errs = CsrStrategy.validate_update(&cleared, &approved);
        assert_eq!(
            errs[0].detail,
            "updates may not remove a condition of type \"Approved\""
        );
    }

    #[test]
    fn the_condition_column_reads_as_kubectl_prints_it() {
        let mut obj = csr("jane", &[], KUBE_APISERVER_CLIENT, &["client auth"]);
        assert_eq!(condition_text(&obj), "Pending");
        obj["status"] = json!({"conditions": [{"type": "Approved", "status": "True"}],
            "certificate": "eA=="});
        assert_eq!(condition_text(&obj), "Approved,Issued");
    }
}
