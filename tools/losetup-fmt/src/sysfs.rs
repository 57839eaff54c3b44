//! What the kernel publishes about attached devices, read the way losetup
//! reads `/sys/block/loopN/loop/`:
//! `/sys/block/lffN/loop_file_fmt/{backing_file,format,offset,sizelimit,
//! autoclear,partscan,dio,nr_layers}` (present only while attached), and
//! `/sys/block/lffN/{ro,size,dev,queue/logical_block_size}`.
//!
//! The /sys and /dev roots are parameters ([`Roots`]) so tests can point
//! them at a fake tree.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::device::Status;
use crate::uapi;

/// Where /sys and /dev are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roots {
    /// The sysfs mount point, normally `/sys`.
    pub sys: PathBuf,
    /// The devtmpfs mount point, normally `/dev`.
    pub dev: PathBuf,
}

impl Roots {
    /// Whether the core lists `format` in
    /// `/sys/class/misc/loop-file-fmt-control/formats` (registered drivers).
    pub fn format_registered(&self, format: &str) -> bool {
        let path = self.sys.join("class/misc/loop-file-fmt-control/formats");
        std::fs::read_to_string(path)
            .map(|list| list.split_whitespace().any(|f| f == format))
            .unwrap_or(false)
    }
}

impl Default for Roots {
    fn default() -> Self {
        Roots {
            sys: PathBuf::from("/sys"),
            dev: PathBuf::from("/dev"),
        }
    }
}

/// Everything the list columns show about one attached device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Kernel name, "lffN".
    pub name: String,
    /// N.
    pub index: u32,
    /// Device node path, `<dev>/lffN`.
    pub path: PathBuf,
    /// Path of the image file (fds[0]).
    pub backing_file: Option<PathBuf>,
    /// Format driver name.
    pub format: Option<String>,
    /// Offset in bytes.
    pub offset: Option<u64>,
    /// Size limit in bytes (0: none).
    pub sizelimit: Option<u64>,
    /// Autoclear flag.
    pub autoclear: Option<bool>,
    /// Partition scan flag.
    pub partscan: Option<bool>,
    /// Direct I/O flag.
    pub dio: Option<bool>,
    /// Number of layers (image plus backing chain).
    pub nr_layers: Option<u32>,
    /// Read-only.
    pub ro: Option<bool>,
    /// Device size in bytes.
    pub size: Option<u64>,
    /// Logical sector size in bytes.
    pub log_sec: Option<u64>,
    /// Device major:minor.
    pub maj_min: Option<(u32, u32)>,
    /// st_dev of the image file.
    pub back_dev: Option<u64>,
    /// st_ino of the image file.
    pub back_ino: Option<u64>,
}

/// N if `name` is "lffN".
pub fn index_of(name: &str) -> Option<u32> {
    let digits = name.strip_prefix(uapi::device_prefix())?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if digits.len() > 1 && digits.starts_with('0') {
        return None;
    }
    digits.parse().ok()
}

/// "lffN".
pub fn name_of(index: u32) -> String {
    format!("{}{index}", uapi::device_prefix())
}

fn read_trimmed(path: &Path) -> Option<Vec<u8>> {
    let mut v = fs::read(path).ok()?;
    while v.last().is_some_and(|b| b.is_ascii_whitespace()) {
        v.pop();
    }
    Some(v)
}

fn read_string(path: &Path) -> Option<String> {
    read_trimmed(path).and_then(|v| String::from_utf8(v).ok())
}

fn read_u64(path: &Path) -> Option<u64> {
    read_string(path)?.trim().parse().ok()
}

fn read_bool(path: &Path) -> Option<bool> {
    read_u64(path).map(|v| v != 0)
}

fn parse_maj_min(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

impl Roots {
    /// `<sys>/block/<name>`.
    pub fn block_dir(&self, name: &str) -> PathBuf {
        self.sys.join("block").join(name)
    }

    /// `<dev>/<name>`.
    pub fn dev_path(&self, name: &str) -> PathBuf {
        self.dev.join(name)
    }

    /// Whether sysfs is there at all (`<sys>/block` exists).
    pub fn has_sysfs(&self) -> bool {
        self.sys.join("block").is_dir()
    }

    /// Numbers of every lffN device, attached or not, in order: from
    /// `<sys>/block`, or from `<dev>` when sysfs is not mounted.
    pub fn device_indexes(&self) -> io::Result<Vec<u32>> {
        let dir = if self.has_sysfs() {
            self.sys.join("block")
        } else {
            self.dev.clone()
        };
        let mut v: Vec<u32> = fs::read_dir(&dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().and_then(index_of))
            .collect();
        v.sort_unstable();
        v.dedup();
        Ok(v)
    }

    /// Whether `<sys>/block/lffN/loop_file_fmt/` exists.
    pub fn is_attached(&self, name: &str) -> bool {
        self.block_dir(name).join("loop_file_fmt").is_dir()
    }

    /// Reads the sysfs attributes of an attached device; `None` if the
    /// device is not attached (or unknown).
    pub fn read_info(&self, name: &str) -> Option<DeviceInfo> {
        let index = index_of(name)?;
        let base = self.block_dir(name);
        let lff = base.join("loop_file_fmt");
        if !lff.is_dir() {
            return None;
        }
        Some(DeviceInfo {
            name: name.to_string(),
            index,
            path: self.dev_path(name),
            backing_file: read_trimmed(&lff.join("backing_file"))
                .map(|v| PathBuf::from(OsString::from_vec(v))),
            format: read_string(&lff.join("format")),
            offset: read_u64(&lff.join("offset")),
            sizelimit: read_u64(&lff.join("sizelimit")),
            autoclear: read_bool(&lff.join("autoclear")),
            partscan: read_bool(&lff.join("partscan")),
            dio: read_bool(&lff.join("dio")),
            nr_layers: read_u64(&lff.join("nr_layers")).and_then(|v| u32::try_from(v).ok()),
            ro: read_bool(&base.join("ro")),
            size: read_u64(&base.join("size")).and_then(|s| s.checked_mul(512)),
            log_sec: read_u64(&base.join("queue/logical_block_size")),
            maj_min: read_string(&base.join("dev")).and_then(|s| parse_maj_min(&s)),
            back_dev: None,
            back_ino: None,
        })
    }

    /// Resolves a device argument as losetup does: a name without '/' is
    /// taken under `<dev>` ("lff0" → "/dev/lff0"). Returns the node path
    /// and, if it can be told, the kernel name "lffN" (from the file name,
    /// the symlink target, or the node's rdev through `<sys>/dev/block`).
    pub fn resolve_device(&self, arg: &OsStr) -> (PathBuf, Option<String>) {
        let path = if arg.as_bytes().contains(&b'/') {
            PathBuf::from(arg)
        } else {
            self.dev.join(arg)
        };
        let lff_name = |p: &Path| {
            p.file_name()
                .and_then(|n| n.to_str())
                .filter(|n| index_of(n).is_some())
                .map(str::to_string)
        };
        if let Some(n) = lff_name(&path) {
            return (path, Some(n));
        }
        if let Some(n) = fs::canonicalize(&path).ok().as_deref().and_then(lff_name) {
            return (path, Some(n));
        }
        let name = fs::metadata(&path)
            .ok()
            .filter(|m| m.file_type().is_block_device())
            .and_then(|m| {
                let rdev = m.rdev();
                let link = self.sys.join("dev/block").join(format!(
                    "{}:{}",
                    libc::major(rdev),
                    libc::minor(rdev)
                ));
                fs::read_link(link).ok()
            })
            .as_deref()
            .and_then(lff_name);
        (path, name)
    }
}

/// A [`DeviceInfo`] from `LFF_GET_STATUS`, for when sysfs is not mounted.
pub fn info_from_status(path: &Path, status: &Status) -> DeviceInfo {
    let flag = |f: u32| Some(status.flags & f != 0);
    DeviceInfo {
        name: name_of(status.index),
        index: status.index,
        path: path.to_path_buf(),
        backing_file: Some(PathBuf::from(&status.file_name)),
        format: Some(status.format.clone()),
        offset: Some(status.offset),
        sizelimit: Some(status.sizelimit),
        autoclear: flag(uapi::FLAG_AUTOCLEAR),
        partscan: flag(uapi::FLAG_PARTSCAN),
        dio: flag(uapi::FLAG_DIRECT_IO),
        nr_layers: Some(status.nr_layers),
        ro: flag(uapi::FLAG_READ_ONLY),
        size: Some(status.size),
        log_sec: Some(u64::from(status.block_size)),
        maj_min: None,
        back_dev: Some(status.device),
        back_ino: Some(status.inode),
    }
}

/// Test helper: writes a fake sysfs entry for an attached device.
#[doc(hidden)]
pub mod fake {
    use super::*;

    /// Attributes of a fake attached device.
    #[derive(Debug, Clone)]
    pub struct FakeDevice<'a> {
        /// N.
        pub index: u32,
        /// backing_file.
        pub backing_file: &'a str,
        /// format.
        pub format: &'a str,
        /// offset.
        pub offset: u64,
        /// sizelimit.
        pub sizelimit: u64,
        /// ro.
        pub ro: bool,
        /// autoclear, partscan, dio.
        pub flags: (bool, bool, bool),
        /// nr_layers.
        pub nr_layers: u32,
        /// size in 512-byte sectors.
        pub sectors: u64,
        /// logical_block_size.
        pub log_sec: u32,
    }

    impl Default for FakeDevice<'_> {
        fn default() -> Self {
            FakeDevice {
                index: 0,
                backing_file: "/img/disk.qcow2",
                format: "qcow2",
                offset: 0,
                sizelimit: 0,
                ro: false,
                flags: (false, false, false),
                nr_layers: 1,
                sectors: 2048,
                log_sec: 512,
            }
        }
    }

    /// Creates `<sys>/block/lffN/...` for an attached device.
    pub fn attach(roots: &Roots, d: &FakeDevice<'_>) -> io::Result<()> {
        let name = name_of(d.index);
        let base = roots.block_dir(&name);
        let lff = base.join("loop_file_fmt");
        fs::create_dir_all(&lff)?;
        fs::create_dir_all(base.join("queue"))?;
        let b = |v: bool| if v { "1\n" } else { "0\n" };
        fs::write(lff.join("backing_file"), format!("{}\n", d.backing_file))?;
        fs::write(lff.join("format"), format!("{}\n", d.format))?;
        fs::write(lff.join("offset"), format!("{}\n", d.offset))?;
        fs::write(lff.join("sizelimit"), format!("{}\n", d.sizelimit))?;
        fs::write(lff.join("autoclear"), b(d.flags.0))?;
        fs::write(lff.join("partscan"), b(d.flags.1))?;
        fs::write(lff.join("dio"), b(d.flags.2))?;
        fs::write(lff.join("nr_layers"), format!("{}\n", d.nr_layers))?;
        fs::write(base.join("ro"), b(d.ro))?;
        fs::write(base.join("size"), format!("{}\n", d.sectors))?;
        fs::write(base.join("dev"), format!("252:{}\n", d.index))?;
        fs::write(
            base.join("queue/logical_block_size"),
            format!("{}\n", d.log_sec),
        )?;
        Ok(())
    }

    /// Creates `<sys>/block/lffN` for an unattached device.
    pub fn unattached(roots: &Roots, index: u32) -> io::Result<()> {
        let base = roots.block_dir(&name_of(index));
        fs::create_dir_all(&base)?;
        fs::write(base.join("dev"), format!("252:{index}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::fake::*;
    use super::*;

    fn roots(d: &Path) -> Roots {
        Roots {
            sys: d.join("sys"),
            dev: d.join("dev"),
        }
    }

    #[test]
    fn names() {
        assert_eq!(index_of("lff0"), Some(0));
        assert_eq!(index_of("lff17"), Some(17));
        assert_eq!(index_of("lff"), None);
        assert_eq!(index_of("lff01"), None);
        assert_eq!(index_of("lff1p1"), None);
        assert_eq!(index_of("loop0"), None);
        assert_eq!(name_of(3), "lff3");
    }

    #[test]
    fn reads_an_attached_device() {
        let d = tempfile::tempdir().unwrap();
        let r = roots(d.path());
        attach(
            &r,
            &FakeDevice {
                index: 2,
                backing_file: "/srv/a b.qcow2",
                offset: 4096,
                sizelimit: 1 << 20,
                ro: true,
                flags: (true, false, true),
                nr_layers: 3,
                log_sec: 4096,
                ..Default::default()
            },
        )
        .unwrap();
        unattached(&r, 0).unwrap();
        fs::create_dir_all(r.sys.join("block/loop0")).unwrap();
        assert_eq!(r.device_indexes().unwrap(), vec![0, 2]);
        assert!(!r.is_attached("lff0"));
        assert!(r.read_info("lff0").is_none());
        let info = r.read_info("lff2").unwrap();
        assert_eq!(
            info,
            DeviceInfo {
                name: "lff2".into(),
                index: 2,
                path: r.dev.join("lff2"),
                backing_file: Some("/srv/a b.qcow2".into()),
                format: Some("qcow2".into()),
                offset: Some(4096),
                sizelimit: Some(1 << 20),
                autoclear: Some(true),
                partscan: Some(false),
                dio: Some(true),
                nr_layers: Some(3),
                ro: Some(true),
                size: Some(2048 * 512),
                log_sec: Some(4096),
                maj_min: Some((252, 2)),
                back_dev: None,
                back_ino: None,
            }
        );
    }

    #[test]
    fn missing_attributes_are_none() {
        let d = tempfile::tempdir().unwrap();
        let r = roots(d.path());
        fs::create_dir_all(r.block_dir("lff5").join("loop_file_fmt")).unwrap();
        let info = r.read_info("lff5").unwrap();
        assert_eq!(info.index, 5);
        assert_eq!(info.backing_file, None);
        assert_eq!(info.offset, None);
    }

    #[test]
    fn without_sysfs_devices_come_from_dev() {
        let d = tempfile::tempdir().unwrap();
        let r = roots(d.path());
        fs::create_dir_all(&r.dev).unwrap();
        for n in ["lff1", "lff0", "loop0", "lffx", "loop-file-fmt-control"] {
            fs::write(r.dev.join(n), "").unwrap();
        }
        assert!(!r.has_sysfs());
        assert_eq!(r.device_indexes().unwrap(), vec![0, 1]);
    }

    #[test]
    fn device_arguments() {
        let d = tempfile::tempdir().unwrap();
        let r = roots(d.path());
        fs::create_dir_all(&r.dev).unwrap();
        let (p, n) = r.resolve_device(OsStr::new("lff3"));
        assert_eq!((p, n.as_deref()), (r.dev.join("lff3"), Some("lff3")));
        let (p, n) = r.resolve_device(OsStr::new("/dev/lff4"));
        assert_eq!(
            (p, n.as_deref()),
            (PathBuf::from("/dev/lff4"), Some("lff4"))
        );
        // A symlink to a device node.
        fs::write(r.dev.join("lff7"), "").unwrap();
        std::os::unix::fs::symlink(r.dev.join("lff7"), r.dev.join("root-disk")).unwrap();
        let (p, n) = r.resolve_device(r.dev.join("root-disk").as_os_str());
        assert_eq!((p, n.as_deref()), (r.dev.join("root-disk"), Some("lff7")));
        let (_, n) = r.resolve_device(OsStr::new("/nonexistent/sda"));
        assert_eq!(n, None);
    }

    #[test]
    fn status_to_info() {
        let s = Status {
            index: 4,
            flags: uapi::FLAG_READ_ONLY | uapi::FLAG_PARTSCAN,
            block_size: 512,
            nr_layers: 2,
            offset: 0,
            sizelimit: 0,
            size: 1 << 30,
            device: 2049,
            inode: 12,
            format: "qcow2".into(),
            file_name: "/x.qcow2".into(),
        };
        let i = info_from_status(Path::new("/dev/lff4"), &s);
        assert_eq!(i.name, "lff4");
        assert_eq!(i.ro, Some(true));
        assert_eq!(i.partscan, Some(true));
        assert_eq!(i.dio, Some(false));
        assert_eq!(i.back_ino, Some(12));
    }
}
