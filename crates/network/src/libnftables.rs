//! nftables in-process: libnftables, the library the `nft` command is a thin front end
//! of, loaded at run time with `dlopen` (no build-time dependency; without the library,
//! [`crate::nft::NftCli`] runs the `nft` command as before).
//!
//! Why: a change of the service table is a few map elements, which the kernel commits in
//! well under a millisecond, but starting `nft` (a process, its shared libraries, a fresh
//! cache of the table) costs 4-15 ms on a busy node, and closing an nf_tables netlink
//! socket after a transaction that deleted something waits for the kernel to release
//! the deleted objects (a few ms more). A [`Context`] kept open avoids both: same
//! parser, same transactions, same error texts as `nft -f`.
//!
//! A context's netlink socket belongs to the network namespace of the thread that made
//! it. libnftables is not documented as thread-safe, so every call into it holds one
//! process-wide lock.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::ptr::NonNull;
use std::sync::{Mutex, OnceLock};

/// `NFT_CTX_OUTPUT_JSON` of `<nftables/libnftables.h>`.
const OUTPUT_JSON: c_uint = 1 << 4;

type CtxNew = unsafe extern "C" fn(c_uint) -> *mut c_void;
type CtxFree = unsafe extern "C" fn(*mut c_void);
type CtxFlag = unsafe extern "C" fn(*mut c_void) -> c_int;
type CtxBuffer = unsafe extern "C" fn(*mut c_void) -> *const c_char;
type CtxSetFlags = unsafe extern "C" fn(*mut c_void, c_uint);
type RunCmd = unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int;

/// The library's entry points we use (stable since its first soname, `LIBNFTABLES_1`).
struct Library {
    ctx_new: CtxNew,
    ctx_free: CtxFree,
    buffer_output: CtxFlag,
    buffer_error: CtxFlag,
    output_buffer: CtxBuffer,
    error_buffer: CtxBuffer,
    output_set_flags: CtxSetFlags,
    run_cmd_from_buffer: RunCmd,
}

/// Serializes every call into libnftables.
static LOCK: Mutex<()> = Mutex::new(());

/// The library, loaded on first use; `None` when it cannot be (not installed).
fn library() -> Option<&'static Library> {
    static LIBRARY: OnceLock<Option<Library>> = OnceLock::new();
    LIBRARY.get_or_init(load).as_ref()
}

fn load() -> Option<Library> {
    let name = CString::new("libnftables.so.1").expect("no NUL");
    // SAFETY: dlopen with a valid NUL-terminated name; the handle is never closed, so
    // the symbols below stay valid for the life of the process.
    let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        return None;
    }
    let symbol = |name: &str| -> Option<*mut c_void> {
        let name = CString::new(name).expect("no NUL");
        // SAFETY: dlsym on the live handle with a valid NUL-terminated name.
        let ptr = unsafe { libc::dlsym(handle, name.as_ptr()) };
        (!ptr.is_null()).then_some(ptr)
    };
    // SAFETY (each transmute): the symbol is the libnftables function of that name,
    // whose C signature (libnftables.h) is the function pointer type it becomes.
    unsafe {
        Some(Library {
            ctx_new: std::mem::transmute::<*mut c_void, CtxNew>(symbol("nft_ctx_new")?),
            ctx_free: std::mem::transmute::<*mut c_void, CtxFree>(symbol("nft_ctx_free")?),
            buffer_output: std::mem::transmute::<*mut c_void, CtxFlag>(symbol(
                "nft_ctx_buffer_output",
            )?),
            buffer_error: std::mem::transmute::<*mut c_void, CtxFlag>(symbol(
                "nft_ctx_buffer_error",
            )?),
            output_buffer: std::mem::transmute::<*mut c_void, CtxBuffer>(symbol(
                "nft_ctx_get_output_buffer",
            )?),
            error_buffer: std::mem::transmute::<*mut c_void, CtxBuffer>(symbol(
                "nft_ctx_get_error_buffer",
            )?),
            output_set_flags: std::mem::transmute::<*mut c_void, CtxSetFlags>(symbol(
                "nft_ctx_output_set_flags",
            )?),
            run_cmd_from_buffer: std::mem::transmute::<*mut c_void, RunCmd>(symbol(
                "nft_run_cmd_from_buffer",
            )?),
        })
    }
}

/// One libnftables context: a netlink socket (in the network namespace of the thread
/// that made it) and nft's cache, which libnftables refreshes itself when the ruleset's
/// generation changed.
#[derive(Debug)]
pub struct Context {
    ctx: NonNull<c_void>,
}

// SAFETY: the context is only used through `&mut self` and under LOCK, never from two
// threads at once; libnftables keeps no thread-local state in it.
unsafe impl Send for Context {}

impl Context {
    /// A context printing listings as JSON (`nft -j`) when `json`; `None` when
    /// libnftables cannot be loaded or the context cannot be made.
    pub fn new(json: bool) -> Option<Context> {
        let lib = library()?;
        let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: nft_ctx_new(NFT_CTX_DEFAULT) returns a new context or NULL; the
        // buffer and flag calls only configure that context.
        unsafe {
            let ctx = NonNull::new((lib.ctx_new)(0))?;
            (lib.buffer_output)(ctx.as_ptr());
            (lib.buffer_error)(ctx.as_ptr());
            if json {
                (lib.output_set_flags)(ctx.as_ptr(), OUTPUT_JSON);
            }
            Some(Context { ctx })
        }
    }

    /// Runs `commands` (nft syntax, what `nft -f` reads) as one transaction; returns what
    /// `nft` would print on stdout, or its error text.
    pub fn run(&mut self, commands: &str) -> Result<String, String> {
        let lib = library().expect("a context exists only with the library");
        let commands = CString::new(commands).map_err(|_| "NUL byte in commands".to_string())?;
        let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: the context is live (owned by self); the buffers libnftables returns
        // are NUL-terminated and stay valid until its next call on this context, and we
        // copy them before releasing the lock.
        unsafe {
            let rc = (lib.run_cmd_from_buffer)(self.ctx.as_ptr(), commands.as_ptr());
            let text = |p: *const c_char| {
                if p.is_null() {
                    String::new()
                } else {
                    CStr::from_ptr(p).to_string_lossy().into_owned()
                }
            };
            let output = text((lib.output_buffer)(self.ctx.as_ptr()));
            let error = text((lib.error_buffer)(self.ctx.as_ptr()));
            if rc == 0 {
                Ok(output)
            } else if error.trim().is_empty() {
                Err(format!("libnftables failed with {rc}"))
            } else {
                Err(error.trim().to_string())
            }
        }
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        if let Some(lib) = library() {
            let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
            // SAFETY: the context is live and freed once, here.
            unsafe { (lib.ctx_free)(self.ctx.as_ptr()) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The library answers like `nft`: errors as text, listings as JSON (root only, in a
    /// network namespace of its own; skipped without the library or root).
    #[test]
    fn runs_commands_and_lists_json_in_process() {
        if !nix::unistd::geteuid().is_root() || library().is_none() {
            return;
        }
        let ns = format!("sklib{}", std::process::id());
        let made = std::process::Command::new("ip")
            .args(["netns", "add", &ns])
            .status()
            .is_ok_and(|s| s.success());
        if !made {
            return;
        }
        let path = std::path::PathBuf::from("/run/netns").join(&ns);
        let result = crate::netns::run_in(&path, || {
            let mut ctx = Context::new(false).unwrap();
            ctx.run("add table ip t\nadd set ip t s { type ipv4_addr; }\n")?;
            ctx.run("add element ip t s { 10.0.0.1 }\n")?;
            let missing = ctx.run("delete element ip t s { 10.0.0.2 }\n");
            let mut json = Context::new(true).unwrap();
            let listing = json.run("list set ip t s")?;
            let absent = json.run("list table ip nothere");
            Ok::<_, String>((missing, listing, absent))
        });
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &ns])
            .status();
        let (missing, listing, absent) = result.unwrap().unwrap();
        assert!(missing.unwrap_err().contains("No such file or directory"));
        let listing: serde_json::Value = serde_json::from_str(&listing).unwrap();
        assert!(listing.to_string().contains("10.0.0.1"), "{listing}");
        assert!(absent.unwrap_err().contains("No such file or directory"));
    }
}
