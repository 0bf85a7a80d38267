//! `run`, `create` and `attach`.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context as _, Result};
use nix::sys::signal::{SigSet, Signal};
use skiff_engine::container::create::parse_bytes;
use skiff_engine::container::start::StartOptions;
use skiff_engine::{CreateRequest, Engine};
use skiff_runtime::attach::{encode, pump_output, AttachSink, FrameKind};

use super::{images, Context, Exit};
use crate::cli::{AttachArgs, RunArgs};
use crate::terminal::{self, RawMode};

fn parse_env_file(path: &std::path::Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("open {}: no such file or directory", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect())
}

fn duration(flag: &str, value: &Option<String>) -> Result<Option<std::time::Duration>> {
    value
        .as_deref()
        .map(|v| {
            skiff_runtime::health::parse_duration(v)
                .map_err(|e| anyhow::anyhow!("invalid argument {v:?} for \"{flag}\" flag: {e}"))
        })
        .transpose()
}

fn request(args: &RunArgs) -> Result<CreateRequest> {
    let (image, command) = args
        .args
        .split_first()
        .context("\"run\" requires at least 1 argument: an image")?;
    let mut env = Vec::new();
    for file in &args.env_file {
        env.extend(parse_env_file(file)?);
    }
    env.extend(args.env.iter().cloned());
    let mut labels = std::collections::BTreeMap::new();
    for l in &args.label {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        labels.insert(k.to_string(), v.to_string());
    }
    let bytes = |flag: &str, v: &Option<String>| -> Result<Option<i64>> {
        match v.as_deref() {
            None => Ok(None),
            Some("-1") => Ok(Some(-1)),
            Some(s) => parse_bytes(s)
                .map(Some)
                .map_err(|e| anyhow::anyhow!("invalid argument {s:?} for \"{flag}\" flag: {e}")),
        }
    };
    Ok(CreateRequest {
        dns: None,
        image: image.clone(),
        name: args.name.clone(),
        command: command.to_vec(),
        entrypoint: args.entrypoint.clone(),
        env,
        workdir: args.workdir.clone(),
        user: args.user.clone(),
        hostname: args.hostname.clone(),
        volumes: args.volume.clone(),
        tmpfs: args.tmpfs.clone(),
        tty: args.tty,
        interactive: args.interactive,
        memory: bytes("--memory", &args.memory)?,
        memory_swap: bytes("--memory-swap", &args.memory_swap)?,
        cpus: args.cpus,
        cpu_shares: args.cpu_shares,
        cpu_quota: None,
        cpu_period: None,
        pids_limit: args.pids_limit,
        cgroup_parent: None,
        read_only: args.read_only,
        cap_add: args.cap_add.clone(),
        cap_drop: args.cap_drop.clone(),
        security_opt: args.security_opt.clone(),
        privileged: args.privileged,
        init: args.init,
        auto_remove: args.rm,
        network: args.network.clone(),
        publish: args.publish.clone(),
        publish_all: args.publish_all,
        expose: args.expose.clone(),
        network_aliases: args.network_alias.clone(),
        labels,
        stop_signal: args.stop_signal.clone(),
        stop_timeout: args.stop_timeout,
        health_cmd: args.health_cmd.clone(),
        health_interval: duration("--health-interval", &args.health_interval)?,
        health_timeout: duration("--health-timeout", &args.health_timeout)?,
        health_start_period: duration("--health-start-period", &args.health_start_period)?,
        health_retries: args.health_retries,
        no_healthcheck: args.no_healthcheck,
    })
}

/// Creates the container, pulling the image first when it is not present.
fn create_with_pull(engine: &Engine, req: &CreateRequest, insecure: bool) -> Result<String> {
    if engine.images().resolve(&req.image).is_err() {
        eprintln!("Unable to find image '{}' locally", req.image);
        images::pull_image(
            engine,
            &req.image,
            insecure,
            None,
            None,
            images::PullOutput::Implicit,
        )?;
    }
    Ok(engine.create(req)?.id)
}

/// `skiff create`.
pub fn create(ctx: &Context, args: RunArgs) -> Result<()> {
    let engine = ctx.engine()?;
    let req = request(&args)?;
    let id = create_with_pull(&engine, &req, args.insecure)?;
    println!("{id}");
    Ok(())
}

/// `skiff run`.
pub fn run(ctx: &Context, args: RunArgs) -> Result<()> {
    let engine = ctx.engine()?;
    let req = request(&args)?;
    let id = create_with_pull(&engine, &req, args.insecure)?;
    let started = match engine.start(
        &id,
        StartOptions {
            attach: !args.detach,
        },
    ) {
        Ok(s) => s,
        Err(e) => {
            if args.rm {
                let _ = engine.remove(&id, true, true);
            }
            return Err(e.into());
        }
    };
    if args.detach {
        println!("{id}");
        return Ok(());
    }
    let stream = started.attach.context("no attach stream from the shim")?;
    // In the foreground this process does the cleanup (unmount, and removal
    // for --rm) itself, instead of the shim starting another skiff for it.
    send(
        &Mutex::new(stream.try_clone()?),
        FrameKind::TakeCleanup,
        &[],
    );
    let code = attach_session(&engine, stream, &id, args.interactive, args.tty);
    match engine.cleanup(&id) {
        // The shim did it, having not heard from us in time.
        Ok(()) | Err(skiff_engine::EngineError::NoSuchContainer(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let code = code?;
    if code != 0 {
        return Err(Exit::code(code));
    }
    Ok(())
}

/// `skiff attach`.
pub fn attach(ctx: &Context, args: AttachArgs) -> Result<()> {
    let engine = ctx.engine()?;
    let container = engine.find(&args.container)?;
    if !container.is_running() {
        bail!("You cannot attach to a stopped container, start it first");
    }
    let socket = engine
        .roots()
        .container_run(&container.record.id)
        .join("attach.sock");
    let stream = UnixStream::connect(&socket)
        .with_context(|| format!("attaching to {}", container.record.name))?;
    let interactive = container.record.request.interactive && !args.no_stdin;
    let code = attach_session(
        &engine,
        stream,
        &container.record.id,
        interactive,
        container.record.request.tty,
    )?;
    if code != 0 {
        return Err(Exit::code(code));
    }
    Ok(())
}

struct StdSink;

impl AttachSink for StdSink {
    fn stdout(&mut self, data: &[u8]) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(data);
        let _ = out.flush();
    }
    fn stderr(&mut self, data: &[u8]) {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(data);
        let _ = err.flush();
    }
}

fn send(writer: &Mutex<UnixStream>, kind: FrameKind, payload: &[u8]) -> bool {
    let frame = encode(kind, payload);
    writer
        .lock()
        .map(|mut w| w.write_all(&frame).is_ok())
        .unwrap_or(false)
}

fn resize_payload() -> Option<Vec<u8>> {
    terminal::size().map(|(rows, cols)| {
        let mut p = rows.to_be_bytes().to_vec();
        p.extend_from_slice(&cols.to_be_bytes());
        p
    })
}

/// Streams a container's output to ours (and our stdin to it), proxying
/// signals and terminal size, until it exits; returns its exit code.
pub fn attach_session(
    engine: &Engine,
    mut stream: UnixStream,
    id: &str,
    interactive: bool,
    tty: bool,
) -> Result<i32> {
    // Block the signals we proxy before any thread starts, so only the
    // signal thread receives them.
    let mut signals = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGWINCH,
    ] {
        signals.add(s);
    }
    signals.thread_block()?;
    let writer = Arc::new(Mutex::new(stream.try_clone()?));

    let stdin_is_tty = terminal::is_terminal(std::io::stdin().as_fd());
    let _raw = if tty && stdin_is_tty && interactive {
        RawMode::enable()
    } else {
        None
    };
    if tty {
        if let Some(p) = resize_payload() {
            send(&writer, FrameKind::Resize, &p);
        }
    }

    {
        let writer = writer.clone();
        let engine_pid_target = id.to_string();
        let kill_roots = engine.roots().clone();
        let exe = engine.skiff_exe().to_path_buf();
        let global = engine.global_args().to_vec();
        std::thread::spawn(move || loop {
            let Ok(sig) = signals.wait() else { continue };
            if sig == Signal::SIGWINCH {
                if let Some(p) = resize_payload() {
                    send(&writer, FrameKind::Resize, &p);
                }
                continue;
            }
            if tty {
                continue;
            }
            // Docker's --sig-proxy: deliver the signal to the container.
            if let Ok(engine) = Engine::open(kill_roots.clone(), exe.clone(), global.clone()) {
                let _ = engine.kill(&engine_pid_target, sig.as_str());
            }
        });
    }

    if interactive {
        let writer = writer.clone();
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 32 * 1024];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        send(&writer, FrameKind::CloseStdin, &[]);
                        break;
                    }
                    Ok(n) => {
                        if !send(&writer, FrameKind::Stdin, &buf[..n]) {
                            break;
                        }
                    }
                }
            }
        });
    }

    let status = pump_output(&mut stream, &mut StdSink)?;
    match status {
        Some(s) => Ok(s.exit_code),
        None => {
            // The shim went away without a report: use what it recorded, if anything.
            let c = engine.find(id).ok();
            match c.as_ref().and_then(|c| c.exit()) {
                Some(e) => Ok(e.exit_code),
                None => Err(Exit {
                    code: 125,
                    message: "lost the connection to the container's shim".into(),
                }
                .into()),
            }
        }
    }
}
