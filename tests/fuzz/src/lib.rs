//! Fuzz targets for `dragon-channels-core`. The bodies live in [`targets`], a plain module that
//! `core/tests/fuzz_replay.rs` also includes (with `#[path]`) to replay `tests/fuzz/corpus/` on
//! the stable toolchain.

pub mod targets;
