//! Bounds-checked big-endian field readers (all qcow2 numbers are big
//! endian, spec introduction). They return `None` instead of panicking when
//! the field does not fit in the buffer.

/// Reads a big-endian `u16` at `off`.
pub(super) fn u16_at(buf: &[u8], off: usize) -> Option<u16> {
    let end = off.checked_add(2)?;
    let b: [u8; 2] = buf.get(off..end)?.try_into().ok()?;
    Some(u16::from_be_bytes(b))
}

/// Reads a big-endian `u32` at `off`.
pub(super) fn u32_at(buf: &[u8], off: usize) -> Option<u32> {
    let end = off.checked_add(4)?;
    let b: [u8; 4] = buf.get(off..end)?.try_into().ok()?;
    Some(u32::from_be_bytes(b))
}

/// Reads a big-endian `u64` at `off`.
pub(super) fn u64_at(buf: &[u8], off: usize) -> Option<u64> {
    let end = off.checked_add(8)?;
    let b: [u8; 8] = buf.get(off..end)?.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

/// Rounds `v` up to a multiple of 8, `None` on overflow.
pub(super) fn align8(v: usize) -> Option<usize> {
    Some(v.checked_add(7)? & !7)
}
