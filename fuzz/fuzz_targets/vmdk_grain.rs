//! Fuzz target `vmdk_grain`: see `vmdk_format::fuzzing::grain`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmdk_format::fuzzing::grain(data));
