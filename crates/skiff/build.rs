//! Links the skiff binary as a position-dependent executable.
//!
//! The binary is large, and as a PIE every page of its relocation-read-only data is written
//! by the dynamic loader at start: about 1 MiB of private memory in every process, and the
//! per-container shim is one such process per container. Linked at a fixed address those
//! pages stay clean, shared and mostly untouched (as Go builds containerd's shims).
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
