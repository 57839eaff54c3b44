//! `losetup-fmt`: set up and control loop-file-fmt devices (`/dev/lffN`),
//! block devices whose backing file is read through a format driver (raw,
//! qcow2, ...). The command line follows util-linux `losetup`.
//!
//! Modules, from the kernel ABI up:
//! - [`uapi`]: bindings generated from `include/uapi/linux/loop_file_fmt.h`;
//! - [`device`]: [`device::Device`] and [`device::Control`], the ioctls;
//! - [`chain`]: format detection and backing chains, with the
//!   `qcow2-format` crate's header parsing;
//! - [`vmdk`]: the extent files of VMDK descriptor files, with the
//!   `vmdk-format` crate's descriptor parser;
//! - [`sysfs`]: what `-l`/`-a`/`-j` read;
//! - [`output`]: the list table, raw and JSON output;
//! - [`size`], [`args`]: the command line;
//! - [`cli`]: the actions;
//! - [`map`]: `losetup-fmt map`, the driver's view of a device.

pub mod args;
pub mod chain;
pub mod cli;
pub mod device;
pub mod errors;
pub mod map;
pub mod output;
pub mod size;
pub mod sysfs;
pub mod uapi;
pub mod vmdk;

pub use cli::{run, Env};
