//! Host build of the qcow2 format logic used by the `loop_file_fmt_qcow2`
//! kernel module.
//!
//! All format logic lives in [`format`] (the same files the kernel module
//! compiles). With the `std` feature this crate also offers host-only
//! helpers in [`host`]: flate2/zstd decompressors and a file-backed
//! [`host::Image`] reader used by the tests (and usable by tools).

#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub, rust_2018_idioms)]

#[cfg(any(test, feature = "std"))]
extern crate std;

pub mod format;

pub use format::*;

#[cfg(feature = "std")]
pub mod host;

#[cfg(feature = "std")]
pub mod host_write;

#[cfg(feature = "std")]
pub mod fuzzing;

#[cfg(feature = "std")]
pub mod fuzzing_write;

#[cfg(test)]
mod unit_tests;
