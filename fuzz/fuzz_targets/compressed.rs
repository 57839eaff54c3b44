//! Fuzz target `compressed`: see `qcow2_format::fuzzing::compressed`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| qcow2_format::fuzzing::compressed(data));
