//! Picks the memory layout of the QEMU machine for the target, tells the code which machine it
//! is (`cfg(fw_machine = ..)`), and links `link.x` (all binaries) and `defmt.x` (the defmt
//! binary only).

use std::env;
use std::fs;
use std::path::PathBuf;

fn main() {
    let target = env::var("TARGET").expect("cargo sets TARGET");
    let (machine, memory) = match target.as_str() {
        "thumbv6m-none-eabi" => ("microbit", "memory/microbit.x"),
        "thumbv7em-none-eabihf" => ("mps2_an386", "memory/mps2-an386.x"),
        "thumbv8m.main-none-eabihf" => ("mps2_an521", "memory/mps2-an521.x"),
        other => panic!(
            "the firmware tests build for thumbv6m-none-eabi, thumbv7em-none-eabihf or \
             thumbv8m.main-none-eabihf, not {other}"
        ),
    };
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::copy(memory, out.join("memory.x")).expect("copy memory.x into OUT_DIR");
    println!("cargo::rustc-link-search={}", out.display());
    println!("cargo::rustc-cfg=fw_machine=\"{machine}\"");
    println!("cargo::rustc-link-arg-bins=-Tlink.x");
    if env::var_os("CARGO_FEATURE_DEFMT_LOG").is_some() {
        println!("cargo::rustc-link-arg-bin=defmt_battery=-Tdefmt.x");
    }
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=memory");
}
