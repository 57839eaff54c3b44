// SPDX-License-Identifier: GPL-2.0

//! Backing files: a counted reference to a `struct file` and the I/O the
//! format drivers do on it (positioned reads and writes into buffers or
//! iov_iters, fsync, fallocate).
//!
//! C header: [`include/linux/fs.h`](srctree/include/linux/fs.h)

use super::iov::IovIter;
use super::sys;
use core::ptr::NonNull;
use kernel::bindings;
use kernel::error::{to_result, Error, Result};
use kernel::prelude::*;
use kernel::rbtree::{RBTree, RBTreeNode};
use kernel::sync::Arc;

/// What kind of inode a file is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FileKind {
    /// A regular file.
    Regular,
    /// A block device.
    Block,
    /// Anything else (directory, socket, character device...).
    Other,
}

/// An owned reference to an open `struct file`.
///
/// # Invariants
///
/// `ptr` points to a valid `struct file` on which this object holds one
/// reference, dropped with `fput` when the object is dropped.
pub struct File {
    ptr: NonNull<bindings::file>,
}

// SAFETY: a `struct file` reference may be used and dropped from any thread;
// the VFS functions called through `&File` are safe to call concurrently.
unsafe impl Send for File {}
// SAFETY: see `Send`; all methods take `&self` and the VFS synchronises.
unsafe impl Sync for File {}

impl File {
    /// Takes a reference to the file open as `fd` in the calling process.
    pub fn from_fd(fd: i32) -> Result<Self> {
        let fd = u32::try_from(fd).map_err(|_| EBADF)?;
        // SAFETY: `fget` accepts any descriptor number and returns a new
        // reference or NULL.
        let ptr = unsafe { bindings::fget(fd) };
        NonNull::new(ptr).map(|ptr| Self { ptr }).ok_or(EBADF)
    }

    /// Takes a new reference to a file somebody else holds.
    ///
    /// # Safety
    ///
    /// `ptr` must point to a valid `struct file` on which the caller holds a
    /// reference for the duration of this call.
    pub unsafe fn from_borrowed(ptr: *mut bindings::file) -> Result<Self> {
        let ptr = NonNull::new(ptr).ok_or(EINVAL)?;
        // SAFETY: the caller guarantees `ptr` is a valid file with a held
        // reference, so taking another one is allowed.
        unsafe { sys::lff_get_file(ptr.as_ptr()) };
        Ok(Self { ptr })
    }

    /// Another reference to the same file.
    pub fn try_clone(&self) -> Result<Self> {
        // SAFETY: by the type invariant we hold a reference to `ptr`.
        unsafe { Self::from_borrowed(self.ptr.as_ptr()) }
    }

    /// The raw pointer, for the C ABI between the core and the drivers.
    pub fn as_ptr(&self) -> *mut bindings::file {
        self.ptr.as_ptr()
    }

    /// Size of the file in bytes (of the device, for a block device).
    pub fn size(&self) -> u64 {
        // SAFETY: the file is valid by the type invariant.
        let size = unsafe { sys::lff_file_size(self.as_ptr()) };
        u64::try_from(size).unwrap_or(0)
    }

    /// Whether the file was opened for writing.
    pub fn is_writable(&self) -> bool {
        // SAFETY: the file is valid by the type invariant.
        unsafe { sys::lff_file_writable(self.as_ptr()) }
    }

    /// Whether the file is open with `O_DIRECT`.
    pub fn is_direct_io(&self) -> bool {
        // SAFETY: the file is valid by the type invariant.
        unsafe { sys::lff_file_direct_io(self.as_ptr()) }
    }

    /// Whether the file system supports `O_DIRECT` on this file.
    pub fn can_direct_io(&self) -> bool {
        // SAFETY: the file is valid by the type invariant.
        unsafe { sys::lff_file_can_direct_io(self.as_ptr()) }
    }

    /// The smallest I/O size and alignment `O_DIRECT` needs on this file.
    pub fn direct_io_alignment(&self) -> u32 {
        // SAFETY: the file is valid by the type invariant.
        unsafe { sys::lff_file_dio_align(self.as_ptr()) }
    }

    /// The kind of inode behind the file.
    pub fn kind(&self) -> FileKind {
        // SAFETY: the file is valid by the type invariant.
        match unsafe { sys::lff_file_kind(self.as_ptr()) } {
            1 => FileKind::Regular,
            2 => FileKind::Block,
            _ => FileKind::Other,
        }
    }

    /// `(st_dev, st_ino, rdev)` of the file: `st_dev` as `stat(2)` reports
    /// it, `rdev` as the kernel encodes it (see [`File::rdev_major`]).
    pub fn ids(&self) -> (u64, u64, u32) {
        let (mut dev, mut ino, mut rdev) = (0, 0, 0);
        // SAFETY: the file is valid by the type invariant; the out pointers
        // point to live locals.
        unsafe { sys::lff_file_ids(self.as_ptr(), &mut dev, &mut ino, &mut rdev) };
        (dev, ino, rdev)
    }

    /// `MAJOR()` of the device a block device node stands for.
    pub fn rdev_major(&self) -> u32 {
        // SAFETY: pure function of a number.
        unsafe { sys::lff_major(self.ids().2) }
    }

    /// Writes the file's path into `buf` and returns it (may be truncated
    /// at the front with an error if `buf` is too small).
    pub fn path<'a>(&self, buf: &'a mut [u8]) -> Result<&'a [u8]> {
        let len = i32::try_from(buf.len()).map_err(|_| EINVAL)?;
        // SAFETY: the file is valid; `buf` is writable for `len` bytes.
        let p = unsafe { bindings::file_path(self.as_ptr(), buf.as_mut_ptr().cast(), len) };
        if (p as isize) < 0 && (p as isize) >= -4095 {
            return Err(Error::from_errno(p as isize as i32));
        }
        let start = (p as usize).wrapping_sub(buf.as_ptr() as usize);
        // `d_path` writes the NUL-terminated path at the end of `buf`.
        let tail = buf.get(start..).ok_or(EINVAL)?;
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        Ok(&tail[..end])
    }

    /// Reads `buf.len()` bytes at `pos`; a short read (end of file) is
    /// `EIO`.
    pub fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> Result {
        let mut done = 0;
        while done < buf.len() {
            let rest = &mut buf[done..];
            let mut off = i64::try_from(pos + done as u64).map_err(|_| EINVAL)?;
            // SAFETY: the file is valid; `rest` is a writable kernel buffer
            // of `rest.len()` bytes; `off` is a live local.
            let n = unsafe {
                bindings::kernel_read(
                    self.as_ptr(),
                    rest.as_mut_ptr().cast(),
                    rest.len(),
                    &mut off,
                )
            };
            match n {
                n if n < 0 => return Err(Error::from_errno(n as i32)),
                0 => return Err(EIO),
                n => done += n as usize,
            }
        }
        Ok(())
    }

    /// Writes all of `buf` at `pos`.
    pub fn write_all_at(&self, buf: &[u8], pos: u64) -> Result {
        let mut done = 0;
        while done < buf.len() {
            let rest = &buf[done..];
            let mut off = i64::try_from(pos + done as u64).map_err(|_| EINVAL)?;
            // SAFETY: the file is valid; `rest` is a readable kernel buffer
            // of `rest.len()` bytes; `off` is a live local.
            let n = unsafe {
                bindings::kernel_write(self.as_ptr(), rest.as_ptr().cast(), rest.len(), &mut off)
            };
            match n {
                n if n < 0 => return Err(Error::from_errno(n as i32)),
                0 => return Err(EIO),
                n => done += n as usize,
            }
        }
        Ok(())
    }

    /// Reads into `iter` at `pos` until it is full or the file ends;
    /// returns the number of bytes read.
    pub fn read_iter_at(&self, iter: &mut IovIter<'_>, pos: u64) -> Result<usize> {
        let mut done = 0;
        while iter.count() > 0 {
            let mut off = i64::try_from(pos + done as u64).map_err(|_| EINVAL)?;
            let before = iter.count();
            // SAFETY: the file is valid; `iter` is a valid destination
            // iterator by its own invariant; `off` is a live local.
            let n = unsafe { bindings::vfs_iter_read(self.as_ptr(), iter.as_raw(), &mut off, 0) };
            match n {
                n if n < 0 => return Err(Error::from_errno(n as i32)),
                0 => break,
                n => done += settle(iter, before, n as usize)?,
            }
        }
        Ok(done)
    }

    /// Writes all of `iter` at `pos`; returns the number of bytes written.
    pub fn write_iter_at(&self, iter: &mut IovIter<'_>, pos: u64) -> Result<usize> {
        let mut done = 0;
        while iter.count() > 0 {
            let mut off = i64::try_from(pos + done as u64).map_err(|_| EINVAL)?;
            let before = iter.count();
            // SAFETY: the file is valid; `iter` is a valid source iterator
            // by its own invariant; `off` is a live local.
            let n = unsafe { bindings::vfs_iter_write(self.as_ptr(), iter.as_raw(), &mut off, 0) };
            match n {
                n if n < 0 => return Err(Error::from_errno(n as i32)),
                0 => return Err(EIO),
                n => done += settle(iter, before, n as usize)?,
            }
        }
        Ok(done)
    }

    /// `fsync` (or `fdatasync` when `datasync`) the whole file.
    pub fn sync(&self, datasync: bool) -> Result {
        // SAFETY: the file is valid by the type invariant.
        to_result(unsafe { bindings::vfs_fsync(self.as_ptr(), datasync.into()) })
    }

    /// `fallocate(mode, pos, len)` on the file.
    pub fn fallocate(&self, mode: i32, pos: u64, len: u64) -> Result {
        let pos = i64::try_from(pos).map_err(|_| EINVAL)?;
        let len = i64::try_from(len).map_err(|_| EINVAL)?;
        // SAFETY: the file is valid by the type invariant.
        to_result(unsafe { bindings::vfs_fallocate(self.as_ptr(), mode, pos, len) })
    }
}

/// Leaves `iter` just past the `n` bytes a `->read_iter`/`->write_iter`
/// call reported, whatever the file system did with it (`before` is its
/// count before the call): most advance it by `n`, but some (netfs-based
/// 9p, for one) work on a copy and leave it where it was, which would
/// make the caller move the same bytes again at the next offset. Returns
/// `n`; an iterator advanced past what was reported (or grown) is an
/// `EIO`.
fn settle(iter: &mut IovIter<'_>, before: usize, n: usize) -> Result<usize> {
    let moved = before.checked_sub(iter.count()).ok_or(EIO)?;
    if moved > n || n > before {
        return Err(EIO);
    }
    iter.advance(n - moved);
    Ok(n)
}

impl Drop for File {
    fn drop(&mut self) {
        // SAFETY: by the type invariant we hold one reference, released here.
        unsafe { bindings::fput(self.ptr.as_ptr()) };
    }
}

/// `fallocate` modes, from `include/uapi/linux/falloc.h`.
pub mod falloc {
    /// Do not change the file size.
    pub const KEEP_SIZE: i32 = 0x01;
    /// Deallocate the range (with `KEEP_SIZE`).
    pub const PUNCH_HOLE: i32 = 0x02;
    /// Make the range read as zeros, keeping it allocated.
    pub const ZERO_RANGE: i32 = 0x10;
}

/// The `__GFP_IO | __GFP_FS` bits of a gfp mask, as `lff_file_mapping_gfp`
/// returns it.
fn gfp_io_fs() -> u32 {
    // SAFETY: a constant.
    unsafe { sys::lff_gfp_io_fs() }
}

/// One backing mapping whose gfp mask the core masked.
struct Masked {
    /// Guards holding it.
    users: usize,
    /// The bits of [`gfp_io_fs`] that were set and that we cleared.
    cleared: u32,
}

/// The backing mappings masked by [`MappingNoIo`] guards, with a count of
/// the guards on each: several devices (or layers) can use one file, and
/// the mask must stay until the last of them is gone.
#[pin_data]
pub struct NoIoMappings {
    #[pin]
    /// By mapping address (an identity only).
    list: kernel::sync::Mutex<RBTree<usize, Masked>>,
}

impl NoIoMappings {
    /// An empty registry.
    pub fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            list <- kernel::new_mutex!(RBTree::new()),
        })
    }
}

/// Keeps the page cache of a backing file from recursing into I/O while
/// the device uses it: clears `__GFP_IO | __GFP_FS` in its mapping's gfp
/// mask, as loop.c does at configure (`mapping_set_gfp_mask(mapping,
/// lo->old_gfp_mask & ~(__GFP_IO | __GFP_FS))`). Page cache allocations
/// for the backing file (a read of a cluster, readahead, a write) then
/// never wait on I/O that may be queued behind the request doing them.
///
/// Unlike loop.c, which saves the whole mask and writes it back at
/// teardown (wrong when two devices share a file: the first detach
/// unmasks the file under the second), the guards of one mapping are
/// counted in a [`NoIoMappings`]: the first guard clears the bits that
/// were set, the last drop sets back only those bits, keeping any other
/// change made to the mask meanwhile. A mapping another driver masked
/// (a loop device on the same file) is left to that driver, which may
/// restore it under us: a documented limit, as in loop.c.
pub struct MappingNoIo {
    reg: Arc<NoIoMappings>,
    /// Keeps the mapping alive (it is the file's inode's).
    file: File,
}

impl MappingNoIo {
    /// Masks the mapping of `file` until the guard is dropped.
    pub fn new(reg: &Arc<NoIoMappings>, file: &File) -> Result<Self> {
        let file = file.try_clone()?;
        // SAFETY: the file is valid by the type invariant of `File`.
        let mapping = unsafe { sys::lff_file_mapping(file.as_ptr()) } as usize;
        let mut list = reg.list.lock();
        if let Some(m) = list.get_mut(&mapping) {
            m.users += 1;
        } else {
            // SAFETY: as above.
            let gfp = unsafe { sys::lff_file_mapping_gfp(file.as_ptr()) };
            let cleared = gfp & gfp_io_fs();
            let node = RBTreeNode::new(mapping, Masked { users: 1, cleared }, GFP_KERNEL)?;
            // SAFETY: as above; the registry's mutex serialises our
            // read-modify-write of the mask with every other guard's.
            unsafe { sys::lff_file_set_mapping_gfp(file.as_ptr(), gfp & !gfp_io_fs()) };
            list.insert(node);
        }
        drop(list);
        Ok(Self {
            reg: reg.clone(),
            file,
        })
    }
}

impl Drop for MappingNoIo {
    fn drop(&mut self) {
        // SAFETY: the file is valid by the type invariant of `File`.
        let mapping = unsafe { sys::lff_file_mapping(self.file.as_ptr()) } as usize;
        let mut list = self.reg.list.lock();
        let Some(m) = list.get_mut(&mapping) else {
            return;
        };
        m.users -= 1;
        if m.users == 0 {
            let cleared = m.cleared;
            // SAFETY: as above; serialised by the registry's mutex.
            unsafe {
                let gfp = sys::lff_file_mapping_gfp(self.file.as_ptr());
                sys::lff_file_set_mapping_gfp(self.file.as_ptr(), gfp | cleared);
            }
            list.remove(&mapping);
        }
    }
}
