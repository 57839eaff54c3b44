//! VMDK descriptor files: their extent files are opened here, in
//! userspace, and passed to the kernel as file descriptors after the
//! descriptor's own (`lff_config.fds[1..]`, in the descriptor's order,
//! `ZERO` extents taking none), so that the kernel never opens a path
//! named inside an image.
//!
//! The descriptor is parsed with the `vmdk-format` crate, the code the
//! kernel driver parses it with, so this tool and the driver agree on
//! which files a descriptor names. For each extent file:
//!
//! - its name is resolved against the descriptor's directory (as given,
//!   symlinks not followed, as QEMU does);
//! - an absolute name, or one with a `..` component, is refused unless the
//!   user consents with `--trust-image-paths`;
//! - it is opened read-only and must be a regular file;
//! - it must not be the descriptor or another extent's file (same
//!   st_dev/st_ino: a loop or a duplicate);
//! - a `SPARSE` extent must have the sparse extent magic, a `FLAT` extent
//!   must hold the sectors the descriptor declares.
//!
//! At most [`MAX_EXTENT_FILES`] extent files (`LFF_MAX_LAYERS` with the
//! descriptor). What else the extents hold (headers, grain tables) is
//! judged by the driver, which refuses a bad one with its own errno and a
//! kernel log line. A file with the sparse magic is a monolithic image and
//! is passed alone.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use vmdk_format::descriptor::{has_signature, MAX_DESCRIPTOR_LEN};
use vmdk_format::header::{has_magic, SECTOR};
use vmdk_format::{Descriptor, Error as FormatError, ExtentType, MAX_EXTENT_FILES};

use crate::chain::{read_prefix, Format, Layer, Opener};
use crate::errors::strerror;

/// Whether `first` (the first bytes of a file) is a VMDK: the sparse
/// extent magic `KDMV`, or a descriptor file's first line.
pub fn probe(first: &[u8]) -> bool {
    has_magic(first) || has_signature(first)
}

/// Why the extents of a descriptor could not be opened.
#[derive(Debug)]
pub enum VmdkError {
    /// The descriptor could not be read or stat'ed.
    Io {
        /// The descriptor.
        path: PathBuf,
        /// The error.
        err: io::Error,
    },
    /// The format crate refused the descriptor.
    Descriptor {
        /// The descriptor.
        path: PathBuf,
        /// What is wrong.
        err: FormatError,
    },
    /// An extent name is absolute or has a `..` component.
    Escape {
        /// The descriptor.
        path: PathBuf,
        /// The name as written.
        name: PathBuf,
        /// Its line in the descriptor.
        line: u32,
    },
    /// An extent file could not be opened or stat'ed.
    Open {
        /// The descriptor.
        path: PathBuf,
        /// The resolved extent path.
        extent: PathBuf,
        /// Its line in the descriptor.
        line: u32,
        /// The error.
        err: io::Error,
    },
    /// An extent file is not a regular file.
    NotRegular {
        /// The descriptor.
        path: PathBuf,
        /// The resolved extent path.
        extent: PathBuf,
        /// Its line in the descriptor.
        line: u32,
    },
    /// An extent file is the descriptor or an earlier extent's file.
    Duplicate {
        /// The descriptor.
        path: PathBuf,
        /// The resolved extent path.
        extent: PathBuf,
        /// Its line in the descriptor.
        line: u32,
        /// The file it is the same as.
        same_as: PathBuf,
    },
    /// A `SPARSE` extent file has no sparse extent magic.
    NotSparse {
        /// The descriptor.
        path: PathBuf,
        /// The resolved extent path.
        extent: PathBuf,
        /// Its line in the descriptor.
        line: u32,
    },
    /// A `FLAT` extent file is shorter than the descriptor declares.
    Short {
        /// The descriptor.
        path: PathBuf,
        /// The resolved extent path.
        extent: PathBuf,
        /// Its line in the descriptor.
        line: u32,
        /// Bytes the extent needs (offset included).
        needed: u64,
        /// Bytes the file has.
        len: u64,
    },
}

impl std::fmt::Display for VmdkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VmdkError::Io { path, err } => write!(f, "{}: {}", path.display(), strerror(err)),
            VmdkError::Descriptor { path, err } => match err {
                FormatError::TooManyExtents => write!(
                    f,
                    "{}: invalid VMDK descriptor: more than {MAX_EXTENTS} extents or \
                     {MAX_EXTENT_FILES} extent files",
                    path.display(),
                    MAX_EXTENTS = vmdk_format::MAX_EXTENTS
                ),
                _ => write!(f, "{}: invalid VMDK descriptor: {err}", path.display()),
            },
            VmdkError::Escape { path, name, line } => write!(
                f,
                "{}: line {line}: extent file '{}' is outside the descriptor's directory \
                 (absolute or with '..'); use --trust-image-paths to follow it",
                path.display(),
                name.display()
            ),
            VmdkError::Open {
                path,
                extent,
                line,
                err,
            } => write!(
                f,
                "{}: line {line}: cannot open extent file '{}': {}",
                path.display(),
                extent.display(),
                strerror(err)
            ),
            VmdkError::NotRegular { path, extent, line } => write!(
                f,
                "{}: line {line}: extent file '{}' is not a regular file",
                path.display(),
                extent.display()
            ),
            VmdkError::Duplicate {
                path,
                extent,
                line,
                same_as,
            } => write!(
                f,
                "{}: line {line}: extent file '{}' is the same file as '{}'",
                path.display(),
                extent.display(),
                same_as.display()
            ),
            VmdkError::NotSparse { path, extent, line } => write!(
                f,
                "{}: line {line}: SPARSE extent file '{}' is not a VMDK sparse extent \
                 (no KDMV magic)",
                path.display(),
                extent.display()
            ),
            VmdkError::Short {
                path,
                extent,
                line,
                needed,
                len,
            } => write!(
                f,
                "{}: line {line}: extent file '{}' is {len} bytes, the descriptor declares {needed}",
                path.display(),
                extent.display()
            ),
        }
    }
}

impl std::error::Error for VmdkError {}

/// Whether `name` stays inside the directory it is resolved against: not
/// absolute, no `..` component.
fn stays_inside(name: &Path) -> bool {
    name.components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// The layers of the VMDK image `path` (already opened as `top`): the
/// image alone if it is a sparse extent (monolithicSparse,
/// streamOptimized) or too long to be a descriptor (the driver refuses
/// it), else the descriptor and its extent files; see the module docs.
/// `trust_paths`: follow absolute names and names with `..`.
pub fn resolve_extents(
    path: &Path,
    top: File,
    trust_paths: bool,
    opener: &mut dyn Opener,
) -> Result<Vec<Layer>, VmdkError> {
    let io_err = |err| VmdkError::Io {
        path: path.to_path_buf(),
        err,
    };
    let meta = top.metadata().map_err(io_err)?;
    let first = read_prefix(&top, 4).map_err(io_err)?;
    let mut layers = vec![Layer {
        path: path.to_path_buf(),
        file: top,
        format: Format::Vmdk,
    }];
    if has_magic(&first) || meta.len() > MAX_DESCRIPTOR_LEN as u64 {
        return Ok(layers);
    }
    let text = read_prefix(&layers[0].file, meta.len() as usize).map_err(io_err)?;
    let bad = |err| VmdkError::Descriptor {
        path: path.to_path_buf(),
        err,
    };
    let d = Descriptor::parse(&text).map_err(bad)?;
    d.check_file(&text).map_err(bad)?;
    let mut ids = vec![(meta.dev(), meta.ino())];
    let dir = path.parent().unwrap_or(Path::new(""));
    for e in d.extents() {
        let Some(name) = e.name.and_then(|s| s.get(&text)) else {
            continue;
        };
        let line = e.line;
        let name = Path::new(OsStr::from_bytes(name));
        if !trust_paths && !stays_inside(name) {
            return Err(VmdkError::Escape {
                path: path.to_path_buf(),
                name: name.to_path_buf(),
                line,
            });
        }
        let extent = dir.join(name);
        let open_err = |err| VmdkError::Open {
            path: path.to_path_buf(),
            extent: extent.clone(),
            line,
            err,
        };
        // Before opening: opening a FIFO would block.
        let before = std::fs::metadata(&extent).map_err(open_err)?;
        let file = match before.is_file() {
            true => opener.open_read_only(&extent).map_err(open_err)?,
            false => {
                return Err(VmdkError::NotRegular {
                    path: path.to_path_buf(),
                    extent,
                    line,
                })
            }
        };
        let m = file.metadata().map_err(open_err)?;
        if !m.is_file() {
            return Err(VmdkError::NotRegular {
                path: path.to_path_buf(),
                extent,
                line,
            });
        }
        if let Some(i) = ids.iter().position(|&id| id == (m.dev(), m.ino())) {
            return Err(VmdkError::Duplicate {
                path: path.to_path_buf(),
                extent,
                line,
                same_as: layers[i].path.clone(),
            });
        }
        match e.kind {
            ExtentType::Sparse => {
                if !has_magic(&read_prefix(&file, 4).map_err(open_err)?) {
                    return Err(VmdkError::NotSparse {
                        path: path.to_path_buf(),
                        extent,
                        line,
                    });
                }
            }
            ExtentType::Flat { offset } => {
                // Both at most 2^40 sectors (the parser's bound).
                let needed = (offset + e.sectors) * SECTOR;
                if m.len() < needed {
                    return Err(VmdkError::Short {
                        path: path.to_path_buf(),
                        extent,
                        line,
                        needed,
                        len: m.len(),
                    });
                }
            }
            ExtentType::Zero => {}
        }
        ids.push((m.dev(), m.ino()));
        layers.push(Layer {
            path: extent,
            file,
            format: Format::Vmdk,
        });
    }
    Ok(layers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::tests::qemu_img;
    use crate::chain::SystemOpener;
    use std::fs;
    use std::process::Command;

    fn create(dir: &Path, subformat: &str, name: &str, size: &str) -> PathBuf {
        let opt = format!("subformat={subformat}");
        qemu_img(dir, &["create", "-q", "-f", "vmdk", "-o", &opt, name, size]);
        dir.join(name)
    }

    fn resolve(path: &Path, trust: bool) -> Result<Vec<Layer>, VmdkError> {
        resolve_extents(path, File::open(path).unwrap(), trust, &mut SystemOpener)
    }

    fn paths(layers: &[Layer]) -> Vec<PathBuf> {
        layers.iter().map(|l| l.path.clone()).collect()
    }

    /// A descriptor with `extents` (one line each) in `dir`.
    fn descriptor(dir: &Path, name: &str, extents: &str) -> PathBuf {
        let text = format!(
            "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n\
             createType=\"monolithicFlat\"\n\n# Extent description\n{extents}\n"
        );
        let p = dir.join(name);
        fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn qemu_img_subformats() {
        let d = tempfile::tempdir().unwrap();
        let d = d.path();
        for sub in ["monolithicSparse", "streamOptimized"] {
            let img = create(d, sub, "mono.vmdk", "1M");
            assert_eq!(
                paths(&resolve(&img, false).unwrap()),
                std::slice::from_ref(&img),
                "{sub}"
            );
        }
        let flat = create(d, "monolithicFlat", "flat.vmdk", "1M");
        assert_eq!(
            paths(&resolve(&flat, false).unwrap()),
            [flat.clone(), d.join("flat-flat.vmdk")]
        );
        let split = create(d, "twoGbMaxExtentSparse", "split.vmdk", "5G");
        let want: Vec<PathBuf> = std::iter::once(split.clone())
            .chain((1..=3).map(|i| d.join(format!("split-s00{i}.vmdk"))))
            .collect();
        assert_eq!(paths(&resolve(&split, false).unwrap()), want);
        let split = create(d, "twoGbMaxExtentFlat", "splitf.vmdk", "5G");
        assert_eq!(resolve(&split, false).unwrap().len(), 4);
        // The descriptor's first line makes auto take it as VMDK.
        for img in [&flat, &split] {
            assert_eq!(
                crate::chain::probe(&File::open(img).unwrap()).unwrap(),
                Format::Vmdk
            );
        }
    }

    #[test]
    fn names_resolve_against_the_descriptor_dir_and_stay_inside() {
        let d = tempfile::tempdir().unwrap();
        let d = d.path();
        fs::create_dir(d.join("sub")).unwrap();
        fs::create_dir(d.join("sub/in")).unwrap();
        fs::write(d.join("out.raw"), vec![0u8; 4096]).unwrap();
        fs::write(d.join("sub/in/a.raw"), vec![0u8; 4096]).unwrap();
        let ok = descriptor(
            &d.join("sub"),
            "ok.vmdk",
            "RW 8 FLAT \"./in/a.raw\" 0\nRW 8 ZERO",
        );
        assert_eq!(
            paths(&resolve(&ok, false).unwrap()),
            [ok.clone(), d.join("sub/./in/a.raw")]
        );
        let up = descriptor(
            &d.join("sub"),
            "up.vmdk",
            "RW 8 FLAT \"in/../../out.raw\" 0",
        );
        let abs = d.join("out.raw").display().to_string();
        let abs = descriptor(
            &d.join("sub"),
            "abs.vmdk",
            &format!("RW 8 FLAT \"{abs}\" 0"),
        );
        for (img, line) in [(&up, 8), (&abs, 8)] {
            let e = resolve(img, false).unwrap_err();
            assert!(
                matches!(e, VmdkError::Escape { line: l, .. } if l == line),
                "{e}"
            );
            assert!(
                e.to_string()
                    .ends_with("use --trust-image-paths to follow it"),
                "{e}"
            );
            // With consent they are followed.
            assert_eq!(resolve(img, true).unwrap().len(), 2);
        }
    }

    #[test]
    fn bad_extent_files() {
        let d = tempfile::tempdir().unwrap();
        let d = d.path();
        fs::write(d.join("a.raw"), vec![0u8; 4096]).unwrap();
        std::os::unix::fs::symlink("a.raw", d.join("link")).unwrap();
        fs::create_dir(d.join("dir")).unwrap();
        let st = Command::new("mkfifo").arg(d.join("fifo")).status().unwrap();
        assert!(st.success());
        let err = |extents: &str| {
            let img = descriptor(d, "bad.vmdk", extents);
            resolve(&img, false).unwrap_err()
        };
        let img = d.join("bad.vmdk").display().to_string();
        let e = err("RW 8 FLAT \"missing\" 0");
        assert!(
            matches!(&e, VmdkError::Open { err, .. } if err.raw_os_error() == Some(libc::ENOENT))
        );
        assert_eq!(
            e.to_string(),
            format!(
                "{img}: line 8: cannot open extent file '{}': No such file or directory",
                d.join("missing").display()
            )
        );
        for name in ["dir", "fifo"] {
            let e = err(&format!("RW 8 FLAT \"{name}\" 0"));
            assert!(matches!(e, VmdkError::NotRegular { .. }), "{name}: {e}");
        }
        let e = err("RW 8 FLAT \"a.raw\" 0\nRW 8 FLAT \"link\" 0");
        assert!(matches!(e, VmdkError::Duplicate { line: 9, .. }), "{e}");
        assert_eq!(
            e.to_string(),
            format!(
                "{img}: line 9: extent file '{}' is the same file as '{}'",
                d.join("link").display(),
                d.join("a.raw").display()
            )
        );
        let e = err("RW 8 FLAT \"bad.vmdk\" 0");
        assert!(matches!(e, VmdkError::Duplicate { .. }), "{e}");
        let e = err("RW 8 FLAT \"a.raw\" 0\nRW 8 FLAT \"a.raw\" 0");
        assert!(
            matches!(
                e,
                VmdkError::Descriptor {
                    err: FormatError::DuplicateExtentName(9),
                    ..
                }
            ),
            "{e}"
        );
        let e = err("RW 8 SPARSE \"a.raw\"");
        assert!(matches!(e, VmdkError::NotSparse { .. }), "{e}");
        let e = err("RW 8 FLAT \"a.raw\" 1");
        assert_eq!(
            e.to_string(),
            format!(
                "{img}: line 8: extent file '{}' is 4096 bytes, the descriptor declares 4608",
                d.join("a.raw").display()
            )
        );
        let e = err("RW 8 FLAT \"a.raw\" 0\nthis is no descriptor line");
        assert_eq!(
            e.to_string(),
            format!("{img}: invalid VMDK descriptor: invalid descriptor line: line 9")
        );
        let e = err("RW 8 FLAT \"a.raw\" 0\nparentFileNameHint=\"base.vmdk\"");
        assert!(
            matches!(
                e,
                VmdkError::Descriptor {
                    err: FormatError::ParentUnsupported,
                    ..
                }
            ),
            "{e}"
        );
        let many: String = (0..16)
            .map(|i| {
                fs::write(d.join(format!("f{i}")), vec![0u8; 512]).unwrap();
                format!("RW 1 FLAT \"f{i}\" 0\n")
            })
            .collect();
        let e = err(&many);
        assert!(
            e.to_string()
                .ends_with("more than 16 extents or 15 extent files"),
            "{e}"
        );
        let fifteen = descriptor(d, "fifteen.vmdk", &many[..many.rfind("RW").unwrap()]);
        assert_eq!(
            resolve(&fifteen, false).unwrap().len(),
            crate::uapi::MAX_LAYERS
        );
    }
}
