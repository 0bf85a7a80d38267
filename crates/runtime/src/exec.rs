//! Running an extra process inside a running container (`skiff exec`).
//!
//! libcontainer's tenant builder joins the container's namespaces and
//! cgroup, applies its capabilities, seccomp and no_new_privs, then execs.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use crate::init::Workload;

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    /// argv.
    pub args: Vec<String>,
    /// Extra environment (`KEY=value`), on top of the container's.
    pub env: Vec<String>,
    /// Working directory, or the container's when `None`.
    pub cwd: Option<String>,
    /// User and group ids, or the container's.
    pub user: Option<(u32, u32)>,
    /// Allocate a terminal; the caller gets its master side.
    pub terminal: bool,
    /// The container's own process spec (capabilities, rlimits, env ...),
    /// which an exec with a terminal starts from.
    pub base: Option<oci_spec::runtime::Process>,
}

/// Builds the full process spec of a terminal exec from the container's.
fn terminal_process(
    req: &ExecRequest,
    base: &oci_spec::runtime::Process,
) -> Result<oci_spec::runtime::Process, ExecError> {
    let mut value = serde_json::to_value(base).map_err(|e| ExecError::Runtime(e.to_string()))?;
    value["terminal"] = serde_json::json!(true);
    value["args"] = serde_json::json!(req.args);
    let mut env: Vec<String> = base.env().clone().unwrap_or_default();
    for kv in &req.env {
        let key = kv.split('=').next().unwrap_or(kv);
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(kv.clone());
    }
    value["env"] = serde_json::json!(env);
    if let Some(cwd) = &req.cwd {
        value["cwd"] = serde_json::json!(cwd);
    }
    if let Some((uid, gid)) = req.user {
        value["user"] = serde_json::json!({"uid": uid, "gid": gid});
    }
    serde_json::from_value(value).map_err(|e| ExecError::Runtime(e.to_string()))
}

/// Errors from exec.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// libcontainer refused or failed.
    #[error("{0}")]
    Runtime(String),
    /// Local I/O.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A started exec process.
pub struct ExecProcess {
    /// Host pid.
    pub pid: Pid,
    /// The terminal's master side, when a terminal was requested.
    pub terminal: Option<OwnedFd>,
}

impl ExecProcess {
    /// Waits for the process; returns its exit code (128+signal when killed).
    ///
    /// The caller must be the process's parent or a subreaper (see [`become_subreaper`]).
    pub fn wait(&self) -> Result<i32, ExecError> {
        loop {
            match waitpid(self.pid, None) {
                Ok(WaitStatus::Exited(_, code)) => return Ok(code),
                Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(ExecError::Io(e.into())),
            }
        }
    }
}

/// Makes the calling process adopt orphaned descendants, so it can wait for
/// an exec'd process after libcontainer's intermediate process exits.
pub fn become_subreaper() {
    // SAFETY: prctl on our own process with constant arguments.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
}

/// Starts `req` in the container `id` whose libcontainer state lives in `state_root`.
///
/// Without a terminal the process inherits `stdio` (stdin, stdout, stderr).
/// Must be called while the calling process is single-threaded (it forks).
pub fn exec(
    state_root: &Path,
    id: &str,
    req: &ExecRequest,
    stdio: Option<(OwnedFd, OwnedFd, OwnedFd)>,
    scratch_dir: &Path,
) -> Result<ExecProcess, ExecError> {
    let mut builder = ContainerBuilder::new(id.to_string(), SyscallType::Linux)
        .with_executor(Workload { init: false })
        .with_root_path(state_root)
        .map_err(|e| ExecError::Runtime(e.to_string()))?;
    let console: Option<(UnixListener, PathBuf)> = if req.terminal {
        std::fs::create_dir_all(scratch_dir)?;
        let path = scratch_dir.join(format!("exec-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        builder = builder.with_console_socket(Some(&path));
        Some((listener, path))
    } else {
        if let Some((i, o, e)) = stdio {
            builder = builder.with_stdin(i).with_stdout(o).with_stderr(e);
        }
        None
    };
    let env: HashMap<String, String> = req
        .env
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut tenant = builder.as_tenant().with_detach(req.terminal);
    match (&req.base, req.terminal) {
        (Some(base), true) => {
            // libcontainer takes `terminal` only from a whole process spec.
            let process = terminal_process(req, base)?;
            let path = scratch_dir.join(format!("exec-{}.json", std::process::id()));
            crate::status::write_replace(
                &path,
                &serde_json::to_vec(&process).map_err(|e| ExecError::Runtime(e.to_string()))?,
            )?;
            tenant = tenant.with_process(Some(&path));
        }
        _ => {
            tenant = tenant
                .with_container_args(req.args.clone())
                .with_env(env)
                .with_cwd(req.cwd.as_ref().map(PathBuf::from));
            if let Some((uid, gid)) = req.user {
                tenant = tenant.with_user(Some(uid)).with_group(Some(gid));
            }
        }
    }
    let pid = tenant.build().map_err(|e| {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text = format!("{text}: {s}");
            source = s.source();
        }
        ExecError::Runtime(text)
    })?;
    let terminal = match console {
        Some((listener, path)) => {
            let master = crate::shim::receive_pty_master(&listener)?;
            let _ = std::fs::remove_file(path);
            let _ =
                std::fs::remove_file(scratch_dir.join(format!("exec-{}.json", std::process::id())));
            Some(master)
        }
        None => None,
    };
    Ok(ExecProcess { pid, terminal })
}
