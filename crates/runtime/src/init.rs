//! How the container's first process is started: directly, or under skiff's
//! tiny init (`--init`), which as PID 1 reaps zombies and forwards signals.
//!
//! Both run as a libcontainer [`Executor`] inside the fully set-up container
//! (namespaces, rootfs, capabilities, seccomp already applied). The init
//! needs no binary inside the image: it is the already-running skiff process.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use nix::sys::signal::{self, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{execvp, fork, ForkResult, Pid};
use oci_spec::runtime::Spec;

/// Message prefix Docker uses when the command cannot be found; the engine
/// maps it to exit code 127.
pub const NOT_FOUND: &str = "executable file not found in $PATH";
/// Message used when the command exists but cannot be executed (exit 126).
pub const NOT_EXECUTABLE: &str = "permission denied";

/// OCI annotation that makes the container's first process skiff's pause: the
/// shim's clone sleeping until SIGTERM/SIGINT, holding the pod sandbox's namespaces
/// without any file from the image (the kubelet's pause container, built in).
pub const PAUSE_ANNOTATION: &str = "dev.skiff.pause";

fn is_pause(spec: &Spec) -> bool {
    spec.annotations()
        .as_ref()
        .is_some_and(|a| a.get(PAUSE_ANNOTATION).is_some_and(|v| v == "true"))
}

/// The executor the shim hands to libcontainer.
#[derive(Clone)]
pub struct Workload {
    /// Run the tiny init as PID 1 and the workload as its child.
    pub init: bool,
}

fn args_of(spec: &Spec) -> Result<Vec<CString>, ExecutorError> {
    let args = spec
        .process()
        .as_ref()
        .and_then(|p| p.args().as_ref())
        .filter(|a| !a.is_empty())
        .ok_or(ExecutorError::InvalidArg)?;
    args.iter()
        .map(|a| CString::new(a.as_bytes()).map_err(|_| ExecutorError::InvalidArg))
        .collect()
}

fn exec_workload(args: &[CString]) -> ExecutorError {
    match execvp(&args[0], args) {
        Ok(never) => match never {},
        Err(errno) => ExecutorError::Other(format!(
            "exec: {:?}: {}",
            args[0].to_string_lossy(),
            errno.desc()
        )),
    }
}

/// Finds `name` like execvp would, in the container's root.
pub fn lookup_executable(name: &str, path_var: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Some(PathBuf::from(name)).filter(|p| p.exists());
    }
    path_var
        .split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
}

fn is_executable(path: &Path) -> bool {
    nix::unistd::access(path, nix::unistd::AccessFlags::X_OK).is_ok()
}

/// Gives the container's first process default signal dispositions and an empty signal
/// mask, as a fresh process would have: the shim, a Rust program, ignores SIGPIPE, and
/// ignored signals survive exec (a workload writing to a closed pipe must die of SIGPIPE,
/// not see EPIPE).
fn reset_signals() {
    for signum in 1..=64 {
        if signum == libc::SIGKILL || signum == libc::SIGSTOP {
            continue;
        }
        // The raw system call: the C library's wrapper refuses the signals it reserves
        // (32 and 33), which must be reset too.
        let action = KernelSigaction {
            handler: libc::SIG_DFL,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        // SAFETY: a valid kernel sigaction struct of the size passed; no old action read.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signum,
                &action as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                std::mem::size_of::<u64>(),
            );
        }
    }
    let _ = signal::SigSet::empty().thread_set_mask();
}

/// The kernel's `struct sigaction` (x86_64 and aarch64 layout).
#[repr(C)]
struct KernelSigaction {
    handler: libc::sighandler_t,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

impl Executor for Workload {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        reset_signals();
        if is_pause(spec) {
            run_pause();
        }
        let args = args_of(spec)?;
        if !self.init {
            return Err(exec_workload(&args));
        }
        run_init(&args)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        if is_pause(spec) {
            return Ok(());
        }
        let process = spec.process().as_ref().ok_or_else(|| {
            ExecutorValidationError::ArgValidationError("spec has no process".into())
        })?;
        let Some(name) = process.args().as_ref().and_then(|a| a.first()) else {
            return Err(ExecutorValidationError::ArgValidationError(
                "no command specified".into(),
            ));
        };
        let path_var = process
            .env()
            .as_ref()
            .and_then(|env| env.iter().find_map(|e| e.strip_prefix("PATH=")))
            .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        match lookup_executable(name, path_var) {
            None if name.contains('/') => Err(ExecutorValidationError::ArgValidationError(
                format!("exec: \"{name}\": stat {name}: no such file or directory"),
            )),
            None => Err(ExecutorValidationError::ArgValidationError(format!(
                "exec: \"{name}\": {NOT_FOUND}"
            ))),
            Some(path) if path.is_dir() || !is_executable(&path) => {
                Err(ExecutorValidationError::ArgValidationError(format!(
                    "exec: \"{name}\": {NOT_EXECUTABLE}"
                )))
            }
            Some(_) => Ok(()),
        }
    }
}

/// Exit code for a wait status, as shells and Docker report it.
pub fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

/// The pause process: waits for SIGTERM or SIGINT (exit 0), reaping any child.
fn run_pause() -> ! {
    // SAFETY: PR_SET_NAME reads a NUL-terminated string we own.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, c"pause".as_ptr(), 0, 0, 0);
    }
    let all = SigSet::all();
    let _ = all.thread_block();
    // A clone of the shim taken during its start-up: keep only what the loop below
    // touches (about a page of code and stack), not the shim's heap and code.
    crate::shim::shed_startup_memory();
    loop {
        match all.wait() {
            Ok(Signal::SIGTERM | Signal::SIGINT) => std::process::exit(0),
            Ok(Signal::SIGCHLD) => {
                while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                    if status == WaitStatus::StillAlive {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
}

/// PID 1: start the workload as a child, forward signals to it, reap every
/// orphan, and exit with the workload's status.
fn run_init(args: &[CString]) -> Result<(), ExecutorError> {
    // Shown by `ps` inside the container instead of the shim's name.
    // SAFETY: PR_SET_NAME reads a NUL-terminated string we own.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, c"skiff-init".as_ptr(), 0, 0, 0);
    }
    let mut all = SigSet::all();
    // Signals that indicate a fault in the init itself must stay deliverable.
    for sig in [
        Signal::SIGFPE,
        Signal::SIGILL,
        Signal::SIGSEGV,
        Signal::SIGBUS,
        Signal::SIGABRT,
        Signal::SIGTRAP,
        Signal::SIGSYS,
        Signal::SIGTTIN,
        Signal::SIGTTOU,
    ] {
        all.remove(sig);
    }
    let previous = all
        .thread_swap_mask(signal::SigmaskHow::SIG_SETMASK)
        .map_err(|e| ExecutorError::Other(format!("init: blocking signals: {e}")))?;

    // SAFETY: the container init is single-threaded at this point; the child
    // only restores its signal mask and calls execvp.
    let child = match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let _ = previous.thread_set_mask();
            // A new process group, so the terminal's signals reach the workload.
            let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
            let err = exec_workload(args);
            eprintln!("skiff-init: {err}");
            std::process::exit(if err.to_string().contains("No such file") {
                127
            } else {
                126
            });
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => return Err(ExecutorError::Other(format!("init: fork: {e}"))),
    };

    loop {
        let sig = match all.wait() {
            Ok(sig) => sig,
            Err(_) => continue,
        };
        if sig != Signal::SIGCHLD {
            let _ = signal::kill(child, sig);
            continue;
        }
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(status) => {
                    if status.pid() == Some(child) {
                        let code = exit_code(status).unwrap_or(1);
                        std::process::exit(code);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_follows_path_order() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(b.join("tool"), "").unwrap();
        let path = format!("{}:{}", a.display(), b.display());
        assert_eq!(lookup_executable("tool", &path), Some(b.join("tool")));
        assert_eq!(lookup_executable("missing", &path), None);
    }

    #[test]
    fn signaled_exit_is_128_plus_signal() {
        let status = WaitStatus::Signaled(Pid::from_raw(1), Signal::SIGKILL, false);
        assert_eq!(exit_code(status), Some(137));
        assert_eq!(exit_code(WaitStatus::Exited(Pid::from_raw(1), 3)), Some(3));
    }
}
