//! The kubelet's TLS bootstrap (kubeadm's join, the kubelet's `--bootstrap-kubeconfig`):
//! with the bootstrap token, the node asks for a client certificate of its own through a
//! CertificateSigningRequest (`CN=system:node:<name>`, `O=system:nodes`, signer
//! `kubernetes.io/kube-apiserver-client-kubelet`), waits until it is approved and issued,
//! and writes a kubeconfig with the certificate and its key (mode 0600), which it uses from
//! then on, also after a restart while the certificate is valid.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt as _};

/// The signer of kubelets' client certificates.
pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// The usages a kubelet asks for with an ECDSA key (no key encipherment).
pub const CLIENT_USAGES: [&str; 2] = ["digital signature", "client auth"];

/// A failure of the TLS bootstrap.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The key or the request could not be made.
    #[error("making the certificate request: {0}")]
    Request(#[from] rcgen::Error),
    /// The API refused or failed a call.
    #[error("certificatesigningrequest {name}: {source}")]
    Api {
        /// The request (or `node-csr-*` before it was created).
        name: String,
        /// The API error.
        source: kube::Error,
    },
    /// Watching the request failed.
    #[error("watching certificatesigningrequest {name}: {source}")]
    Wait {
        /// The request.
        name: String,
        /// The watch error.
        source: kube::runtime::wait::Error,
    },
    /// The request was denied or failed.
    #[error("certificatesigningrequest {name} was {condition}: {message}")]
    Refused {
        /// The request.
        name: String,
        /// `Denied` or `Failed`.
        condition: String,
        /// Its reason and message.
        message: String,
    },
    /// No certificate came in time.
    #[error("certificatesigningrequest {name} was not issued within {timeout:?}; approve it with `kubectl certificate approve {name}`")]
    Timeout {
        /// The request.
        name: String,
        /// How long the node waited.
        timeout: Duration,
    },
    /// The kubeconfig could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A node's client certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct ClientCredentials {
    /// The issued certificate chain.
    pub certificate_pem: String,
    /// The PKCS#8 private key.
    pub key_pem: String,
}

/// Where the agent keeps its kubeconfig under its root.
pub fn kubeconfig_path(root: &Path) -> PathBuf {
    root.join("agent").join("kubelet.kubeconfig")
}

/// A new P-256 key and the CertificateSigningRequest asking a client certificate for it
/// as node `node_name`.
pub fn new_request(
    node_name: &str,
) -> Result<(CertificateSigningRequest, rcgen::KeyPair), BootstrapError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("system:node:{node_name}"),
    );
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:nodes");
    let pem = params.serialize_request(&key)?.pem()?;
    let csr = CertificateSigningRequest {
        metadata: ObjectMeta {
            // The kubelet names its requests `node-csr-<hash>`.
            generate_name: Some("node-csr-".into()),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(pem.into_bytes()),
            signer_name: KUBELET_CLIENT_SIGNER.into(),
            usages: Some(CLIENT_USAGES.iter().map(|u| u.to_string()).collect()),
            ..Default::default()
        },
        ..Default::default()
    };
    Ok((csr, key))
}

/// The condition (`Denied` or `Failed`) that ends a request without a certificate.
fn refusal(csr: &CertificateSigningRequest) -> Option<(String, String)> {
    let conditions = csr.status.as_ref()?.conditions.as_ref()?;
    conditions
        .iter()
        .find(|c| c.type_ == "Denied" || c.type_ == "Failed")
        .map(|c| {
            let reason = c.reason.clone().unwrap_or_default();
            let message = c.message.clone().unwrap_or_default();
            (c.type_.clone(), format!("{reason}: {message}"))
        })
}

/// The issued certificate, once there is one.
fn issued(csr: &CertificateSigningRequest) -> Option<String> {
    let cert = csr.status.as_ref()?.certificate.as_ref()?;
    (!cert.0.is_empty()).then(|| String::from_utf8_lossy(&cert.0).into_owned())
}

/// Creates a request for `node_name` with `client` (the bootstrap token's) and waits up to
/// `timeout` for its certificate.
pub async fn request_client_certificate(
    client: Client,
    node_name: &str,
    timeout: Duration,
) -> Result<ClientCredentials, BootstrapError> {
    let (csr, key) = new_request(node_name)?;
    let api = Api::<CertificateSigningRequest>::all(client);
    let created = api
        .create(&PostParams::default(), &csr)
        .await
        .map_err(|source| BootstrapError::Api {
            name: "node-csr-*".into(),
            source,
        })?;
    let name = created.name_any();
    let done = |csr: Option<&CertificateSigningRequest>| {
        csr.is_some_and(|c| issued(c).is_some() || refusal(c).is_some())
    };
    let waited = tokio::time::timeout(
        timeout,
        kube::runtime::wait::await_condition(api, &name, done),
    )
    .await
    .map_err(|_| BootstrapError::Timeout {
        name: name.clone(),
        timeout,
    })?;
    let csr = waited.map_err(|source| BootstrapError::Wait {
        name: name.clone(),
        source,
    })?;
    let Some(csr) = csr else {
        return Err(BootstrapError::Refused {
            name,
            condition: "deleted".into(),
            message: "the request was deleted before it was issued".into(),
        });
    };
    if let Some((condition, message)) = refusal(&csr) {
        return Err(BootstrapError::Refused {
            name,
            condition,
            message,
        });
    }
    Ok(ClientCredentials {
        certificate_pem: issued(&csr).unwrap_or_default(),
        key_pem: key.serialize_pem(),
    })
}

/// DER certificates as one PEM bundle.
fn pem_bundle(ders: &[Vec<u8>]) -> String {
    let mut out = String::new();
    for der in ders {
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        for line in b64.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}

/// The kubeconfig of node `node_name`: `server`, trusted as issued by `ca` (DER; `None`
/// skips verification, as the bootstrap did), with the node's client certificate.
pub fn kubeconfig(
    server: &str,
    ca: Option<&[Vec<u8>]>,
    node_name: &str,
    credentials: &ClientCredentials,
) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut cluster = serde_json::json!({ "server": server });
    match ca {
        Some(ders) => cluster["certificate-authority-data"] = b64(&pem_bundle(ders)).into(),
        None => cluster["insecure-skip-tls-verify"] = true.into(),
    }
    let user = format!("system:node:{node_name}");
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "default-cluster", "cluster": cluster}],
        "users": [{"name": user, "user": {
            "client-certificate-data": b64(&credentials.certificate_pem),
            "client-key-data": b64(&credentials.key_pem),
        }}],
        "contexts": [{"name": "default-context", "context": {
            "cluster": "default-cluster",
            "user": user,
        }}],
        "current-context": "default-context",
    });
    serde_norway::to_string(&config).expect("a kubeconfig serializes")
}

/// Writes `contents` to `path` readable by its owner only (through a temporary file, so a
/// crash leaves the old file or the new one).
pub fn write_kubeconfig(path: &Path, contents: &str) -> Result<(), BootstrapError> {
    let err = |source| BootstrapError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    file.write_all(contents.as_bytes()).map_err(err)?;
    file.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Whether the kubeconfig at `path` holds a client certificate valid at `now` (seconds
/// since the epoch) for at least another `margin`; a missing or unreadable file is not.
pub fn has_valid_certificate(path: &Path, now: i64, margin: Duration) -> bool {
    let Ok(config) = kube::config::Kubeconfig::read_from(path) else {
        return false;
    };
    let Some(data) = config
        .auth_infos
        .iter()
        .filter_map(|a| a.auth_info.as_ref())
        .find_map(|a| a.client_certificate_data.clone())
    else {
        return false;
    };
    let Ok(pem) = base64::engine::general_purpose::STANDARD.decode(data.trim()) else {
        return false;
    };
    let Ok((_, block)) = x509_parser::pem::parse_x509_pem(&pem) else {
        return false;
    };
    let Ok(cert) = block.parse_x509() else {
        return false;
    };
    let validity = cert.validity();
    validity.not_before.timestamp() <= now
        && now + margin.as_secs() as i64 <= validity.not_after.timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::FromDer as _;

    #[test]
    fn the_request_asks_a_node_client_certificate() {
        let (csr, key) = new_request("worker-1").unwrap();
        assert_eq!(csr.metadata.generate_name.as_deref(), Some("node-csr-"));
        assert_eq!(csr.spec.signer_name, KUBELET_CLIENT_SIGNER);
        assert_eq!(
            csr.spec.usages.as_deref().unwrap(),
            ["digital signature", "client auth"]
        );
        let (_, block) = x509_parser::pem::parse_x509_pem(&csr.spec.request.0).unwrap();
        assert_eq!(block.label, "CERTIFICATE REQUEST");
        let (_, req) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&block.contents)
                .unwrap();
        let subject = &req.certification_request_info.subject;
        let cns: Vec<_> = subject
            .iter_common_name()
            .map(|a| a.as_str().unwrap())
            .collect();
        let orgs: Vec<_> = subject
            .iter_organization()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(cns, ["system:node:worker-1"]);
        assert_eq!(orgs, ["system:nodes"]);
        assert!(req
            .requested_extensions()
            .is_none_or(|mut e| e.next().is_none()));
        // A P-256 key, whose public half is the request's.
        assert_eq!(
            req.certification_request_info
                .subject_pki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string()),
            Some("1.2.840.10045.3.1.7".to_string())
        );
        assert_eq!(
            req.certification_request_info
                .subject_pki
                .subject_public_key
                .data
                .as_ref(),
            key.public_key_raw()
        );
    }

    /// A certificate for `node` valid from `from` to `to` (seconds since the epoch).
    fn credentials(from: i64, to: i64) -> ClientCredentials {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.not_before = rcgen::date_time_ymd(1970, 1, 1) + time_secs(from);
        params.not_after = rcgen::date_time_ymd(1970, 1, 1) + time_secs(to);
        let cert = params.self_signed(&key).unwrap();
        ClientCredentials {
            certificate_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    fn time_secs(s: i64) -> std::time::Duration {
        std::time::Duration::from_secs(s as u64)
    }

    #[test]
    fn the_kubeconfig_is_private_and_usable_while_its_certificate_is_valid() {
        let dir = tempfile::tempdir().unwrap();
        let path = kubeconfig_path(dir.path());
        let day = 86_400;
        let now = 1_800_000_000;
        let creds = credentials(now - day, now + 365 * day);
        let ca = vec![b"not really a certificate".to_vec()];
        write_kubeconfig(
            &path,
            &kubeconfig("https://10.0.0.1:6443", Some(&ca), "w1", &creds),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let config = kube::config::Kubeconfig::read_from(&path).unwrap();
        let cluster = config.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://10.0.0.1:6443"));
        let ca_pem = base64::engine::general_purpose::STANDARD
            .decode(cluster.certificate_authority_data.as_ref().unwrap())
            .unwrap();
        assert!(String::from_utf8(ca_pem)
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert_eq!(config.auth_infos[0].name, "system:node:w1");
        assert_eq!(config.current_context.as_deref(), Some("default-context"));

        let hour = Duration::from_secs(3600);
        assert!(has_valid_certificate(&path, now, hour));
        assert!(!has_valid_certificate(&path, now + 365 * day, hour));
        assert!(!has_valid_certificate(&path, now - 2 * day, hour));
        assert!(!has_valid_certificate(
            &dir.path().join("missing"),
            now,
            hour
        ));

        // Without a CA the bootstrap's choice, no verification, is kept.
        write_kubeconfig(&path, &kubeconfig("https://s", None, "w1", &creds)).unwrap();
        let config = kube::config::Kubeconfig::read_from(&path).unwrap();
        let cluster = config.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.insecure_skip_tls_verify, Some(true));
    }
}
