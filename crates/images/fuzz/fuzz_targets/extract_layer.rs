//! Fuzzes layer extraction: any input may fail, but must not panic or write outside `root/`.
//!
//! Run: `cd crates/images/fuzz && cargo +nightly fuzz run extract_layer`
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("root");
    let _ = skiff_images::extract_layer(data, &root);
    let outside: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("read tempdir")
        .map(|e| e.expect("entry").file_name())
        .filter(|n| n != "root")
        .collect();
    assert!(outside.is_empty(), "extraction wrote outside its root: {outside:?}");
});
