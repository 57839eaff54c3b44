//! Fuzz target `snapshots`: see `qcow2_format::fuzzing::snapshots`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| qcow2_format::fuzzing::snapshots(data));
