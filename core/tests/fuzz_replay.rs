//! Replays the committed fuzz corpus (`tests/fuzz/corpus/<target>/`) through the fuzz targets'
//! bodies on the stable toolchain: every input, crash regressions included, must run without
//! a panic. The bodies are `tests/fuzz/src/targets.rs`, shared with the cargo-fuzz binaries.
#![allow(clippy::std_instead_of_core, clippy::disallowed_types)] // a std test program

#[path = "../../tests/fuzz/src/targets.rs"]
mod targets;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::Instant;

/// Runs every file of `tests/fuzz/corpus/<name>/` through `target`; fails listing the inputs
/// that panicked.
fn replay(name: &str, target: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fuzz/corpus")
        .join(name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus {}", dir.display());
    let start = Instant::now();
    let mut failed = Vec::new();
    let mut replayed = 0;
    for f in &files {
        let data = match std::fs::read(f) {
            Ok(d) => d,
            // A fuzzer running on the same corpus deletes inputs as it shrinks them.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("corpus file {}: {e}", f.display()),
        };
        replayed += 1;
        if catch_unwind(AssertUnwindSafe(|| target(&data))).is_err() {
            failed.push(
                f.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    println!(
        "{name}: replayed {replayed} inputs in {:?}",
        start.elapsed()
    );
    assert!(
        failed.is_empty(),
        "{name}: inputs that panicked: {failed:?}"
    );
}

#[test]
#[cfg_attr(miri, ignore)] // thousands of inputs; the targets' code runs under Miri elsewhere
fn attach_bytes() {
    replay("attach_bytes", targets::attach_bytes);
}

#[test]
#[cfg_attr(miri, ignore)]
fn adversary_region() {
    replay("adversary_region", targets::adversary_region);
}

#[test]
#[cfg_attr(miri, ignore)]
fn api_model() {
    replay("api_model", targets::api_model);
}
