//! Bounds-checked little-endian field readers (VMDK numbers are little
//! endian). They return `None` instead of panicking when the field does
//! not fit in the buffer.

/// Reads a little-endian `u16` at `off`.
pub(super) fn u16_at(buf: &[u8], off: usize) -> Option<u16> {
    let end = off.checked_add(2)?;
    let b: [u8; 2] = buf.get(off..end)?.try_into().ok()?;
    Some(u16::from_le_bytes(b))
}

/// Reads a little-endian `u32` at `off`.
pub(super) fn u32_at(buf: &[u8], off: usize) -> Option<u32> {
    let end = off.checked_add(4)?;
    let b: [u8; 4] = buf.get(off..end)?.try_into().ok()?;
    Some(u32::from_le_bytes(b))
}

/// Reads a little-endian `u64` at `off`.
pub(super) fn u64_at(buf: &[u8], off: usize) -> Option<u64> {
    let end = off.checked_add(8)?;
    let b: [u8; 8] = buf.get(off..end)?.try_into().ok()?;
    Some(u64::from_le_bytes(b))
}

/// `(a / b, a % b)`, or `None` if `b` is 0. The engine's divisors are never
/// 0 (validated geometry), but the compiler cannot know it: this keeps the
/// division panics (which the kernel's objtool does not all recognise) out
/// of the request path.
pub(super) fn div_rem(a: u64, b: u64) -> Option<(u64, u64)> {
    Some((a.checked_div(b)?, a.checked_rem(b)?))
}
