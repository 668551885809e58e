//! cargo-fuzz entry point; the body is [`dragon_channels_fuzz::targets::api_model`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dragon_channels_fuzz::targets::api_model(data));
