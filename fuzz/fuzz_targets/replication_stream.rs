//! Bytes as they arrive on a replication connection: frames (bounded), CopyData, XLogData and keepalives, and the pgoutput inside.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| leadhook::fuzzing::replication_stream(data));
