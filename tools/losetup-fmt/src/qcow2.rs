//! Just enough of the qcow2 header to follow a backing chain: the magic,
//! the version, the backing file name and the backing format header
//! extension (0xe2792aca). Every read is bounded by the first cluster
//! (at most 2 MiB, like QEMU), every field is checked before it is used,
//! and malformed input gives an error, never a panic.
//!
//! The full parser is the `qcow2-format` crate; this module deliberately
//! depends on nothing.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// The qcow2 magic, "QFI\xfb".
pub const MAGIC: [u8; 4] = *b"QFI\xfb";
/// Header extension: backing file format name.
pub const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
/// Header extension: external data file name.
pub const EXT_DATA_FILE: u32 = 0x4441_5441;
/// Incompatible feature bit: external data file.
pub const INCOMPAT_DATA_FILE: u64 = 1 << 2;
/// Longest backing file name QEMU accepts.
pub const MAX_BACKING_NAME: usize = 1023;
/// Longest backing format name accepted here (QEMU's limit is 15).
pub const MAX_FORMAT_NAME: usize = 63;

const MIN_CLUSTER_BITS: u32 = 9;
const MAX_CLUSTER_BITS: u32 = 21;
const V2_HEADER_LEN: u64 = 72;
const V3_HEADER_LEN: u64 = 104;

/// Positioned reads, so the header can come from a file or a byte slice.
pub trait ReadAt {
    /// Reads up to `buf.len()` bytes at `offset`; returns the count read,
    /// 0 at end of file.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

impl ReadAt for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        FileExt::read_at(self, buf, offset)
    }
}

impl ReadAt for [u8] {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.len());
        let n = buf.len().min(self.len() - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
}

/// Fills `buf` from `offset`; returns the count read, short only at EOF.
fn read_full<R: ReadAt + ?Sized>(r: &R, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match r.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Why a header could not be read.
#[derive(Debug)]
pub enum HeaderError {
    /// The read itself failed.
    Io(io::Error),
    /// The file does not start with the qcow2 magic.
    NotQcow2,
    /// The header is malformed; the text says which field.
    Invalid(String),
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::Io(e) => write!(f, "{}", crate::errors::strerror(e)),
            HeaderError::NotQcow2 => write!(f, "not a qcow2 image (no QFI\\xfb magic)"),
            HeaderError::Invalid(m) => write!(f, "invalid qcow2 header: {m}"),
        }
    }
}

impl From<io::Error> for HeaderError {
    fn from(e: io::Error) -> Self {
        HeaderError::Io(e)
    }
}

/// What the chain resolution needs from a qcow2 header.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Header {
    /// 2 or 3.
    pub version: u32,
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// Incompatible feature bits (0 for version 2).
    pub incompatible_features: u64,
    /// The backing file name exactly as stored, if the image has one.
    pub backing_file: Option<Vec<u8>>,
    /// The backing format extension, if present.
    pub backing_format: Option<Vec<u8>>,
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    (u64::from(be32(b, at)) << 32) | u64::from(be32(b, at + 4))
}

fn invalid<T>(msg: impl Into<String>) -> Result<T, HeaderError> {
    Err(HeaderError::Invalid(msg.into()))
}

/// Does the file start with the qcow2 magic?
pub fn has_magic<R: ReadAt + ?Sized>(r: &R) -> io::Result<bool> {
    let mut m = [0u8; 4];
    Ok(read_full(r, &mut m, 0)? == 4 && m == MAGIC)
}

/// Reads and checks the header fields the backing chain needs.
pub fn read_header<R: ReadAt + ?Sized>(r: &R) -> Result<Header, HeaderError> {
    let mut h = [0u8; V3_HEADER_LEN as usize];
    let n = read_full(r, &mut h, 0)?;
    if n < 4 || h[..4] != MAGIC {
        return Err(HeaderError::NotQcow2);
    }
    if (n as u64) < V2_HEADER_LEN {
        return invalid("file too short for a header");
    }
    let version = be32(&h, 4);
    let backing_offset = be64(&h, 8);
    let backing_size = be32(&h, 16);
    let cluster_bits = be32(&h, 20);
    if version != 2 && version != 3 {
        return invalid(format!("unsupported version {version}"));
    }
    if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
        return invalid(format!("cluster_bits {cluster_bits} out of range"));
    }
    let cluster_size = 1u64 << cluster_bits;
    let (header_len, incompatible_features) = if version == 2 {
        (V2_HEADER_LEN, 0)
    } else {
        if (n as u64) < V3_HEADER_LEN {
            return invalid("file too short for a version 3 header");
        }
        let len = u64::from(be32(&h, 100));
        if len < V3_HEADER_LEN || len % 8 != 0 || len > cluster_size {
            return invalid(format!("header_length {len} invalid"));
        }
        (len, be64(&h, 72))
    };

    let mut header = Header {
        version,
        cluster_bits,
        incompatible_features,
        ..Header::default()
    };

    // The backing file name lives in the first cluster, after the header.
    if backing_offset != 0 {
        let size = backing_size as usize;
        if size > MAX_BACKING_NAME {
            return invalid(format!("backing file name too long ({size} bytes)"));
        }
        if backing_offset < header_len
            || backing_offset > cluster_size
            || backing_offset + size as u64 > cluster_size
        {
            return invalid(format!("backing_file_offset {backing_offset} invalid"));
        }
        if size > 0 {
            let mut name = vec![0u8; size];
            if read_full(r, &mut name, backing_offset)? != size {
                return invalid("backing file name beyond end of file");
            }
            if name.contains(&0) {
                return invalid("backing file name contains a NUL byte");
            }
            header.backing_file = Some(name);
        }
    }

    // Header extensions: between the header and the backing file name (or
    // the end of the first cluster), each 8-byte aligned, ended by type 0.
    let ext_end = if backing_offset != 0 {
        backing_offset
    } else {
        cluster_size
    };
    let mut off = header_len;
    while off + 8 <= ext_end {
        let mut eh = [0u8; 8];
        if read_full(r, &mut eh, off)? != 8 {
            // A short file may end right after the header.
            break;
        }
        let kind = be32(&eh, 0);
        let len = u64::from(be32(&eh, 4));
        off += 8;
        if kind == 0 {
            break;
        }
        if len > ext_end - off {
            return invalid(format!("header extension {kind:#x} too long ({len} bytes)"));
        }
        if kind == EXT_BACKING_FORMAT {
            if len as usize > MAX_FORMAT_NAME {
                return invalid(format!("backing format name too long ({len} bytes)"));
            }
            let mut name = vec![0u8; len as usize];
            if read_full(r, &mut name, off)? != name.len() {
                return invalid("backing format extension beyond end of file");
            }
            // Some writers pad with NULs; the name ends at the first one.
            if let Some(nul) = name.iter().position(|&b| b == 0) {
                name.truncate(nul);
            }
            header.backing_format = Some(name);
        }
        // len ≤ ext_end - off ≤ 2 MiB: no overflow; pad to 8 bytes.
        off += (len + 7) & !7;
    }
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a version 3 header with the given backing name/format.
    fn image(version: u32, backing: Option<&str>, format: Option<&str>) -> Vec<u8> {
        let mut b = vec![0u8; 4096];
        b[..4].copy_from_slice(&MAGIC);
        b[4..8].copy_from_slice(&version.to_be_bytes());
        b[20..24].copy_from_slice(&16u32.to_be_bytes());
        let hlen: usize = if version == 2 { 72 } else { 104 };
        if version == 3 {
            b[100..104].copy_from_slice(&(hlen as u32).to_be_bytes());
        }
        let mut off = hlen;
        if let Some(f) = format {
            b[off..off + 4].copy_from_slice(&EXT_BACKING_FORMAT.to_be_bytes());
            b[off + 4..off + 8].copy_from_slice(&(f.len() as u32).to_be_bytes());
            b[off + 8..off + 8 + f.len()].copy_from_slice(f.as_bytes());
            off += 8 + ((f.len() + 7) & !7);
        }
        off += 8; // end-of-extensions marker (zeros)
        if let Some(n) = backing {
            b[8..16].copy_from_slice(&(off as u64).to_be_bytes());
            b[16..20].copy_from_slice(&(n.len() as u32).to_be_bytes());
            b[off..off + n.len()].copy_from_slice(n.as_bytes());
        }
        b
    }

    #[test]
    fn no_backing() {
        let h = read_header(&image(3, None, None)[..]).unwrap();
        assert_eq!(h.version, 3);
        assert_eq!(h.cluster_bits, 16);
        assert_eq!(h.backing_file, None);
        assert_eq!(h.backing_format, None);
    }

    #[test]
    fn backing_with_format() {
        for v in [2, 3] {
            let h = read_header(&image(v, Some("../base.img"), Some("raw"))[..]).unwrap();
            assert_eq!(h.backing_file.as_deref(), Some(&b"../base.img"[..]));
            assert_eq!(h.backing_format.as_deref(), Some(&b"raw"[..]));
        }
    }

    #[test]
    fn not_qcow2() {
        assert!(matches!(read_header(&[][..]), Err(HeaderError::NotQcow2)));
        assert!(matches!(
            read_header(&b"QFI"[..]),
            Err(HeaderError::NotQcow2)
        ));
        assert!(matches!(
            read_header(&[0u8; 512][..]),
            Err(HeaderError::NotQcow2)
        ));
        assert!(!has_magic(&[0u8; 512][..]).unwrap());
        assert!(has_magic(&image(3, None, None)[..]).unwrap());
    }

    #[test]
    fn malformed_headers_are_errors() {
        let good = image(3, Some("base"), Some("qcow2"));
        type Mutation = Box<dyn Fn(&mut Vec<u8>)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("short", Box::new(|b| b.truncate(50))),
            ("short v3", Box::new(|b| b.truncate(80))),
            ("version", Box::new(|b| b[7] = 4)),
            ("cluster_bits small", Box::new(|b| b[23] = 8)),
            ("cluster_bits big", Box::new(|b| b[23] = 22)),
            ("header_length", Box::new(|b| b[103] = 100)),
            ("header_length odd", Box::new(|b| b[103] = 105)),
            (
                "name too long",
                Box::new(|b| b[16..20].copy_from_slice(&1024u32.to_be_bytes())),
            ),
            (
                "offset in header",
                Box::new(|b| b[8..16].copy_from_slice(&8u64.to_be_bytes())),
            ),
            (
                "offset past cluster",
                Box::new(|b| b[8..16].copy_from_slice(&(1u64 << 40).to_be_bytes())),
            ),
            (
                "offset overflow",
                Box::new(|b| b[8..16].copy_from_slice(&u64::MAX.to_be_bytes())),
            ),
            ("name past eof", Box::new(|b| b.truncate(130))),
            (
                "nul in name",
                Box::new(|b| {
                    let off = be64(b, 8) as usize;
                    b[off + 1] = 0;
                }),
            ),
            (
                "ext too long",
                Box::new(|b| b[108..112].copy_from_slice(&u32::MAX.to_be_bytes())),
            ),
        ];
        for (what, mutate) in cases {
            let mut b = good.clone();
            mutate(&mut b);
            match read_header(&b[..]) {
                Err(HeaderError::Invalid(_)) => {}
                other => panic!("{what}: {other:?}"),
            }
        }
    }

    #[test]
    fn garbage_never_panics() {
        // A cheap deterministic fuzz: random bytes after a valid magic.
        let mut x: u64 = 0x1234_5678_9abc_def0;
        for _ in 0..2000 {
            let len = (x % 600) as usize;
            let mut b = Vec::with_capacity(len + 4);
            b.extend_from_slice(&MAGIC);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b.push(x as u8);
            }
            // Bias towards plausible versions and cluster sizes.
            if b.len() > 24 {
                b[4..8].copy_from_slice(&(2 + (x as u32 & 1)).to_be_bytes());
                b[20..24].copy_from_slice(&(9 + (x as u32 >> 8) % 13).to_be_bytes());
            }
            let _ = read_header(&b[..]);
        }
    }

    #[test]
    fn backing_format_padded_with_nul() {
        let mut b = image(3, Some("base"), Some("qcow2"));
        // Claim 8 bytes for "qcow2\0\0\0".
        b[108..112].copy_from_slice(&8u32.to_be_bytes());
        let h = read_header(&b[..]).unwrap();
        assert_eq!(h.backing_format.as_deref(), Some(&b"qcow2"[..]));
    }
}
