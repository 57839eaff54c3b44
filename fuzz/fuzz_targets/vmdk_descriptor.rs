//! Fuzz target `vmdk_descriptor`: see `vmdk_format::fuzzing::descriptor`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmdk_format::fuzzing::descriptor(data));
