//! How a container ended, and the small durable files that record it.

use std::io::Write;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How the container's main process ended, written by the shim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// Exit code as Docker reports it: the process's code, or 128+signal.
    pub exit_code: i32,
    /// The signal that killed the process, if any.
    pub signal: Option<i32>,
    /// The kernel's OOM killer killed a process of the container.
    pub oom_killed: bool,
    /// When the shim saw the process exit.
    pub finished_at: DateTime<Utc>,
    /// Set when the container never started: why.
    #[serde(default)]
    pub error: Option<String>,
}

impl ExitStatus {
    /// Docker's `State.Status` reason for the exit, Kubernetes' terminated reason.
    pub fn reason(&self) -> &'static str {
        if self.oom_killed {
            "OOMKilled"
        } else if self.error.is_some() {
            "ContainerCannotRun"
        } else if self.exit_code == 0 {
            "Completed"
        } else {
            "Error"
        }
    }
}

/// The life-cycle state of a container as the runtime sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerStatus {
    /// Set up on disk, never started.
    Created,
    /// The shim reports the process running with this host pid.
    Running {
        /// Host pid of the container's init process.
        pid: i32,
    },
    /// The process ended.
    Exited(ExitStatus),
    /// The shim vanished without recording an exit (killed, or the host rebooted).
    Dead,
}

impl ContainerStatus {
    /// Docker's word for the state (`created`, `running`, `exited`, `dead`).
    pub fn docker_state(&self) -> &'static str {
        match self {
            ContainerStatus::Created => "created",
            ContainerStatus::Running { .. } => "running",
            ContainerStatus::Exited(_) => "exited",
            ContainerStatus::Dead => "dead",
        }
    }
}

/// Writes `data` to `path` so readers see the old or the new content, never a mix,
/// and the new content survives a crash once this returns.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    write_file(path, data, true)
}

/// Like [`write_atomic`] but without fsync: for runtime state that a host
/// crash makes meaningless anyway (bundles, pids, the exit of a process that
/// would not survive the crash either). Killing skiff still never leaves a
/// torn file.
pub fn write_replace(path: &Path, data: &[u8]) -> std::io::Result<()> {
    write_file(path, data, false)
}

fn write_file(path: &Path, data: &[u8], durable: bool) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        if durable {
            f.sync_all()?;
        }
    }
    std::fs::rename(&tmp, path)?;
    if durable {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Reads a JSON file written by [`write_atomic`], `None` when absent.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> std::io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(data) => serde_json::from_slice(&data)
            .map(Some)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exit.json");
        let status = ExitStatus {
            exit_code: 137,
            signal: Some(9),
            oom_killed: true,
            finished_at: Utc::now(),
            error: None,
        };
        write_atomic(&path, &serde_json::to_vec(&status).unwrap()).unwrap();
        let back: ExitStatus = read_json(&path).unwrap().unwrap();
        assert_eq!(back, status);
        assert_eq!(back.reason(), "OOMKilled");
        assert!(read_json::<ExitStatus>(&dir.path().join("none"))
            .unwrap()
            .is_none());
    }
}
