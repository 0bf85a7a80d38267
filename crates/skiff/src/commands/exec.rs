//! `skiff exec`.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use anyhow::{bail, Context as _, Result};
use skiff_runtime::exec::{become_subreaper, exec as runtime_exec, ExecRequest};

use super::{Context, Exit};
use crate::cli::ExecArgs;
use crate::terminal::{self, RawMode};

/// `skiff exec`.
pub fn exec(ctx: &Context, args: ExecArgs) -> Result<()> {
    let engine = ctx.engine()?;
    let (name, command) = args
        .args
        .split_first()
        .context("exec needs a container and a command")?;
    let container = engine.find(name)?;
    if !container.is_running() {
        bail!("container {} is not running", container.record.name);
    }
    let user = match &args.user {
        Some(spec) => {
            let u = skiff_engine::users::resolve(&container.record.spec.rootfs, spec)?;
            Some((u.uid, u.gid))
        }
        None => None,
    };
    let mut env = Vec::new();
    if args.tty {
        env.push("TERM=xterm".to_string());
    }
    env.extend(args.env.iter().cloned());
    let req = ExecRequest {
        args: command.to_vec(),
        env,
        cwd: args.workdir.clone(),
        user,
        terminal: args.tty,
        base: container.record.spec.to_oci()?.process().clone(),
    };
    let dup = |fd: std::os::fd::BorrowedFd<'_>| -> Result<OwnedFd> { Ok(fd.try_clone_to_owned()?) };
    let stdin: OwnedFd = if args.interactive && !args.detach {
        dup(std::io::stdin().as_fd())?
    } else {
        std::fs::File::open("/dev/null")?.into()
    };
    let (stdout, stderr): (OwnedFd, OwnedFd) = if args.detach {
        (
            std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/null")?
                .into(),
            std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/null")?
                .into(),
        )
    } else {
        (
            dup(std::io::stdout().as_fd())?,
            dup(std::io::stderr().as_fd())?,
        )
    };
    become_subreaper();
    let process = runtime_exec(
        &engine.roots().runtime_state(),
        &container.record.id,
        &req,
        Some((stdin, stdout, stderr)),
        &engine.roots().container_run(&container.record.id),
    )
    .map_err(|e| {
        let message = skiff_runtime::shim::user_facing(e.to_string());
        let code = skiff_runtime::shim::exit_code_for_error(&message);
        anyhow::Error::from(Exit {
            code: if code == 125 { 126 } else { code },
            message: format!("OCI runtime exec failed: {message}"),
        })
    })?;
    if args.detach {
        return Ok(());
    }
    let code = match process.terminal.as_ref() {
        Some(master) => proxy_terminal(master.try_clone()?, args.interactive, &process)?,
        None => process.wait()?,
    };
    if code != 0 {
        return Err(Exit::code(code));
    }
    Ok(())
}

/// Copies between our terminal and the exec's pty until the process exits.
fn proxy_terminal(
    master: OwnedFd,
    interactive: bool,
    process: &skiff_runtime::exec::ExecProcess,
) -> Result<i32> {
    // Our terminal's resizes follow to the exec's: SIGWINCH is blocked before any thread
    // starts (they inherit the mask) and waited for on one; the size is read after blocking,
    // so a resize before that is not lost either.
    let mut winch = nix::sys::signal::SigSet::empty();
    winch.add(nix::sys::signal::Signal::SIGWINCH);
    let _ = winch.thread_block();
    let _raw = if interactive && terminal::is_terminal(std::io::stdin().as_fd()) {
        RawMode::enable()
    } else {
        None
    };
    let resize = |master: &OwnedFd| {
        if let Some((rows, cols)) = terminal::size() {
            let ws = libc::winsize {
                ws_row: rows,
                ws_col: cols,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            // SAFETY: TIOCSWINSZ reads the winsize we own.
            unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        }
    };
    resize(&master);
    {
        let master = master.try_clone()?;
        std::thread::spawn(move || loop {
            if winch.wait().is_ok() {
                resize(&master);
            }
        });
    }
    let mut to_pty = std::fs::File::from(master.try_clone()?);
    let mut from_pty = std::fs::File::from(master);
    if interactive {
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            let mut stdin = std::io::stdin().lock();
            while let Ok(n) = stdin.read(&mut buf) {
                if n == 0 || to_pty.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
    let mut out = std::io::stdout();
    let mut buf = [0u8; 8192];
    loop {
        match from_pty.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                out.write_all(&buf[..n])?;
                out.flush()?;
            }
        }
    }
    Ok(process.wait()?)
}
