//! Fuzz target `l2_table`: see `qcow2_format::fuzzing::l2_table`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| qcow2_format::fuzzing::l2_table(data));
