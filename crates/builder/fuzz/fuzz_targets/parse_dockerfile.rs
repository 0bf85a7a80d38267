//! Fuzzes the Dockerfile parser and word expansion: errors are fine, panics are not, and
//! every error names the file and a line that exists.
//!
//! Run: `cd crates/builder/fuzz && cargo +nightly fuzz run parse_dockerfile`
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match skiff_builder::parse(text, "Dockerfile") {
        Ok(df) => {
            for stage in &df.stages {
                let lookup = |_: &str| Some("v".to_string());
                let _ = skiff_builder::shell::expand(&stage.base, df.escape, &lookup);
            }
        }
        Err(e) => {
            assert_eq!(e.file, "Dockerfile");
            assert!(e.line >= 1 && e.line <= text.split('\n').count().max(1), "{e}");
        }
    }
});
