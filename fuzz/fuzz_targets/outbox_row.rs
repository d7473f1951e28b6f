//! An outbox row's lead JSON, as the notify trigger captured it, made into the payload.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| leadhook::fuzzing::outbox_row(data));
