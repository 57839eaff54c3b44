//! Fuzz target `write`: see `qcow2_format::fuzzing_write::write`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| qcow2_format::fuzzing_write::write(data));
