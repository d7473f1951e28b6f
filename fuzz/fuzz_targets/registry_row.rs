//! A row of the webhook table (NUL-separated columns), checked as an untrusted row.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| leadhook::fuzzing::registry_row(data));
