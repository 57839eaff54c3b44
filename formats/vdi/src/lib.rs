//! Host build of the VDI format logic for a `loop_file_fmt` format
//! driver.
//!
//! All format logic lives in [`format`] (the files a kernel module
//! compiles with `#[path]`, as `loop_file_fmt_qcow2` does with the qcow2
//! tree). With the `std` feature this crate also offers a file-backed
//! [`host::Image`] reader and the fuzz harnesses in [`fuzzing`].

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
pub mod fuzzing;

#[cfg(test)]
mod unit_tests;
