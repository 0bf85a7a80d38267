//! Image manifests and indexes (OCI and Docker schema 2), descriptors and platforms.
//!
//! Docker's schema 2 manifest and manifest list have the same JSON shape as OCI's image
//! manifest and index, only the media types differ, so one set of types reads both.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// Media type strings the store and registry client understand.
pub mod media_type {
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// Docker image manifest, schema 2.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list (schema 2 multi-platform).
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker schema 1 signed manifest, which is not supported.
    pub const DOCKER_SCHEMA1_SIGNED: &str =
        "application/vnd.docker.distribution.manifest.v1+prettyjws";
    /// OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// Docker image config.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// Uncompressed OCI layer.
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    /// gzip-compressed OCI layer.
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// zstd-compressed OCI layer.
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    /// gzip-compressed Docker layer.
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    /// Uncompressed Docker layer (rare, accepted by Docker).
    pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
    /// The Accept header value for manifest requests: every manifest type we can read.
    pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

    /// True for the layer media types a container image may use.
    pub fn is_layer(mt: &str) -> bool {
        matches!(
            mt,
            OCI_LAYER | OCI_LAYER_GZIP | OCI_LAYER_ZSTD | DOCKER_LAYER_GZIP | DOCKER_LAYER
        ) || mt.starts_with("application/vnd.oci.image.layer.nondistributable.v1.tar")
            || mt == "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
    }
}

/// Errors from parsing manifests and platforms.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The bytes are not a manifest or index of a known shape.
    #[error("invalid manifest: {0}")]
    Json(#[from] serde_json::Error),
    /// The manifest's schema version is not 2.
    #[error(
        "unsupported manifest schema version {0}: only schema 2 (OCI and Docker v2) is supported"
    )]
    SchemaVersion(u32),
    /// The media type is not one we can read.
    #[error("unsupported manifest media type {0:?}")]
    MediaType(String),
    /// The manifest describes an artifact, not a container image.
    #[error("manifest is not a container image: {what} has media type {media_type:?}")]
    NotAnImage {
        /// Which descriptor (config or layer N).
        what: String,
        /// Its media type.
        media_type: String,
    },
    /// A platform string is not `os/arch[/variant]`.
    #[error("invalid platform {0:?}: expected os/arch[/variant], e.g. linux/amd64")]
    Platform(String),
}

/// A content descriptor: media type, digest and size of a blob, with optional platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The blob's media type.
    pub media_type: String,
    /// The blob's digest.
    pub digest: Digest,
    /// The blob's size in bytes.
    pub size: u64,
    /// Alternative download locations (foreign layers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// Free-form annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The platform of the manifest this descriptor points to (indexes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

impl Descriptor {
    /// A descriptor without urls, annotations or platform.
    pub fn new(media_type: &str, digest: Digest, size: u64) -> Self {
        Self {
            media_type: media_type.to_owned(),
            digest,
            size,
            urls: Vec::new(),
            annotations: BTreeMap::new(),
            platform: None,
        }
    }
}

/// An OS/architecture pair (with optional variant) as in image indexes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// CPU architecture in GOARCH spelling (`amd64`, `arm64`).
    pub architecture: String,
    /// Operating system in GOOS spelling (`linux`).
    pub os: String,
    /// OS version (Windows only in practice).
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    /// Required OS features.
    #[serde(
        rename = "os.features",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_features: Option<Vec<String>>,
    /// CPU variant (`v7`, `v8`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of the running host, in GOOS/GOARCH spelling.
    pub fn host() -> Self {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            other => (other, None),
        };
        Self {
            architecture: architecture.to_owned(),
            os: "linux".to_owned(),
            os_version: None,
            os_features: None,
            variant: variant.map(str::to_owned),
        }
    }

    /// True when an index entry for `candidate` can run on `self`.
    ///
    /// As containerd's platform matcher: arm64 without variant means v8, and a request
    /// without variant accepts any variant.
    pub fn matches(&self, candidate: &Platform) -> bool {
        if self.os != candidate.os || self.architecture != candidate.architecture {
            return false;
        }
        let norm = |p: &Platform| match (p.architecture.as_str(), p.variant.as_deref()) {
            ("arm64", None) => Some("v8".to_owned()),
            (_, v) => v.map(str::to_owned),
        };
        match (&self.variant, norm(candidate)) {
            (None, _) => true,
            (Some(_), None) => self.architecture != "arm",
            (Some(_), c) => norm(self) == c,
        }
    }
}

impl FromStr for Platform {
    type Err = ManifestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok =
            |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(ok) {
            return Err(ManifestError::Platform(s.to_owned()));
        }
        Ok(Self {
            os: parts[0].to_lowercase(),
            architecture: parts[1].to_lowercase(),
            os_version: None,
            os_features: None,
            variant: parts.get(2).map(|v| v.to_lowercase()),
        })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A single-platform image manifest (OCI image manifest or Docker schema 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    /// Always 2.
    pub schema_version: u32,
    /// The manifest media type (optional in OCI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The image config blob.
    pub config: Descriptor,
    /// Layer blobs, bottom first.
    pub layers: Vec<Descriptor>,
    /// Free-form annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A multi-platform index (OCI image index or Docker manifest list).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    /// Always 2.
    pub schema_version: u32,
    /// The index media type (optional in OCI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// One descriptor per platform manifest (or nested index).
    pub manifests: Vec<Descriptor>,
    /// Free-form annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl ImageIndex {
    /// The first image manifest entry for `platform`, as Docker picks from a manifest list.
    pub fn select(&self, platform: &Platform) -> Option<&Descriptor> {
        self.manifests.iter().find(|d| {
            is_manifest_type(&d.media_type)
                && d.platform.as_ref().is_some_and(|p| platform.matches(p))
        })
    }

    /// The platforms listed, for error messages.
    pub fn platforms(&self) -> Vec<String> {
        self.manifests
            .iter()
            .filter_map(|d| d.platform.as_ref().map(Platform::to_string))
            .collect()
    }
}

/// A parsed manifest document: a single image or an index of them.
// Parsed once per pull or load and matched right away; boxing would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manifest {
    /// A single-platform image.
    Image(ImageManifest),
    /// A multi-platform index.
    Index(ImageIndex),
}

/// True for single-image manifest media types.
pub fn is_manifest_type(mt: &str) -> bool {
    mt == media_type::OCI_MANIFEST || mt == media_type::DOCKER_MANIFEST
}

/// True for index media types.
pub fn is_index_type(mt: &str) -> bool {
    mt == media_type::OCI_INDEX || mt == media_type::DOCKER_MANIFEST_LIST
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    schema_version: Option<u32>,
    media_type: Option<String>,
    manifests: Option<serde_json::Value>,
}

/// Parses a manifest or index, telling them apart by `mediaType` or, without it, by shape.
///
/// Rejects schema 1, unknown media types and artifacts whose config or layers are not
/// container image types. Never panics, whatever the input (a fuzz target calls it).
pub fn parse_manifest(bytes: &[u8]) -> Result<Manifest, ManifestError> {
    let probe: Probe = serde_json::from_slice(bytes)?;
    let version = probe.schema_version.unwrap_or(0);
    if version != 2 {
        return Err(ManifestError::SchemaVersion(version));
    }
    let is_index = match probe.media_type.as_deref() {
        Some(mt) if is_index_type(mt) => true,
        Some(mt) if is_manifest_type(mt) => false,
        Some(mt) => return Err(ManifestError::MediaType(mt.to_owned())),
        None => probe.manifests.is_some(),
    };
    if is_index {
        return Ok(Manifest::Index(serde_json::from_slice(bytes)?));
    }
    let m: ImageManifest = serde_json::from_slice(bytes)?;
    let config_mt = m.config.media_type.as_str();
    if config_mt != media_type::OCI_CONFIG && config_mt != media_type::DOCKER_CONFIG {
        return Err(ManifestError::NotAnImage {
            what: "config".into(),
            media_type: config_mt.to_owned(),
        });
    }
    for (i, layer) in m.layers.iter().enumerate() {
        if !media_type::is_layer(&layer.media_type) {
            return Err(ManifestError::NotAnImage {
                what: format!("layer {i}"),
                media_type: layer.media_type.clone(),
            });
        }
    }
    Ok(Manifest::Image(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn parses_docker_and_oci_manifests() {
        let docker = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{D1}","size":10}},"layers":[{{"mediaType":"{}","digest":"{D2}","size":20}}]}}"#,
            media_type::DOCKER_MANIFEST,
            media_type::DOCKER_CONFIG,
            media_type::DOCKER_LAYER_GZIP
        );
        let Manifest::Image(m) = parse_manifest(docker.as_bytes()).unwrap() else {
            panic!("not an image")
        };
        assert_eq!(m.layers[0].digest.to_string(), D2);
        let oci = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{}","digest":"{D1}","size":10}},"layers":[{{"mediaType":"{}","digest":"{D2}","size":20}}]}}"#,
            media_type::OCI_CONFIG,
            media_type::OCI_LAYER_ZSTD
        );
        assert!(matches!(
            parse_manifest(oci.as_bytes()).unwrap(),
            Manifest::Image(_)
        ));
    }

    #[test]
    fn rejects_schema1_artifacts_and_garbage() {
        assert!(matches!(
            parse_manifest(br#"{"schemaVersion":1,"name":"x"}"#),
            Err(ManifestError::SchemaVersion(1))
        ));
        let helm = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.cncf.helm.config.v1+json","digest":"{D1}","size":1}},"layers":[]}}"#
        );
        assert!(matches!(
            parse_manifest(helm.as_bytes()),
            Err(ManifestError::NotAnImage { .. })
        ));
        assert!(parse_manifest(b"\xff\x00").is_err());
        assert!(parse_manifest(br#"{"schemaVersion":2,"mediaType":"text/plain"}"#).is_err());
    }

    #[test]
    fn selects_platform_from_index() {
        let idx = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[
              {{"mediaType":"{m}","digest":"{D1}","size":1,"platform":{{"architecture":"arm64","os":"linux"}}}},
              {{"mediaType":"{m}","digest":"{D2}","size":1,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
            media_type::DOCKER_MANIFEST_LIST,
            m = media_type::DOCKER_MANIFEST
        );
        let Manifest::Index(index) = parse_manifest(idx.as_bytes()).unwrap() else {
            panic!("not an index")
        };
        let amd: Platform = "linux/amd64".parse().unwrap();
        assert_eq!(index.select(&amd).unwrap().digest.to_string(), D2);
        let arm: Platform = "linux/arm64/v8".parse().unwrap();
        assert_eq!(index.select(&arm).unwrap().digest.to_string(), D1);
        let s390: Platform = "linux/s390x".parse().unwrap();
        assert!(index.select(&s390).is_none());
        assert_eq!(index.platforms(), vec!["linux/arm64", "linux/amd64"]);
        assert!("linux".parse::<Platform>().is_err());
    }
}
