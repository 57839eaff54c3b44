//! The descriptor text (VMDK spec "The Descriptor"): embedded in a
//! hosted sparse extent, or a file of its own.
//!
//! ```text
//! # Disk DescriptorFile
//! version=1
//! CID=fffffffe
//! parentCID=ffffffff
//! createType="twoGbMaxExtentSparse"
//!
//! # Extent description
//! RW 4192256 SPARSE "disk-s001.vmdk"
//! RW 2048 FLAT "disk-flat.vmdk" 0
//! RDONLY 1000 ZERO
//!
//! # The Disk Data Base
//! ddb.adapterType = "ide"
//! ```
//!
//! [`Descriptor::parse`] reads the text up to its first NUL (embedded
//! descriptors are NUL padded), line by line (`\n` or `\r\n`): blank
//! lines and `#` comments are skipped; `key=value` lines (spaces around
//! `=` and quotes around the value allowed) give `version` (1, 2 or 3,
//! required), `createType` (required), `parentFileNameHint`, and the
//! rest (`CID`, `ddb.*`, ...) is ignored; lines starting with an access
//! mode are extents: `ACCESS SECTORS TYPE "NAME" [OFFSET]`, with access
//! `RW` or `RDONLY` (`NOACCESS` is refused), type `SPARSE`, `FLAT`
//! (optional sector offset, 0 if absent) or `ZERO` (no name); ESX types
//! (`VMFS`, `VMFSSPARSE`, `SESPARSE`) are refused (QEMU 7.2 reads a
//! `vmfs` descriptor's first extent twice, so there is no oracle), at most [`MAX_EXTENTS`]. Anything else is an invalid
//! line. Names are returned as they are written: the caller resolves them
//! (relative to the descriptor's directory) and decides which paths it
//! accepts; [`Descriptor::check_file`] refuses a name written twice and
//! more than [`MAX_EXTENT_FILES`] extent files.

use super::disk::{MAX_EXTENTS, MAX_EXTENT_FILES};
use super::error::{Error, Result, Word};
use super::header::MAX_SECTORS;

/// Longest descriptor text read: 64 KiB (QEMU's embedded descriptors are
/// 10 KiB; a descriptor with [`MAX_EXTENTS`] extents is far shorter).
pub const MAX_DESCRIPTOR_LEN: usize = 64 << 10;

/// The first line QEMU and VMware write in a descriptor file.
pub const SIGNATURE: &[u8] = b"# Disk DescriptorFile";

/// Whether `first` (the first bytes of a file) starts with
/// [`SIGNATURE`]: what `--file-fmt auto` takes as a descriptor file (a
/// hand-written descriptor without it is read only when asked for).
pub fn has_signature(first: &[u8]) -> bool {
    first.starts_with(SIGNATURE)
}

/// A byte range of the descriptor text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    offset: u32,
    len: u32,
}

impl Span {
    /// The bytes of the span in `text` (the text that was parsed).
    pub fn get<'a>(&self, text: &'a [u8]) -> Option<&'a [u8]> {
        let start = self.offset as usize;
        text.get(start..start.checked_add(self.len as usize)?)
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the span is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The `createType` of a descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreateType {
    /// One hosted sparse extent holding its own descriptor.
    MonolithicSparse,
    /// One compressed sparse extent with markers.
    StreamOptimized,
    /// A descriptor file and one flat extent.
    MonolithicFlat,
    /// A descriptor file and sparse extents of at most 2 GiB.
    TwoGbMaxExtentSparse,
    /// A descriptor file and flat extents of at most 2 GiB.
    TwoGbMaxExtentFlat,
}

impl CreateType {
    /// Decodes a `createType` value; other types (`vmfs`, `vmfsSparse`,
    /// `seSparse`, `custom`, devices...) are unsupported.
    pub fn from_name(name: &[u8]) -> Result<CreateType> {
        Ok(match name {
            b"monolithicSparse" => CreateType::MonolithicSparse,
            b"streamOptimized" => CreateType::StreamOptimized,
            b"monolithicFlat" => CreateType::MonolithicFlat,
            b"twoGbMaxExtentSparse" => CreateType::TwoGbMaxExtentSparse,
            b"twoGbMaxExtentFlat" => CreateType::TwoGbMaxExtentFlat,
            other => return Err(Error::UnsupportedCreateType(Word::new(other))),
        })
    }

    /// The name as written in descriptors.
    pub fn name(self) -> &'static str {
        match self {
            CreateType::MonolithicSparse => "monolithicSparse",
            CreateType::StreamOptimized => "streamOptimized",
            CreateType::MonolithicFlat => "monolithicFlat",
            CreateType::TwoGbMaxExtentSparse => "twoGbMaxExtentSparse",
            CreateType::TwoGbMaxExtentFlat => "twoGbMaxExtentFlat",
        }
    }

    /// Whether the descriptor of this type lives in a separate file (not
    /// embedded in a sparse extent).
    pub fn is_descriptor_file(self) -> bool {
        !matches!(
            self,
            CreateType::MonolithicSparse | CreateType::StreamOptimized
        )
    }
}

/// Access mode of an extent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `RW`.
    ReadWrite,
    /// `RDONLY`.
    ReadOnly,
}

/// Type of an extent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtentType {
    /// `SPARSE`: a hosted sparse extent file.
    Sparse,
    /// `FLAT` at this sector offset of the file.
    Flat {
        /// Offset in sectors.
        offset: u64,
    },
    /// `ZERO`: no file, reads as zeros.
    Zero,
}

/// One extent line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtentLine {
    /// Access mode.
    pub access: Access,
    /// Size in sectors (at least 1).
    pub sectors: u64,
    /// Type.
    pub kind: ExtentType,
    /// The file name (between the quotes, not empty), `None` for `ZERO`.
    pub name: Option<Span>,
    /// Line number (1-based), for messages.
    pub line: u32,
}

/// A parsed descriptor.
#[derive(Clone, Copy, Debug)]
pub struct Descriptor {
    /// The `version` value.
    pub version: u64,
    /// The `createType` value.
    pub create_type: CreateType,
    /// The `parentFileNameHint` value, if any.
    pub parent: Option<Span>,
    extents: [Option<ExtentLine>; MAX_EXTENTS],
    count: usize,
    sectors: u64,
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| !is_blank(b)).unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|&b| !is_blank(b))
        .map_or(start, |e| e + 1);
    s.get(start..end).unwrap_or(&[])
}

/// Splits the first blank-separated word off `s`.
fn word(s: &[u8]) -> (&[u8], &[u8]) {
    let s = trim(s);
    let end = s.iter().position(|&b| is_blank(b)).unwrap_or(s.len());
    s.split_at(end)
}

fn decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// The offset of `sub` (a subslice of `text`) in `text` as a span.
fn span_of(text: &[u8], sub: &[u8]) -> Option<Span> {
    let base = text.as_ptr() as usize;
    let at = (sub.as_ptr() as usize).checked_sub(base)?;
    if at.checked_add(sub.len())? > text.len() {
        return None;
    }
    Some(Span {
        offset: u32::try_from(at).ok()?,
        len: u32::try_from(sub.len()).ok()?,
    })
}

impl Descriptor {
    /// Parses a descriptor; see the module docs. `text` may be NUL padded
    /// and is at most [`MAX_DESCRIPTOR_LEN`] bytes.
    pub fn parse(text: &[u8]) -> Result<Descriptor> {
        if text.len() > MAX_DESCRIPTOR_LEN {
            return Err(Error::DescriptorTooLarge(text.len() as u64));
        }
        let text = text
            .iter()
            .position(|&b| b == 0)
            .and_then(|n| text.get(..n))
            .unwrap_or(text);
        let mut version = None;
        let mut create_type = None;
        let mut parent = None;
        let mut d = Descriptor {
            version: 0,
            create_type: CreateType::MonolithicSparse,
            parent: None,
            extents: [None; MAX_EXTENTS],
            count: 0,
            sectors: 0,
        };
        for (n, raw) in text.split(|&b| b == b'\n').enumerate() {
            let line_no = u32::try_from(n + 1).unwrap_or(u32::MAX);
            let invalid = Error::InvalidDescriptorLine(line_no);
            let line = trim(raw.strip_suffix(b"\r").unwrap_or(raw));
            if line.is_empty() || line.first() == Some(&b'#') {
                continue;
            }
            let (first, rest) = word(line);
            let access = match first {
                b"RW" => Some(Access::ReadWrite),
                b"RDONLY" => Some(Access::ReadOnly),
                b"NOACCESS" => return Err(Error::NoAccessExtent(line_no)),
                _ => None,
            };
            if let Some(access) = access {
                let e = Self::extent_line(text, access, rest, line_no)?;
                d.sectors = d
                    .sectors
                    .checked_add(e.sectors)
                    .filter(|&s| s <= MAX_SECTORS)
                    .ok_or(Error::DiskTooLarge)?;
                let slot = d.extents.get_mut(d.count).ok_or(Error::TooManyExtents)?;
                *slot = Some(e);
                d.count += 1;
                continue;
            }
            let eq = line.iter().position(|&b| b == b'=').ok_or(invalid)?;
            let key = trim(line.get(..eq).ok_or(invalid)?);
            let mut value = trim(line.get(eq + 1..).ok_or(invalid)?);
            if value.len() >= 2 && value.first() == Some(&b'"') && value.last() == Some(&b'"') {
                value = value.get(1..value.len() - 1).ok_or(invalid)?;
            }
            match key {
                b"version" => {
                    if version.is_some() {
                        return Err(Error::MissingVersion);
                    }
                    let v = decimal(value).ok_or(invalid)?;
                    if !(1..=3).contains(&v) {
                        return Err(Error::UnsupportedDescriptorVersion(v));
                    }
                    version = Some(v);
                }
                b"createType" => {
                    if create_type.is_some() {
                        return Err(Error::MissingCreateType);
                    }
                    create_type = Some(CreateType::from_name(value)?);
                }
                b"parentFileNameHint" => parent = span_of(text, value),
                _ => {}
            }
        }
        d.version = version.ok_or(Error::MissingVersion)?;
        d.create_type = create_type.ok_or(Error::MissingCreateType)?;
        d.parent = parent;
        Ok(d)
    }

    fn extent_line(text: &[u8], access: Access, rest: &[u8], line: u32) -> Result<ExtentLine> {
        let invalid = Error::InvalidDescriptorLine(line);
        let (size, rest) = word(rest);
        let sectors = decimal(size).filter(|&s| s > 0).ok_or(invalid)?;
        if sectors > MAX_SECTORS {
            return Err(Error::DiskTooLarge);
        }
        let (kind, rest) = word(rest);
        let rest = trim(rest);
        let (name, rest) = if rest.first() == Some(&b'"') {
            let inner = rest.get(1..).ok_or(invalid)?;
            let close = inner.iter().position(|&b| b == b'"').ok_or(invalid)?;
            let name = inner.get(..close).ok_or(invalid)?;
            if name.is_empty() {
                return Err(invalid);
            }
            (
                span_of(text, name),
                trim(inner.get(close + 1..).ok_or(invalid)?),
            )
        } else {
            (None, rest)
        };
        let (offset, rest) = word(rest);
        if !trim(rest).is_empty() {
            return Err(invalid);
        }
        let kind = match kind {
            b"SPARSE" if name.is_some() && offset.is_empty() => ExtentType::Sparse,
            b"FLAT" if name.is_some() => ExtentType::Flat {
                offset: if offset.is_empty() {
                    0
                } else {
                    decimal(offset)
                        .filter(|&o| o <= MAX_SECTORS)
                        .ok_or(invalid)?
                },
            },
            b"ZERO" if name.is_none() && offset.is_empty() => ExtentType::Zero,
            b"SPARSE" | b"FLAT" | b"ZERO" => return Err(invalid),
            other => return Err(Error::UnsupportedExtentType(Word::new(other))),
        };
        if name.is_none() && kind != ExtentType::Zero {
            return Err(invalid);
        }
        Ok(ExtentLine {
            access,
            sectors,
            kind,
            name,
            line,
        })
    }

    /// Number of extent lines.
    pub fn extent_count(&self) -> usize {
        self.count
    }

    /// The extent lines, in order.
    pub fn extents(&self) -> impl Iterator<Item = &ExtentLine> + '_ {
        self.extents.iter().take(self.count).flatten()
    }

    /// Sum of the extents' sizes in sectors.
    pub fn sectors(&self) -> u64 {
        self.sectors
    }

    /// Number of extents with a file (all but `ZERO` extents).
    pub fn file_count(&self) -> usize {
        self.extents().filter(|e| e.name.is_some()).count()
    }

    /// Checks a descriptor file (not embedded) whose text is `text`: a
    /// descriptor-file create type, at least one extent, at most
    /// [`MAX_EXTENT_FILES`] extent files, no name written twice, no
    /// parent.
    pub fn check_file(&self, text: &[u8]) -> Result<()> {
        if !self.create_type.is_descriptor_file() {
            return Err(Error::CreateTypeMismatch);
        }
        if self.count == 0 {
            return Err(Error::NoExtents);
        }
        if self.parent.is_some() {
            return Err(Error::ParentUnsupported);
        }
        if self.file_count() > MAX_EXTENT_FILES {
            return Err(Error::TooManyExtents);
        }
        for (i, e) in self.extents().enumerate() {
            let name = e.name.and_then(|s| s.get(text));
            if name.is_some()
                && self
                    .extents()
                    .take(i)
                    .any(|p| p.name.and_then(|s| s.get(text)) == name)
            {
                return Err(Error::DuplicateExtentName(e.line));
            }
        }
        Ok(())
    }

    /// Checks a descriptor embedded in a sparse extent opened as the
    /// image: no parent, a monolithic create type, and at most one
    /// extent, sparse.
    pub fn check_embedded(&self) -> Result<()> {
        if self.parent.is_some() {
            return Err(Error::ParentUnsupported);
        }
        if self.create_type.is_descriptor_file()
            || self.count > 1
            || self.extents().any(|e| e.kind != ExtentType::Sparse)
        {
            return Err(Error::CreateTypeMismatch);
        }
        Ok(())
    }
}
