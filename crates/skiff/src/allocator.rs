//! The process's memory allocator: jemalloc for `skiff server`, the system's (glibc) for
//! every other command.
//!
//! Under a burst of writes the API server spent about a sixth of its CPU in glibc's malloc
//! and free; with jemalloc the server's CPU per pod create with 64 clients fell by about 15%
//! in A/B runs of one build (docs/benchmarks.md, API server, session 8), and its RSS with
//! 10,000 pods stayed within the goal: a background thread returns freed pages at once, as
//! glibc's trims did. Other commands, the per-container shims above all, keep
//! glibc: no extra thread, no change to how they fork and exec.
//!
//! The choice is made once from the command line in an ELF preinit function, which runs
//! before anything allocates through Rust's allocator, so every block is resized and freed
//! by the allocator that returned it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ffi::{c_char, c_int, CStr};
use std::sync::atomic::{AtomicBool, Ordering};

use tikv_jemallocator::Jemalloc;

/// Whether this process allocates with jemalloc; set before `main`, never changed after.
static JEMALLOC: AtomicBool = AtomicBool::new(false);

/// jemalloc's options, read at its first allocation: two arenas (the server's malloc arenas
/// are limited to two as well), freed pages returned at once by a background thread (with a
/// 1 s delay the RSS after the bench's lists was 73-83 MiB, over its goal; at once 59 MiB).
#[export_name = "_rjem_malloc_conf"]
static MALLOC_CONF: &u8 =
    &b"narenas:2,background_thread:true,dirty_decay_ms:0,muzzy_decay_ms:0\0"[0];

/// The global allocator: jemalloc or the system's, as chosen for this process.
pub struct Allocator;

// SAFETY: every call goes to the allocator chosen before the first allocation, which never
// changes, so each block is resized and freed by the allocator that returned it; both
// uphold `GlobalAlloc`'s contract themselves.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if JEMALLOC.load(Ordering::Relaxed) {
            Jemalloc.alloc(layout)
        } else {
            System.alloc(layout)
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if JEMALLOC.load(Ordering::Relaxed) {
            Jemalloc.alloc_zeroed(layout)
        } else {
            System.alloc_zeroed(layout)
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if JEMALLOC.load(Ordering::Relaxed) {
            Jemalloc.dealloc(ptr, layout)
        } else {
            System.dealloc(ptr, layout)
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if JEMALLOC.load(Ordering::Relaxed) {
            Jemalloc.realloc(ptr, layout, new_size)
        } else {
            System.realloc(ptr, layout, new_size)
        }
    }
}

/// Whether the command line (without the program name) runs `skiff server`: its first
/// word that is neither an option nor the value of a global option.
fn runs_server<'a>(mut args: impl Iterator<Item = &'a [u8]>) -> bool {
    while let Some(arg) = args.next() {
        match arg {
            // The global options that take their value as the next word.
            b"--root" | b"--log-level" => {
                args.next();
            }
            option if option.starts_with(b"-") => {}
            command => return command == b"server",
        }
    }
    false
}

/// Chooses jemalloc for `skiff server`; glibc calls preinit functions with the program's
/// arguments before any other initialization, Rust's included.
extern "C" fn choose(argc: c_int, argv: *const *const c_char, _envp: *const *const c_char) {
    if argv.is_null() || argc < 1 {
        return;
    }
    let args = (1..argc as usize).map(|i| {
        // SAFETY: the loader passes `argc` valid NUL-terminated strings in `argv`.
        unsafe { CStr::from_ptr(*argv.add(i)) }.to_bytes()
    });
    if runs_server(args) {
        JEMALLOC.store(true, Ordering::Relaxed);
    }
}

#[used]
#[link_section = ".preinit_array"]
static CHOOSE: extern "C" fn(c_int, *const *const c_char, *const *const c_char) = choose;

#[cfg(test)]
mod tests {
    use super::runs_server;

    fn server(line: &str) -> bool {
        runs_server(line.split_whitespace().map(str::as_bytes))
    }

    #[test]
    fn only_the_server_command_chooses_jemalloc() {
        assert!(server("server --port 6443"));
        assert!(server("--root /r server"));
        assert!(server("--root=/r --log-level debug server"));
        assert!(!server("--root server run busybox"));
        assert!(!server("run busybox server"));
        assert!(!server("shim /r/config.json"));
        assert!(!server(""));
    }
}
