//! The per-container shim: skiff's conmon.
//!
//! `skiff shim CONFIG` is started by the engine, detaches into its own
//! session and becomes the parent (subreaper) of the container. It creates
//! the container through libcontainer, owns its stdio (writing the CRI log
//! and serving attach clients), waits for it to exit, records the exit
//! status, runs the exit command (the engine's cleanup) and exits. Because
//! it outlives the CLI or daemon that started it, containers keep running
//! when those exit, and are re-adopted by reading the files it keeps.
//!
//! The shim is single-threaded and poll-driven so that it stays small.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use chrono::{DateTime, Utc};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{pipe2, Pid};
use serde::{Deserialize, Serialize};

use crate::attach::{encode, Decoder, FrameKind};
use crate::cgroups::CgroupReader;
use crate::crilog::{self, Stream};
use crate::health::{HealthConfig, HealthResult, HealthState};
use crate::init::{self, Workload};
use crate::status::{write_replace, ExitStatus};

/// Environment variable carrying the status pipe's fd number to the shim.
const STATUS_FD_ENV: &str = "SKIFF_SHIM_STATUS_FD";

/// Everything the shim needs, written by the engine as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShimConfig {
    /// Container id.
    pub id: String,
    /// OCI bundle directory (holds config.json).
    pub bundle: PathBuf,
    /// libcontainer's state root.
    pub state_root: PathBuf,
    /// CRI log file.
    pub log_path: PathBuf,
    /// Where the exit status is written.
    pub exit_path: PathBuf,
    /// Where the shim writes its [`ShimState`].
    pub state_path: PathBuf,
    /// The attach socket.
    pub attach_socket: PathBuf,
    /// Keep stdin open (`-i`).
    pub stdin: bool,
    /// Allocate a terminal (`-t`).
    pub terminal: bool,
    /// Start only after the first attach client connected (foreground `run`).
    pub wait_for_attach: bool,
    /// Run skiff's init as PID 1.
    pub init: bool,
    /// cgroup path of the container, to read OOM kills.
    pub cgroup_path: String,
    /// Command run after the exit status is written (the engine's cleanup).
    #[serde(default)]
    pub exit_command: Vec<String>,
    /// Shim's own diagnostics.
    pub shim_log: PathBuf,
    /// The container's health check, if any.
    #[serde(default)]
    pub health: Option<HealthConfig>,
    /// Where the health state is written.
    #[serde(default)]
    pub health_path: PathBuf,
    /// Command prefix that runs a process in this container (`skiff exec ID`).
    #[serde(default)]
    pub health_exec: Vec<String>,
}

/// What the shim records about the running container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShimState {
    /// The shim's pid.
    pub shim_pid: i32,
    /// Host pid of the container's first process.
    pub pid: i32,
    /// When the process was started.
    pub started_at: DateTime<Utc>,
}

/// A message from the shim to the engine on the status pipe, one JSON line each.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ShimReport {
    /// The container exists and waits to be started; attach now if you want output.
    Created {
        /// Host pid of the container's init.
        pid: i32,
    },
    /// The container process runs.
    Started {
        /// Host pid of the container's init.
        pid: i32,
    },
    /// The container could not be created or started.
    Failed {
        /// Why, as libcontainer or the executor said.
        error: String,
    },
}

/// Errors while starting a shim from the engine.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The shim process could not be started.
    #[error("starting shim: {0}")]
    Io(#[from] io::Error),
    /// The shim ended without a report.
    #[error("the shim exited without reporting (see {0})")]
    NoReport(PathBuf),
    /// The shim reported a failure.
    #[error("{0}")]
    Failed(String),
}

/// The engine's handle on a shim it started.
pub struct ShimHandle {
    reports: io::BufReader<File>,
    shim_log: PathBuf,
}

impl ShimHandle {
    /// Waits for the next report from the shim.
    pub fn next_report(&mut self) -> Result<ShimReport, SpawnError> {
        use std::io::BufRead;
        let mut line = String::new();
        if self.reports.read_line(&mut line)? == 0 {
            return Err(SpawnError::NoReport(self.shim_log.clone()));
        }
        let report: ShimReport = serde_json::from_str(&line)
            .map_err(|e| SpawnError::Failed(format!("bad shim report {line:?}: {e}")))?;
        if let ShimReport::Failed { error } = report {
            return Err(SpawnError::Failed(error));
        }
        Ok(report)
    }
}

/// Starts `skiff_exe shim CONFIG` detached, returning a handle to read its reports.
///
/// `global_args` go before the `shim` verb (e.g. `--root DIR`).
pub fn spawn(
    skiff_exe: &Path,
    global_args: &[String],
    config: &ShimConfig,
    config_path: &Path,
) -> Result<ShimHandle, SpawnError> {
    write_replace(
        config_path,
        &serde_json::to_vec_pretty(config).map_err(io::Error::other)?,
    )?;
    let (read_end, write_end) = pipe2(OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    // The status pipe is the shim's stdout, which the child's setup places itself; no
    // code runs between fork and exec, so the standard library spawns with posix_spawn
    // (a vfork) instead of forking this process: a fork of a kubelet with a hundred
    // pods copied its page tables and made its threads take copy-on-write faults.
    let mut cmd = Command::new(skiff_exe);
    cmd.args(global_args)
        .arg("shim")
        .arg(config_path)
        .env(STATUS_FD_ENV, "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::from(write_end))
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn()?;
    // The parent's copy of the write end went with `cmd`: the reports end when the
    // shim's do.
    drop(cmd);
    // The first shim process forks the real shim and exits at once.
    child.wait()?;
    Ok(ShimHandle {
        reports: io::BufReader::new(File::from(read_end)),
        shim_log: config.shim_log.clone(),
    })
}

/// Entry point of `skiff shim CONFIG`. Never returns.
pub fn main(config_path: &Path) -> ! {
    let status_fd: Option<RawFd> = std::env::var(STATUS_FD_ENV)
        .ok()
        .and_then(|v| v.parse().ok());
    // The pipe arrives as a standard descriptor (stdout), which goes to /dev/null
    // below: keep it under a descriptor of its own, closed at exec.
    let mut reporter = status_fd.and_then(|fd| {
        let own = fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(3)).ok()?;
        if fd > 2 {
            let _ = nix::unistd::close(fd);
        }
        // SAFETY: `own` was just made by F_DUPFD_CLOEXEC and nothing else owns it.
        Some(unsafe { File::from_raw_fd(own) })
    });

    let config: ShimConfig = match std::fs::read(config_path)
        .map_err(|e| e.to_string())
        .and_then(|d| serde_json::from_slice(&d).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            report(
                &mut reporter,
                &ShimReport::Failed {
                    error: format!("reading shim config {}: {e}", config_path.display()),
                },
            );
            std::process::exit(1);
        }
    };

    // Detach: the engine waits for this first process to exit.
    // SAFETY: single-threaded here; the child continues normally.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { .. }) => std::process::exit(0),
        Ok(nix::unistd::ForkResult::Child) => {}
        Err(e) => {
            report(
                &mut reporter,
                &ShimReport::Failed {
                    error: format!("shim fork: {e}"),
                },
            );
            std::process::exit(1);
        }
    }
    let _ = nix::unistd::setsid();
    // SAFETY: plain prctl on our own process.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    redirect_stdio(&config.shim_log);

    let code = match run(&config, &mut reporter) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("shim {}: {e:#}", config.id);
            1
        }
    };
    std::process::exit(code);
}

fn report(reporter: &mut Option<File>, msg: &ShimReport) {
    if let Some(f) = reporter.as_mut() {
        let mut line = serde_json::to_vec(msg).unwrap_or_default();
        line.push(b'\n');
        let _ = f.write_all(&line);
    }
}

fn redirect_stdio(shim_log: &Path) {
    let null = OpenOptions::new().read(true).open("/dev/null");
    let log = OpenOptions::new().create(true).append(true).open(shim_log);
    // SAFETY: dup2 onto the standard descriptors of this process.
    unsafe {
        if let Ok(null) = &null {
            libc::dup2(null.as_raw_fd(), 0);
            libc::dup2(null.as_raw_fd(), 1);
        }
        if let Ok(log) = &log {
            libc::dup2(log.as_raw_fd(), 2);
        }
    }
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(io::Error::from)?;
    fcntl(
        fd,
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
    )
    .map_err(io::Error::from)?;
    Ok(())
}

fn failed(reporter: &mut Option<File>, config: &ShimConfig, error: String) -> anyhow::Error {
    let status = ExitStatus {
        exit_code: exit_code_for_error(&error),
        signal: None,
        oom_killed: false,
        finished_at: Utc::now(),
        error: Some(error.clone()),
    };
    let _ = write_replace(
        &config.exit_path,
        &serde_json::to_vec(&status).unwrap_or_default(),
    );
    report(
        reporter,
        &ShimReport::Failed {
            error: error.clone(),
        },
    );
    anyhow::anyhow!(error)
}

/// Docker's exit codes for a container that could not be started.
pub fn exit_code_for_error(error: &str) -> i32 {
    if error.contains(init::NOT_FOUND) || error.contains("no such file or directory") {
        127
    } else if error.contains(init::NOT_EXECUTABLE) {
        126
    } else {
        125
    }
}

/// The libcontainer error chain as one line.
fn describe(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

/// Finds the executor's validation message in libcontainer's error text.
pub fn user_facing(error: String) -> String {
    // The executor's own words are what a user needs (e.g. `exec: "x": executable file not found`).
    if let Some(pos) = error.find("exec: \"") {
        return error[pos..].to_string();
    }
    error
}

struct Output {
    fd: OwnedFd,
    stream: Stream,
}

fn run(config: &ShimConfig, reporter: &mut Option<File>) -> anyhow::Result<()> {
    let run_dir = config
        .attach_socket
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&run_dir)?;
    let mut outputs: Vec<Output> = Vec::new();
    let mut stdin_writer: Option<OwnedFd> = None;

    let mut builder = ContainerBuilder::new(config.id.clone(), SyscallType::Linux)
        .with_executor(Workload { init: config.init });
    builder = builder
        .with_root_path(&config.state_root)
        .map_err(|e| failed(reporter, config, describe(&e)))?;
    let console_path = run_dir.join("console.sock");
    let console_listener = if config.terminal {
        let _ = std::fs::remove_file(&console_path);
        let listener = UnixListener::bind(&console_path)?;
        builder = builder.with_console_socket(Some(&console_path));
        Some(listener)
    } else {
        let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC)?;
        let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC)?;
        builder = builder.with_stdout(out_w).with_stderr(err_w);
        outputs.push(Output {
            fd: out_r,
            stream: Stream::Stdout,
        });
        outputs.push(Output {
            fd: err_r,
            stream: Stream::Stderr,
        });
        if config.stdin {
            let (in_r, in_w) = pipe2(OFlag::O_CLOEXEC)?;
            builder = builder.with_stdin(in_r);
            stdin_writer = Some(in_w);
        } else {
            let null = File::open("/dev/null")?;
            builder = builder.with_stdin(OwnedFd::from(null));
        }
        None
    };

    let mut container = builder
        .as_init(&config.bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(|e| failed(reporter, config, user_facing(describe(&e))))?;
    let pid = container
        .pid()
        .ok_or_else(|| failed(reporter, config, "container has no pid after create".into()))?;

    if let Some(listener) = console_listener {
        let master = receive_pty_master(&listener)
            .map_err(|e| failed(reporter, config, format!("receiving terminal: {e}")))?;
        let _ = std::fs::remove_file(&console_path);
        let dup = master.try_clone()?;
        stdin_writer = Some(dup);
        outputs.push(Output {
            fd: master,
            stream: Stream::Stdout,
        });
    }

    // From here on, signals are read from a signalfd (the container's processes
    // were cloned before, so they keep default dispositions).
    let mut mask = SigSet::empty();
    for sig in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        mask.add(sig);
    }
    mask.thread_block()?;
    // SAFETY: ignoring SIGPIPE so writes to gone attach clients return EPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let mut sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;

    let _ = std::fs::remove_file(&config.attach_socket);
    let listener = UnixListener::bind(&config.attach_socket)?;
    listener.set_nonblocking(true)?;

    let mut clients: HashMap<RawFd, Client> = HashMap::new();
    report(reporter, &ShimReport::Created { pid: pid.as_raw() });
    if config.wait_for_attach {
        // The engine connects right after `Created`, prepares what the
        // container needs (networking), then sends `Start`. Do not wait
        // forever if it died meanwhile: start anyway after 30 s.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut first: Option<Client> = None;
        while first.is_none() && std::time::Instant::now() < deadline {
            match listener.accept() {
                Ok((stream, _)) => first = Some(Client::new(stream)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(mut client) = first {
            client.stream.set_nonblocking(false)?;
            let remaining = deadline.saturating_duration_since(std::time::Instant::now());
            client
                .stream
                .set_read_timeout(Some(remaining.max(Duration::from_millis(1))))?;
            let mut buf = [0u8; 4096];
            'wait: loop {
                while let Ok(Some((kind, payload))) = client.decoder.next_frame() {
                    match kind {
                        FrameKind::Start => break 'wait,
                        FrameKind::TakeCleanup => client.takes_cleanup = true,
                        other => {
                            handle_client_frame(other, &payload, &mut stdin_writer, config.terminal)
                        }
                    }
                }
                match client.stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => client.decoder.push(&buf[..n]),
                }
            }
            client.stream.set_read_timeout(None)?;
            client.stream.set_nonblocking(true)?;
            clients.insert(client.stream.as_raw_fd(), client);
        }
    }

    container
        .start()
        .map_err(|e| failed(reporter, config, user_facing(describe(&e))))?;
    let state = ShimState {
        shim_pid: std::process::id() as i32,
        pid: pid.as_raw(),
        started_at: Utc::now(),
    };
    write_replace(&config.state_path, &serde_json::to_vec(&state)?)?;
    report(reporter, &ShimReport::Started { pid: pid.as_raw() });
    drop(reporter.take());

    for o in &outputs {
        set_nonblocking(o.fd.as_raw_fd())?;
    }
    shed_startup_memory();
    let log_file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&config.log_path)?;
    let mut log = crilog::Writer::new(io::BufWriter::with_capacity(16 * 1024, log_file));

    let mut health = config.health.clone().map(|h| HealthChecker::new(h, config));
    let wait_status = event_loop(
        pid,
        &mut outputs,
        &mut stdin_writer,
        &mut sigfd,
        &listener,
        &mut clients,
        &mut log,
        config.terminal,
        &mut health,
    )?;
    if let Some(h) = health.as_mut() {
        h.stop();
    }
    let _ = log.flush_partial();

    let oom_killed = CgroupReader::new(&config.cgroup_path).oom_kills() > 0;
    let (exit_code, signal) = match wait_status {
        WaitStatus::Exited(_, code) => (code, None),
        WaitStatus::Signaled(_, sig, _) => (128 + sig as i32, Some(sig as i32)),
        _ => (255, None),
    };
    let status = ExitStatus {
        exit_code,
        signal,
        oom_killed,
        finished_at: Utc::now(),
        error: None,
    };
    write_replace(&config.exit_path, &serde_json::to_vec(&status)?)?;
    let _ = std::fs::remove_file(&config.attach_socket);

    let run_exit_command = || {
        if let Some((program, args)) = config.exit_command.split_first() {
            match Command::new(program).args(args).status() {
                Ok(s) if !s.success() => eprintln!("shim {}: exit command failed: {s}", config.id),
                Err(e) => eprintln!("shim {}: exit command: {e}", config.id),
                _ => {}
            }
        }
    };
    let frame = encode(FrameKind::Exit, &serde_json::to_vec(&status)?);
    // Frames a client sent just before the exit (e.g. TakeCleanup right after
    // attaching to a short-lived container) may still sit unread.
    let mut buf = [0u8; 4096];
    for client in clients.values_mut() {
        while let Ok(n) = client.stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            client.decoder.push(&buf[..n]);
        }
        while let Ok(Some((kind, _))) = client.decoder.next_frame() {
            if kind == FrameKind::TakeCleanup {
                client.takes_cleanup = true;
            }
        }
    }
    if clients.values().any(|c| c.takes_cleanup) {
        // A foreground client does the cleanup itself, saving an exec; if it
        // cannot be told, the shim does it after all.
        let mut delegated = false;
        for client in clients.values_mut() {
            let sent = client.send(&frame) && client.flush_blocking();
            delegated |= sent && client.takes_cleanup;
        }
        if !delegated {
            run_exit_command();
        }
    } else {
        run_exit_command();
        for client in clients.values_mut() {
            client.send(&frame);
            client.flush_blocking();
        }
    }
    drop(clients);
    // Removing the cgroup (slow on cgroup v1) and libcontainer's state comes
    // last, off the path of whoever waits for the exit. The engine waits for
    // this shim to end before starting the container again.
    if let Err(e) = container.delete(true) {
        eprintln!("shim {}: deleting container: {}", config.id, describe(&e));
    }
    Ok(())
}

/// Drops the pages that only start-up needed (argument parsing, libcontainer,
/// the loader), so a long-running shim keeps just its event loop resident.
///
/// Clean file-backed mappings (code, read-only data) are unmapped from this
/// process with MADV_DONTNEED and fault back in from the page cache when
/// touched again. Mappings holding anonymous copy-on-write pages (relocated
/// read-only data, .data) are left alone: dropping those would lose data.
/// The stack below the caller's frames (start-up went deeper than the event
/// loop will) and the heap's free pages are returned too.
///
/// The pod sandbox's pause process, a clone of the shim taken during
/// start-up, calls it as well before it sleeps.
#[inline(never)]
pub(crate) fn shed_startup_memory() {
    // Pages of the stack below this frame (and a margin for what it calls) hold
    // no live data.
    let stack_pointer = below_this_frame();
    let keep_below_sp = 16 * 1024;
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    let mut current: Option<(usize, usize, bool)> = None;
    let mut candidates = Vec::new();
    let mut unused_stack = None;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            let mut fields = line.split_whitespace();
            let range = fields.next().unwrap_or("");
            let perms = fields.next().unwrap_or("");
            let _offset = fields.next();
            let _dev = fields.next();
            let inode = fields.next().unwrap_or("0");
            let (start, end) = range.split_once('-').unwrap_or(("0", "0"));
            let start = usize::from_str_radix(start, 16).unwrap_or(0);
            let end = usize::from_str_radix(end, 16).unwrap_or(0);
            if (start..end).contains(&stack_pointer) && perms.starts_with("rw") {
                let page = 4096;
                let limit = stack_pointer.saturating_sub(keep_below_sp) & !(page - 1);
                if limit > start {
                    unused_stack = Some((start, limit));
                }
            }
            let file_backed = inode != "0";
            let eligible = file_backed && !perms.contains('w') && perms.ends_with('p');
            current = eligible.then_some((start, end, true));
        } else if let Some((_, _, clean)) = current.as_mut() {
            if let Some(v) = line.strip_prefix("Anonymous:") {
                *clean = v.split_whitespace().next() == Some("0");
            }
            if line.starts_with("VmFlags:") {
                if let Some((start, end, true)) = current.take() {
                    candidates.push((start, end));
                }
            }
        }
    }
    for (start, end) in candidates {
        // SAFETY: the range is a private, read-only, file-backed mapping with no
        // anonymous pages: its content is exactly the file's, and the kernel
        // faults it back in on access.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
            // Fault pages back one at a time, not in 64 KiB batches.
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_RANDOM);
        }
    }
    if let Some((start, end)) = unused_stack {
        // SAFETY: the range lies in this thread's stack mapping, more than 16 KiB
        // below the whole frame of this function: no live frame or object is there (the
        // stack grows down), and the kernel gives back zeroed pages if the stack
        // grows into it again.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }
    drop(smaps);
    // SAFETY: glibc's malloc_trim only returns free heap memory to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// An address below the whole stack frame of the caller (a frame is allocated
/// entire on entry, so a callee's local lies under all of it).
#[inline(never)]
fn below_this_frame() -> usize {
    let marker = 0u8;
    std::hint::black_box(&marker) as *const u8 as usize
}

/// An attached client: its socket, decoder and pending output.
struct Client {
    stream: UnixStream,
    decoder: Decoder,
    backlog: Vec<u8>,
    /// The client will do the exit command's work (see [`FrameKind::TakeCleanup`]).
    takes_cleanup: bool,
}

/// Output kept for a slow client before it is dropped.
const MAX_BACKLOG: usize = 4 << 20;

impl Client {
    fn new(stream: UnixStream) -> Self {
        Self {
            stream,
            decoder: Decoder::default(),
            backlog: Vec::new(),
            takes_cleanup: false,
        }
    }

    /// Queues and writes as much as the socket takes; false when the client is gone.
    fn send(&mut self, frame: &[u8]) -> bool {
        self.backlog.extend_from_slice(frame);
        self.flush()
    }

    fn flush(&mut self) -> bool {
        while !self.backlog.is_empty() {
            match self.stream.write(&self.backlog) {
                Ok(0) => return false,
                Ok(n) => {
                    self.backlog.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return false,
            }
        }
        self.backlog.len() <= MAX_BACKLOG
    }

    /// Writes what is pending, waiting up to 5 s; false when it could not.
    fn flush_blocking(&mut self) -> bool {
        let _ = self.stream.set_nonblocking(false);
        let _ = self.stream.set_write_timeout(Some(Duration::from_secs(5)));
        let ok = self.stream.write_all(&self.backlog).is_ok();
        self.backlog.clear();
        ok
    }
}

#[allow(clippy::too_many_arguments)]
fn event_loop(
    pid: Pid,
    outputs: &mut Vec<Output>,
    stdin_writer: &mut Option<OwnedFd>,
    sigfd: &mut SignalFd,
    listener: &UnixListener,
    clients: &mut HashMap<RawFd, Client>,
    log: &mut crilog::Writer<io::BufWriter<File>>,
    terminal: bool,
    health: &mut Option<HealthChecker>,
) -> anyhow::Result<WaitStatus> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut exited: Option<WaitStatus> = reap(pid, health);
    loop {
        let timeout_ms = match health.as_mut() {
            Some(h) => h.tick(),
            None => -1,
        };
        if let Some(status) = exited {
            // Drain what the container wrote before it exited.
            for o in outputs.iter() {
                loop {
                    match nix::unistd::read(o.fd.as_raw_fd(), &mut buf) {
                        Ok(n) if n > 0 => {
                            forward(log, clients, o.stream, &buf[..n]);
                        }
                        _ => break,
                    }
                }
            }
            return Ok(status);
        }
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(3 + outputs.len() + clients.len());
        let pfd = |fd: RawFd, events: i16| libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        fds.push(pfd(sigfd.as_raw_fd(), libc::POLLIN));
        fds.push(pfd(listener.as_raw_fd(), libc::POLLIN));
        for o in outputs.iter() {
            fds.push(pfd(o.fd.as_raw_fd(), libc::POLLIN));
        }
        for (fd, c) in clients.iter() {
            let mut events = libc::POLLIN;
            if !c.backlog.is_empty() {
                events |= libc::POLLOUT;
            }
            fds.push(pfd(*fd, events));
        }
        // SAFETY: fds is a valid, exclusively borrowed array of pollfd.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err.into());
        }
        for p in fds.iter().filter(|p| p.revents != 0) {
            if p.fd == sigfd.as_raw_fd() {
                while let Ok(Some(info)) = sigfd.read_signal() {
                    if info.ssi_signo == Signal::SIGCHLD as u32 {
                        if let Some(status) = reap(pid, health) {
                            exited = Some(status);
                        }
                    }
                }
            } else if p.fd == listener.as_raw_fd() {
                while let Ok((stream, _)) = listener.accept() {
                    if stream.set_nonblocking(true).is_ok() {
                        clients.insert(stream.as_raw_fd(), Client::new(stream));
                    }
                }
            } else if let Some(idx) = outputs.iter().position(|o| o.fd.as_raw_fd() == p.fd) {
                match nix::unistd::read(p.fd, &mut buf) {
                    Ok(0) => {
                        outputs.remove(idx);
                    }
                    Ok(n) => {
                        let stream = outputs[idx].stream;
                        forward(log, clients, stream, &buf[..n]);
                    }
                    Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => {}
                    // EIO on a pty master once the terminal's last user exits.
                    Err(_) => {
                        outputs.remove(idx);
                    }
                }
            } else if let Some(client) = clients.get_mut(&p.fd) {
                let mut alive = true;
                if p.revents & libc::POLLOUT != 0 {
                    alive &= client.flush();
                }
                if p.revents & (libc::POLLIN | libc::POLLHUP) != 0 {
                    match client.stream.read(&mut buf) {
                        Ok(0) => alive = false,
                        Ok(n) => {
                            client.decoder.push(&buf[..n]);
                            while let Ok(Some((kind, payload))) = client.decoder.next_frame() {
                                if kind == FrameKind::TakeCleanup {
                                    client.takes_cleanup = true;
                                } else {
                                    handle_client_frame(kind, &payload, stdin_writer, terminal);
                                }
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(_) => alive = false,
                    }
                }
                if !alive {
                    clients.remove(&p.fd);
                }
            }
        }
    }
}

fn handle_client_frame(
    kind: FrameKind,
    payload: &[u8],
    stdin_writer: &mut Option<OwnedFd>,
    terminal: bool,
) {
    match kind {
        FrameKind::Stdin => {
            if let Some(fd) = stdin_writer.as_ref() {
                let mut rest = payload;
                while !rest.is_empty() {
                    match nix::unistd::write(fd, rest) {
                        Ok(n) => rest = &rest[n..],
                        Err(nix::errno::Errno::EAGAIN) => {
                            std::thread::sleep(Duration::from_millis(1))
                        }
                        Err(_) => break,
                    }
                }
            }
        }
        FrameKind::CloseStdin => {
            if terminal {
                // A terminal has no separate stdin to close; send EOF (^D).
                if let Some(fd) = stdin_writer.as_ref() {
                    let _ = nix::unistd::write(fd, &[4u8]);
                }
            } else {
                stdin_writer.take();
            }
        }
        FrameKind::Resize if payload.len() == 4 => {
            if let Some(fd) = stdin_writer.as_ref() {
                let size = libc::winsize {
                    ws_row: u16::from_be_bytes([payload[0], payload[1]]),
                    ws_col: u16::from_be_bytes([payload[2], payload[3]]),
                    ws_xpixel: 0,
                    ws_ypixel: 0,
                };
                // SAFETY: TIOCSWINSZ reads a winsize struct we own.
                unsafe {
                    libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &size);
                }
            }
        }
        _ => {}
    }
}

fn forward(
    log: &mut crilog::Writer<io::BufWriter<File>>,
    clients: &mut HashMap<RawFd, Client>,
    stream: Stream,
    data: &[u8],
) {
    let _ = log.write(stream, data);
    let _ = log.flush();
    if clients.is_empty() {
        return;
    }
    let kind = match stream {
        Stream::Stdout => FrameKind::Stdout,
        Stream::Stderr => FrameKind::Stderr,
    };
    let frame = encode(kind, data);
    clients.retain(|_, c| c.send(&frame));
}

/// Reaps every exited child; returns the container's status once it exited.
/// A finished health check goes to its checker.
fn reap(pid: Pid, health: &mut Option<HealthChecker>) -> Option<WaitStatus> {
    let mut result = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => break,
            Ok(status) => {
                if status.pid() == Some(pid) {
                    result = Some(status);
                } else if let (Some(h), Some(child)) = (health.as_mut(), status.pid()) {
                    h.exited(child, status);
                }
            }
        }
    }
    result
}

/// Runs a container's health check on schedule, from the shim's event loop.
struct HealthChecker {
    config: HealthConfig,
    exec: Vec<String>,
    path: PathBuf,
    output: PathBuf,
    state: HealthState,
    started: std::time::Instant,
    next_due: std::time::Instant,
    running: Option<(i32, std::time::Instant, chrono::DateTime<Utc>)>,
}

impl HealthChecker {
    fn new(config: HealthConfig, shim: &ShimConfig) -> Self {
        let now = std::time::Instant::now();
        let checker = HealthChecker {
            next_due: now + config.interval,
            config,
            exec: shim.health_exec.clone(),
            path: shim.health_path.clone(),
            output: shim.health_path.with_extension("out"),
            state: HealthState::default(),
            started: now,
            running: None,
        };
        checker.save();
        checker
    }

    fn save(&self) {
        if let Ok(data) = serde_json::to_vec(&self.state) {
            let _ = write_replace(&self.path, &data);
        }
    }

    /// Starts or times out a check as due; returns the poll timeout in ms.
    fn tick(&mut self) -> i32 {
        let now = std::time::Instant::now();
        if let Some((child, since, _)) = self.running {
            if now >= since + self.config.timeout {
                let _ =
                    nix::sys::signal::kill(Pid::from_raw(child), nix::sys::signal::Signal::SIGKILL);
                self.finish(
                    -1,
                    format!("Health check exceeded timeout ({:?})", self.config.timeout),
                );
            }
        } else if now >= self.next_due {
            self.spawn();
        }
        let wake = match self.running {
            Some((_, since, _)) => since + self.config.timeout,
            None => self.next_due,
        };
        wake.saturating_duration_since(std::time::Instant::now())
            .as_millis()
            .clamp(1, i32::MAX as u128) as i32
    }

    fn spawn(&mut self) {
        let Some((program, prefix)) = self.exec.split_first() else {
            return;
        };
        let out = File::create(&self.output).ok();
        let err = out.as_ref().and_then(|f| f.try_clone().ok());
        let mut cmd = Command::new(program);
        cmd.args(prefix)
            .args(&self.config.test)
            .stdin(std::process::Stdio::null());
        match (out, err) {
            (Some(o), Some(e)) => {
                cmd.stdout(o).stderr(e);
            }
            _ => {
                cmd.stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null());
            }
        }
        match cmd.spawn() {
            // Reaped by the event loop's waitpid, not through `Child`.
            Ok(child) => {
                self.running = Some((child.id() as i32, std::time::Instant::now(), Utc::now()))
            }
            Err(e) => self.finish(-1, format!("cannot run health check: {e}")),
        }
    }

    fn exited(&mut self, pid: Pid, status: WaitStatus) {
        if self.running.map(|(p, _, _)| p) != Some(pid.as_raw()) {
            return;
        }
        let code = match status {
            WaitStatus::Exited(_, c) => c,
            _ => -1,
        };
        let mut output = std::fs::read(&self.output).unwrap_or_default();
        output.truncate(crate::health::MAX_OUTPUT);
        self.finish(code, String::from_utf8_lossy(&output).to_string());
    }

    fn finish(&mut self, exit_code: i32, output: String) {
        let start = self
            .running
            .take()
            .map(|(_, _, t)| t)
            .unwrap_or_else(Utc::now);
        let in_start_period = self.started.elapsed() < self.config.start_period;
        self.state.record(
            HealthResult {
                start,
                end: Utc::now(),
                exit_code,
                output,
            },
            self.config.retries,
            in_start_period,
        );
        self.save();
        self.next_due = std::time::Instant::now() + self.config.interval;
    }

    /// Kills a check still running when the container exits.
    fn stop(&mut self) {
        if let Some((child, _, _)) = self.running.take() {
            let _ = nix::sys::signal::kill(Pid::from_raw(child), nix::sys::signal::Signal::SIGKILL);
        }
        let _ = std::fs::remove_file(&self.output);
    }
}

/// Receives the pty master libcontainer sends over the console socket.
pub(crate) fn receive_pty_master(listener: &UnixListener) -> io::Result<OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let (stream, _) = listener.accept()?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut name = [0u8; 4096];
    let mut iov = [io::IoSliceMut::new(&mut name)];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(fd) = fds.first() {
                // SAFETY: the kernel just installed this fd for us via SCM_RIGHTS.
                return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
            }
        }
    }
    Err(io::Error::other("no pty master received on console socket"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_exit_codes_for_start_failures() {
        assert_eq!(
            exit_code_for_error("exec: \"nope\": executable file not found in $PATH"),
            127
        );
        assert_eq!(
            exit_code_for_error("exec: \"/etc\": permission denied"),
            126
        );
        assert_eq!(exit_code_for_error("cgroup error"), 125);
    }

    #[test]
    fn validation_message_is_extracted() {
        let raw =
            "failed to create container: executor: exec: \"x\": executable file not found in $PATH"
                .to_string();
        assert_eq!(
            user_facing(raw),
            "exec: \"x\": executable file not found in $PATH"
        );
    }
}
