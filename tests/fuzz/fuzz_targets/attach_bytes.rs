//! cargo-fuzz entry point; the body is [`dragon_channels_fuzz::targets::attach_bytes`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dragon_channels_fuzz::targets::attach_bytes(data));
