//! Kernel parameters under `/proc/sys`, behind a trait so the logic that sets
//! them is tested without root.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

/// A kernel parameter could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("sysctl {key}: {source}")]
pub struct SysctlError {
    /// The parameter, e.g. `net/ipv4/ip_forward`.
    pub key: String,
    /// The underlying error.
    #[source]
    pub source: std::io::Error,
}

/// Reads and writes kernel parameters of the caller's network namespace.
pub trait Sysctl: Send + Sync {
    /// Value of `key` (slash-separated, e.g. `net/ipv4/ip_forward`), trimmed.
    fn get(&self, key: &str) -> Result<String, SysctlError>;
    /// Sets `key` to `value`.
    fn set(&self, key: &str, value: &str) -> Result<(), SysctlError>;
}

/// The real `/proc/sys`.
///
/// `/proc/sys/net` shows the network namespace of the thread that opens it,
/// so this follows the calling thread's namespace like netlink does.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcSysctl;

impl ProcSysctl {
    fn path(key: &str) -> PathBuf {
        PathBuf::from("/proc/sys").join(key)
    }
}

impl Sysctl for ProcSysctl {
    fn get(&self, key: &str) -> Result<String, SysctlError> {
        std::fs::read_to_string(Self::path(key))
            .map(|v| v.trim().to_string())
            .map_err(|source| SysctlError {
                key: key.to_string(),
                source,
            })
    }

    fn set(&self, key: &str, value: &str) -> Result<(), SysctlError> {
        std::fs::write(Self::path(key), value).map_err(|source| SysctlError {
            key: key.to_string(),
            source,
        })
    }
}

/// An in-memory stand-in for tests; unknown keys read as `0`.
#[derive(Debug, Default)]
pub struct FakeSysctl {
    values: Mutex<HashMap<String, String>>,
}

impl FakeSysctl {
    /// The value set for `key`, if any.
    pub fn value(&self, key: &str) -> Option<String> {
        self.values.lock().unwrap().get(key).cloned()
    }
}

impl Sysctl for FakeSysctl {
    fn get(&self, key: &str) -> Result<String, SysctlError> {
        Ok(self.value(key).unwrap_or_else(|| "0".to_string()))
    }

    fn set(&self, key: &str, value: &str) -> Result<(), SysctlError> {
        self.values
            .lock()
            .unwrap()
            .insert(key.to_string(), value.to_string());
        Ok(())
    }
}
