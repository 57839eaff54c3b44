//! The actions of `losetup-fmt`: attach, detach, find, list.
//!
//! Messages follow losetup: `PROG: CONTEXT: WHAT: strerror`, exit status 0
//! on success and 1 on any failure.

use std::cell::Cell;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::args::{self, Action, FileFmt, ListFormat, Setup};
use crate::chain::{self, Format, Layer, SystemOpener};
use crate::device::{Config, Control, Device};
use crate::errors::strerror;
use crate::output::{self, Column};
use crate::sysfs::{self, DeviceInfo, Roots};
use crate::uapi;
use crate::vmdk;

/// The environment the tool runs in.
#[derive(Debug, Clone)]
pub struct Env {
    /// /sys and /dev.
    pub roots: Roots,
    /// Run `modprobe loop_file_fmt` once if the control node is missing.
    pub modprobe: bool,
}

impl Default for Env {
    fn default() -> Self {
        Env {
            roots: Roots::default(),
            modprobe: true,
        }
    }
}

impl Env {
    /// The real system; `LOSETUP_FMT_SYSFS` and `LOSETUP_FMT_DEVDIR`
    /// override /sys and /dev and `LOSETUP_FMT_NO_MODPROBE` disables the
    /// module autoload (for tests against a fake tree).
    pub fn from_process() -> Env {
        let mut env = Env::default();
        if let Some(s) = std::env::var_os("LOSETUP_FMT_SYSFS") {
            env.roots.sys = PathBuf::from(s);
        }
        if let Some(d) = std::env::var_os("LOSETUP_FMT_DEVDIR") {
            env.roots.dev = PathBuf::from(d);
        }
        if std::env::var_os("LOSETUP_FMT_NO_MODPROBE").is_some() {
            env.modprobe = false;
        }
        env
    }
}

/// Name used in messages: the basename of argv[0] ("losetup" when
/// installed under that name), "losetup-fmt" if there is none.
pub fn program_name(argv0: Option<&OsStr>) -> String {
    argv0
        .map(Path::new)
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "losetup-fmt".to_string())
}

/// Runs the command line `argv` (argv[0] included); returns the exit
/// status.
pub fn run(argv: &[OsString], env: &Env, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let prog = program_name(argv.first().map(OsString::as_os_str));
    let rest = argv.get(1..).unwrap_or(&[]);
    if crate::map::is_map_command(rest.first()) {
        let code = crate::map::run(&prog, &rest[1..], &env.roots, out, err);
        let _ = out.flush();
        return code;
    }
    let action = match args::parse(rest) {
        Ok(a) => a,
        Err(e) => {
            let _ = writeln!(err, "{prog}: {e}");
            let _ = writeln!(err, "Try '{prog} --help' for more information.");
            return 1;
        }
    };
    let mut cx = Cx {
        prog: &prog,
        env,
        out,
        err,
        modprobe_tried: Cell::new(false),
    };
    let code = cx.dispatch(action);
    let _ = cx.out.flush();
    code
}

struct Cx<'a> {
    prog: &'a str,
    env: &'a Env,
    out: &'a mut dyn Write,
    err: &'a mut dyn Write,
    modprobe_tried: Cell<bool>,
}

/// How often and how long to wait for a device node udev has not made yet.
const NODE_RETRIES: u32 = 40;
const NODE_RETRY_DELAY: Duration = Duration::from_millis(25);
/// How often `-f` retries when another process takes the free device.
const FIND_RETRIES: u32 = 16;

fn errno(e: &io::Error) -> Option<i32> {
    e.raw_os_error()
}

impl Cx<'_> {
    fn warn(&mut self, msg: impl std::fmt::Display) {
        let _ = writeln!(self.err, "{}: {msg}", self.prog);
    }

    fn print(&mut self, text: impl std::fmt::Display) {
        let _ = write!(self.out, "{text}");
    }

    fn dispatch(&mut self, action: Action) -> i32 {
        match action {
            Action::Help => {
                let text = usage(self.prog);
                self.print(text);
                0
            }
            Action::Version => {
                let text = format!(
                    "{} from loop-file-fmt {}\n",
                    self.prog,
                    env!("CARGO_PKG_VERSION")
                );
                self.print(text);
                0
            }
            Action::Setup(s) => self.setup(&s),
            Action::FindFree => match self.find_free() {
                Ok(p) => {
                    self.print(format!("{}\n", p.display()));
                    0
                }
                Err(e) => {
                    self.warn(format!("cannot find an unused loop device: {e}"));
                    1
                }
            },
            Action::Show {
                associated,
                offset,
                format,
            } => self.show(associated.as_deref(), offset, &format),
            Action::ShowOne { device, format } => self.show_one(&device, &format),
            Action::Detach(devs) => {
                let mut rc = 0;
                for d in devs {
                    let (path, _) = self.env.roots.resolve_device(&d);
                    if let Err(e) = detach(&path) {
                        self.warn(format!(
                            "{}: detach failed: {}",
                            path.display(),
                            strerror(&e)
                        ));
                        rc = 1;
                    }
                }
                rc
            }
            Action::DetachAll => self.detach_all(),
            Action::SetCapacity(d) => {
                let (path, _) = self.env.roots.resolve_device(&d);
                match Device::open_best(&path).and_then(|dev| dev.set_capacity()) {
                    Ok(()) => 0,
                    Err(e) => {
                        let why = if errno(&e) == Some(libc::EOPNOTSUPP) {
                            "the format keeps its size in the image; detach and attach again to use a new size".to_string()
                        } else {
                            strerror(&e)
                        };
                        self.warn(format!("{}: set capacity failed: {why}", path.display()));
                        1
                    }
                }
            }
        }
    }

    // ----- control node -------------------------------------------------

    fn modprobe(&self) {
        if !self.env.modprobe || self.modprobe_tried.replace(true) {
            return;
        }
        for cmd in ["modprobe", "/sbin/modprobe", "/usr/sbin/modprobe"] {
            let r = Command::new(cmd)
                .arg("loop_file_fmt")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            match r {
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                _ => break,
            }
        }
    }

    fn control(&self) -> io::Result<Control> {
        match Control::open(&self.env.roots.dev) {
            Err(e) if errno(&e) == Some(libc::ENOENT) && self.env.modprobe => {
                self.modprobe();
                Control::open(&self.env.roots.dev)
            }
            r => r,
        }
    }

    /// `LFF_CTL_GET_FREE`; the error text names the control node when it
    /// cannot be opened.
    fn find_free(&self) -> Result<PathBuf, String> {
        let ctl = self.control().map_err(|e| {
            format!(
                "{}: {}",
                Control::path(&self.env.roots.dev).display(),
                strerror(&e)
            )
        })?;
        let n = ctl.get_free().map_err(|e| strerror(&e))?;
        Ok(self.env.roots.dev_path(&sysfs::name_of(n)))
    }

    /// Opens a device node, waiting a little for udev when the node was
    /// just made (`fresh`), and asking the control node to add an explicit
    /// lffN that does not exist yet (like losetup does for loopN).
    fn open_device(&self, path: &Path, name: Option<&str>, fresh: bool) -> io::Result<Device> {
        let mut fresh = fresh;
        let mut first = Device::open_best(path);
        if let Err(e) = &first {
            if errno(e) == Some(libc::ENOENT) && !fresh {
                if let Some(n) = name.and_then(sysfs::index_of) {
                    if let Ok(ctl) = self.control() {
                        match ctl.add(Some(n)) {
                            Ok(_) => fresh = true,
                            Err(e) if errno(&e) == Some(libc::EEXIST) => fresh = true,
                            Err(_) => {}
                        }
                    }
                }
            }
        }
        let mut tries = 0;
        while let Err(e) = &first {
            let again = matches!(errno(e), Some(libc::ENOENT | libc::EACCES));
            if !fresh || !again || tries >= NODE_RETRIES {
                break;
            }
            tries += 1;
            std::thread::sleep(NODE_RETRY_DELAY);
            first = Device::open_best(path);
        }
        first
    }

    // ----- attach -------------------------------------------------------

    fn setup(&mut self, s: &Setup) -> i32 {
        let file = Path::new(&s.file);
        let (top, top_ro) = match open_image(file, !s.read_only) {
            Ok(x) => x,
            Err(e) => {
                self.warn(format!(
                    "{}: failed to set up loop device: {}",
                    file.display(),
                    strerror(&e)
                ));
                return 1;
            }
        };
        if s.format == FileFmt::Default {
            if let Ok(f @ (Format::Qcow2 | Format::Vdi | Format::Vmdk)) = chain::probe(&top) {
                self.warn(format!(
                    "{}: Warning: file has the {f} magic but is attached as raw; \
                     use --file-fmt {f} (or auto) to read it as {f}",
                    file.display(),
                    f = f.name()
                ));
            }
        }
        let (format, mut layers) = match resolve_layers(file, top, s) {
            Ok(x) => x,
            Err(msg) => {
                self.warn(msg);
                return 1;
            }
        };
        if s.direct_io {
            // The kernel reads the image with the fd's own flags: hand it an
            // O_DIRECT one (probing above needed ordinary reads).
            match open_direct(file, !(s.read_only || top_ro)) {
                Ok(f) => layers[0].file = f,
                Err(e) => {
                    self.warn(format!(
                        "{}: failed to set up loop device: cannot open with O_DIRECT: {}",
                        file.display(),
                        strerror(&e)
                    ));
                    return 1;
                }
            }
        }
        let mut flags = 0;
        if s.read_only || top_ro {
            flags |= uapi::FLAG_READ_ONLY;
        }
        if s.partscan {
            flags |= uapi::FLAG_PARTSCAN;
        }
        if s.direct_io {
            flags |= uapi::FLAG_DIRECT_IO;
        }
        let config = Config {
            fds: layers
                .iter()
                .map(|l| std::os::fd::AsRawFd::as_raw_fd(&l.file))
                .collect(),
            flags,
            block_size: s.block_size,
            offset: s.offset,
            sizelimit: s.sizelimit,
            format: format.clone(),
            options: s.options.clone(),
        };
        if let Err(e) = config.to_raw() {
            self.warn(format!("{}: {e}", file.display()));
            return 1;
        }
        if s.nooverlap {
            let ro = flags & uapi::FLAG_READ_ONLY != 0;
            let Ok(meta) = layers[0].file.metadata() else {
                self.warn("failed to inspect loop devices");
                return 1;
            };
            match find_overlap(&self.attached(), &meta, s, &format, ro) {
                Overlap::None => {}
                Overlap::Reuse(path) => {
                    if s.show {
                        self.print(format!("{}\n", path.display()));
                    }
                    return 0;
                }
                Overlap::Clash(what) => {
                    self.warn(format!(
                        "{}: overlapping {what}loop device exists",
                        file.display()
                    ));
                    return 1;
                }
            }
        }

        let mut attempts = 0;
        let path = loop {
            let (path, name, fresh) = match &s.device {
                Some(d) => {
                    let (p, n) = self.env.roots.resolve_device(d);
                    (p, n, false)
                }
                None => match self.find_free() {
                    Ok(p) => {
                        let n = p.file_name().map(|n| n.to_string_lossy().into_owned());
                        (p, n, true)
                    }
                    Err(e) => {
                        self.warn(format!("cannot find an unused loop device: {e}"));
                        return 1;
                    }
                },
            };
            // ENOENT from LFF_CONFIGURE itself means no driver for the
            // format; from opening the node, a missing device.
            let mut no_driver = false;
            let result = self
                .open_device(&path, name.as_deref(), fresh)
                .and_then(|dev| {
                    dev.configure(&config).inspect_err(|e| {
                        no_driver = errno(e) == Some(libc::ENOENT);
                    })
                });
            match result {
                Ok(()) => break path,
                Err(e)
                    if errno(&e) == Some(libc::EBUSY)
                        && s.device.is_none()
                        && attempts < FIND_RETRIES =>
                {
                    attempts += 1;
                }
                Err(e) => {
                    // ENOENT may also be the driver's own answer (an unknown
                    // snapshot): only a format the core does not list is a
                    // missing driver.
                    let why = if no_driver && !self.env.roots.format_registered(&format) {
                        format!(
                            "no kernel driver for format '{format}' \
                             (module loop-file-fmt-{format} not found)"
                        )
                    } else {
                        strerror(&e)
                    };
                    self.warn(format!(
                        "{}: failed to set up loop device: {why}",
                        path.display()
                    ));
                    return 1;
                }
            }
        };
        // The kernel holds its own references now.
        drop(layers);
        if s.show {
            self.print(format!("{}\n", path.display()));
        }
        if format == "raw" && s.sizelimit == 0 {
            self.warn_size(file, s.offset);
        }
        0
    }

    /// losetup's warnings about raw files that are not whole sectors.
    fn warn_size(&mut self, file: &Path, offset: u64) {
        let Ok(meta) = fs::metadata(file) else { return };
        if !meta.is_file() {
            return;
        }
        let size = meta.len().saturating_sub(offset);
        if size < 512 {
            self.warn(format!(
                "{}: Warning: file is smaller than 512 bytes; the loop device may be useless or invisible for system tools.",
                file.display()
            ));
        } else if size % 512 != 0 {
            self.warn(format!(
                "{}: Warning: file does not end on a 512-byte sector boundary; the remaining end of the file will be ignored.",
                file.display()
            ));
        }
    }

    // ----- detach -------------------------------------------------------

    fn detach_all(&mut self) -> i32 {
        let roots = self.env.roots.clone();
        let Ok(indexes) = roots.device_indexes() else {
            return 0;
        };
        let mut rc = 0;
        for n in indexes {
            let name = sysfs::name_of(n);
            let sysfs_says_attached = roots.has_sysfs() && roots.is_attached(&name);
            if roots.has_sysfs() && !sysfs_says_attached {
                continue;
            }
            let path = roots.dev_path(&name);
            match detach(&path) {
                Ok(()) => {}
                // Without sysfs every node is tried; unattached ones say ENXIO.
                Err(e) if !sysfs_says_attached && errno(&e) == Some(libc::ENXIO) => {}
                Err(e) => {
                    self.warn(format!(
                        "{}: detach failed: {}",
                        path.display(),
                        strerror(&e)
                    ));
                    rc = 1;
                }
            }
        }
        rc
    }

    // ----- list ---------------------------------------------------------

    fn attached(&self) -> Vec<DeviceInfo> {
        let roots = &self.env.roots;
        let Ok(indexes) = roots.device_indexes() else {
            return Vec::new();
        };
        let sysfs = roots.has_sysfs();
        indexes
            .into_iter()
            .filter_map(|n| {
                let name = sysfs::name_of(n);
                if sysfs {
                    roots.read_info(&name).map(with_backing_ids)
                } else {
                    let path = roots.dev_path(&name);
                    let status = Device::open(&path, false).and_then(|d| d.status()).ok()?;
                    Some(sysfs::info_from_status(&path, &status))
                }
            })
            .collect()
    }

    fn print_list(&mut self, infos: &[DeviceInfo], format: &ListFormat) {
        if format.list {
            let text = output::render(infos, &format.columns, format.style, format.headings);
            self.print(text);
        } else {
            for i in infos {
                let line = output::old_style_line(i);
                self.print(format!("{line}\n"));
            }
        }
    }

    fn show(
        &mut self,
        associated: Option<&OsStr>,
        offset: Option<u64>,
        format: &ListFormat,
    ) -> i32 {
        let mut infos = self.attached();
        if let Some(file) = associated {
            infos.retain(|i| uses_file(i, Path::new(file)));
            if let Some(o) = offset {
                infos.retain(|i| i.offset == Some(o));
            }
        }
        self.print_list(&infos, format);
        0
    }

    fn show_one(&mut self, device: &OsStr, format: &ListFormat) -> i32 {
        let roots = self.env.roots.clone();
        let (path, name) = roots.resolve_device(device);
        let info = if roots.has_sysfs() {
            let Some(name) = name.filter(|n| roots.block_dir(n).is_dir()) else {
                self.warn(format!(
                    "{}: failed to use device: {}",
                    path.display(),
                    crate::errors::errno_text(libc::ENODEV)
                ));
                return 1;
            };
            roots
                .read_info(&name)
                .map(with_backing_ids)
                .ok_or_else(|| io::Error::from_raw_os_error(libc::ENXIO))
        } else {
            Device::open(&path, false)
                .and_then(|d| d.status())
                .map(|s| sysfs::info_from_status(&path, &s))
        };
        match info {
            Ok(mut info) => {
                info.path = path;
                self.print_list(&[info], format);
                0
            }
            Err(e) => {
                self.warn(format!("{}: {}", path.display(), strerror(&e)));
                1
            }
        }
    }
}

/// Opens the image read-write (or read-only with `-r`); like losetup, a
/// file that cannot be written (`EROFS`, `EACCES`) is attached read-only.
/// Returns the file and whether it was opened read-only.
fn open_image(path: &Path, write: bool) -> io::Result<(File, bool)> {
    let open = |w: bool| {
        OpenOptions::new()
            .read(true)
            .write(w)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
    };
    if write {
        match open(true) {
            Ok(f) => return Ok((f, false)),
            Err(e) if matches!(errno(&e), Some(libc::EROFS | libc::EACCES | libc::EPERM)) => {}
            Err(e) => return Err(e),
        }
    }
    open(false).map(|f| (f, true))
}

/// Opens the image again with `O_DIRECT`, for `--direct-io`.
fn open_direct(path: &Path, write: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_CLOEXEC | libc::O_DIRECT)
        .open(path)
}

/// Decides the kernel format name and the layers to pass.
fn resolve_layers(path: &Path, top: File, s: &Setup) -> Result<(String, Vec<Layer>), String> {
    let single = |name: &str, top: File, format: Format| {
        (
            name.to_string(),
            vec![Layer {
                path: path.to_path_buf(),
                file: top,
                format,
            }],
        )
    };
    let format = match &s.format {
        FileFmt::Default => return Ok(single("raw", top, Format::Raw)),
        FileFmt::Named(n) if n == "raw" => return Ok(single("raw", top, Format::Raw)),
        FileFmt::Named(n) if n == "qcow2" => Format::Qcow2,
        FileFmt::Named(n) if n == "vmdk" => Format::Vmdk,
        // Other formats: the kernel driver gets the file alone.
        FileFmt::Named(n) => return Ok(single(n, top, Format::Raw)),
        FileFmt::Auto => {
            chain::probe(&top).map_err(|e| format!("{}: {}", path.display(), strerror(&e)))?
        }
    };
    let layers = match format {
        Format::Qcow2 => {
            chain::resolve_chain(path, top, format, &mut SystemOpener).map_err(|e| e.to_string())?
        }
        Format::Vmdk => vmdk::resolve_extents(path, top, s.trust_paths, &mut SystemOpener)
            .map_err(|e| e.to_string())?,
        Format::Raw | Format::Vdi => return Ok(single(format.name(), top, format)),
    };
    Ok((format.name().to_string(), layers))
}

/// What `-L` found among the attached devices.
enum Overlap {
    /// No device uses the file's range.
    None,
    /// A device with the same file, format, offset and size limit.
    Reuse(PathBuf),
    /// A device that uses part of the range differently ("" or
    /// "read-only ", as util-linux names it).
    Clash(&'static str),
}

/// util-linux's overlap search (`loopcxt_find_overlap`): the devices on the
/// same file (st_dev and st_ino) whose ranges meet `s`'s. Unlike loop, the
/// same file read through two formats is a clash whatever the ranges (the
/// offsets are in different virtual disks). A device that would do but is
/// read-only where `s` wants to write cannot be reused.
fn find_overlap(
    attached: &[DeviceInfo],
    file: &fs::Metadata,
    s: &Setup,
    format: &str,
    read_only: bool,
) -> Overlap {
    for info in attached {
        if info.back_dev != Some(file.dev()) || info.back_ino != Some(file.ino()) {
            continue;
        }
        let (offset, limit) = (info.offset.unwrap_or(0), info.sizelimit.unwrap_or(0));
        let same_format = info.format.as_deref() == Some(format);
        if same_format && offset == s.offset && limit == s.sizelimit {
            if info.ro == Some(true) && !read_only {
                return Overlap::Clash("read-only ");
            }
            return Overlap::Reuse(info.path.clone());
        }
        let before = limit != 0 && s.offset >= offset.saturating_add(limit);
        let after = s.sizelimit != 0 && s.offset.saturating_add(s.sizelimit) <= offset;
        if !same_format || !(before || after) {
            return Overlap::Clash("");
        }
    }
    Overlap::None
}

fn detach(path: &Path) -> io::Result<()> {
    Device::open_best(path)?.clear()
}

/// Fills st_dev/st_ino of the image: from `LFF_GET_STATUS` when the node
/// can be opened, else from stat(2) of the backing file path.
fn with_backing_ids(mut info: DeviceInfo) -> DeviceInfo {
    if let Ok(st) = Device::open(&info.path, false).and_then(|d| d.status()) {
        info.back_dev = Some(st.device);
        info.back_ino = Some(st.inode);
    } else if let Some(m) = info
        .backing_file
        .as_ref()
        .and_then(|p| fs::metadata(p).ok())
    {
        info.back_dev = Some(m.dev());
        info.back_ino = Some(m.ino());
    }
    info
}

/// `-j FILE`: same st_dev/st_ino when both are known, else the same
/// (canonical) path.
fn uses_file(info: &DeviceInfo, file: &Path) -> bool {
    if let (Ok(m), Some(dev), Some(ino)) = (fs::metadata(file), info.back_dev, info.back_ino) {
        return m.dev() == dev && m.ino() == ino;
    }
    let canon = fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    info.backing_file.as_deref() == Some(canon.as_path())
        || info.backing_file.as_deref() == Some(file)
}

/// The `--help` text.
pub fn usage(prog: &str) -> String {
    let mut s = format!(
        "
Usage:
 {prog} [options] [<loopdev>]
 {prog} [options] -f | <loopdev> <file>
 {prog} map [--json] [--start <num>] [--length <num>] <loopdev>

Set up and control loop-file-fmt devices (/dev/lffN): loop devices whose
backing file is read through a file format driver (raw, qcow2, ...).

Options:
 -a, --all                     list all used devices
 -d, --detach <loopdev>...     detach one or more devices
 -D, --detach-all              detach all used devices
 -f, --find                    find first unused device
 -j, --associated <file>       list all devices associated with <file>
 -c, --set-capacity <loopdev>  re-read the image's size and resize the device
 -L, --nooverlap               reuse a device already set up for the same
                                 file and range; refuse one that overlaps it

 -o, --offset <num>            start at offset <num> into the virtual disk
     --sizelimit <num>         device is limited to <num> bytes
 -b, --sector-size <num>       set the logical sector size to <num>
 -P, --partscan                create a partitioned loop device
 -r, --read-only               set up a read-only loop device
     --direct-io[=<on|off>]    open backing file with O_DIRECT
     --show                    print device name after setup (with -f)
 -v, --verbose                 verbose mode (no effect)

     --file-fmt <format>       file format: raw (default), qcow2, auto
                                 (qcow2 if the file has the qcow2 magic),
                                 or any name a kernel driver provides
     --fmt-option <opt>        option for the format driver (repeatable)
     --snapshot <name>         attach qcow2 internal snapshot <name>
                                 (read-only; implies --file-fmt qcow2)
     --trust-image-paths       follow absolute extent names and names
                                 with '..' in a VMDK descriptor

 -J, --json                    use JSON --list output format
 -l, --list                    list info about all or specified (default)
 -n, --noheadings              don't print headings for --list output
 -O, --output <cols>           specify columns to output for --list
                                 (+<cols> adds to the default columns)
     --output-all              output all columns
     --raw                     use raw --list output format

 -h, --help                    display this help
 -V, --version                 display version

Arguments:
 <num> may be followed by the suffixes KiB (=1024), MiB, GiB, TiB, PiB,
 EiB, ZiB and YiB (the \"iB\" is optional), or KB (=1000), MB, GB, ...

Available output columns:
"
    );
    for c in Column::ALL {
        s.push_str(&format!(" {:>12}  {}\n", c.header(), c.help()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_ranges() {
        let file = fs::metadata(std::env::current_exe().unwrap()).unwrap();
        let on = |offset, sizelimit, format: &str, ro| DeviceInfo {
            path: "/dev/lff7".into(),
            format: Some(format.into()),
            offset: Some(offset),
            sizelimit: Some(sizelimit),
            ro: Some(ro),
            back_dev: Some(file.dev()),
            back_ino: Some(file.ino()),
            ..Default::default()
        };
        let want = |offset, sizelimit, read_only| {
            let Ok(Action::Setup(mut s)) = args::parse(&["-f".into(), "img".into()]) else {
                panic!("-f img is not a setup");
            };
            s.offset = offset;
            s.sizelimit = sizelimit;
            (s, read_only)
        };
        let kind = |devs: &[DeviceInfo], (s, ro): (Setup, bool), format: &str| match find_overlap(
            devs, &file, &s, format, ro,
        ) {
            Overlap::None => "none".to_string(),
            Overlap::Reuse(p) => format!("reuse {}", p.display()),
            Overlap::Clash(w) => format!("clash {w}"),
        };
        let mib = 1 << 20;
        // [1 MiB, 2 MiB) of the file as raw.
        let devs = [on(mib, mib, "raw", false)];
        assert_eq!(kind(&devs, want(mib, mib, false), "raw"), "reuse /dev/lff7");
        assert_eq!(kind(&devs, want(0, mib, false), "raw"), "none");
        assert_eq!(kind(&devs, want(2 * mib, 0, false), "raw"), "none");
        assert_eq!(kind(&devs, want(0, mib + 512, false), "raw"), "clash ");
        assert_eq!(kind(&devs, want(mib + 512, 512, false), "raw"), "clash ");
        assert_eq!(kind(&devs, want(0, 0, false), "raw"), "clash ");
        assert_eq!(kind(&devs, want(0, mib, false), "qcow2"), "clash ");
        // A read-only device is reused only by a read-only request.
        let devs = [on(0, 0, "qcow2", true)];
        assert_eq!(kind(&devs, want(0, 0, true), "qcow2"), "reuse /dev/lff7");
        assert_eq!(kind(&devs, want(0, 0, false), "qcow2"), "clash read-only ");
        // Another file is no concern.
        let mut other = on(0, 0, "raw", false);
        other.back_ino = Some(file.ino() + 1);
        assert_eq!(kind(&[other], want(0, 0, false), "raw"), "none");
    }

    #[test]
    fn program_names() {
        assert_eq!(program_name(None), "losetup-fmt");
        assert_eq!(program_name(Some(OsStr::new("/sbin/losetup"))), "losetup");
        assert_eq!(program_name(Some(OsStr::new("losetup-fmt"))), "losetup-fmt");
        assert_eq!(program_name(Some(OsStr::new(""))), "losetup-fmt");
    }

    #[test]
    fn read_only_fallback() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        fs::write(&p, [0u8; 512]).unwrap();
        let (_, ro) = open_image(&p, true).unwrap();
        assert!(!ro);
        let (_, ro) = open_image(&p, false).unwrap();
        assert!(ro);
        assert_eq!(
            open_image(&d.path().join("missing"), true)
                .unwrap_err()
                .raw_os_error(),
            Some(libc::ENOENT)
        );
    }

    #[test]
    fn usage_lists_every_column() {
        let u = usage("losetup");
        assert!(u.contains(" losetup [options] -f | <loopdev> <file>"));
        for c in Column::ALL {
            assert!(u.contains(c.header()));
        }
    }
}
