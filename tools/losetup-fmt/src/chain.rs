//! Format detection and qcow2 backing chain resolution, done in userspace
//! the way QEMU does it, so that the kernel never opens a path named inside
//! an image:
//!
//! - a relative backing file name is resolved against the directory of the
//!   image that names it (as given, symlinks not followed), not the cwd;
//! - the backing format extension is honoured (`raw`, `file` or `qcow2`);
//!   without it the magic is probed;
//! - the chain is followed up to `LFF_MAX_LAYERS` layers, and a file seen
//!   twice (same st_dev/st_ino) is a loop and refused;
//! - backing files are opened read-only; the caller opened the top image.
//!
//! The result is the list of open files to pass in `lff_config.fds`.
//!
//! Headers are read with the `qcow2-format` crate, the code the kernel
//! driver parses them with: [`HeaderLayout::parse`] over the same first
//! [`HEADER_READ_LEN`] bytes, and [`LayerFormat::detect`] for the magic and
//! the backing format, so this tool and the driver cannot disagree about
//! which files an image uses. Only what locates the backing file is
//! checked here; the rest of each header (features, encryption, tables,
//! sizes) and snapshots are judged by the driver, which refuses a bad
//! image with its own errno and a kernel log line naming the reason.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use qcow2_format::header::HEADER_READ_LEN;
use qcow2_format::{Error as FormatError, HeaderLayout, LayerFormat};

use crate::errors::strerror;
use crate::uapi;

/// The formats this tool can follow through a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Byte for byte.
    Raw,
    /// qcow2, possibly with a backing file.
    Qcow2,
    /// VirtualBox VDI: its driver reads the file alone (no chain).
    Vdi,
    /// VMDK: one sparse file, or a descriptor and its extent files.
    Vmdk,
}

impl Format {
    /// The kernel's name of the format.
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vdi => "vdi",
            Format::Vmdk => "vmdk",
        }
    }
}

impl From<LayerFormat> for Format {
    fn from(f: LayerFormat) -> Format {
        match f {
            LayerFormat::Qcow2 => Format::Qcow2,
            LayerFormat::Raw => Format::Raw,
        }
    }
}

/// Fills `buf` from `offset`; returns the count read, short only at EOF.
fn read_full(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// The first bytes of `file`, as many as the kernel driver parses
/// ([`HEADER_READ_LEN`], or the whole file if shorter).
pub(crate) fn read_prefix(file: &File, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let n = read_full(file, &mut buf, 0)?;
    buf.truncate(n);
    Ok(buf)
}

/// The format the first bytes of a file show: qcow2 with the magic
/// "QFI\xfb", raw otherwise.
fn magic_format(first_bytes: &[u8]) -> Format {
    match LayerFormat::detect(None, first_bytes) {
        Ok(f) => f.into(),
        Err(_) => Format::Raw,
    }
}

/// Detects the format by its magic: qcow2 if the file starts with
/// "QFI\xfb", VDI with its signature at byte 64, VMDK with the sparse
/// extent magic "KDMV" or a descriptor file's first line
/// "# Disk DescriptorFile", raw otherwise.
pub fn probe(file: &File) -> io::Result<Format> {
    // The VDI signature ends at byte 68.
    let first = read_prefix(file, 68)?;
    let format = magic_format(&first);
    Ok(if format != Format::Raw {
        format
    } else if vdi_format::header::has_signature(&first) {
        Format::Vdi
    } else if crate::vmdk::probe(&first) {
        Format::Vmdk
    } else {
        format
    })
}

/// Why a qcow2 header could not be read.
#[derive(Debug)]
pub enum HeaderError {
    /// The read itself failed.
    Io(io::Error),
    /// The file does not start with the qcow2 magic.
    NotQcow2,
    /// The format crate refused the header layout.
    Invalid(FormatError),
    /// The backing file name has a NUL byte: it cannot be a path.
    NulInBackingName,
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::Io(e) => write!(f, "{}", strerror(e)),
            HeaderError::NotQcow2 => write!(f, "not a qcow2 image (no QFI\\xfb magic)"),
            HeaderError::Invalid(e) => write!(f, "invalid qcow2 header: {e}"),
            HeaderError::NulInBackingName => {
                write!(
                    f,
                    "invalid qcow2 header: backing file name contains a NUL byte"
                )
            }
        }
    }
}

/// What a qcow2 layer tells about the next one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Backing {
    /// The backing file name exactly as stored, if the image has one.
    pub name: Option<Vec<u8>>,
    /// The backing format extension (up to its first NUL), if present.
    pub format: Option<Vec<u8>>,
    /// Whether the image uses an external data file.
    pub data_file: bool,
}

/// Reads the header layout of a qcow2 image with the format crate and
/// returns what the chain needs from it.
pub fn read_backing(file: &File) -> Result<Backing, HeaderError> {
    let buf = read_prefix(file, HEADER_READ_LEN).map_err(HeaderError::Io)?;
    if magic_format(&buf) != Format::Qcow2 {
        return Err(HeaderError::NotQcow2);
    }
    let layout = HeaderLayout::parse(&buf).map_err(HeaderError::Invalid)?;
    let name = layout.backing_file_name(&buf);
    if name.is_some_and(|n| n.contains(&0)) {
        return Err(HeaderError::NulInBackingName);
    }
    Ok(Backing {
        name: name.map(<[u8]>::to_vec),
        format: layout.backing_format_name(&buf).map(<[u8]>::to_vec),
        data_file: layout.has_external_data_file(),
    })
}

/// One opened layer of a chain.
#[derive(Debug)]
pub struct Layer {
    /// The path it was opened by (resolved as QEMU resolves it).
    pub path: PathBuf,
    /// The open file, read-only for every layer but maybe the first.
    pub file: File,
    /// Its format.
    pub format: Format,
}

/// Why a chain could not be resolved.
#[derive(Debug)]
pub enum ChainError {
    /// The header of `path` could not be read or is invalid.
    Header {
        /// The image.
        path: PathBuf,
        /// What is wrong.
        err: HeaderError,
    },
    /// `fstat` failed.
    Stat {
        /// The layer.
        path: PathBuf,
        /// The error.
        err: io::Error,
    },
    /// A backing file could not be opened.
    Open {
        /// The image naming it.
        image: PathBuf,
        /// The name as stored in the image.
        name: PathBuf,
        /// The resolved path.
        path: PathBuf,
        /// The error of open(2).
        err: io::Error,
    },
    /// The backing file name is a protocol (`nbd:`, `json:`...).
    Protocol {
        /// The image naming it.
        image: PathBuf,
        /// The name as stored.
        name: PathBuf,
    },
    /// The backing format is neither raw nor qcow2.
    UnsupportedFormat {
        /// The image naming it.
        image: PathBuf,
        /// The backing file.
        path: PathBuf,
        /// Its declared format.
        format: String,
    },
    /// A backing file declared qcow2 is not qcow2.
    NotQcow2 {
        /// The image naming it.
        image: PathBuf,
        /// The backing file.
        path: PathBuf,
    },
    /// The image uses an external data file (not supported).
    DataFile {
        /// The image.
        path: PathBuf,
    },
    /// Layer `again` is the same file as layer `first`.
    Loop {
        /// Path of layer `again`.
        path: PathBuf,
        /// Path of layer `first`.
        first_path: PathBuf,
        /// Index of the first occurrence.
        first: usize,
        /// Index of the repeated occurrence.
        again: usize,
    },
    /// More than `LFF_MAX_LAYERS` layers.
    TooDeep {
        /// The top image.
        top: PathBuf,
    },
}

impl std::fmt::Display for ChainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainError::Header { path, err } => write!(f, "{}: {err}", path.display()),
            ChainError::Stat { path, err } => write!(f, "{}: {}", path.display(), strerror(err)),
            ChainError::Open {
                image,
                name,
                path,
                err,
            } => {
                write!(
                    f,
                    "{}: cannot open backing file '{}'",
                    image.display(),
                    path.display()
                )?;
                if name != path {
                    write!(f, " (named '{}' in the image)", name.display())?;
                }
                write!(f, ": {}", strerror(err))
            }
            ChainError::Protocol { image, name } => write!(
                f,
                "{}: backing file '{}' is not a local file; only local backing files are supported",
                image.display(),
                name.display()
            ),
            ChainError::UnsupportedFormat {
                image,
                path,
                format,
            } => write!(
                f,
                "{}: backing file '{}' has format '{format}'; only raw and qcow2 backing files are supported",
                image.display(),
                path.display()
            ),
            ChainError::NotQcow2 { image, path } => write!(
                f,
                "{}: backing file '{}' is declared qcow2 but is not a qcow2 image",
                image.display(),
                path.display()
            ),
            ChainError::DataFile { path } => write!(
                f,
                "{}: qcow2 images with an external data file are not supported",
                path.display()
            ),
            ChainError::Loop {
                path,
                first_path,
                first,
                again,
            } => write!(
                f,
                "backing chain loop: layer {again} '{}' is the same file as layer {first} '{}'",
                path.display(),
                first_path.display()
            ),
            ChainError::TooDeep { top } => write!(
                f,
                "{}: backing chain is longer than {} layers",
                top.display(),
                uapi::MAX_LAYERS
            ),
        }
    }
}

impl std::error::Error for ChainError {}

/// QEMU's `path_has_protocol()`: a ':' before any '/'.
fn has_protocol(name: &[u8]) -> bool {
    name.iter()
        .find(|&&b| b == b':' || b == b'/')
        .is_some_and(|&b| b == b':')
}

/// Resolves a backing file name stored in `image` the way QEMU does:
/// absolute names as they are, relative ones against the directory of
/// `image` (as given, not canonicalized); a `file:` prefix is dropped,
/// other protocols are refused.
pub fn resolve_backing_path(image: &Path, name: &[u8]) -> Result<PathBuf, ChainError> {
    let mut name = name;
    if has_protocol(name) {
        match name.strip_prefix(b"file:") {
            Some(rest) => name = rest,
            None => {
                return Err(ChainError::Protocol {
                    image: image.to_path_buf(),
                    name: PathBuf::from(OsStr::from_bytes(name)),
                })
            }
        }
    }
    let name = Path::new(OsStr::from_bytes(name));
    if name.is_absolute() {
        return Ok(name.to_path_buf());
    }
    Ok(match image.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(name),
        _ => name.to_path_buf(),
    })
}

/// Opens backing files; a trait so tests can watch what is opened.
pub trait Opener {
    /// Opens `path` read-only.
    fn open_read_only(&mut self, path: &Path) -> io::Result<File>;
}

/// Opens with `open(path, O_RDONLY | O_CLOEXEC)`.
#[derive(Debug, Default)]
pub struct SystemOpener;

impl Opener for SystemOpener {
    fn open_read_only(&mut self, path: &Path) -> io::Result<File> {
        File::open(path)
    }
}

/// The format of backing file `file` (at `path`, named by `image`): the
/// declared `format` if any, else its magic, as the driver decides it.
fn declared_format(
    image: &Path,
    path: &Path,
    format: Option<&[u8]>,
    file: &File,
) -> Result<Format, ChainError> {
    let first = read_prefix(file, 4).map_err(|err| ChainError::Header {
        path: path.to_path_buf(),
        err: HeaderError::Io(err),
    })?;
    match LayerFormat::detect(format, &first) {
        Ok(LayerFormat::Qcow2) if magic_format(&first) != Format::Qcow2 => {
            Err(ChainError::NotQcow2 {
                image: image.to_path_buf(),
                path: path.to_path_buf(),
            })
        }
        Ok(f) => Ok(f.into()),
        Err(_) => Err(ChainError::UnsupportedFormat {
            image: image.to_path_buf(),
            path: path.to_path_buf(),
            format: String::from_utf8_lossy(format.unwrap_or_default()).into_owned(),
        }),
    }
}

/// Follows the backing chain of the already opened top image.
///
/// `top_format` is the format of the top image (already detected or given
/// by the user). Returns the layers in order, `[0]` being the top image.
pub fn resolve_chain(
    top_path: &Path,
    top: File,
    top_format: Format,
    opener: &mut dyn Opener,
) -> Result<Vec<Layer>, ChainError> {
    let mut layers: Vec<Layer> = Vec::new();
    let mut ids: Vec<(u64, u64)> = Vec::new();
    let mut next = Some((top_path.to_path_buf(), top, top_format));

    while let Some((path, file, format)) = next.take() {
        let meta = file.metadata().map_err(|err| ChainError::Stat {
            path: path.clone(),
            err,
        })?;
        let id = (meta.dev(), meta.ino());
        if let Some(first) = ids.iter().position(|&x| x == id) {
            return Err(ChainError::Loop {
                path,
                first_path: layers[first].path.clone(),
                first,
                again: layers.len(),
            });
        }
        if layers.len() == uapi::MAX_LAYERS {
            return Err(ChainError::TooDeep {
                top: top_path.to_path_buf(),
            });
        }

        if format == Format::Qcow2 {
            let backing = read_backing(&file).map_err(|err| ChainError::Header {
                path: path.clone(),
                err,
            })?;
            if backing.data_file {
                return Err(ChainError::DataFile { path });
            }
            if let Some(name) = &backing.name {
                let bpath = resolve_backing_path(&path, name)?;
                let bfile = opener
                    .open_read_only(&bpath)
                    .map_err(|err| ChainError::Open {
                        image: path.clone(),
                        name: PathBuf::from(OsStr::from_bytes(name)),
                        path: bpath.clone(),
                        err,
                    })?;
                let bformat = declared_format(&path, &bpath, backing.format.as_deref(), &bfile)?;
                next = Some((bpath, bfile, bformat));
            }
        }
        ids.push(id);
        layers.push(Layer { path, file, format });
    }
    Ok(layers)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;
    use std::process::Command;

    /// `qemu-img ARGS` in `dir`, which must succeed.
    pub(crate) fn qemu_img(dir: &Path, args: &[&str]) {
        let out = Command::new("qemu-img")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("qemu-img is needed for these tests");
        assert!(
            out.status.success(),
            "qemu-img {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `qemu-img create -f qcow2 -b BACKING -F FORMAT TOP` in `dir`.
    fn overlay(dir: &Path, backing: &str, format: &str, top: &str) {
        qemu_img(
            dir,
            &[
                "create", "-q", "-f", "qcow2", "-b", backing, "-F", format, top,
            ],
        );
    }

    fn resolve(path: &Path) -> Result<Vec<Layer>, ChainError> {
        let f = File::open(path).unwrap();
        let fmt = probe(&f).unwrap();
        resolve_chain(path, f, fmt, &mut SystemOpener)
    }

    fn paths(layers: &[Layer]) -> Vec<(PathBuf, Format)> {
        layers.iter().map(|l| (l.path.clone(), l.format)).collect()
    }

    /// A header with the given version, backing name and backing format
    /// extension, in a 4 KiB file.
    fn header(version: u32, backing: Option<&str>, format: Option<&[u8]>) -> Vec<u8> {
        let mut b = vec![0u8; 4096];
        b[..4].copy_from_slice(b"QFI\xfb");
        b[4..8].copy_from_slice(&version.to_be_bytes());
        b[20..24].copy_from_slice(&16u32.to_be_bytes());
        let hlen: usize = if version == 2 { 72 } else { 104 };
        if version == 3 {
            b[100..104].copy_from_slice(&(hlen as u32).to_be_bytes());
        }
        let mut off = hlen;
        if let Some(f) = format {
            let ext = qcow2_format::header::EXT_BACKING_FORMAT;
            b[off..off + 4].copy_from_slice(&ext.to_be_bytes());
            b[off + 4..off + 8].copy_from_slice(&(f.len() as u32).to_be_bytes());
            b[off + 8..off + 8 + f.len()].copy_from_slice(f);
            off += 8 + f.len().div_ceil(8) * 8;
        }
        off += 8; // end of the extensions (zeros)
        if let Some(n) = backing {
            b[8..16].copy_from_slice(&(off as u64).to_be_bytes());
            b[16..20].copy_from_slice(&(n.len() as u32).to_be_bytes());
            b[off..off + n.len()].copy_from_slice(n.as_bytes());
        }
        b
    }

    fn file_with(bytes: &[u8]) -> File {
        use std::io::Write;
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    fn backing_of(bytes: &[u8]) -> Result<Backing, HeaderError> {
        read_backing(&file_with(bytes))
    }

    #[test]
    fn backing_names_from_the_header() {
        assert_eq!(
            backing_of(&header(3, None, None)).unwrap(),
            Backing::default()
        );
        for v in [2, 3] {
            let b = backing_of(&header(v, Some("../base.img"), Some(b"raw"))).unwrap();
            assert_eq!(b.name.as_deref(), Some(&b"../base.img"[..]));
            assert_eq!(b.format.as_deref(), Some(&b"raw"[..]));
            assert!(!b.data_file);
        }
        // Padded with NULs, as some writers do: the name ends at the first.
        let b = backing_of(&header(3, Some("base"), Some(b"qcow2\0\0\0"))).unwrap();
        assert_eq!(b.format.as_deref(), Some(&b"qcow2"[..]));
        // An empty name is no backing file, as for QEMU and the driver.
        let mut h = header(3, None, None);
        h[8..16].copy_from_slice(&512u64.to_be_bytes());
        assert_eq!(backing_of(&h).unwrap().name, None);
        // The external data file bit is reported, the chain refuses it.
        let mut h = header(3, None, None);
        h[79] = 1 << 2;
        assert!(backing_of(&h).unwrap().data_file);
        // What only the driver judges does not stop the chain here: an
        // unknown incompatible feature, encryption, a huge L1 table.
        let mut h = header(3, Some("base"), None);
        h[72] = 0x80;
        h[32..36].copy_from_slice(&1u32.to_be_bytes());
        h[36..40].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(backing_of(&h).unwrap().name.as_deref(), Some(&b"base"[..]));
    }

    #[test]
    fn not_qcow2() {
        for bytes in [&b""[..], b"QFI", &[0u8; 512]] {
            assert!(matches!(backing_of(bytes), Err(HeaderError::NotQcow2)));
        }
        assert_eq!(probe(&file_with(&[0u8; 512])).unwrap(), Format::Raw);
        assert_eq!(probe(&file_with(b"QF")).unwrap(), Format::Raw);
        assert_eq!(
            probe(&file_with(&header(3, None, None))).unwrap(),
            Format::Qcow2
        );
    }

    #[test]
    fn malformed_layouts_are_errors() {
        let good = header(3, Some("base"), Some(b"qcow2"));
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
                "offset past cluster",
                Box::new(|b| b[8..16].copy_from_slice(&(1u64 << 40).to_be_bytes())),
            ),
            (
                "offset overflow",
                Box::new(|b| b[8..16].copy_from_slice(&u64::MAX.to_be_bytes())),
            ),
            ("name past eof", Box::new(|b| b.truncate(130))),
            (
                "ext too long",
                Box::new(|b| b[108..112].copy_from_slice(&u32::MAX.to_be_bytes())),
            ),
        ];
        for (what, mutate) in cases {
            let mut b = good.clone();
            mutate(&mut b);
            match backing_of(&b) {
                Err(e @ HeaderError::Invalid(_)) => {
                    assert!(e.to_string().starts_with("invalid qcow2 header: "), "{e}")
                }
                other => panic!("{what}: {other:?}"),
            }
        }
        let mut b = good.clone();
        let off = u64::from_be_bytes(b[8..16].try_into().unwrap()) as usize;
        b[off + 1] = 0;
        let e = backing_of(&b).unwrap_err();
        assert!(matches!(e, HeaderError::NulInBackingName), "{e:?}");
        assert_eq!(
            e.to_string(),
            "invalid qcow2 header: backing file name contains a NUL byte"
        );
    }

    #[test]
    fn garbage_never_panics() {
        // A cheap deterministic fuzz: random bytes after a valid magic.
        let mut x: u64 = 0x1234_5678_9abc_def0;
        let f = tempfile::tempfile().unwrap();
        for _ in 0..500 {
            let len = (x % 600) as usize;
            let mut b = Vec::with_capacity(len + 4);
            b.extend_from_slice(b"QFI\xfb");
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
            f.set_len(0).unwrap();
            f.write_all_at(&b, 0).unwrap();
            let _ = read_backing(&f);
        }
    }

    #[test]
    fn protocol_detection() {
        assert!(has_protocol(b"nbd:localhost:10809"));
        assert!(has_protocol(b"json:{}"));
        assert!(!has_protocol(b"./a:b"));
        assert!(!has_protocol(b"/a:b"));
        assert!(!has_protocol(b"base.qcow2"));
    }

    #[test]
    fn backing_path_resolution() {
        let r = |img: &str, name: &str| resolve_backing_path(Path::new(img), name.as_bytes());
        assert_eq!(r("/a/b/top", "base").unwrap(), Path::new("/a/b/base"));
        assert_eq!(
            r("/a/b/top", "../c/base").unwrap(),
            Path::new("/a/b/../c/base")
        );
        assert_eq!(r("rel/top", "base").unwrap(), Path::new("rel/base"));
        assert_eq!(r("top", "base").unwrap(), Path::new("base"));
        assert_eq!(r("/a/top", "/abs/base").unwrap(), Path::new("/abs/base"));
        assert_eq!(r("/a/top", "file:base").unwrap(), Path::new("/a/base"));
        assert_eq!(r("/a/top", "file:/x/base").unwrap(), Path::new("/x/base"));
        assert!(matches!(
            r("/a/top", "nbd://host/x"),
            Err(ChainError::Protocol { .. })
        ));
    }

    #[test]
    fn probe_formats() {
        let d = tempfile::tempdir().unwrap();
        qemu_img(d.path(), &["create", "-q", "-f", "qcow2", "a.qcow2", "1M"]);
        qemu_img(d.path(), &["create", "-q", "-f", "raw", "a.raw", "1M"]);
        let q = File::open(d.path().join("a.qcow2")).unwrap();
        let r = File::open(d.path().join("a.raw")).unwrap();
        assert_eq!(probe(&q).unwrap(), Format::Qcow2);
        assert_eq!(probe(&r).unwrap(), Format::Raw);
        let empty = tempfile::tempfile().unwrap();
        assert_eq!(probe(&empty).unwrap(), Format::Raw);
        qemu_img(d.path(), &["create", "-q", "-f", "vdi", "a.vdi", "1M"]);
        let v = File::open(d.path().join("a.vdi")).unwrap();
        assert_eq!(probe(&v).unwrap(), Format::Vdi);
        for sub in ["monolithicSparse", "streamOptimized"] {
            let opt = format!("subformat={sub}");
            qemu_img(
                d.path(),
                &["create", "-q", "-f", "vmdk", "-o", &opt, "a.vmdk", "1M"],
            );
            let v = File::open(d.path().join("a.vmdk")).unwrap();
            assert_eq!(probe(&v).unwrap(), Format::Vmdk, "{sub}");
        }
        // The signature alone, anywhere but at byte 64, is raw.
        let mut f = tempfile::tempfile().unwrap();
        let mut bytes = vec![0u8; 512];
        bytes[60..64].copy_from_slice(&0xbeda_107fu32.to_le_bytes());
        f.write_all(&bytes).unwrap();
        assert_eq!(probe(&f).unwrap(), Format::Raw);
    }

    #[test]
    fn chain_with_relative_names_resolves_against_the_image_dir() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        qemu_img(d.path(), &["create", "-q", "-f", "raw", "base.raw", "1M"]);
        overlay(d.path(), "../base.raw", "raw", "sub/mid.qcow2");
        overlay(d.path(), "mid.qcow2", "qcow2", "sub/top.qcow2");
        // Resolve from an unrelated cwd: names must not depend on it.
        let top = d.path().join("sub/top.qcow2");
        let layers = resolve(&top).unwrap();
        assert_eq!(
            paths(&layers),
            vec![
                (top.clone(), Format::Qcow2),
                (d.path().join("sub/mid.qcow2"), Format::Qcow2),
                (d.path().join("sub/../base.raw"), Format::Raw),
            ]
        );
    }

    #[test]
    fn raw_backing_without_format_is_probed() {
        let d = tempfile::tempdir().unwrap();
        qemu_img(d.path(), &["create", "-q", "-f", "raw", "base.img", "1M"]);
        overlay(d.path(), "base.img", "raw", "top.qcow2");
        // Drop the backing format extension: rewrite its type to "unknown".
        let top = d.path().join("top.qcow2");
        let mut bytes = std::fs::read(&top).unwrap();
        let pos = bytes
            .windows(4)
            .position(|w| w == qcow2_format::header::EXT_BACKING_FORMAT.to_be_bytes())
            .unwrap();
        bytes[pos..pos + 4].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        std::fs::write(&top, &bytes).unwrap();
        let layers = resolve(&top).unwrap();
        assert_eq!(layers.len(), 2);
        assert_eq!(layers[1].format, Format::Raw);
    }

    #[test]
    fn backing_format_file_is_raw_and_data_files_are_refused() {
        let d = tempfile::tempdir().unwrap();
        qemu_img(d.path(), &["create", "-q", "-f", "raw", "base.img", "1M"]);
        overlay(d.path(), "base.img", "file", "top.qcow2");
        let layers = resolve(&d.path().join("top.qcow2")).unwrap();
        assert_eq!(layers[1].format, Format::Raw);
        qemu_img(
            d.path(),
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-o",
                "data_file=ext.data",
                "ext.qcow2",
                "1M",
            ],
        );
        let err = resolve(&d.path().join("ext.qcow2")).unwrap_err();
        assert!(matches!(err, ChainError::DataFile { .. }), "{err}");
    }

    #[test]
    fn missing_backing_file_is_a_clear_error() {
        let d = tempfile::tempdir().unwrap();
        qemu_img(
            d.path(),
            &["create", "-q", "-f", "qcow2", "base.qcow2", "1M"],
        );
        overlay(d.path(), "base.qcow2", "qcow2", "top.qcow2");
        std::fs::remove_file(d.path().join("base.qcow2")).unwrap();
        let top = d.path().join("top.qcow2");
        let err = resolve(&top).unwrap_err();
        assert!(
            matches!(&err, ChainError::Open { err, .. } if err.raw_os_error() == Some(libc::ENOENT))
        );
        assert_eq!(
            err.to_string(),
            format!(
                "{}: cannot open backing file '{}' (named 'base.qcow2' in the image): No such file or directory",
                top.display(),
                d.path().join("base.qcow2").display()
            )
        );
    }

    #[test]
    fn declared_qcow2_backing_that_is_raw_is_refused() {
        let d = tempfile::tempdir().unwrap();
        qemu_img(d.path(), &["create", "-q", "-f", "qcow2", "base", "1M"]);
        overlay(d.path(), "base", "qcow2", "top.qcow2");
        std::fs::write(d.path().join("base"), vec![0u8; 4096]).unwrap();
        let err = resolve(&d.path().join("top.qcow2")).unwrap_err();
        assert!(matches!(err, ChainError::NotQcow2 { .. }), "{err}");
    }

    #[test]
    fn unsupported_backing_format_is_refused() {
        let d = tempfile::tempdir().unwrap();
        qemu_img(d.path(), &["create", "-q", "-f", "vmdk", "base.vmdk", "1M"]);
        overlay(d.path(), "base.vmdk", "vmdk", "top.qcow2");
        let err = resolve(&d.path().join("top.qcow2")).unwrap_err();
        assert!(
            matches!(&err, ChainError::UnsupportedFormat { format, .. } if format == "vmdk"),
            "{err}"
        );
    }

    #[test]
    fn loops_are_refused() {
        let d = tempfile::tempdir().unwrap();
        // a -> b -> a, made by creating both and then rebasing unsafely.
        qemu_img(d.path(), &["create", "-q", "-f", "qcow2", "a.qcow2", "1M"]);
        overlay(d.path(), "a.qcow2", "qcow2", "b.qcow2");
        qemu_img(
            d.path(),
            &[
                "rebase", "-q", "-u", "-f", "qcow2", "-b", "b.qcow2", "-F", "qcow2", "a.qcow2",
            ],
        );
        let err = resolve(&d.path().join("a.qcow2")).unwrap_err();
        assert!(
            matches!(
                err,
                ChainError::Loop {
                    first: 0,
                    again: 2,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().starts_with("backing chain loop: layer 2"));

        // A self-loop through a symlink is the same file too.
        qemu_img(d.path(), &["create", "-q", "-f", "qcow2", "s.qcow2", "1M"]);
        std::os::unix::fs::symlink("s.qcow2", d.path().join("link")).unwrap();
        qemu_img(
            d.path(),
            &[
                "rebase", "-q", "-u", "-f", "qcow2", "-b", "link", "-F", "qcow2", "s.qcow2",
            ],
        );
        let err = resolve(&d.path().join("s.qcow2")).unwrap_err();
        assert!(
            matches!(
                err,
                ChainError::Loop {
                    first: 0,
                    again: 1,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn depth_limit() {
        let d = tempfile::tempdir().unwrap();
        qemu_img(d.path(), &["create", "-q", "-f", "qcow2", "l0.qcow2", "1M"]);
        for i in 1..=16 {
            let b = format!("l{}.qcow2", i - 1);
            let n = format!("l{i}.qcow2");
            overlay(d.path(), &b, "qcow2", &n);
        }
        // l15 has 16 layers (l15..l0): the maximum.
        assert_eq!(resolve(&d.path().join("l15.qcow2")).unwrap().len(), 16);
        // l16 has 17.
        let err = resolve(&d.path().join("l16.qcow2")).unwrap_err();
        assert!(matches!(err, ChainError::TooDeep { .. }), "{err}");
        assert!(err
            .to_string()
            .ends_with("backing chain is longer than 16 layers"));
    }

    #[test]
    fn backing_files_are_opened_read_only() {
        struct Watch(Vec<PathBuf>);
        impl Opener for Watch {
            fn open_read_only(&mut self, path: &Path) -> io::Result<File> {
                self.0.push(path.to_path_buf());
                File::open(path)
            }
        }
        let d = tempfile::tempdir().unwrap();
        qemu_img(
            d.path(),
            &["create", "-q", "-f", "qcow2", "base.qcow2", "1M"],
        );
        overlay(d.path(), "base.qcow2", "qcow2", "top.qcow2");
        let top = d.path().join("top.qcow2");
        let mut w = Watch(vec![]);
        let layers = resolve_chain(&top, File::open(&top).unwrap(), Format::Qcow2, &mut w).unwrap();
        assert_eq!(w.0, vec![d.path().join("base.qcow2")]);
        for l in &layers[1..] {
            // O_RDONLY: writing must fail with EBADF.
            use std::io::Write;
            let mut f = &l.file;
            assert_eq!(f.write(b"x").unwrap_err().raw_os_error(), Some(libc::EBADF));
        }
    }
}
