//! Sets PyO3's configuration cfgs (`Py_LIMITED_API`, `Py_3_*`) for this crate too, so that
//! `src/buffer.rs` can check its `Py_buffer` against PyO3's where PyO3 declares one.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    pyo3_build_config::use_pyo3_cfgs();
}
