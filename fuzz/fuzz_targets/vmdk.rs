//! Fuzz target `vmdk`: see `vmdk_format::fuzzing::image`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmdk_format::fuzzing::image(data));
