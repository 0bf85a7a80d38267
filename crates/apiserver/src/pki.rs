//! The cluster's PKI: a CA, the API server's serving certificate and the admin client
//! certificate, created on first start under `DIR/server/tls/`, plus the admin kubeconfig.
//!
//! Like kubeadm and k3s, the CA lives ten years and leaf certificates one year; a leaf that
//! expires within 90 days, or a serving certificate missing a wanted subject alternative name
//! (the bind address changed), is re-issued at start. Keys are ECDSA P-256: generating one
//! takes microseconds, which keeps the cold start fast.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// The user name of the admin client certificate.
pub const ADMIN_USER: &str = "skiff-admin";
/// The group of the admin client certificate: Kubernetes' superuser group.
pub const MASTERS_GROUP: &str = "system:masters";
/// The user name of the certificate the API server presents to kubelets (kubeadm's name).
pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";

const CA_DAYS: i64 = 3650;
const LEAF_DAYS: i64 = 365;
const RENEW_BEFORE_DAYS: i64 = 90;

/// Why the PKI could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Key or certificate generation failed.
    #[error("generating {what}: {source}")]
    Generate {
        /// The certificate or key being generated.
        what: &'static str,
        /// The rcgen error.
        #[source]
        source: rcgen::Error,
    },
    /// An existing certificate or key could not be parsed.
    #[error("{path}: not a valid PEM certificate or key: {reason}; remove it to regenerate")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
}

/// A PEM certificate with its PEM private key.
#[derive(Clone, Debug)]
pub struct CertAndKey {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PEM (PKCS#8).
    pub key_pem: String,
}

/// The certificates the API server needs, loaded or created.
#[derive(Clone, Debug)]
pub struct Pki {
    /// The cluster CA (its key signs every other certificate).
    pub ca: CertAndKey,
    /// The API server's serving certificate.
    pub serving: CertAndKey,
    /// The admin client certificate (CN=skiff-admin, O=system:masters).
    pub admin: CertAndKey,
    /// The API server's client certificate toward kubelets, for logs, exec, attach and
    /// port-forward (CN=kube-apiserver-kubelet-client, O=system:masters).
    pub kubelet_client: CertAndKey,
}

/// The files of one certificate in the TLS directory.
struct Files {
    cert: PathBuf,
    key: PathBuf,
}

impl Files {
    fn new(dir: &Path, name: &str) -> Files {
        Files {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        }
    }

    fn load(&self) -> Result<Option<CertAndKey>, PkiError> {
        let (Some(cert_pem), Some(key_pem)) =
            (read_optional(&self.cert)?, read_optional(&self.key)?)
        else {
            return Ok(None);
        };
        Ok(Some(CertAndKey { cert_pem, key_pem }))
    }

    fn store(&self, pair: &CertAndKey) -> Result<(), PkiError> {
        write_private(&self.key, &pair.key_pem)?;
        write_file(&self.cert, &pair.cert_pem, 0o644)
    }
}

impl Pki {
    /// Loads the PKI from `tls_dir`, creating (or renewing) what is missing; the serving
    /// certificate covers `localhost`, loopback, the host name and every address in `sans`.
    pub fn load_or_create(tls_dir: &Path, sans: &[String]) -> Result<Pki, PkiError> {
        std::fs::create_dir_all(tls_dir).map_err(|source| PkiError::Io {
            path: tls_dir.to_path_buf(),
            source,
        })?;
        let ca_files = Files::new(tls_dir, "ca");
        let ca = match ca_files.load()? {
            Some(ca) => ca,
            None => {
                let ca = new_ca()?;
                ca_files.store(&ca)?;
                ca
            }
        };
        let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(|e| PkiError::Parse {
            path: ca_files.key.clone(),
            reason: e.to_string(),
        })?;
        let issuer =
            Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key).map_err(|e| PkiError::Parse {
                path: ca_files.cert.clone(),
                reason: e.to_string(),
            })?;

        let mut wanted_sans: Vec<String> = vec![
            "localhost".into(),
            "127.0.0.1".into(),
            "::1".into(),
            "kubernetes".into(),
            "kubernetes.default".into(),
            "kubernetes.default.svc".into(),
            "kubernetes.default.svc.cluster.local".into(),
        ];
        if let Some(host) = hostname() {
            wanted_sans.push(host);
        }
        for san in sans {
            if !san.is_empty() && san != "0.0.0.0" && san != "::" && !wanted_sans.contains(san) {
                wanted_sans.push(san.clone());
            }
        }

        let serving_files = Files::new(tls_dir, "serving");
        let serving = match serving_files.load()? {
            Some(pair) if still_good(&pair.cert_pem, &wanted_sans) => pair,
            _ => {
                let pair = issue_leaf(&issuer, "kube-apiserver", None, &wanted_sans, true)?;
                serving_files.store(&pair)?;
                pair
            }
        };
        let admin_files = Files::new(tls_dir, "admin");
        let admin = match admin_files.load()? {
            Some(pair) if still_good(&pair.cert_pem, &[]) => pair,
            _ => {
                let pair = issue_leaf(&issuer, ADMIN_USER, Some(MASTERS_GROUP), &[], false)?;
                admin_files.store(&pair)?;
                pair
            }
        };
        let kubelet_client_files = Files::new(tls_dir, "apiserver-kubelet-client");
        let kubelet_client = match kubelet_client_files.load()? {
            Some(pair) if still_good(&pair.cert_pem, &[]) => pair,
            _ => {
                let pair = issue_leaf(
                    &issuer,
                    KUBELET_CLIENT_USER,
                    Some(MASTERS_GROUP),
                    &[],
                    false,
                )?;
                kubelet_client_files.store(&pair)?;
                pair
            }
        };
        Ok(Pki {
            ca,
            serving,
            admin,
            kubelet_client,
        })
    }

    /// The admin kubeconfig for a server reachable at `server_url`, with every certificate
    /// embedded so the file can be copied elsewhere.
    pub fn admin_kubeconfig(&self, server_url: &str) -> String {
        let b64 = |s: &str| BASE64.encode(s.as_bytes());
        format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: skiff\n  cluster:\n    server: {server_url}\n    certificate-authority-data: {ca}\n\
             users:\n\
             - name: {ADMIN_USER}\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\n\
             contexts:\n\
             - name: skiff\n  context:\n    cluster: skiff\n    user: {ADMIN_USER}\n\
             current-context: skiff\n\
             preferences: {{}}\n",
            ca = b64(&self.ca.cert_pem),
            cert = b64(&self.admin.cert_pem),
            key = b64(&self.admin.key_pem),
        )
    }
}

/// Writes the admin kubeconfig to `path` (mode 0600: it holds the admin's private key).
pub fn write_kubeconfig(path: &Path, contents: &str) -> Result<(), PkiError> {
    write_private(path, contents)
}

fn new_ca() -> Result<CertAndKey, PkiError> {
    let key = KeyPair::generate().map_err(|source| PkiError::Generate {
        what: "the CA key",
        source,
    })?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(
        DnType::CommonName,
        format!("skiff-ca@{}", OffsetDateTime::now_utc().unix_timestamp()),
    );
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(CA_DAYS);
    let cert = params
        .self_signed(&key)
        .map_err(|source| PkiError::Generate {
            what: "the CA certificate",
            source,
        })?;
    Ok(CertAndKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn issue_leaf(
    issuer: &Issuer<'_, KeyPair>,
    common_name: &str,
    organization: Option<&str>,
    sans: &[String],
    server: bool,
) -> Result<CertAndKey, PkiError> {
    let what = if server {
        "the serving certificate"
    } else {
        "a client certificate"
    };
    let key = KeyPair::generate().map_err(|source| PkiError::Generate { what, source })?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    if let Some(org) = organization {
        params
            .distinguished_name
            .push(DnType::OrganizationName, org);
    }
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.subject_alt_names = sans
        .iter()
        .map(|san| match san.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => san
                .clone()
                .try_into()
                .map(SanType::DnsName)
                .map_err(|source| PkiError::Generate { what, source }),
        })
        .collect::<Result<_, _>>()?;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    params.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(LEAF_DAYS);
    let cert = params
        .signed_by(&key, issuer)
        .map_err(|source| PkiError::Generate { what, source })?;
    Ok(CertAndKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Whether a stored certificate is valid for 90 more days and covers every wanted SAN.
fn still_good(cert_pem: &str, wanted_sans: &[String]) -> bool {
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()) else {
        return false;
    };
    let Ok(cert) = pem.parse_x509() else {
        return false;
    };
    let renew_at = OffsetDateTime::now_utc() + Duration::days(RENEW_BEFORE_DAYS);
    if cert.validity().not_after.to_datetime() < renew_at {
        return false;
    }
    if wanted_sans.is_empty() {
        return true;
    }
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return false;
    };
    let present: Vec<String> = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::DNSName(dns) => Some(dns.to_string()),
            x509_parser::extensions::GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => Some(IpAddr::from(<[u8; 4]>::try_from(*bytes).ok()?).to_string()),
                16 => Some(IpAddr::from(<[u8; 16]>::try_from(*bytes).ok()?).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    wanted_sans.iter().all(|want| {
        let want = want
            .parse::<IpAddr>()
            .map(|ip| ip.to_string())
            .unwrap_or_else(|_| want.clone());
        present.contains(&want)
    })
}

/// The machine's host name, lowercased, when it is a valid DNS name.
pub fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim().to_ascii_lowercase();
    (!name.is_empty()).then_some(name)
}

fn read_optional(path: &Path) -> Result<Option<String>, PkiError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PkiError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn write_private(path: &Path, contents: &str) -> Result<(), PkiError> {
    write_file(path, contents, 0o600)
}

/// Writes atomically (temporary file, rename) with `mode`.
fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&temporary)
        .map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&temporary, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_then_reuses_and_reissues_on_new_san() {
        let dir = tempfile::tempdir().unwrap();
        let first = Pki::load_or_create(dir.path(), &["10.1.2.3".into()]).unwrap();
        let again = Pki::load_or_create(dir.path(), &["10.1.2.3".into()]).unwrap();
        assert_eq!(first.ca.cert_pem, again.ca.cert_pem);
        assert_eq!(first.serving.cert_pem, again.serving.cert_pem);
        let moved = Pki::load_or_create(dir.path(), &["10.9.9.9".into()]).unwrap();
        assert_eq!(first.ca.cert_pem, moved.ca.cert_pem);
        assert_ne!(first.serving.cert_pem, moved.serving.cert_pem);
        assert_eq!(first.admin.cert_pem, moved.admin.cert_pem);
        assert!(still_good(
            &moved.serving.cert_pem,
            &["10.9.9.9".into(), "localhost".into()]
        ));
    }
}
