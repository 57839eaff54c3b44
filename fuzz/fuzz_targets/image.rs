//! Fuzz target `image`: see `qcow2_format::fuzzing::image`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| qcow2_format::fuzzing::image(data));
