//! Container termination messages, as the kubelet keeps them: each container instance
//! gets an empty, world-writable file of the pod's directory mounted at its
//! `terminationMessagePath`; when the instance exits, what it wrote there (at most
//! [`MAX_MESSAGE_BYTES`]) becomes `state.terminated.message`, or, under
//! `FallbackToLogsOnError` when it wrote nothing and failed, the tail of its log
//! ([`MAX_LOG_LINES`] lines, at most [`MAX_LOG_BYTES`]).

use std::io::Read;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Container;
use skiff_runtime::crilog;

/// The most of a termination message file that is read (the kubelet's 4 KiB).
pub const MAX_MESSAGE_BYTES: u64 = 4096;
/// Lines of the log a `FallbackToLogsOnError` message takes, at most.
pub const MAX_LOG_LINES: usize = 80;
/// Bytes of the log a `FallbackToLogsOnError` message takes, at most.
pub const MAX_LOG_BYTES: usize = 2048;

/// The termination message file of instance `attempt` of container `name` in the pod
/// directory `pod_dir`.
pub fn host_path(pod_dir: &Path, name: &str, attempt: u32) -> PathBuf {
    pod_dir
        .join("containers")
        .join(name)
        .join(format!("{attempt}.termination-log"))
}

/// Creates the empty file at `path`, writable by any user the container runs as.
pub fn create(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, b"")?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
}

/// Whether container `c` has a termination message file (a non-empty path).
pub fn wanted(c: &Container) -> Option<&str> {
    match c.termination_message_path.as_deref() {
        Some("") => None,
        Some(path) => Some(path),
        None => Some("/dev/termination-log"),
    }
}

/// The message of an exited instance: its file's content, else (under
/// `FallbackToLogsOnError`, after a failure) the tail of its CRI log at `log`.
pub fn message(c: &Container, file: &Path, exit_code: i32, log: Option<&Path>) -> String {
    let mut content = Vec::new();
    if let Ok(f) = std::fs::File::open(file) {
        let _ = f.take(MAX_MESSAGE_BYTES).read_to_end(&mut content);
    }
    if !content.is_empty() {
        return String::from_utf8_lossy(&content).into_owned();
    }
    let fallback = c.termination_message_policy.as_deref() == Some("FallbackToLogsOnError");
    match log {
        Some(log) if fallback && exit_code != 0 => log_tail(log),
        _ => String::new(),
    }
}

/// The last [`MAX_LOG_LINES`] lines of a CRI log, cut to their last [`MAX_LOG_BYTES`].
pub fn log_tail(log: &Path) -> String {
    let Ok(f) = std::fs::File::open(log) else {
        return String::new();
    };
    let Ok(records) = crilog::read_all(std::io::BufReader::new(f)) else {
        return String::new();
    };
    let start = crilog::tail_start(&records, MAX_LOG_LINES);
    let mut text = Vec::new();
    for r in &records[start..] {
        text.extend_from_slice(&r.content);
        if !r.partial {
            text.push(b'\n');
        }
    }
    let cut = text.len().saturating_sub(MAX_LOG_BYTES);
    String::from_utf8_lossy(&text[cut..]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(policy: Option<&str>, path: Option<&str>) -> Container {
        Container {
            name: "c".into(),
            termination_message_policy: policy.map(Into::into),
            termination_message_path: path.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn the_file_wins_and_the_log_is_read_only_after_a_failure_under_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let file = host_path(dir.path(), "c", 0);
        create(&file).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o666);
        let log = dir.path().join("log");
        let lines: String = (0..100)
            .map(|i| format!("2026-01-01T00:00:00Z stdout F line {i}\n"))
            .collect();
        std::fs::write(&log, lines).unwrap();
        let fallback = container(Some("FallbackToLogsOnError"), None);
        let tail = message(&fallback, &file, 1, Some(&log));
        assert!(
            tail.starts_with("line 20\n") && tail.ends_with("line 99\n"),
            "{tail}"
        );
        assert_eq!(message(&fallback, &file, 0, Some(&log)), "");
        assert_eq!(message(&container(None, None), &file, 1, Some(&log)), "");
        std::fs::write(&file, "DONE").unwrap();
        assert_eq!(message(&fallback, &file, 1, Some(&log)), "DONE");
    }

    #[test]
    fn log_tails_keep_the_last_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let long = "x".repeat(3000);
        std::fs::write(&log, format!("2026-01-01T00:00:00Z stderr F {long}y\n")).unwrap();
        let tail = log_tail(&log);
        assert_eq!(tail.len(), MAX_LOG_BYTES);
        assert!(tail.ends_with("y\n"));
    }

    #[test]
    fn an_empty_path_means_no_file() {
        assert_eq!(wanted(&container(None, None)), Some("/dev/termination-log"));
        assert_eq!(wanted(&container(None, Some("/x"))), Some("/x"));
        assert_eq!(wanted(&container(None, Some(""))), None);
    }
}
