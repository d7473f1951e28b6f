//! One XLogData payload as pgoutput sends it, decoded.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| leadhook::fuzzing::pgoutput(data));
