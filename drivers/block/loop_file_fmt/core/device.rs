// SPDX-License-Identifier: GPL-2.0

//! One `/dev/lffN`: configuration (`LFF_CONFIGURE`, `LFF_CLR_FD`,
//! `LFF_GET_STATUS`), the mapping query (`LFF_GET_MAP`), the request path
//! and the sysfs attributes.
//!
//! Like loop.c, configuration is one validating sequence
//! ([`Device::configure`]: check the arguments and files, attach the
//! format driver, set limits and size, then publish) with its mirror
//! ([`Device::teardown`]). `cfg` serialises them (the role of `lo_mutex`).
//! Requests read the current [`Attached`] from a [`QueueCell`] without a
//! lock: configuration replaces it with the queue frozen. sysfs reads a
//! copy under the `shown` spinlock (it cannot take `cfg`: removing the
//! group under `cfg` waits for sysfs readers).
//!
//! Lock order: the disk's `open_mutex` (held by the block layer around
//! `open`/`release`) → `cfg` → `shown`. Nothing takes `open_mutex` with
//! `cfg` held: as in loop.c, `LFF_CLR_FD` only marks the device for
//! teardown ("rundown"), which the last close does in `release`, where the
//! block layer holds `open_mutex`; and `configure` rescans partitions
//! after dropping `cfg`.

use crate::pr_err_ratelimited;
use crate::registry::{Core, CORE, PART_SHIFT};
use crate::wrappers::blk::{
    Attr, Disk, DiskOps, DiskParams, Group, Limits, Major, Op, OpenMutexHeld, QueueCell, Request,
};
use crate::wrappers::compat::{fmt, user_slice, CStrBytes};
use crate::wrappers::file::{File, FileKind, MappingNoIo};
use crate::wrappers::format::{Extent, Instance, SysfsBuf, MAX_LAYERS};
use crate::wrappers::{c_chars_as_bytes, capable_sys_admin, euclean, uapi};
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use kernel::prelude::*;
use kernel::str::{CStr, CString};
use kernel::sync::{new_mutex, new_spinlock, Arc, Mutex, SpinLock};

const SECTOR: u64 = 512;
const SETTABLE_FLAGS: u32 = uapi::LFF_FLAGS_READ_ONLY
    | uapi::LFF_FLAGS_DIRECT_IO
    | uapi::LFF_FLAGS_AUTOCLEAR
    | uapi::LFF_FLAGS_PARTSCAN;
/// Tags of a device's queue, as loop's default `hw_queue_depth`.
const QUEUE_DEPTH: u32 = 128;

// Block device operations of every `/dev/lffN`, owned by this module.
crate::block_fops!(FOPS, Device);

/// The core attributes of `/sys/block/lffN/loop_file_fmt/`.
const CORE_ATTRS: [&CStr; 8] = [
    kernel::c_str!("backing_file"),
    kernel::c_str!("format"),
    kernel::c_str!("offset"),
    kernel::c_str!("sizelimit"),
    kernel::c_str!("autoclear"),
    kernel::c_str!("partscan"),
    kernel::c_str!("dio"),
    kernel::c_str!("nr_layers"),
];

/// What a configured device serves: the format driver instance and the
/// configuration. Immutable once published, but for `size`, which
/// `LFF_SET_CAPACITY` changes with the queue frozen; dropped (detaching the
/// driver) when the last request or sysfs read using it is done.
struct Attached {
    inst: Instance,
    files: KVec<File>,
    /// Keep the files' page cache from recursing into I/O (one guard per
    /// file; released after the driver instance is dropped).
    _noio: KVec<MappingNoIo>,
    flags: u32,
    block_size: u32,
    offset: u64,
    sizelimit: u64,
    /// Bytes exposed by the device; see [`Attached::size`].
    size: AtomicU64,
    /// The driver answered a write with `EUCLEAN`; see
    /// [`Device::stop_writes`].
    writes_stopped: AtomicBool,
    /// Path of the image, for sysfs and `LFF_GET_STATUS`.
    path: KVec<u8>,
}

impl Attached {
    /// Bytes exposed by the device. Stored only under `cfg` with the queue
    /// frozen, so a request sees one value from start to end; relaxed,
    /// because freezing and unfreezing the queue order it against them.
    fn size(&self) -> u64 {
        self.size.load(Ordering::Relaxed)
    }

    /// Configured read-only, or the driver takes no more writes.
    fn read_only(&self) -> bool {
        self.flags & uapi::LFF_FLAGS_READ_ONLY != 0 || self.writes_stopped.load(Ordering::Relaxed)
    }
}

struct State {
    disk: Option<Arc<Disk<Device>>>,
    group: Option<KBox<Group>>,
    attached: Option<Arc<Attached>>,
    /// `LFF_CLR_FD` was called: the last close detaches, and no new open
    /// is allowed (loop's `Lo_rundown`).
    rundown: bool,
    deleting: bool,
}

/// One `/dev/lffN`.
#[pin_data]
pub(crate) struct Device {
    index: u32,
    name: CString,
    #[pin]
    cfg: Mutex<State>,
    /// What requests serve; replaced with the queue frozen.
    #[pin]
    queued: QueueCell<Option<Arc<Attached>>>,
    /// The same, for sysfs.
    #[pin]
    shown: SpinLock<Option<Arc<Attached>>>,
}

/// The bytes a device exposes of an image of `image` bytes: from `offset`
/// (at most `image`), at most `sizelimit` (0: no limit), whole blocks.
fn exposed_size(image: u64, offset: u64, sizelimit: u64, block_size: u32) -> u64 {
    let mut size = image.saturating_sub(offset);
    if sizelimit != 0 {
        size = size.min(sizelimit);
    }
    size - size % u64::from(block_size)
}

fn cstr_field(bytes: &[core::ffi::c_char]) -> Result<&CStr> {
    let b = c_chars_as_bytes(bytes);
    let len = b.iter().position(|&c| c == 0).ok_or(EINVAL)?;
    CStr::from_bytes_with_nul(&b[..=len]).map_err(|_| EINVAL)
}

fn copy_cstr(dst: &mut [core::ffi::c_char], src: &[u8]) {
    let n = src.len().min(dst.len().saturating_sub(1));
    for (d, &s) in dst.iter_mut().zip(&src[..n]) {
        *d = s as core::ffi::c_char;
    }
    if let Some(d) = dst.get_mut(n) {
        *d = 0;
    }
}

impl Device {
    pub(crate) fn new(index: u32, major: &Major) -> Result<Arc<Self>> {
        let name = CString::try_from_fmt(fmt!("lff{}", index))?;
        let dev = Arc::pin_init(
            pin_init!(Self {
                index,
                name,
                cfg <- new_mutex!(State {
                    disk: None,
                    group: None,
                    attached: None,
                    rundown: false,
                    deleting: false,
                }),
                queued <- QueueCell::new(None),
                shown <- new_spinlock!(None),
            }),
            GFP_KERNEL,
        )?;
        let params = DiskParams {
            name: &dev.name,
            major,
            first_minor: index << PART_SHIFT,
            minors: 1 << PART_SHIFT,
            queue_depth: QUEUE_DEPTH,
        };
        let disk = Disk::new(&params, &FOPS, dev.clone())?;
        dev.cfg.lock().disk = Some(Arc::new(disk, GFP_KERNEL)?);
        Ok(dev)
    }

    fn name(&self) -> &CStr {
        &self.name
    }

    pub(crate) fn index(&self) -> u32 {
        self.index
    }

    /// Whether the device can be given out by `LFF_CTL_GET_FREE`.
    pub(crate) fn is_free(&self) -> bool {
        let st = self.cfg.lock();
        !st.deleting && st.attached.is_none()
    }

    /// Marks the device as going away and hands out its disk, unless it is
    /// attached or open (`EBUSY`).
    pub(crate) fn start_removal(&self) -> Result<Arc<Disk<Device>>> {
        let mut st = self.cfg.lock();
        let disk = st.disk.as_ref().ok_or(ENODEV)?;
        if st.attached.is_some() || disk.openers() > 0 {
            return Err(EBUSY);
        }
        st.deleting = true;
        st.disk.take().ok_or(ENODEV)
    }

    fn core() -> Result<&'static Core> {
        CORE.get().ok_or(ENODEV)
    }

    /// `LFF_CONFIGURE`.
    fn configure(&self, arg: usize) -> Result {
        let cfg: uapi::lff_config = user_slice(arg, core::mem::size_of::<uapi::lff_config>())
            .reader()
            .read()?;
        let nr = cfg.nr_fds as usize;
        if nr == 0 || nr > MAX_LAYERS {
            pr_err_ratelimited!(
                "{}: configure: {} layers given, 1 to {} allowed\n",
                self.name(),
                nr,
                MAX_LAYERS
            );
            return Err(EINVAL);
        }
        if cfg.flags & !SETTABLE_FLAGS != 0 {
            pr_err_ratelimited!(
                "{}: configure: unknown flags {:#x}\n",
                self.name(),
                cfg.flags & !SETTABLE_FLAGS
            );
            return Err(EINVAL);
        }
        if cfg.__pad != 0 || cfg.__reserved.iter().any(|&r| r != 0) {
            pr_err_ratelimited!("{}: configure: reserved fields are not zero\n", self.name());
            return Err(EINVAL);
        }
        let block_size = match cfg.block_size {
            0 => 512,
            b if (512..=kernel::page::PAGE_SIZE as u32).contains(&b) && b.is_power_of_two() => b,
            b => {
                pr_err_ratelimited!(
                    "{}: configure: block size {} is not a power of two from 512 to {}\n",
                    self.name(),
                    b,
                    kernel::page::PAGE_SIZE
                );
                return Err(EINVAL);
            }
        };
        if cfg.offset % SECTOR != 0 || cfg.sizelimit % SECTOR != 0 {
            pr_err_ratelimited!(
                "{}: configure: offset {} and size limit {} must be multiples of 512\n",
                self.name(),
                cfg.offset,
                cfg.sizelimit
            );
            return Err(EINVAL);
        }
        let format = cstr_field(&cfg.format).inspect_err(|_| {
            pr_err_ratelimited!("{}: configure: format name not terminated\n", self.name());
        })?;
        let options = cstr_field(&cfg.options).inspect_err(|_| {
            pr_err_ratelimited!("{}: configure: options not terminated\n", self.name());
        })?;
        if format.is_empty()
            || !format
                .to_byte_slice()
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-')
        {
            pr_err_ratelimited!("{}: configure: invalid format name\n", self.name());
            return Err(EINVAL);
        }
        let core = Self::core()?;

        let mut files = KVec::with_capacity(nr, GFP_KERNEL)?;
        for (i, &fd) in cfg.fds[..nr].iter().enumerate() {
            let f = File::from_fd(fd).inspect_err(|_| {
                pr_err_ratelimited!("{}: configure: layer {}: bad fd {}\n", self.name(), i, fd);
            })?;
            match f.kind() {
                FileKind::Regular => {}
                FileKind::Block => {
                    // Stacking on our own devices could recurse into this
                    // queue: refuse it.
                    if f.rdev_major() == core.major.get() {
                        pr_err!("{}: layer {} is itself an lff device\n", self.name(), i);
                        return Err(EINVAL);
                    }
                }
                FileKind::Other => {
                    pr_err_ratelimited!(
                        "{}: configure: layer {} is not a regular file or block device\n",
                        self.name(),
                        i
                    );
                    return Err(EINVAL);
                }
            }
            files.push(f, GFP_KERNEL)?;
        }
        let mut flags = cfg.flags;
        if !files[0].is_writable() {
            flags |= uapi::LFF_FLAGS_READ_ONLY;
        }
        if flags & uapi::LFF_FLAGS_DIRECT_IO != 0 {
            let f = &files[0];
            if !f.is_direct_io() || !f.can_direct_io() || block_size < f.direct_io_alignment() {
                pr_err!(
                    "{}: direct I/O needs the image open with O_DIRECT and a block size >= {}\n",
                    self.name(),
                    f.direct_io_alignment()
                );
                return Err(EINVAL);
            }
        }

        // Serialise against other configuration of this device from here.
        let mut st = self.cfg.lock();
        if st.deleting {
            return Err(ENXIO);
        }
        if st.attached.is_some() {
            pr_err_ratelimited!("{}: configure: already attached\n", self.name());
            return Err(EBUSY);
        }
        let driver = core.get_driver(format).inspect_err(|_| {
            pr_err!(
                "{}: no driver for format '{}' (module loop-file-fmt-{})\n",
                self.name(),
                format,
                format
            );
        })?;
        let ro = flags & uapi::LFF_FLAGS_READ_ONLY != 0;
        let dio = flags & uapi::LFF_FLAGS_DIRECT_IO != 0;
        let (inst, out) = driver.attach(&files, options, &self.name, ro, dio)?;
        if out.force_read_only && !ro {
            pr_err!(
                "{}: format '{}' can only attach this image read-only\n",
                self.name(),
                format
            );
            return Err(EROFS);
        }
        if !ro && !inst.can_write() {
            pr_err!(
                "{}: format '{}' is read-only; attach with read-only\n",
                self.name(),
                format
            );
            return Err(EROFS);
        }
        if out.nr_files_used != nr {
            pr_err!(
                "{}: the image has {} layers but {} files were given\n",
                self.name(),
                out.nr_files_used,
                nr
            );
            return Err(EINVAL);
        }
        if cfg.offset >= out.size {
            pr_err!(
                "{}: offset {} is beyond the image size {}\n",
                self.name(),
                cfg.offset,
                out.size
            );
            return Err(EINVAL);
        }
        let size = exposed_size(out.size, cfg.offset, cfg.sizelimit, block_size);

        // As loop.c at configure: the backing files' page cache allocates
        // without I/O while the device serves requests.
        let mut noio = KVec::with_capacity(files.len(), GFP_KERNEL)?;
        for f in files.iter() {
            noio.push(MappingNoIo::new(&core.noio, f)?, GFP_KERNEL)?;
        }

        let mut pathbuf = KVec::from_elem(0u8, 4096, GFP_KERNEL)?;
        let mut path = KVec::new();
        path.extend_from_slice(files[0].path(&mut pathbuf).unwrap_or(b"?"), GFP_KERNEL)?;

        let att = Arc::new(
            Attached {
                inst,
                files,
                _noio: noio,
                flags,
                block_size,
                offset: cfg.offset,
                sizelimit: cfg.sizelimit,
                size: AtomicU64::new(size),
                writes_stopped: AtomicBool::new(false),
                path,
            },
            GFP_KERNEL,
        )?;
        let disk = st.disk.clone().ok_or(ENXIO)?;
        let max = u32::MAX >> 9;
        let limits = Limits {
            block_size,
            write_cache: !ro && att.inst.can_flush(),
            max_discard_sectors: if !ro && att.inst.can_discard() {
                max
            } else {
                0
            },
            max_write_zeroes_sectors: if !ro && att.inst.can_write_zeroes() {
                max
            } else {
                0
            },
        };
        let mut attrs = KVec::with_capacity(CORE_ATTRS.len() + 8, GFP_KERNEL)?;
        for name in CORE_ATTRS {
            attrs.push(
                Attr {
                    name,
                    writable: false,
                },
                GFP_KERNEL,
            )?;
        }
        for (i, name) in att.inst.attr_names().enumerate() {
            let writable = att.inst.attr_writable(i);
            attrs.push(Attr { name, writable }, GFP_KERNEL)?;
        }
        let partscan = flags & uapi::LFF_FLAGS_PARTSCAN != 0;
        {
            let frozen = disk.freeze();
            disk.set_limits(&limits)?;
            disk.set_read_only(ro);
            disk.set_partscan(partscan);
            self.queued.replace(&frozen, Some(att.clone()))?;
        }
        *self.shown.lock() = Some(att.clone());
        match disk.add_group(kernel::c_str!("loop_file_fmt"), &attrs) {
            Ok(g) => st.group = Some(g),
            Err(e) => {
                *self.shown.lock() = None;
                let frozen = disk.freeze();
                disk.set_partscan(false);
                drop(self.queued.replace(&frozen, None));
                return Err(e);
            }
        }
        disk.set_capacity(size / SECTOR);
        disk.uevent_change();
        st.attached = Some(att.clone());
        pr_info!(
            "{}: attached {} bytes, format {}{}\n",
            self.name(),
            size,
            format,
            if ro { ", read-only" } else { "" }
        );
        drop(st);
        if partscan {
            // Rescanning takes open_mutex, which the block layer holds
            // while `open` takes `cfg`: rescan with `cfg` released. A
            // concurrent `LFF_CLR_FD` only marks the device, so it is
            // still attached here (the caller's open keeps it so).
            if let Err(e) = disk.rescan() {
                pr_warn!("{}: partition scan failed: {:?}\n", self.name(), e);
            }
        }
        Ok(())
    }

    /// `LFF_CLR_FD`: marks the device for teardown at its last close
    /// (the caller's), unless someone else has it open (`EBUSY`). Like
    /// loop_clr_fd(), this takes no lock but `cfg`: tearing down here would
    /// take `open_mutex` to drop the partitions, against the order.
    fn clr_fd(&self) -> Result {
        let mut st = self.cfg.lock();
        if st.attached.is_none() || st.rundown {
            return Err(ENXIO);
        }
        let disk = st.disk.clone().ok_or(ENXIO)?;
        // The caller's own open is the one allowed.
        if disk.openers() > 1 {
            return Err(EBUSY);
        }
        st.rundown = true;
        Ok(())
    }

    /// Detaches: the mirror of `configure`. Only from `release`, where the
    /// block layer holds `open_mutex` and no one has the device open.
    fn teardown(&self, st: &mut State, held: &OpenMutexHeld) {
        let (Some(att), Some(disk)) = (st.attached.take(), st.disk.clone()) else {
            return;
        };
        st.rundown = false;
        let partscan = att.flags & uapi::LFF_FLAGS_PARTSCAN != 0;
        *self.shown.lock() = None;
        {
            let frozen = disk.freeze();
            // The cell only ever belongs to this disk.
            drop(self.queued.replace(&frozen, None));
        }
        if let Some(g) = st.group.take() {
            disk.remove_group(g);
        }
        disk.invalidate();
        disk.set_read_only(false);
        if partscan {
            // Capacity is 0 now: the rescan drops the partitions. Nothing
            // has them open (it would keep the disk open).
            if let Err(e) = disk.rescan_locked(held) {
                pr_warn!("{}: dropping partitions failed: {:?}\n", self.name(), e);
            }
            disk.set_partscan(false);
        }
        disk.uevent_change();
        drop(att);
        pr_info!("{}: detached\n", self.name());
    }

    fn status(&self, arg: usize) -> Result {
        let st = self.cfg.lock();
        let att = st.attached.as_ref().ok_or(ENXIO)?;
        let mut s = uapi::lff_status {
            index: self.index,
            flags: if att.read_only() {
                att.flags | uapi::LFF_FLAGS_READ_ONLY
            } else {
                att.flags
            },
            block_size: att.block_size,
            nr_layers: att.files.len() as u32,
            offset: att.offset,
            sizelimit: att.sizelimit,
            size: att.size(),
            device: 0,
            inode: 0,
            format: [0; 32],
            file_name: [0; 64],
            __reserved: [0; 8],
        };
        let (dev, ino, _) = att.files[0].ids();
        s.device = dev;
        s.inode = ino;
        copy_cstr(&mut s.format, att.inst.name().to_byte_slice());
        copy_cstr(&mut s.file_name, &att.path);
        drop(st);
        user_slice(arg, core::mem::size_of::<uapi::lff_status>())
            .writer()
            .write(&s)
    }

    /// `LFF_SET_CAPACITY`: reads the image's size again, as
    /// `LOOP_SET_CAPACITY` does after the backing file changed, and resizes
    /// the device (offset, size limit and block size applied as at
    /// configure; an offset past the new end leaves 0 bytes, like loop).
    fn set_capacity(&self) -> Result {
        let st = self.cfg.lock();
        let att = match &st.attached {
            Some(att) if !st.rundown => att.clone(),
            _ => return Err(ENXIO),
        };
        let disk = st.disk.clone().ok_or(ENXIO)?;
        let image = att.inst.size().inspect_err(|&e| {
            if e == crate::wrappers::eopnotsupp() {
                pr_err!(
                    "{}: set capacity: format '{}' keeps its size in the image header; detach and attach again to use a new size\n",
                    self.name(),
                    att.inst.name()
                );
            } else {
                pr_err!(
                    "{}: set capacity: format '{}' could not read the size: {:?}\n",
                    self.name(),
                    att.inst.name(),
                    e
                );
            }
        })?;
        let old = att.size();
        let size = exposed_size(image, att.offset, att.sizelimit, att.block_size);
        if size != old {
            {
                let _frozen = disk.freeze();
                att.size.store(size, Ordering::Relaxed);
            }
            disk.set_capacity(size / SECTOR);
            pr_info!("{}: capacity {} bytes (was {})\n", self.name(), size, old);
        }
        Ok(())
    }

    /// `LFF_GET_MAP`: the format driver's runs of the device, from a
    /// start offset, at most `nr_extents` of them.
    fn get_map(&self, arg: usize) -> Result {
        let (mut rd, mut wr) =
            user_slice(arg, core::mem::size_of::<uapi::lff_map>()).reader_writer();
        let mut m: uapi::lff_map = rd.read()?;
        let max = uapi::LFF_MAP_MAX_EXTENTS;
        if m.nr_extents == 0 || m.nr_extents > max {
            pr_err_ratelimited!(
                "{}: map: room for {} extents given, 1 to {} allowed\n",
                self.name(),
                m.nr_extents,
                max
            );
            return Err(EINVAL);
        }
        if m.flags != 0 || m.__reserved.iter().any(|&r| r != 0) {
            pr_err_ratelimited!(
                "{}: map: flags or reserved fields are not zero\n",
                self.name()
            );
            return Err(EINVAL);
        }
        // The request's own reference: detaching waits for nothing of
        // ours, and the instance lives until the last user drops it.
        let att = self.cfg.lock().attached.clone().ok_or(ENXIO)?;
        if !att.inst.can_map() {
            pr_err_ratelimited!(
                "{}: map: format '{}' does not report its mapping\n",
                self.name(),
                att.inst.name()
            );
            return Err(crate::wrappers::eopnotsupp());
        }
        let size = att.size();
        if m.start > size {
            pr_err_ratelimited!(
                "{}: map: start {} is beyond the device size {}\n",
                self.name(),
                m.start,
                size
            );
            return Err(EINVAL);
        }
        let rest = size - m.start;
        let len = if m.length == 0 {
            rest
        } else {
            m.length.min(rest)
        };
        let mut n = 0;
        if len > 0 {
            let zero = Extent {
                start: 0,
                length: 0,
                host_offset: 0,
                flags: 0,
                depth: 0,
            };
            let mut buf = KVec::from_elem(zero, m.nr_extents as usize, GFP_KERNEL)?;
            let pos = att.offset + m.start;
            n = att.inst.map(pos, len, &mut buf)?;
            // The driver's answer is checked before userspace sees it:
            // in order, no gaps, inside the range, covering it unless full.
            let mut next = pos;
            let end = pos + len;
            for e in buf[..n].iter_mut() {
                let Some(e_end) = e.start.checked_add(e.length) else {
                    return Err(self.bad_map(&att));
                };
                if e.start != next || e.length == 0 || e_end > end {
                    return Err(self.bad_map(&att));
                }
                next = e_end;
                e.start -= att.offset;
            }
            if n == 0 || (next != end && n < buf.len()) {
                return Err(self.bad_map(&att));
            }
            let mut out =
                user_slice(m.extents as usize, n * core::mem::size_of::<Extent>()).writer();
            for e in &buf[..n] {
                out.write(e)?;
            }
        }
        m.nr_extents = n as u32;
        wr.write(&m)
    }

    fn bad_map(&self, att: &Attached) -> kernel::error::Error {
        pr_err_ratelimited!(
            "{}: map: format '{}' returned extents out of order or range\n",
            self.name(),
            att.inst.name()
        );
        EIO
    }

    fn shown(&self) -> Option<Arc<Attached>> {
        self.shown.lock().clone()
    }

    /// Called when the driver answered a write-side request with
    /// `EUCLEAN`: it found the image's metadata inconsistent (qcow2: a
    /// write would have overlapped metadata; the image is now marked
    /// corrupt) and takes no more writes. The core then refuses every
    /// write-side request itself (`EROFS`) and marks the disk read-only, so
    /// nothing keeps writing into a damaged image. The request fails with
    /// `EIO`. Until the next attach. (A backing file system's
    /// `EFSCORRUPTED`, which is `EUCLEAN`, passed on by a driver, has the
    /// same effect, deliberately: the file system found corruption too.)
    fn stop_writes(&self, att: &Attached, rq: &Request<'_>) -> kernel::error::Error {
        if !att.writes_stopped.swap(true, Ordering::Relaxed) {
            pr_err!(
                "{}: format '{}' takes no more writes (image found inconsistent, EUCLEAN); the device is read-only now\n",
                self.name(),
                att.inst.name()
            );
            rq.set_disk_read_only();
        }
        EIO
    }

    fn serve(&self, att: &Attached, rq: &Request<'_>) -> Result {
        let r = self.serve_op(att, rq);
        match r {
            Err(e) if e == euclean() => Err(self.stop_writes(att, rq)),
            r => r,
        }
    }

    fn serve_op(&self, att: &Attached, rq: &Request<'_>) -> Result {
        let op = rq.op();
        // A flush carries no position.
        if op == Op::Flush {
            return att.inst.flush();
        }
        let pos = rq.pos();
        let len = u64::from(rq.len());
        // (Spelled so that 6.12's MSRV and 7.3's clippy both take it.)
        let Some(end) = pos.checked_add(len) else {
            return Err(EIO);
        };
        if end > att.size() {
            return Err(EIO);
        }
        let fpos = att.offset + pos;
        match op {
            Op::Read => rq.with_iter(|it| {
                let want = it.count();
                let n = att.inst.read(it, fpos)?;
                if n != want {
                    return Err(EIO);
                }
                Ok(())
            }),
            Op::Write => {
                if att.read_only() {
                    return Err(EROFS);
                }
                rq.with_iter(|it| {
                    let want = it.count();
                    if att.inst.write(it, fpos)? != want {
                        return Err(EIO);
                    }
                    Ok(())
                })?;
                if rq.fua() {
                    att.inst.flush()?;
                }
                Ok(())
            }
            Op::Discard if !att.read_only() => att.inst.discard(fpos, len),
            Op::WriteZeroes if !att.read_only() => att.inst.write_zeroes(fpos, len, !rq.no_unmap()),
            _ => Err(crate::wrappers::eopnotsupp()),
        }
    }
}

impl DiskOps for Device {
    fn queue_rq(&self, rq: &Request<'_>) -> Result {
        let att = self.queued.get(rq).and_then(Option::as_ref).ok_or(EIO)?;
        self.serve(att, rq)
    }

    fn open(&self) -> Result {
        let st = self.cfg.lock();
        if st.deleting || st.rundown {
            return Err(ENXIO);
        }
        Ok(())
    }

    fn release(&self, openers: u32, held: &OpenMutexHeld) {
        if openers > 0 {
            return;
        }
        let mut st = self.cfg.lock();
        let autoclear = st
            .attached
            .as_ref()
            .is_some_and(|a| a.flags & uapi::LFF_FLAGS_AUTOCLEAR != 0);
        if st.rundown || autoclear {
            self.teardown(&mut st, held);
        }
    }

    fn ioctl(&self, cmd: u32, arg: usize) -> Result<i32> {
        match cmd {
            uapi::LFF_NR_CONFIGURE => {
                if !capable_sys_admin() {
                    return Err(EPERM);
                }
                self.configure(arg)?;
                Ok(0)
            }
            uapi::LFF_NR_CLR_FD => {
                if !capable_sys_admin() {
                    return Err(EPERM);
                }
                self.clr_fd()?;
                Ok(0)
            }
            uapi::LFF_NR_GET_STATUS => {
                self.status(arg)?;
                Ok(0)
            }
            uapi::LFF_NR_GET_MAP => {
                self.get_map(arg)?;
                Ok(0)
            }
            uapi::LFF_NR_SET_CAPACITY => {
                if !capable_sys_admin() {
                    return Err(EPERM);
                }
                self.set_capacity()?;
                Ok(0)
            }
            _ => Err(ENOTTY),
        }
    }

    fn sysfs_show(&self, name: &CStr, buf: &mut SysfsBuf<'_>) -> Result {
        let att = self.shown().ok_or(ENXIO)?;
        let b = |v: bool| u32::from(v);
        let r = match name.to_byte_slice() {
            b"backing_file" => {
                for &c in att.path.iter() {
                    buf.write_char(c as char).map_err(|_| EINVAL)?;
                }
                writeln!(buf)
            }
            b"format" => buf.write_fmt(fmt!("{}\n", att.inst.name())),
            b"offset" => writeln!(buf, "{}", att.offset),
            b"sizelimit" => writeln!(buf, "{}", att.sizelimit),
            b"autoclear" => writeln!(buf, "{}", b(att.flags & uapi::LFF_FLAGS_AUTOCLEAR != 0)),
            b"partscan" => writeln!(buf, "{}", b(att.flags & uapi::LFF_FLAGS_PARTSCAN != 0)),
            b"dio" => writeln!(buf, "{}", b(att.flags & uapi::LFF_FLAGS_DIRECT_IO != 0)),
            b"nr_layers" => writeln!(buf, "{}", att.files.len()),
            _ => {
                let i = att
                    .inst
                    .attr_names()
                    .position(|n| n.to_byte_slice() == name.to_byte_slice())
                    .ok_or(EIO)?;
                return att.inst.show_attr(i, buf);
            }
        };
        r.map_err(|_| EINVAL)
    }

    fn sysfs_store(&self, name: &CStr, input: &[u8]) -> Result {
        if !capable_sys_admin() {
            return Err(EPERM);
        }
        let att = self.shown().ok_or(ENXIO)?;
        let i = att
            .inst
            .attr_names()
            .position(|n| n.to_byte_slice() == name.to_byte_slice())
            .ok_or(EACCES)?;
        att.inst.store_attr(i, input)
    }
}
