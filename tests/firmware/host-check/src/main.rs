//! Host side of the "one layout across word sizes" test (64-bit x86 against 32-bit Cortex-M).
//!
//! ```text
//! host-check make  DIR   write DIR/host2fw.img + .desc for the firmware `image_in`
//! host-check check DIR   attach to DIR/fw2host.img + .desc that the firmware `image_out` wrote
//! host-check self  DIR   host to host through files: separates host bugs from layout bugs
//! ```
//! Each command prints `N passed, N failed` and exits with status 1 on any failure.

use std::path::Path;
use std::process::ExitCode;

use dragon_channels_core::Region;

#[path = "../../src/image.rs"]
#[allow(dead_code)]
mod image;

use image::{IMAGE_LEN, Side};

/// One cache line: a `Vec` of these is 64-byte aligned, as `Region::new` requires.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// A 64-byte aligned buffer holding a region image.
struct Image {
    lines: Vec<Line>,
    len: usize,
}

impl Image {
    fn zeroed(len: usize) -> Self {
        Self {
            lines: vec![Line([0; 64]); len.div_ceil(64)],
            len,
        }
    }

    fn load(path: &Path) -> Result<Self, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
        let mut img = Self::zeroed(bytes.len());
        img.bytes_mut().copy_from_slice(&bytes);
        Ok(img)
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: `lines` holds at least `len` initialized bytes; the borrow of `self` is
        // exclusive, and no region handle is in use while it lasts.
        unsafe { core::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<u8>(), self.len) }
    }

    fn region(&mut self) -> Region {
        // SAFETY: the buffer is 64-byte aligned, `len` bytes long and outlives every handle
        // (each command keeps `self` alive until its handles are gone); while handles exist
        // the bytes are only accessed through them.
        unsafe { Region::new(self.lines.as_mut_ptr().cast::<u8>(), self.len) }
            .expect("aligned buffer")
    }
}

#[derive(Default)]
struct Tally {
    passed: u32,
    failed: u32,
}

impl Tally {
    fn record(&mut self, what: &str, outcome: image::Outcome) {
        match outcome {
            Ok(()) => self.passed += 1,
            Err(e) => {
                println!("FAIL host-check: {what}: {e}");
                self.failed += 1;
            }
        }
    }

    fn finish(self) -> ExitCode {
        println!("{} passed, {} failed", self.passed, self.failed);
        if self.failed == 0 && self.passed > 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

/// Builds `side`'s image and writes it and its descriptors under `dir`.
fn make(dir: &Path, side: Side, img: &str, desc: &str, t: &mut Tally) {
    let mut mem = Image::zeroed(IMAGE_LEN);
    match image::build(mem.region(), side) {
        Ok(d) => {
            t.record("build image", Ok(()));
            let written = std::fs::write(dir.join(img), mem.bytes_mut())
                .and_then(|()| std::fs::write(dir.join(desc), d));
            if let Err(e) = written {
                println!("FAIL host-check: write files under {}: {e}", dir.display());
                t.failed += 1;
            }
        }
        Err(e) => t.record("build image", Err(e)),
    }
}

/// Loads an image `from` built and receives from it.
fn check(dir: &Path, from: Side, img: &str, desc: &str, owner: u32, t: &mut Tally) {
    let loaded = Image::load(&dir.join(img)).and_then(|m| {
        std::fs::read(dir.join(desc))
            .map(|d| (m, d))
            .map_err(|e| format!("read {desc}: {e}"))
    });
    match loaded {
        Ok((mut mem, d)) => {
            same_bytes(&mut mem, &d, from, t);
            let region = mem.region();
            image::receive(region, &d, from, owner, &mut |w, o| t.record(w, o));
        }
        Err(e) => {
            println!("FAIL host-check: {e}");
            t.failed += 1;
        }
    }
}

/// Builds the same image here and compares byte for byte: the sender's operations are
/// deterministic, so any difference is a layout difference between the two word sizes.
fn same_bytes(loaded: &mut Image, desc: &[u8], from: Side, t: &mut Tally) {
    let mut here = Image::zeroed(IMAGE_LEN);
    let built = match image::build(here.region(), from) {
        Ok(d) => d,
        Err(e) => return t.record("build the same image on the host", Err(e)),
    };
    let (a, b) = (loaded.bytes_mut(), here.bytes_mut());
    let diffs: Vec<usize> = (0..a.len().min(b.len()))
        .filter(|&i| a[i] != b[i])
        .collect();
    if a.len() != b.len() || !diffs.is_empty() {
        println!(
            "FAIL host-check: image differs from the host-built one: lengths {} vs {}, {} bytes \
             differ",
            a.len(),
            b.len(),
            diffs.len()
        );
        for &i in diffs.iter().take(16) {
            println!("  offset {i:#06x}: image {:#04x}, host {:#04x}", a[i], b[i]);
        }
        t.failed += 1;
    } else {
        t.passed += 1;
    }
    t.record(
        "descriptors equal the host-built ones",
        if desc == built.as_slice() {
            Ok(())
        } else {
            Err(image::ImageError::Mismatch)
        },
    );
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(cmd), Some(dir)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: host-check make|check|self DIR");
        return ExitCode::from(2);
    };
    let dir = Path::new(dir);
    let mut t = Tally::default();
    match cmd.as_str() {
        "make" => make(
            dir,
            Side::Host,
            image::HOST_TO_FW_IMAGE,
            image::HOST_TO_FW_DESC,
            &mut t,
        ),
        "check" => check(
            dir,
            Side::Firmware,
            image::FW_TO_HOST_IMAGE,
            image::FW_TO_HOST_DESC,
            65,
            &mut t,
        ),
        "self" => {
            make(dir, Side::Host, "self.img", "self.desc", &mut t);
            check(dir, Side::Host, "self.img", "self.desc", 65, &mut t);
        }
        other => {
            eprintln!("unknown command {other}: use make, check or self");
            return ExitCode::from(2);
        }
    }
    t.finish()
}
