//! Fuzz target `decompress`: see `qcow2_format::fuzzing::decompress`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| qcow2_format::fuzzing::decompress(data));
