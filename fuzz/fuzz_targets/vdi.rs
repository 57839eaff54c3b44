//! Fuzz target `vdi`: see `vdi_format::fuzzing::image`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vdi_format::fuzzing::image(data));
