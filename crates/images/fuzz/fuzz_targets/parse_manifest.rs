//! Fuzzes manifest parsing: errors are fine, panics are not; parsed manifests re-serialise.
//!
//! Run: `cd crates/images/fuzz && cargo +nightly fuzz run parse_manifest`
#![no_main]

use libfuzzer_sys::fuzz_target;
use skiff_images::Manifest;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = skiff_images::parse_manifest(data) {
        let json = match &m {
            Manifest::Image(i) => serde_json::to_vec(i),
            Manifest::Index(i) => serde_json::to_vec(i),
        }
        .expect("serialise");
        assert_eq!(skiff_images::parse_manifest(&json).ok(), Some(m));
    }
});
