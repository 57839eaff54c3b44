// SPDX-License-Identifier: GPL-2.0

//! The format driver interface of `include/linux/loop_file_fmt.h`, from both
//! sides:
//!
//! - for format driver modules, the safe [`FormatDriver`] trait and its
//!   [`Registration`], which builds the C ops table from the trait;
//! - for the core, [`DriverRef`] (a registered driver, pinned while used)
//!   and [`Instance`] (a driver attached to a device), which call the ops.
//!
//! The `#[repr(C)]` types mirror the header; `core/lff_helpers.c` checks the
//! same sizes on the C side.

use super::compat::CStrBytes;
use super::file::File;
use super::iov::IovIter;
use super::uapi;
use core::marker::PhantomData;
use kernel::bindings;
use kernel::error::{from_result, to_result, Error, Result};
use kernel::ffi::{c_char, c_int, c_uint, c_void};
use kernel::prelude::*;
use kernel::str::CStr;
use kernel::ThisModule;

/// Maximum number of layers (image plus backing chain), as in the UAPI.
pub const MAX_LAYERS: usize = 16;
/// `LFF_FORMAT_NAME_SIZE`: a format name's bytes including the NUL.
const NAME_SIZE: usize = 32;
/// Maximum number of driver-specific sysfs attributes.
pub const MAX_ATTRS: usize = 8;

/// `struct lff_attach_info`.
#[repr(C)]
pub struct RawAttachInfo {
    /// The layers' files.
    pub files: *const *mut bindings::file,
    /// Number of layers.
    pub nr_files: c_uint,
    /// NUL-terminated driver options.
    pub options: *const c_char,
    /// NUL-terminated device name.
    pub disk_name: *const c_char,
    /// The device is read-only.
    pub read_only: bool,
    /// Direct I/O was requested.
    pub direct_io: bool,
    /// Out: virtual size in bytes.
    pub size: u64,
    /// Out: the driver can only read this image.
    pub force_read_only: bool,
    /// Out: number of layers the image uses.
    pub nr_files_used: c_uint,
}

/// `struct lff_format_attr`.
#[repr(C)]
pub struct RawAttr {
    /// Attribute name.
    pub name: *const c_char,
    /// Show callback.
    pub show: Option<unsafe extern "C" fn(*mut c_void, *mut c_char) -> isize>,
    /// Store callback.
    pub store: Option<unsafe extern "C" fn(*mut c_void, *const c_char, usize) -> isize>,
}

/// `struct lff_format_ops`.
#[repr(C)]
pub struct RawOps {
    /// See the C header.
    pub attach: Option<unsafe extern "C" fn(*mut RawAttachInfo, *mut *mut c_void) -> c_int>,
    /// See the C header.
    pub detach: Option<unsafe extern "C" fn(*mut c_void)>,
    /// See the C header.
    pub read_iter: Option<unsafe extern "C" fn(*mut c_void, *mut bindings::iov_iter, i64) -> isize>,
    /// See the C header.
    pub write_iter:
        Option<unsafe extern "C" fn(*mut c_void, *mut bindings::iov_iter, i64) -> isize>,
    /// See the C header.
    pub flush: Option<unsafe extern "C" fn(*mut c_void) -> c_int>,
    /// See the C header.
    pub discard: Option<unsafe extern "C" fn(*mut c_void, i64, u64) -> c_int>,
    /// See the C header.
    pub write_zeroes: Option<unsafe extern "C" fn(*mut c_void, i64, u64, bool) -> c_int>,
    /// Driver-specific sysfs attributes.
    pub attrs: *const RawAttr,
    /// Number of entries in `attrs`.
    pub nr_attrs: c_uint,
    /// See the C header.
    pub map: Option<unsafe extern "C" fn(*mut c_void, u64, u64, *mut Extent, c_uint) -> c_int>,
    /// See the C header.
    pub size: Option<unsafe extern "C" fn(*mut c_void, *mut u64) -> c_int>,
}

/// `LFF_FORMAT_ABI_VERSION`: the version of the interface this file mirrors
/// (from the C header, through the generated bindings).
pub const ABI_VERSION: u32 = super::sys::LFF_FORMAT_ABI_VERSION;

/// `struct lff_format_driver`.
#[repr(C)]
pub struct RawDriver {
    /// `LFF_FORMAT_ABI_VERSION` the driver was built against.
    pub abi_version: u32,
    /// `sizeof(struct lff_format_driver)` as the driver sees it.
    pub struct_size: u32,
    /// Format name.
    pub name: *const c_char,
    /// Owning module.
    pub owner: *mut bindings::module,
    /// Operations.
    pub ops: *const RawOps,
}

const _: () = assert!(core::mem::size_of::<RawAttachInfo>() == 56);
const _: () = assert!(core::mem::size_of::<RawAttr>() == 24);
const _: () = assert!(core::mem::size_of::<RawOps>() == 88);
const _: () = assert!(core::mem::size_of::<RawDriver>() == 32);
const _: () = assert!(core::mem::offset_of!(RawDriver, name) == 8);

// `RawDriver` points to `struct module`, which holds structs that are empty
// in some configurations; it is only passed by pointer.
#[allow(improper_ctypes)]
extern "C" {
    fn lff_register_format(drv: *const RawDriver) -> c_int;
    fn lff_unregister_format(drv: *const RawDriver);
}

// ---------------------------------------------------------------------------
// Driver side
// ---------------------------------------------------------------------------

/// What a driver learns when a device is configured with its format.
pub struct AttachRequest<'a> {
    raw: &'a RawAttachInfo,
}

impl<'a> AttachRequest<'a> {
    /// Number of layers userspace passed (the image and its backing chain).
    pub fn nr_files(&self) -> usize {
        self.raw.nr_files as usize
    }

    /// A new reference to layer `i` (0 is the image).
    pub fn file(&self, i: usize) -> Result<File> {
        if i >= self.nr_files() {
            return Err(EINVAL);
        }
        // SAFETY: the core passes `nr_files` valid file pointers on which it
        // holds references for the duration of the attach call.
        unsafe { File::from_borrowed(*self.raw.files.add(i)) }
    }

    /// Driver options, e.g. `snapshot=NAME` (empty if none).
    pub fn options(&self) -> &'a CStr {
        // SAFETY: the core passes a NUL-terminated string that lives for the
        // attach call.
        unsafe { CStr::from_char_ptr(self.raw.options) }
    }

    /// The device name, for log messages.
    pub fn disk_name(&self) -> &'a CStr {
        // SAFETY: as for `options`.
        unsafe { CStr::from_char_ptr(self.raw.disk_name) }
    }

    /// Whether the device will be read-only.
    pub fn read_only(&self) -> bool {
        self.raw.read_only
    }

    /// Whether direct I/O was requested.
    pub fn direct_io(&self) -> bool {
        self.raw.direct_io
    }
}

/// What a driver answers to a successful attach.
pub struct Attached<T> {
    /// The per-device state.
    pub state: KBox<T>,
    /// Virtual size of the image in bytes.
    pub size: u64,
    /// The driver can only serve reads for this image.
    pub force_read_only: bool,
    /// Number of layers the image uses.
    pub nr_files_used: usize,
}

/// A buffer of one page for a sysfs `show`.
pub struct SysfsBuf<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> SysfsBuf<'a> {
    /// An empty buffer over `buf` (a sysfs page).
    pub fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, len: 0 }
    }

    /// The bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl core::fmt::Write for SysfsBuf<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.len.checked_add(s.len()).ok_or(core::fmt::Error)?;
        let dst = self.buf.get_mut(self.len..end).ok_or(core::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// `struct lff_extent` of the UAPI: one run of the virtual disk.
pub type Extent = uapi::lff_extent;

/// What a run of the virtual disk is, for [`Extents::push`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ExtentKind {
    /// `LFF_EXTENT_*` flags.
    pub flags: u32,
    /// The layer that answers for the run (0: the image).
    pub depth: u32,
    /// Host offset of the first byte in layer `depth`'s file, if any.
    pub host_offset: Option<u64>,
}

/// The runs a driver's [`FormatDriver::map`] reports, merged as they are
/// added: a run continuing the last one (same flags and layer, contiguous
/// host offsets) extends it.
pub struct Extents<'a> {
    buf: &'a mut [Extent],
    len: usize,
}

impl<'a> Extents<'a> {
    /// An empty list over `buf`.
    pub fn new(buf: &'a mut [Extent]) -> Self {
        Self { buf, len: 0 }
    }

    /// The runs filled so far.
    pub fn as_slice(&self) -> &[Extent] {
        &self.buf[..self.len]
    }

    /// Number of runs filled so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no run was added.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `len` bytes at image offset `start` of kind `kind`. Returns
    /// `false`, adding nothing, when the run would need a new entry and
    /// the list is full: the caller stops there.
    pub fn push(&mut self, start: u64, len: u64, kind: ExtentKind) -> bool {
        let flags = if kind.host_offset.is_some() {
            kind.flags | uapi::LFF_EXTENT_HOST_OFFSET
        } else {
            kind.flags & !uapi::LFF_EXTENT_HOST_OFFSET
        };
        let host = kind.host_offset.unwrap_or(0);
        if let Some(last) = self.len.checked_sub(1).and_then(|i| self.buf.get_mut(i)) {
            let follows = last.start.checked_add(last.length) == Some(start);
            let host_follows = flags & uapi::LFF_EXTENT_HOST_OFFSET == 0
                || last.host_offset.checked_add(last.length) == Some(host);
            if follows && last.flags == flags && last.depth == kind.depth && host_follows {
                last.length += len;
                return true;
            }
        }
        let Some(e) = self.buf.get_mut(self.len) else {
            return false;
        };
        *e = Extent {
            start,
            length: len,
            host_offset: host,
            flags,
            depth: kind.depth,
        };
        self.len += 1;
        true
    }
}

/// A file-format driver: the per-device state of one format.
///
/// Every method may sleep; the I/O methods are called concurrently.
#[vtable]
pub trait FormatDriver: Sized + Send + Sync + 'static {
    /// The format name userspace uses (`raw`, `qcow2`).
    const NAME: &'static CStr;

    /// Names of the driver-specific sysfs attributes (at most
    /// [`MAX_ATTRS`]); see [`FormatDriver::show_attr`].
    const ATTRS: &'static [&'static CStr] = &[];

    /// Validates the image and sets up the state of one device.
    fn attach(req: &AttachRequest<'_>) -> Result<Attached<Self>>;

    /// Fills `to` with the virtual disk's bytes at `pos`; returns the
    /// number of bytes read.
    fn read(&self, to: &mut IovIter<'_>, pos: u64) -> Result<usize>;

    /// Writes `from` at `pos`; returns the number of bytes written.
    ///
    /// [`euclean`](super::euclean) from this or any other I/O method:
    /// the image's metadata is inconsistent and the driver takes no more
    /// writes; the core fails the request with `EIO` and makes the device
    /// read-only.
    fn write(&self, _from: &mut IovIter<'_>, _pos: u64) -> Result<usize> {
        kernel::build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// Makes completed writes durable.
    fn flush(&self) -> Result {
        kernel::build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// Deallocates a range.
    fn discard(&self, _pos: u64, _len: u64) -> Result {
        kernel::build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// Makes a range read as zeros.
    fn write_zeroes(&self, _pos: u64, _len: u64, _may_unmap: bool) -> Result {
        kernel::build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// Writes the value of attribute `ATTRS[index]` and a newline.
    fn show_attr(&self, _index: usize, _buf: &mut SysfsBuf<'_>) -> Result {
        Err(EINVAL)
    }

    /// Parses a new value for attribute `ATTRS[index]`.
    fn store_attr(&self, _index: usize, _input: &[u8]) -> Result {
        Err(EACCES)
    }

    /// Describes `len` (> 0) bytes of the virtual disk from `pos` into
    /// `out` ([`Extents::push`], image offsets, in order, no gaps), until
    /// the range is covered or `out` is full (`LFF_GET_MAP`).
    fn map(&self, _pos: u64, _len: u64, _out: &mut Extents<'_>) -> Result {
        kernel::build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// The image's virtual size as it is now (`LFF_SET_CAPACITY`); only
    /// for formats whose size can change under an attached device, such
    /// as raw, whose size is the file's.
    fn size(&self) -> Result<u64> {
        kernel::build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }
}

/// Builds the C ops table of a [`FormatDriver`].
struct VTable<T: FormatDriver>(PhantomData<T>);

impl<T: FormatDriver> VTable<T> {
    /// # Safety
    ///
    /// `info` and `out` must be valid pointers (the core's contract).
    unsafe extern "C" fn attach(info: *mut RawAttachInfo, out: *mut *mut c_void) -> c_int {
        // SAFETY: the core passes a valid, exclusive `info`.
        let info = unsafe { &mut *info };
        from_result(|| {
            let a = T::attach(&AttachRequest { raw: info })?;
            info.size = a.size;
            info.force_read_only = a.force_read_only;
            info.nr_files_used = a.nr_files_used.try_into().map_err(|_| EINVAL)?;
            // SAFETY: `out` is valid for writes (the core's contract).
            unsafe { *out = KBox::into_raw(a.state).cast() };
            Ok(0)
        })
    }

    /// # Safety
    ///
    /// `p` must come from `attach` and not be used afterwards.
    unsafe extern "C" fn detach(p: *mut c_void) {
        // SAFETY: `p` came from `KBox::into_raw` in `attach`; the core calls
        // detach once, after all I/O.
        drop(unsafe { KBox::from_raw(p.cast::<T>()) });
    }

    /// # Safety
    ///
    /// `p` must come from `attach`; `iter` must be valid for the call.
    unsafe fn state<'a>(p: *mut c_void) -> &'a T {
        // SAFETY: `p` came from `attach` and lives until `detach`, which the
        // core never runs concurrently with another op.
        unsafe { &*p.cast::<T>() }
    }

    /// # Safety
    ///
    /// Only called by the core, through the C vtable, with the pointers
    /// its contract makes valid for the call.
    unsafe extern "C" fn read_iter(
        p: *mut c_void,
        iter: *mut bindings::iov_iter,
        pos: i64,
    ) -> isize {
        // SAFETY: the core passes a live state and a valid iterator over
        // the request's pages for the duration of the call.
        let (s, mut it) = unsafe { (Self::state(p), IovIter::from_raw(iter)) };
        let pos = pos as u64;
        match s.read(&mut it, pos) {
            Ok(n) => n as isize,
            Err(e) => e.to_errno() as isize,
        }
    }

    /// # Safety
    ///
    /// Only called by the core, through the C vtable, with the pointers
    /// its contract makes valid for the call.
    unsafe extern "C" fn write_iter(
        p: *mut c_void,
        iter: *mut bindings::iov_iter,
        pos: i64,
    ) -> isize {
        // SAFETY: as in `read_iter`.
        let (s, mut it) = unsafe { (Self::state(p), IovIter::from_raw(iter)) };
        match s.write(&mut it, pos as u64) {
            Ok(n) => n as isize,
            Err(e) => e.to_errno() as isize,
        }
    }

    /// # Safety
    ///
    /// Only called by the core, through the C vtable, with the pointers
    /// its contract makes valid for the call.
    unsafe extern "C" fn flush(p: *mut c_void) -> c_int {
        // SAFETY: the core passes a live state.
        let s = unsafe { Self::state(p) };
        from_result(|| s.flush().map(|()| 0))
    }

    /// # Safety
    ///
    /// Only called by the core, through the C vtable, with the pointers
    /// its contract makes valid for the call.
    unsafe extern "C" fn discard(p: *mut c_void, pos: i64, len: u64) -> c_int {
        // SAFETY: the core passes a live state.
        let s = unsafe { Self::state(p) };
        from_result(|| s.discard(pos as u64, len).map(|()| 0))
    }

    /// # Safety
    ///
    /// Only called by the core, through the C vtable, with the pointers
    /// its contract makes valid for the call.
    unsafe extern "C" fn write_zeroes(p: *mut c_void, pos: i64, len: u64, unmap: bool) -> c_int {
        // SAFETY: the core passes a live state.
        let s = unsafe { Self::state(p) };
        from_result(|| s.write_zeroes(pos as u64, len, unmap).map(|()| 0))
    }

    /// # Safety
    ///
    /// Only called by the core, through the C vtable, with the pointers
    /// its contract makes valid for the call.
    unsafe extern "C" fn show<const I: usize>(p: *mut c_void, buf: *mut c_char) -> isize {
        // SAFETY: the core passes a live state and a sysfs buffer of one
        // page, exclusively ours for the call.
        let (s, page) = unsafe {
            (
                Self::state(p),
                core::slice::from_raw_parts_mut(buf.cast::<u8>(), kernel::page::PAGE_SIZE),
            )
        };
        let mut out = SysfsBuf { buf: page, len: 0 };
        match s.show_attr(I, &mut out) {
            Ok(()) => out.len as isize,
            Err(e) => e.to_errno() as isize,
        }
    }

    /// # Safety
    ///
    /// Only called by the core, through the C vtable, with the pointers
    /// its contract makes valid for the call.
    unsafe extern "C" fn store<const I: usize>(
        p: *mut c_void,
        buf: *const c_char,
        len: usize,
    ) -> isize {
        // SAFETY: the core passes a live state and `len` readable bytes.
        let (s, input) = unsafe {
            (
                Self::state(p),
                core::slice::from_raw_parts(buf.cast::<u8>(), len),
            )
        };
        match s.store_attr(I, input) {
            Ok(()) => len as isize,
            Err(e) => e.to_errno() as isize,
        }
    }

    /// # Safety
    ///
    /// Only called by the core, through the C vtable, with the pointers
    /// its contract makes valid for the call.
    unsafe extern "C" fn map(
        p: *mut c_void,
        pos: u64,
        len: u64,
        ext: *mut Extent,
        nr: c_uint,
    ) -> c_int {
        if ext.is_null() || nr == 0 {
            return EINVAL.to_errno();
        }
        // SAFETY: the core passes a live state and `nr` writable extents,
        // exclusively ours for the call.
        let (s, buf) = unsafe {
            (
                Self::state(p),
                core::slice::from_raw_parts_mut(ext, nr as usize),
            )
        };
        let mut out = Extents::new(buf);
        from_result(|| {
            s.map(pos, len, &mut out)?;
            Ok(out.len() as c_int)
        })
    }

    /// # Safety
    ///
    /// Only called by the core, through the C vtable, with a live state
    /// and `size` writable for the call.
    unsafe extern "C" fn size(p: *mut c_void, size: *mut u64) -> c_int {
        // SAFETY: the core passes a live state.
        let s = unsafe { Self::state(p) };
        from_result(|| {
            let n = s.size()?;
            // SAFETY: by the caller's contract, `size` is writable.
            unsafe { size.write(n) };
            Ok(0)
        })
    }

    const fn attr<const I: usize>() -> RawAttr {
        if I < T::ATTRS.len() {
            RawAttr {
                name: super::compat::char_ptr(T::ATTRS[I]),
                show: Some(Self::show::<I>),
                store: Some(Self::store::<I>),
            }
        } else {
            RawAttr {
                name: core::ptr::null(),
                show: None,
                store: None,
            }
        }
    }

    const ATTRS: [RawAttr; MAX_ATTRS] = [
        Self::attr::<0>(),
        Self::attr::<1>(),
        Self::attr::<2>(),
        Self::attr::<3>(),
        Self::attr::<4>(),
        Self::attr::<5>(),
        Self::attr::<6>(),
        Self::attr::<7>(),
    ];

    const OPS: RawOps = {
        assert!(T::ATTRS.len() <= MAX_ATTRS);
        RawOps {
            attach: Some(Self::attach),
            detach: Some(Self::detach),
            read_iter: Some(Self::read_iter),
            write_iter: if T::HAS_WRITE {
                Some(Self::write_iter)
            } else {
                None
            },
            flush: if T::HAS_FLUSH {
                Some(Self::flush)
            } else {
                None
            },
            discard: if T::HAS_DISCARD {
                Some(Self::discard)
            } else {
                None
            },
            write_zeroes: if T::HAS_WRITE_ZEROES {
                Some(Self::write_zeroes)
            } else {
                None
            },
            attrs: core::ptr::from_ref(&Self::ATTRS).cast::<RawAttr>(),
            nr_attrs: T::ATTRS.len() as c_uint,
            map: if T::HAS_MAP { Some(Self::map) } else { None },
            size: if T::HAS_SIZE { Some(Self::size) } else { None },
        }
    };

    const fn ops() -> &'static RawOps {
        &Self::OPS
    }
}

/// A registered format driver; unregistered when dropped.
pub struct Registration<T: FormatDriver> {
    drv: KBox<RawDriver>,
    _p: PhantomData<T>,
}

// SAFETY: the registration only holds pointers to 'static data and the
// module; registering and unregistering may happen on any thread.
unsafe impl<T: FormatDriver> Send for Registration<T> {}
// SAFETY: no method takes `&self`.
unsafe impl<T: FormatDriver> Sync for Registration<T> {}

impl<T: FormatDriver> Registration<T> {
    /// Registers `T` with the core.
    pub fn new(module: &'static ThisModule) -> Result<Self> {
        let drv = KBox::new(
            RawDriver {
                abi_version: ABI_VERSION,
                struct_size: core::mem::size_of::<RawDriver>() as u32,
                name: T::NAME.as_char_ptr(),
                owner: module.as_ptr(),
                ops: VTable::<T>::ops(),
            },
            GFP_KERNEL,
        )?;
        // SAFETY: `drv` is a valid driver description that stays at the same
        // address (boxed) until `drop` unregisters it.
        to_result(unsafe { lff_register_format(&*drv) })?;
        Ok(Self {
            drv,
            _p: PhantomData,
        })
    }
}

impl<T: FormatDriver> Drop for Registration<T> {
    fn drop(&mut self) {
        // SAFETY: `drv` was registered in `new`.
        unsafe { lff_unregister_format(&*self.drv) };
    }
}

// ---------------------------------------------------------------------------
// Core side
// ---------------------------------------------------------------------------

/// A registered driver as the core's registry keeps it.
///
/// # Invariants
///
/// `raw` points to a `RawDriver` that stays valid while it is registered,
/// with a NUL-terminated `name` and a valid `ops` table whose `attach`,
/// `detach` and `read_iter` are set.
#[derive(Clone, Copy)]
pub struct DriverRef {
    raw: *const RawDriver,
}

// SAFETY: a `RawDriver` is immutable and 'static for as long as it is
// registered; the registry is protected by a mutex.
unsafe impl Send for DriverRef {}

impl DriverRef {
    /// Validates a driver passed to `lff_register_format`.
    ///
    /// # Safety
    ///
    /// `raw` must be NULL or point to a `RawDriver` that stays valid (with
    /// everything it points to) until it is unregistered.
    pub unsafe fn new(raw: *const RawDriver) -> Result<Self> {
        if raw.is_null() {
            return Err(EINVAL);
        }
        // SAFETY: non-NULL and valid by the caller's guarantee.
        let d = unsafe { &*raw };
        let size = core::mem::size_of::<RawDriver>();
        if d.abi_version != ABI_VERSION || d.struct_size as usize != size {
            // Only the first three fields are common to every version.
            let mut name = [0u8; NAME_SIZE];
            let mut len = 0;
            while !d.name.is_null() && len < NAME_SIZE - 1 {
                // SAFETY: `name` is NUL-terminated by the C API contract of
                // every version, and `len` is not past its NUL.
                let b = unsafe { *d.name.cast::<u8>().add(len) };
                if b == 0 {
                    break;
                }
                name[len] = b;
                len += 1;
            }
            pr_err!(
                "format driver '{}' is built for driver ABI version {} (struct size {}), this core has version {} (size {}); rebuild it against this core\n",
                kernel::str::BStr::from_bytes(&name[..len]),
                d.abi_version,
                d.struct_size,
                ABI_VERSION,
                size
            );
            return Err(ENOEXEC);
        }
        if d.name.is_null() || d.ops.is_null() {
            return Err(EINVAL);
        }
        // SAFETY: non-NULL `ops` is valid by the caller's guarantee.
        let ops = unsafe { &*d.ops };
        if ops.attach.is_none() || ops.detach.is_none() || ops.read_iter.is_none() {
            return Err(EINVAL);
        }
        if ops.nr_attrs > 0 && ops.attrs.is_null() {
            return Err(EINVAL);
        }
        // SAFETY: `name` is a NUL-terminated string by the C API contract.
        let name = unsafe { CStr::from_char_ptr(d.name) };
        if name.is_empty() || name.to_byte_slice().len() >= NAME_SIZE {
            return Err(EINVAL);
        }
        Ok(Self { raw })
    }

    fn raw(&self) -> &RawDriver {
        // SAFETY: valid while registered, by the type invariant; the core
        // uses a `DriverRef` only while it is registered or pinned.
        unsafe { &*self.raw }
    }

    /// The format name.
    pub fn name(&self) -> &CStr {
        // SAFETY: NUL-terminated by the type invariant.
        unsafe { CStr::from_char_ptr(self.raw().name) }
    }

    /// Whether this is the registration at `raw`.
    pub fn is(&self, raw: *const RawDriver) -> bool {
        core::ptr::eq(self.raw, raw)
    }

    /// Pins the driver's module so its code and data stay while a
    /// device uses it. Fails once the module is being unloaded.
    pub fn pin(&self) -> Result<PinnedDriver> {
        let raw = self.raw();
        // SAFETY: `owner` is THIS_MODULE of a live (registered) driver.
        if unsafe { bindings::try_module_get(raw.owner) } {
            // Copy the description: the registration itself may go away
            // while the module is pinned (a driver may unregister before
            // its module exits); what it points to lives in the module.
            Ok(PinnedDriver {
                name: raw.name,
                owner: raw.owner,
                ops: raw.ops,
            })
        } else {
            Err(ENODEV)
        }
    }
}

/// A driver whose module is pinned (`try_module_get`) until dropped.
///
/// # Invariants
///
/// `owner` holds a reference taken by [`DriverRef::pin`]; `name` and `ops`
/// are the registration's pointers (NUL-terminated name, valid ops table
/// with `attach`, `detach` and `read_iter` set), which point into the
/// pinned module and so stay valid while `self` lives, even after the
/// registration is withdrawn.
pub struct PinnedDriver {
    name: *const c_char,
    owner: *mut bindings::module,
    ops: *const RawOps,
}

// SAFETY: the pointers are to immutable module data and the module
// reference may be dropped from any thread.
unsafe impl Send for PinnedDriver {}

impl PinnedDriver {
    /// The format name.
    pub fn name(&self) -> &CStr {
        // SAFETY: NUL-terminated and valid while pinned (type invariant).
        unsafe { CStr::from_char_ptr(self.name) }
    }

    fn ops(&self) -> &RawOps {
        // SAFETY: valid while pinned (type invariant).
        unsafe { &*self.ops }
    }

    /// Attaches `files` through the driver; on success the returned
    /// instance owns the driver's per-device state.
    pub fn attach(
        self,
        files: &[File],
        options: &CStr,
        disk_name: &CStr,
        read_only: bool,
        direct_io: bool,
    ) -> Result<(Instance, AttachOutcome)> {
        let mut ptrs = [core::ptr::null_mut(); MAX_LAYERS];
        if files.is_empty() || files.len() > MAX_LAYERS {
            return Err(EINVAL);
        }
        for (p, f) in ptrs.iter_mut().zip(files) {
            *p = f.as_ptr();
        }
        let mut info = RawAttachInfo {
            files: ptrs.as_ptr(),
            nr_files: files.len() as c_uint,
            options: options.as_char_ptr(),
            disk_name: disk_name.as_char_ptr(),
            read_only,
            direct_io,
            size: 0,
            force_read_only: false,
            nr_files_used: 0,
        };
        let mut state = core::ptr::null_mut();
        let attach = self.ops().attach.ok_or(EINVAL)?;
        // SAFETY: `info` points to valid files (held by `files`) and strings
        // for the call; `state` is a valid out pointer.
        to_result(unsafe { attach(&mut info, &mut state) })?;
        let outcome = AttachOutcome {
            size: info.size,
            force_read_only: info.force_read_only,
            nr_files_used: info.nr_files_used as usize,
        };
        Ok((Instance { drv: self, state }, outcome))
    }
}

impl Drop for PinnedDriver {
    fn drop(&mut self) {
        // SAFETY: `pin` took this module reference (type invariant).
        unsafe { bindings::module_put(self.owner) };
    }
}

/// What a driver reported at attach.
pub struct AttachOutcome {
    /// Virtual size in bytes.
    pub size: u64,
    /// The driver can only read this image.
    pub force_read_only: bool,
    /// Number of layers the image uses.
    pub nr_files_used: usize,
}

/// A driver attached to one device: its state, detached when dropped.
///
/// # Invariants
///
/// `state` is the value the driver's `attach` returned; `detach` has not
/// been called on it.
pub struct Instance {
    drv: PinnedDriver,
    state: *mut c_void,
}

// SAFETY: drivers must accept calls from any CPU, concurrently, for
// everything but detach (C API contract), which only `drop` calls.
unsafe impl Send for Instance {}
// SAFETY: see `Send`.
unsafe impl Sync for Instance {}

fn isize_result(n: isize) -> Result<usize> {
    if n < 0 {
        Err(Error::from_errno(n as i32))
    } else {
        Ok(n as usize)
    }
}

impl Instance {
    /// The driver's format name.
    pub fn name(&self) -> &CStr {
        self.drv.name()
    }

    /// Whether the driver can write.
    pub fn can_write(&self) -> bool {
        self.drv.ops().write_iter.is_some()
    }

    /// Whether the driver can flush.
    pub fn can_flush(&self) -> bool {
        self.drv.ops().flush.is_some()
    }

    /// Whether the driver supports discard.
    pub fn can_discard(&self) -> bool {
        self.drv.ops().discard.is_some()
    }

    /// Whether the driver supports write-zeroes.
    pub fn can_write_zeroes(&self) -> bool {
        self.drv.ops().write_zeroes.is_some()
    }

    /// Reads the virtual disk at `pos` into `iter`.
    pub fn read(&self, iter: &mut IovIter<'_>, pos: u64) -> Result<usize> {
        let f = self.drv.ops().read_iter.ok_or(EIO)?;
        let pos = i64::try_from(pos).map_err(|_| EINVAL)?;
        // SAFETY: `state` is live by the type invariant; `iter` is valid.
        isize_result(unsafe { f(self.state, iter.as_raw(), pos) })
    }

    /// Writes `iter` to the virtual disk at `pos`.
    pub fn write(&self, iter: &mut IovIter<'_>, pos: u64) -> Result<usize> {
        let f = self.drv.ops().write_iter.ok_or(EROFS)?;
        let pos = i64::try_from(pos).map_err(|_| EINVAL)?;
        // SAFETY: `state` is live by the type invariant; `iter` is valid.
        isize_result(unsafe { f(self.state, iter.as_raw(), pos) })
    }

    /// Flushes the driver's writes.
    pub fn flush(&self) -> Result {
        match self.drv.ops().flush {
            // SAFETY: `state` is live by the type invariant.
            Some(f) => to_result(unsafe { f(self.state) }),
            None => Ok(()),
        }
    }

    /// Discards a range.
    pub fn discard(&self, pos: u64, len: u64) -> Result {
        let f = self.drv.ops().discard.ok_or_else(super::eopnotsupp)?;
        let pos = i64::try_from(pos).map_err(|_| EINVAL)?;
        // SAFETY: `state` is live by the type invariant.
        to_result(unsafe { f(self.state, pos, len) })
    }

    /// Zeroes a range.
    pub fn write_zeroes(&self, pos: u64, len: u64, may_unmap: bool) -> Result {
        let f = self.drv.ops().write_zeroes.ok_or_else(super::eopnotsupp)?;
        let pos = i64::try_from(pos).map_err(|_| EINVAL)?;
        // SAFETY: `state` is live by the type invariant.
        to_result(unsafe { f(self.state, pos, len, may_unmap) })
    }

    /// The image's virtual size as the driver reads it now; `EOPNOTSUPP`
    /// when the format's size is fixed at attach (no `size` op).
    pub fn size(&self) -> Result<u64> {
        let f = self.drv.ops().size.ok_or_else(super::eopnotsupp)?;
        let mut size = 0u64;
        // SAFETY: `state` is live by the type invariant; `size` is a local
        // the driver may write for the call.
        to_result(unsafe { f(self.state, &mut size) })?;
        Ok(size)
    }

    /// Whether the driver reports its mapping (`LFF_GET_MAP`).
    pub fn can_map(&self) -> bool {
        self.drv.ops().map.is_some()
    }

    /// The driver's runs from image offset `pos` for `len` (> 0) bytes,
    /// into `out` (not empty); returns how many were filled.
    pub fn map(&self, pos: u64, len: u64, out: &mut [Extent]) -> Result<usize> {
        let f = self.drv.ops().map.ok_or_else(super::eopnotsupp)?;
        let nr = c_uint::try_from(out.len()).map_err(|_| EINVAL)?;
        if nr == 0 || len == 0 {
            return Err(EINVAL);
        }
        // SAFETY: `state` is live by the type invariant; `out` is `nr`
        // writable extents for the call.
        let n = unsafe { f(self.state, pos, len, out.as_mut_ptr(), nr) };
        let n = usize::try_from(n).map_err(|_| Error::from_errno(n))?;
        if n > out.len() {
            return Err(EIO);
        }
        Ok(n)
    }

    /// Names of the driver's sysfs attributes.
    pub fn attr_names(&self) -> impl Iterator<Item = &CStr> + '_ {
        self.attrs().iter().map(|a| {
            // SAFETY: attribute names are NUL-terminated static strings.
            unsafe { CStr::from_char_ptr(a.name) }
        })
    }

    /// Whether the driver's attribute `index` can be stored.
    pub fn attr_writable(&self, index: usize) -> bool {
        self.attrs().get(index).is_some_and(|a| a.store.is_some())
    }

    fn attrs(&self) -> &[RawAttr] {
        let ops = self.drv.ops();
        if ops.attrs.is_null() {
            return &[];
        }
        // SAFETY: `attrs` holds `nr_attrs` entries (checked non-NULL at
        // registration) that live as long as the pinned driver.
        unsafe { core::slice::from_raw_parts(ops.attrs, ops.nr_attrs as usize) }
    }

    /// Calls the show callback of attribute `index` with an empty sysfs
    /// page.
    pub fn show_attr(&self, index: usize, buf: &mut SysfsBuf<'_>) -> Result {
        let f = self.attrs().get(index).and_then(|a| a.show).ok_or(EIO)?;
        if buf.buf.len() < kernel::page::PAGE_SIZE || buf.len != 0 {
            return Err(EINVAL);
        }
        // SAFETY: `state` is live; `buf` is an empty, writable page.
        let n = isize_result(unsafe { f(self.state, buf.buf.as_mut_ptr().cast()) })?;
        buf.len = n.min(buf.buf.len());
        Ok(())
    }

    /// Calls the store callback of attribute `index`.
    pub fn store_attr(&self, index: usize, input: &[u8]) -> Result {
        let f = self
            .attrs()
            .get(index)
            .and_then(|a| a.store)
            .ok_or(EACCES)?;
        // SAFETY: `state` is live; `input` is readable for its length.
        isize_result(unsafe { f(self.state, input.as_ptr().cast(), input.len()) }).map(|_| ())
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(f) = self.drv.ops().detach {
            // SAFETY: `state` came from `attach` and is detached only here.
            unsafe { f(self.state) };
        }
        // `self.drv` drops after this, unpinning the module.
    }
}
