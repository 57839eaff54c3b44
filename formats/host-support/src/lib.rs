//! Host-side pieces shared by the `std` features of the format crates
//! (`vmdk-format`, `vdi-format`, the qcow2 fuzz harnesses): they were
//! written once per crate before.
//!
//! - [`FileData`]: the bytes of one image file, an open file (`pread`) or
//!   an in-memory copy (tests, fuzzing), with errors as the host's errno;
//! - [`io_errno`]: an `std::io::Error` as an errno (`ENOENT` for a missing
//!   file, `EIO` when the error carries none);
//! - [`OutBuf`]: a cursor appending to a caller's buffer, the core of each
//!   host reader's `Sink`;
//! - [`Rng`]: the xorshift generator of the tests and fuzz harnesses;
//! - [`fuzz`]: the harness table type and lookup.
//!
//! Nothing here knows a format: each crate maps the errno into its own
//! `Error::Io`.

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub, rust_2018_idioms)]

use std::fs::File;
use std::os::unix::fs::FileExt;

/// `e` as a positive errno: `ENOENT` for a missing file, the OS error if
/// it has one, else `EIO`.
pub fn io_errno(e: &std::io::Error) -> i32 {
    if e.kind() == std::io::ErrorKind::NotFound {
        return libc::ENOENT;
    }
    e.raw_os_error().filter(|&n| n > 0).unwrap_or(libc::EIO)
}

/// The bytes behind one file of an image: an open file or an in-memory
/// copy.
pub enum FileData {
    /// A file, read with `pread`.
    File(File),
    /// Bytes in memory (tests, fuzzing).
    Memory(Vec<u8>),
}

impl FileData {
    /// Length in bytes; errors are errnos ([`io_errno`]).
    pub fn len(&self) -> Result<u64, i32> {
        match self {
            FileData::File(f) => Ok(f.metadata().map_err(|e| io_errno(&e))?.len()),
            FileData::Memory(v) => Ok(v.len() as u64),
        }
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> Result<bool, i32> {
        Ok(self.len()? == 0)
    }

    /// Fills `buf` from `offset`; a short read is `EIO`.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), i32> {
        match self {
            FileData::File(f) => f.read_exact_at(buf, offset).map_err(|e| io_errno(&e)),
            FileData::Memory(v) => {
                let src = usize::try_from(offset)
                    .ok()
                    .and_then(|o| v.get(o..o.checked_add(buf.len())?))
                    .ok_or(libc::EIO)?;
                buf.copy_from_slice(src);
                Ok(())
            }
        }
    }
}

/// A cursor over a caller's buffer: each [`OutBuf::next`] hands out the
/// following bytes.
pub struct OutBuf<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> OutBuf<'a> {
    /// A cursor at the start of `buf`.
    pub fn new(buf: &'a mut [u8]) -> OutBuf<'a> {
        OutBuf { buf, pos: 0 }
    }

    /// The next `len` bytes, `None` if fewer are left (the cursor then
    /// stays where it was).
    pub fn next(&mut self, len: usize) -> Option<&mut [u8]> {
        let end = self.pos.checked_add(len)?;
        let out = self.buf.get_mut(self.pos..end)?;
        self.pos = end;
        Some(out)
    }

    /// Bytes handed out so far.
    pub fn pos(&self) -> usize {
        self.pos
    }
}

/// A small xorshift generator, deterministic per seed or input, so runs
/// reproduce (the tests' data and the fuzz harnesses' requests).
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// Seeded with FNV-1a over the length and both ends of `data`
    /// (cheap for large inputs).
    pub fn from_bytes(data: &[u8]) -> Rng {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        let head = &data[..data.len().min(256)];
        let tail = &data[data.len().saturating_sub(256)..];
        for &b in (data.len() as u64)
            .to_le_bytes()
            .iter()
            .chain(head)
            .chain(tail)
        {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Rng(h | 1)
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform-ish in `0..n` (0 if `n` is 0); always advances.
    pub fn below(&mut self, n: u64) -> u64 {
        let x = self.next_u64();
        if n == 0 {
            0
        } else {
            x % n
        }
    }

    /// As [`Rng::below`], but 0 for `n == 0` without advancing (the
    /// qcow2 harnesses' sequence, which their saved inputs replay).
    pub fn below_lazy(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.below(n)
        }
    }
}

/// What the fuzz harnesses of every format crate share.
pub mod fuzz {
    /// A harness: takes one fuzz input, panics on a finding.
    pub type Harness = fn(&[u8]);

    /// The harness called `name` in `targets` (name, harness pairs: the
    /// `cargo fuzz` target names), if any.
    pub fn find(targets: &[(&str, Harness)], name: &str) -> Option<Harness> {
        targets.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
    }

    pub use super::Rng;

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn rng_reproduces_and_stays_below() {
            let mut a = Rng::from_bytes(b"seed");
            let mut b = Rng::from_bytes(b"seed");
            for n in [1u64, 7, 1000, u64::MAX] {
                let x = a.below(n);
                assert_eq!(x, b.below(n));
                assert!(x < n);
            }
            assert_eq!(a.below(0), 0);
            let mut c = Rng::from_bytes(b"seed");
            assert_eq!(c.below_lazy(0), 0);
            assert_eq!(c.next_u64(), Rng::from_bytes(b"seed").next_u64());
            assert_ne!(
                Rng::from_bytes(b"a").next_u64(),
                Rng::from_bytes(b"b").next_u64()
            );
        }

        #[test]
        fn find_by_name() {
            fn h(_: &[u8]) {}
            let t: &[(&str, Harness)] = &[("x", h)];
            assert!(find(t, "x").is_some());
            assert!(find(t, "y").is_none());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_reads_and_short_reads() {
        let d = FileData::Memory(vec![1, 2, 3, 4]);
        assert_eq!(d.len(), Ok(4));
        let mut b = [0u8; 2];
        assert_eq!(d.read_exact_at(&mut b, 2), Ok(()));
        assert_eq!(b, [3, 4]);
        assert_eq!(d.read_exact_at(&mut b, 3), Err(libc::EIO));
        assert_eq!(d.read_exact_at(&mut b, u64::MAX), Err(libc::EIO));
    }

    #[test]
    fn missing_file_is_enoent() {
        let e = File::open("/nonexistent/format-host-test").unwrap_err();
        assert_eq!(io_errno(&e), libc::ENOENT);
    }

    #[test]
    fn outbuf_hands_out_in_order() {
        let mut buf = [0u8; 5];
        let mut o = OutBuf::new(&mut buf);
        o.next(2).unwrap().fill(1);
        assert!(o.next(4).is_none());
        assert_eq!(o.pos(), 2);
        o.next(3).unwrap().fill(2);
        assert_eq!(buf, [1, 1, 2, 2, 2]);
    }
}
