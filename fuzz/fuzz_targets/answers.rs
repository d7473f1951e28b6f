//! What endpoints and servers answer as text: a Retry-After value, a WAL position.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| leadhook::fuzzing::answers(data));
