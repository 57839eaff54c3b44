//! Fuzz target `header`: see `qcow2_format::fuzzing::header`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| qcow2_format::fuzzing::header(data));
