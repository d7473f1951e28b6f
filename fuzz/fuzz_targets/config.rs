//! A sidecar.toml, loaded and checked, and ${VAR} expansion of its text.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| leadhook::fuzzing::config(data));
