//! Pins of the cluster CA, with which a joining node trusts a server it has never seen
//! (kubeadm's `--discovery-token-ca-cert-hash`).
//!
//! A pin is `sha256:` and the hex SHA-256 of the CA certificate's DER SubjectPublicKeyInfo,
//! the value `openssl x509 -pubkey -noout | openssl pkey -pubin -outform der | sha256sum`
//! prints and kubeadm uses. The server presents the CA after its serving certificate in every
//! TLS handshake, so a client holding a pin takes the CA from a handshake in which it sends
//! nothing (no token), checks the pin and that the serving certificate is the CA's for the
//! address dialled, and from then on trusts only that CA. kubeadm instead reads the CA from
//! a `cluster-info` ConfigMap signed with the token; skiff serves no such ConfigMap.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::Digest;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The only kind of pin there is.
const SHA256: &str = "sha256:";

/// Why a pin could not be computed or no trusted CA was found.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    /// A PEM or DER certificate could not be read.
    #[error("reading a certificate: {0}")]
    Certificate(String),
    /// The pin is not `sha256:` and 64 hex digits.
    #[error("invalid CA pin {0:?}: expected sha256: and 64 hex digits (what `skiff token create --print-join-command` prints)")]
    InvalidPin(String),
    /// The server URL cannot be dialled.
    #[error("invalid server URL {0:?}: expected https://HOST[:PORT]")]
    Url(String),
    /// The TLS connection failed.
    #[error("connecting to {server}: {source}")]
    Connect {
        /// The address dialled.
        server: String,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The server presented no certificate matching the pin.
    #[error("{server} presented no CA certificate with public key {pin} (it presented {presented}); check --discovery-token-ca-cert-hash")]
    NoMatch {
        /// The address dialled.
        server: String,
        /// The pin expected.
        pin: String,
        /// The pins of the certificates presented.
        presented: String,
    },
}

/// The pin of a certificate given as DER.
pub fn pin_of_der(der: &[u8]) -> Result<String, PinError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| PinError::Certificate(e.to_string()))?;
    let digest = sha2::Sha256::digest(cert.tbs_certificate.subject_pki.raw);
    Ok(format!("{SHA256}{}", hex::encode(digest)))
}

/// The pin of the first certificate of a PEM bundle (the cluster CA's `ca.crt`).
pub fn pin_of_pem(pem: &[u8]) -> Result<String, PinError> {
    let der =
        CertificateDer::from_pem_slice(pem).map_err(|e| PinError::Certificate(e.to_string()))?;
    pin_of_der(&der)
}

/// The certificates (DER) of a PEM bundle, at least one.
pub fn certificates_of_pem(pem: &[u8]) -> Result<Vec<Vec<u8>>, PinError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PinError::Certificate(e.to_string()))?;
    if certs.is_empty() {
        return Err(PinError::Certificate("no PEM certificate found".into()));
    }
    Ok(certs)
}

/// A pin in its canonical form (lowercase hex), or why it is not one.
fn normalize(pin: &str) -> Result<String, PinError> {
    let hex = pin
        .strip_prefix(SHA256)
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| PinError::InvalidPin(pin.to_owned()))?;
    Ok(format!("{SHA256}{}", hex.to_ascii_lowercase()))
}

/// The CA certificate (DER) the server at `url` presents, if its pin is `pin` and it issued
/// the server's certificate for that address.
pub async fn discover_ca(url: &str, pin: &str) -> Result<Vec<u8>, PinError> {
    let pin = normalize(pin)?;
    let uri: hyper::Uri = url.parse().map_err(|_| PinError::Url(url.to_owned()))?;
    let host = uri
        .host()
        .filter(|_| uri.scheme_str() == Some("https"))
        .ok_or_else(|| PinError::Url(url.to_owned()))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let server = format!("{host}:{}", uri.port_u16().unwrap_or(443));
    let name = ServerName::try_from(host.to_owned()).map_err(|_| PinError::Url(url.to_owned()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(PinnedCa {
        pin: pin.clone(),
        provider: provider.clone(),
        found: Mutex::default(),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PinError::Certificate(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    let connect = |source| PinError::Connect {
        server: server.clone(),
        source,
    };
    let tcp = tokio::net::TcpStream::connect(&server)
        .await
        .map_err(connect)?;
    let handshake = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await;
    let found = verifier
        .found
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    match (handshake, found) {
        (Ok(_), Some(Ok(ca))) => Ok(ca),
        (_, Some(Err(presented))) => Err(PinError::NoMatch {
            server,
            pin,
            presented,
        }),
        (Err(e), _) => Err(connect(e)),
        (Ok(_), None) => Err(connect(std::io::Error::other("no certificate verified"))),
    }
}

/// Accepts a server whose chain holds the pinned CA and whose certificate that CA issued
/// for the name dialled; records the CA, or the pins seen when none matched.
#[derive(Debug)]
struct PinnedCa {
    pin: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
    found: Mutex<Option<Result<Vec<u8>, String>>>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented: Vec<&CertificateDer<'_>> =
            std::iter::once(end_entity).chain(intermediates).collect();
        let pins: Vec<String> = presented
            .iter()
            .map(|c| pin_of_der(c).unwrap_or_else(|e| e.to_string()))
            .collect();
        let record = |found| *self.found.lock().unwrap_or_else(|e| e.into_inner()) = Some(found);
        let Some(ca) = pins
            .iter()
            .position(|p| *p == self.pin)
            .map(|i| presented[i])
        else {
            record(Err(pins.join(", ")));
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ));
        };
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let verified = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?
        .verify_server_cert(end_entity, &[], server_name, ocsp_response, now)?;
        record(Ok(ca.to_vec()));
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_are_the_public_key_hash() {
        let dir = tempfile::tempdir().unwrap();
        let pki = crate::pki::Pki::load_or_create(dir.path(), &[]).unwrap();
        let pin = pin_of_pem(pki.ca.cert_pem.as_bytes()).unwrap();
        assert!(pin.starts_with("sha256:") && pin.len() == 71, "{pin}");
        assert_ne!(pin, pin_of_pem(pki.serving.cert_pem.as_bytes()).unwrap());
        assert_eq!(
            normalize(&pin.to_ascii_uppercase().replace("SHA256", "sha256")).unwrap(),
            pin
        );
        assert!(normalize("sha256:abc").is_err());
        assert!(normalize(&pin.replace("sha256:", "md5:")).is_err());
        assert_eq!(
            certificates_of_pem(pki.ca.cert_pem.as_bytes())
                .unwrap()
                .len(),
            1
        );
    }
}
