//! Certificates by SNI: the `kubernetes.io/tls` Secrets of the Ingresses' `spec.tls`,
//! and a self-signed default for any other name (as Traefik's default certificate).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::Secret;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::Error;

/// The certificates of the TLS hosts, exact and wildcard.
#[derive(Debug, Default)]
pub struct CertTable {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` keyed by `example.com`.
    wildcards: HashMap<String, Arc<CertifiedKey>>,
    /// For names no host certificate covers (a Gateway's HTTPS listener without a
    /// hostname), before the self-signed default.
    fallback: Option<Arc<CertifiedKey>>,
}

impl CertTable {
    /// Serves `key` for `host` (`*.x` for one label under `x`).
    pub fn insert(&mut self, host: &str, key: Arc<CertifiedKey>) {
        let host = host.to_ascii_lowercase();
        match host.strip_prefix("*.") {
            Some(suffix) => self.wildcards.insert(suffix.to_owned(), key),
            None => self.exact.insert(host, key),
        };
    }

    /// Serves `key` for names no host certificate covers, unless one is set already.
    pub fn set_fallback(&mut self, key: Arc<CertifiedKey>) {
        self.fallback.get_or_insert(key);
    }

    /// The certificate for the SNI name `host`, if one is configured.
    pub fn get(&self, host: &str) -> Option<Arc<CertifiedKey>> {
        let host = host.to_ascii_lowercase();
        self.exact.get(&host).cloned().or_else(|| {
            let (_, parent) = host.split_once('.')?;
            self.wildcards.get(parent).cloned()
        })
    }
}

/// rustls' certificate choice: the Gateways' certificate for the name, else the
/// Ingresses', else a Gateway's fallback, else the self-signed default.
#[derive(Debug)]
pub struct CertResolver {
    /// Swapped whole by the Ingress controller on every change.
    pub table: RwLock<Arc<CertTable>>,
    /// Swapped whole by the Gateway API controller on every change.
    pub gateway_table: RwLock<Arc<CertTable>>,
    default: Arc<CertifiedKey>,
}

impl CertResolver {
    /// A resolver with no host certificates and a fresh self-signed default.
    pub fn new() -> Result<CertResolver, Error> {
        let tls = |e: &dyn std::fmt::Display| Error::Tls(e.to_string());
        let certified =
            rcgen::generate_simple_self_signed(vec!["skiff-ingress-default.invalid".into()])
                .map_err(|e| tls(&e))?;
        let default = certified_key(
            certified.cert.pem().as_bytes(),
            certified.signing_key.serialize_pem().as_bytes(),
        )?;
        Ok(CertResolver {
            table: RwLock::default(),
            gateway_table: RwLock::default(),
            default: Arc::new(default),
        })
    }

    /// Replaces the Ingresses' host certificates.
    pub fn set(&self, table: CertTable) {
        *self.table.write().unwrap() = Arc::new(table);
    }

    /// Replaces the Gateways' certificates.
    pub fn set_gateway(&self, table: CertTable) {
        *self.gateway_table.write().unwrap() = Arc::new(table);
    }

    /// The certificate served for the SNI name `name` (`None`: no SNI).
    pub fn choose(&self, name: Option<&str>) -> Arc<CertifiedKey> {
        let ingress = self.table.read().unwrap().clone();
        let gateway = self.gateway_table.read().unwrap().clone();
        name.and_then(|n| gateway.get(n).or_else(|| ingress.get(n)))
            .or_else(|| gateway.fallback.clone())
            .unwrap_or_else(|| self.default.clone())
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.choose(hello.server_name()))
    }
}

/// A certificate chain and key from PEM (a Secret's `tls.crt` and `tls.key`).
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, Error> {
    let tls = |e: &dyn std::fmt::Display| Error::Tls(e.to_string());
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls(&e))?;
    if certs.is_empty() {
        return Err(Error::Tls("no certificate in tls.crt".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| tls(&e))?;
    let key = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| tls(&e))?;
    Ok(CertifiedKey::new(certs, key))
}

/// The certificate of a `kubernetes.io/tls` Secret.
pub fn from_secret(secret: &Secret) -> Result<CertifiedKey, Error> {
    let data = secret.data.as_ref();
    let field = |k: &str| {
        data.and_then(|d| d.get(k))
            .map(|b| b.0.clone())
            .ok_or_else(|| {
                Error::Tls(format!(
                    "secret {}/{} has no {k}",
                    secret.metadata.namespace.as_deref().unwrap_or_default(),
                    secret.metadata.name.as_deref().unwrap_or_default()
                ))
            })
    };
    certified_key(&field("tls.crt")?, &field("tls.key")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_for(name: &str) -> Arc<CertifiedKey> {
        let c = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        Arc::new(
            certified_key(
                c.cert.pem().as_bytes(),
                c.signing_key.serialize_pem().as_bytes(),
            )
            .unwrap(),
        )
    }

    #[test]
    fn exact_and_wildcard_hosts() {
        let mut t = CertTable::default();
        let (a, w) = (key_for("a.test"), key_for("*.w.test"));
        t.insert("A.test", a.clone());
        t.insert("*.w.test", w.clone());
        assert!(Arc::ptr_eq(&t.get("a.test").unwrap(), &a));
        assert!(Arc::ptr_eq(&t.get("x.w.test").unwrap(), &w));
        assert!(t.get("y.x.w.test").is_none());
        assert!(t.get("b.test").is_none());
        assert!(CertResolver::new().is_ok());
    }

    #[test]
    fn gateway_certificates_first_then_ingress_then_fallback() {
        let (g, i, f) = (key_for("g.test"), key_for("i.test"), key_for("any"));
        let resolver = CertResolver::new().unwrap();
        let mut ingress = CertTable::default();
        ingress.insert("i.test", i.clone());
        ingress.insert("g.test", i.clone());
        resolver.set(ingress);
        let mut gateway = CertTable::default();
        gateway.insert("g.test", g.clone());
        gateway.set_fallback(f.clone());
        resolver.set_gateway(gateway);
        assert!(Arc::ptr_eq(&resolver.choose(Some("g.test")), &g));
        assert!(Arc::ptr_eq(&resolver.choose(Some("i.test")), &i));
        assert!(Arc::ptr_eq(&resolver.choose(Some("x.test")), &f));
        assert!(Arc::ptr_eq(&resolver.choose(None), &f));
        resolver.set_gateway(CertTable::default());
        assert!(Arc::ptr_eq(&resolver.choose(None), &resolver.default));
    }

    #[test]
    fn bad_pem_is_an_error() {
        assert!(certified_key(b"nothing", b"nothing").is_err());
    }
}
