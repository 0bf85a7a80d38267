//! Attachment records: what joining a container to a network created, kept in
//! `<network>/attachments/<container-id>.json` so that detach, check, the DNS
//! resolver and garbage collection know it without asking the kernel.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::lock::{write_atomic, Durability};
use crate::ports::PortMapping;

/// A container's place on one network (the result of CNI ADD).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// Network name.
    pub network: String,
    /// Container (or pod sandbox) id.
    pub container_id: String,
    /// Container name, resolvable through the network's DNS.
    #[serde(default)]
    pub name: Option<String>,
    /// More names resolvable through the network's DNS (`--network-alias`).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Interface name inside the container (`eth0`).
    pub interface: String,
    /// Host side of the veth pair, a port of the network's bridge.
    pub host_interface: String,
    /// The container's network namespace.
    pub netns: PathBuf,
    /// The container's address.
    pub ip: Ipv4Addr,
    /// Prefix length of the network's subnet.
    pub prefix_len: u8,
    /// Default route.
    pub gateway: Ipv4Addr,
    /// MAC address of `interface`, `aa:bb:...`.
    pub mac: String,
    /// Published ports.
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    /// Nameserver for the container's resolv.conf, when the network has DNS.
    #[serde(default)]
    pub dns_server: Option<Ipv4Addr>,
}

/// Errors reading or writing attachment records.
#[derive(Debug, thiserror::Error)]
pub enum AttachmentError {
    /// The file system failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the path.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A record does not parse.
    #[error("attachment record {path}: {source}")]
    Corrupt {
        /// The record.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
}

/// The attachment records of one network.
#[derive(Debug, Clone)]
pub(crate) struct Records {
    dir: PathBuf,
}

impl Records {
    /// Records under `<network dir>/attachments`.
    pub(crate) fn new(network_dir: &Path) -> Records {
        Records {
            dir: network_dir.join("attachments"),
        }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, container_id: &str) -> PathBuf {
        self.dir.join(format!("{container_id}.json"))
    }

    pub(crate) fn get(&self, container_id: &str) -> Result<Option<Attachment>, AttachmentError> {
        let path = self.path(container_id);
        match std::fs::read(&path) {
            Ok(data) => serde_json::from_slice(&data)
                .map(Some)
                .map_err(|source| AttachmentError::Corrupt { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(AttachmentError::Io {
                context: format!("reading {}", path.display()),
                source,
            }),
        }
    }

    pub(crate) fn put(&self, attachment: &Attachment) -> Result<(), AttachmentError> {
        let path = self.path(&attachment.container_id);
        write_atomic(
            &path,
            &serde_json::to_vec_pretty(attachment).expect("attachment serialises"),
            Durability::Process,
        )
        .map_err(|source| AttachmentError::Io {
            context: format!("writing {}", path.display()),
            source,
        })
    }

    pub(crate) fn remove(&self, container_id: &str) -> Result<(), AttachmentError> {
        let path = self.path(container_id);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(AttachmentError::Io {
                context: format!("removing {}", path.display()),
                source: e,
            }),
            _ => Ok(()),
        }
    }

    /// Every record; unreadable ones are skipped (and collected by gc).
    pub(crate) fn list(&self) -> Result<Vec<Attachment>, AttachmentError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(AttachmentError::Io {
                    context: format!("reading {}", self.dir.display()),
                    source,
                })
            }
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".json") else {
                continue;
            };
            if id.starts_with('.') {
                continue;
            }
            if let Ok(Some(a)) = self.get(id) {
                out.push(a);
            }
        }
        out.sort_by(|a, b| a.container_id.cmp(&b.container_id));
        Ok(out)
    }
}
