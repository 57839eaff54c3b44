//! Thin, errno-preserving wrappers over the ioctls of the kernel ABI:
//! [`Device`] for `/dev/lffN` (`LFF_CONFIGURE`, `LFF_CLR_FD`,
//! `LFF_GET_STATUS`) and [`Control`] for `/dev/loop-file-fmt-control`
//! (`LFF_CTL_ADD`, `LFF_CTL_REMOVE`, `LFF_CTL_GET_FREE`).
//!
//! Every `unsafe` block of the tool lives in this module.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::uapi;

/// What [`Config::to_raw`] refuses before any ioctl is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// No file descriptor, or more than `LFF_MAX_LAYERS`.
    Layers(usize),
    /// The format name is empty, too long, or not `[A-Za-z0-9_-]`.
    FormatName(String),
    /// The options string is too long or contains a NUL byte.
    Options(String),
    /// Flags outside `LFF_CONFIGURE_SETTABLE_FLAGS`.
    Flags(u32),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::Layers(n) => write!(
                f,
                "{n} layers given, the kernel takes 1 to {}",
                uapi::MAX_LAYERS
            ),
            ConfigError::FormatName(n) => write!(
                f,
                "invalid format name '{n}' (1 to {} characters of [A-Za-z0-9_-])",
                uapi::FORMAT_NAME_SIZE - 1
            ),
            ConfigError::Options(o) => write!(
                f,
                "invalid format options '{o}' (at most {} bytes, no NUL)",
                uapi::OPTIONS_SIZE - 1
            ),
            ConfigError::Flags(x) => write!(f, "invalid flags {x:#x}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Checks a format name the way the kernel will use it
/// (`request_module("loop-file-fmt-%s")`).
pub fn valid_format_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < uapi::FORMAT_NAME_SIZE
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The argument of `LFF_CONFIGURE`, in Rust types.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// Layers: `fds[0]` the image, then its backing chain in order.
    pub fds: Vec<RawFd>,
    /// `LFF_FLAGS_*`.
    pub flags: u32,
    /// Logical block size in bytes, 0 for the default (512).
    pub block_size: u32,
    /// Byte offset into the virtual disk.
    pub offset: u64,
    /// Maximum device size in bytes, 0 for no limit.
    pub sizelimit: u64,
    /// Format driver name ("raw", "qcow2", ...).
    pub format: String,
    /// Comma-separated driver options ("snapshot=NAME"), may be empty.
    pub options: String,
}

impl Config {
    /// Builds the C structure, checking every length against the header.
    pub fn to_raw(&self) -> Result<uapi::lff_config, ConfigError> {
        let mut raw = uapi::lff_config::default();
        if self.fds.is_empty() || self.fds.len() > raw.fds.len() {
            return Err(ConfigError::Layers(self.fds.len()));
        }
        if !valid_format_name(&self.format) {
            return Err(ConfigError::FormatName(self.format.clone()));
        }
        if self.options.len() >= raw.options.len() || self.options.contains('\0') {
            return Err(ConfigError::Options(self.options.clone()));
        }
        if self.flags & !uapi::CONFIGURE_SETTABLE_FLAGS != 0 {
            return Err(ConfigError::Flags(self.flags));
        }
        for (dst, fd) in raw.fds.iter_mut().zip(&self.fds) {
            *dst = *fd;
        }
        for dst in raw.fds.iter_mut().skip(self.fds.len()) {
            *dst = -1;
        }
        raw.nr_fds = self.fds.len() as u32;
        raw.flags = self.flags;
        raw.block_size = self.block_size;
        raw.offset = self.offset;
        raw.sizelimit = self.sizelimit;
        copy_c_string(&mut raw.format, &self.format);
        copy_c_string(&mut raw.options, &self.options);
        Ok(raw)
    }
}

fn copy_c_string(dst: &mut [libc::c_char], src: &str) {
    // Callers checked src.len() < dst.len(); the rest stays NUL.
    for (d, s) in dst.iter_mut().zip(src.bytes()) {
        *d = s as libc::c_char;
    }
}

fn c_string(src: &[libc::c_char]) -> String {
    let bytes: Vec<u8> = src
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The result of `LFF_GET_STATUS`, in Rust types.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// N of /dev/lffN.
    pub index: u32,
    /// `LFF_FLAGS_*` in effect.
    pub flags: u32,
    /// Logical block size in bytes.
    pub block_size: u32,
    /// Number of layers attached.
    pub nr_layers: u32,
    /// Byte offset into the virtual disk.
    pub offset: u64,
    /// Size limit in bytes, 0 for none.
    pub sizelimit: u64,
    /// Size of the block device in bytes.
    pub size: u64,
    /// `st_dev` of the image file.
    pub device: u64,
    /// `st_ino` of the image file.
    pub inode: u64,
    /// Format name.
    pub format: String,
    /// Possibly truncated path of the image file.
    pub file_name: String,
}

impl From<&uapi::lff_status> for Status {
    fn from(s: &uapi::lff_status) -> Self {
        Status {
            index: s.index,
            flags: s.flags,
            block_size: s.block_size,
            nr_layers: s.nr_layers,
            offset: s.offset,
            sizelimit: s.sizelimit,
            size: s.size,
            device: s.device,
            inode: s.inode,
            format: c_string(&s.format),
            file_name: c_string(&s.file_name),
        }
    }
}

fn open_node(path: &Path, write: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

/// Converts the return value of `ioctl(2)`, keeping errno.
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// An open `/dev/lffN` block device.
#[derive(Debug)]
pub struct Device {
    file: File,
    path: PathBuf,
}

impl Device {
    /// Opens the device node read-write, or read-only when `write` is false.
    pub fn open(path: &Path, write: bool) -> io::Result<Device> {
        Ok(Device {
            file: open_node(path, write)?,
            path: path.to_path_buf(),
        })
    }

    /// Opens read-write, falling back to read-only on `EACCES`/`EROFS`
    /// (like losetup).
    pub fn open_best(path: &Path) -> io::Result<Device> {
        match Device::open(path, true) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EROFS)) => {
                Device::open(path, false)
            }
            r => r,
        }
    }

    /// The path the device was opened by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `LFF_CONFIGURE`: attaches the layers in `config`. The fds in
    /// `config` must stay open during the call (the kernel takes its own
    /// references).
    pub fn configure(&self, config: &Config) -> io::Result<()> {
        let raw = config
            .to_raw()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: LFF_CONFIGURE reads one `struct lff_config` from the
        // pointer, which points to a live, initialized value of exactly that
        // type (generated from the same header as the request number); the
        // fd is open for the duration of the call.
        let ret = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                uapi::LFF_CONFIGURE,
                &raw as *const uapi::lff_config,
            )
        };
        check(ret).map(drop)
    }

    /// `LFF_CLR_FD`: detaches the device.
    pub fn clear(&self) -> io::Result<()> {
        // SAFETY: LFF_CLR_FD takes no argument and touches no user memory.
        let ret = unsafe { libc::ioctl(self.file.as_raw_fd(), uapi::LFF_CLR_FD, 0) };
        check(ret).map(drop)
    }

    /// `LFF_GET_STATUS`: reads the configuration; `ENXIO` if unattached.
    pub fn status(&self) -> io::Result<Status> {
        let mut raw = uapi::lff_status::default();
        // SAFETY: LFF_GET_STATUS writes one `struct lff_status` to the
        // pointer, which points to a live, writable value of exactly that
        // type, generated from the same header as the request number.
        let ret = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                uapi::LFF_GET_STATUS,
                &mut raw as *mut uapi::lff_status,
            )
        };
        check(ret)?;
        Ok(Status::from(&raw))
    }
}

impl Device {
    /// `LFF_GET_MAP`: fills `extents` with the runs from `start` for
    /// `length` bytes (0: to the end); returns how many were filled.
    pub fn map(
        &self,
        start: u64,
        length: u64,
        extents: &mut [uapi::lff_extent],
    ) -> io::Result<usize> {
        let mut raw = uapi::lff_map {
            start,
            length,
            extents: extents.as_mut_ptr() as u64,
            nr_extents: u32::try_from(extents.len()).unwrap_or(u32::MAX),
            ..Default::default()
        };
        // SAFETY: LFF_GET_MAP reads and writes one `struct lff_map` at the
        // pointer (a live value of that type, generated from the same
        // header as the request number) and writes at most `nr_extents`
        // `struct lff_extent` to `extents`, which points to that many
        // writable ones (the kernel refuses a larger `nr_extents` than it
        // supports, never writing more than asked).
        let ret = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                uapi::LFF_GET_MAP,
                &mut raw as *mut uapi::lff_map,
            )
        };
        check(ret)?;
        Ok((raw.nr_extents as usize).min(extents.len()))
    }
}

/// The control node `/dev/loop-file-fmt-control`.
#[derive(Debug)]
pub struct Control {
    file: File,
}

impl Control {
    /// Path of the control node under a /dev root.
    pub fn path(dev_root: &Path) -> PathBuf {
        dev_root.join(uapi::control_name())
    }

    /// Opens the control node under `dev_root`.
    pub fn open(dev_root: &Path) -> io::Result<Control> {
        Ok(Control {
            file: open_node(&Control::path(dev_root), true)?,
        })
    }

    fn call(&self, request: libc::Ioctl, arg: libc::c_int) -> io::Result<libc::c_int> {
        // SAFETY: the LFF_CTL_* ioctls take an int by value and touch no
        // user memory.
        let ret = unsafe { libc::ioctl(self.file.as_raw_fd(), request, arg as libc::c_long) };
        check(ret)
    }

    /// `LFF_CTL_ADD`: adds device `n` (or the first free number if `None`);
    /// returns its number.
    pub fn add(&self, n: Option<u32>) -> io::Result<u32> {
        let arg = match n {
            Some(n) => {
                libc::c_int::try_from(n).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?
            }
            None => -1,
        };
        self.call(uapi::LFF_CTL_ADD, arg).map(|n| n as u32)
    }

    /// `LFF_CTL_REMOVE`: removes unattached device `n`.
    pub fn remove(&self, n: u32) -> io::Result<()> {
        let arg =
            libc::c_int::try_from(n).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        self.call(uapi::LFF_CTL_REMOVE, arg).map(drop)
    }

    /// `LFF_CTL_GET_FREE`: the number of an unattached device (the kernel
    /// adds one if none is free).
    pub fn get_free(&self) -> io::Result<u32> {
        self.call(uapi::LFF_CTL_GET_FREE, 0).map(|n| n as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            fds: vec![3, 4],
            flags: uapi::FLAG_READ_ONLY | uapi::FLAG_PARTSCAN,
            block_size: 4096,
            offset: 1024,
            sizelimit: 1 << 20,
            format: "qcow2".into(),
            options: "snapshot=s1".into(),
        }
    }

    #[test]
    fn config_to_raw() {
        let raw = config().to_raw().unwrap();
        assert_eq!(raw.nr_fds, 2);
        assert_eq!(&raw.fds[..3], &[3, 4, -1]);
        assert_eq!(raw.flags, 9);
        assert_eq!(raw.block_size, 4096);
        assert_eq!(raw.offset, 1024);
        assert_eq!(raw.sizelimit, 1 << 20);
        assert_eq!(c_string(&raw.format), "qcow2");
        assert_eq!(c_string(&raw.options), "snapshot=s1");
        assert_eq!(raw.__pad, 0);
        assert_eq!(raw.__reserved, [0; 8]);
    }

    #[test]
    fn config_limits() {
        let mut c = config();
        c.fds = vec![];
        assert_eq!(c.to_raw().unwrap_err(), ConfigError::Layers(0));
        c.fds = vec![3; 17];
        assert_eq!(c.to_raw().unwrap_err(), ConfigError::Layers(17));
        c.fds = vec![3; 16];
        assert!(c.to_raw().is_ok());
        c.format = "x".repeat(31);
        assert!(c.to_raw().is_ok());
        c.format = "x".repeat(32);
        assert!(matches!(c.to_raw(), Err(ConfigError::FormatName(_))));
        c.format = "../raw".into();
        assert!(matches!(c.to_raw(), Err(ConfigError::FormatName(_))));
        c.format = "raw".into();
        c.options = "o".repeat(127);
        assert!(c.to_raw().is_ok());
        c.options = "o".repeat(128);
        assert!(matches!(c.to_raw(), Err(ConfigError::Options(_))));
        c.options = String::new();
        c.flags = 0x10;
        assert_eq!(c.to_raw().unwrap_err(), ConfigError::Flags(0x10));
    }

    #[test]
    fn ioctl_on_a_regular_file_keeps_errno() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let dev = Device::open(f.path(), false).unwrap();
        assert_eq!(dev.status().unwrap_err().raw_os_error(), Some(libc::ENOTTY));
        assert_eq!(dev.clear().unwrap_err().raw_os_error(), Some(libc::ENOTTY));
        let ctl = Control {
            file: File::open(f.path()).unwrap(),
        };
        assert_eq!(
            ctl.get_free().unwrap_err().raw_os_error(),
            Some(libc::ENOTTY)
        );
    }

    #[test]
    fn missing_control_node_is_enoent() {
        let d = tempfile::tempdir().unwrap();
        let e = Control::open(d.path()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    }
}
