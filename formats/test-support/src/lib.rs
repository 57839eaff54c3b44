//! Helpers shared by the host tests of the format crates (`formats/vmdk`,
//! `formats/vdi`): running `qemu-img`/`qemu-io`, deterministic
//! pseudo-random data, and comparing a reader with the
//! `qemu-img convert -O raw` oracle, whole and in pieces.
//!
//! The suites need `qemu-img` and `qemu-io` (Debian `qemu-utils`, `make
//! deps`). As for `formats/qcow2`, a suite without them does not pass
//! silently: [`require_qemu`] prints a `SKIP` line with the reason and
//! fails the test, and `scripts/run-tests` reports the failure.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Fails the calling test, loudly, if `qemu-img` or `qemu-io` is missing.
pub fn require_qemu() {
    for tool in ["qemu-img", "qemu-io"] {
        let found = Command::new(tool)
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !found {
            eprintln!("SKIP: {tool} not found (install qemu-utils: make deps)");
            panic!("{tool} is needed by this suite and was not found");
        }
    }
}

/// Runs a command, panicking with its output if it fails.
pub fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a command, returning whether it succeeded.
pub fn try_run(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// `qemu-img ARGS...`.
pub fn qemu_img(args: &[&str]) {
    require_qemu();
    run("qemu-img", args);
}

/// `qemu-io -f FORMAT -c CMD... IMAGE`.
pub fn qemu_io(format: &str, image: &Path, cmds: &[&str]) {
    require_qemu();
    let mut args: Vec<&str> = vec!["-f", format];
    for c in cmds {
        args.push("-c");
        args.push(c);
    }
    args.push(s(image));
    run("qemu-io", &args);
}

pub use format_host::Rng;

/// Data with a mix of zero runs, random bytes, text-like bytes and
/// repeated patterns, in 4 KiB pieces, so compressed grains have varied
/// sizes and sparse images have holes.
pub fn mixed_data(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut v = vec![0u8; len];
    for chunk in v.chunks_mut(4096) {
        match rng.below(5) {
            0 => {}
            1 => chunk.iter_mut().for_each(|b| *b = rng.next_u64() as u8),
            2 => chunk
                .iter_mut()
                .for_each(|b| *b = b"abcdefgh "[rng.below(9) as usize]),
            3 => {
                let p = rng.next_u64() as u8;
                chunk.iter_mut().for_each(|b| *b = p)
            }
            _ => chunk.iter_mut().enumerate().for_each(|(i, b)| {
                *b = if rng.below(8) == 0 {
                    rng.next_u64() as u8
                } else {
                    i as u8
                }
            }),
        }
    }
    v
}

/// The oracle: `qemu-img convert -f FORMAT -O raw IMAGE` as a (sparse)
/// raw file in `dir`.
pub fn oracle_file(dir: &Path, format: &str, image: &Path) -> PathBuf {
    let out = dir.join(format!(
        "oracle-{}.raw",
        image.file_name().unwrap().to_str().unwrap()
    ));
    qemu_img(&["convert", "-f", format, "-O", "raw", s(image), s(&out)]);
    out
}

/// The oracle read back into memory (for small disks).
pub fn oracle(dir: &Path, format: &str, image: &Path) -> Vec<u8> {
    let out = oracle_file(dir, format, image);
    let data = fs::read(&out).unwrap();
    fs::remove_file(&out).unwrap();
    data
}

/// `size` bytes of [`mixed_data`] (`seed`) converted by qemu-img to
/// `format` with options `opts`, as `dir/img.FORMAT`.
pub fn converted(dir: &Path, format: &str, opts: &str, size: usize, seed: u64) -> PathBuf {
    let raw = write_raw(dir, "src.raw", &mixed_data(size, seed));
    let img = dir.join(format!("img.{format}"));
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        format,
        "-o",
        opts,
        s(&raw),
        s(&img),
    ]);
    img
}

/// A reader: fills the buffer from the virtual disk offset.
pub trait Reader {
    /// Virtual size in bytes.
    fn size(&self) -> u64;
    /// Reads `buf.len()` bytes at `offset`; the error as text.
    fn read(&mut self, buf: &mut [u8], offset: u64) -> Result<(), String>;
}

/// Expected bytes in memory.
pub struct Bytes(pub Vec<u8>);

impl Reader for Bytes {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }

    fn read(&mut self, buf: &mut [u8], offset: u64) -> Result<(), String> {
        let src = self
            .0
            .get(offset as usize..offset as usize + buf.len())
            .ok_or("beyond the end")?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// Expected bytes in a raw file (a large oracle).
pub struct RawFile(pub fs::File);

impl Reader for RawFile {
    fn size(&self) -> u64 {
        self.0.metadata().unwrap().len()
    }

    fn read(&mut self, buf: &mut [u8], offset: u64) -> Result<(), String> {
        use std::os::unix::fs::FileExt;
        self.0.read_exact_at(buf, offset).map_err(|e| e.to_string())
    }
}

/// Compares `len` bytes at `off` of `r` with `expected`.
pub fn check_range(r: &mut dyn Reader, expected: &mut dyn Reader, off: u64, len: u64, what: &str) {
    let mut buf = vec![0u8; len as usize];
    r.read(&mut buf, off)
        .unwrap_or_else(|e| panic!("{what} read at {off:#x}+{len:#x}: {e}"));
    let mut want = vec![0u8; len as usize];
    expected
        .read(&mut want, off)
        .unwrap_or_else(|e| panic!("oracle read at {off:#x}+{len:#x}: {e}"));
    if buf != want {
        let first = buf.iter().zip(&want).position(|(a, b)| a != b).unwrap();
        panic!(
            "{what} mismatch at {off:#x}+{len:#x}: first differing byte {:#x}",
            off + first as u64
        );
    }
}

/// Compares `r` with `expected` (the oracle): the size, the disk (its
/// first 64 MiB) read in pieces of several sizes (1 MiB, sector, page,
/// odd, 64 KiB + 1; pieces under a page over the first 2 MiB only), and
/// `ranges` random unaligned ranges over the whole disk.
pub fn compare(r: &mut dyn Reader, expected: &mut dyn Reader, ranges: usize, seed: u64) {
    let size = expected.size();
    assert_eq!(r.size(), size, "virtual size");
    for piece in [1u64 << 20, 512, 4096, 3000, (64 << 10) + 1] {
        let stop = size.min(if piece < 4096 { 2 << 20 } else { 64 << 20 });
        let mut off = 0;
        while off < stop {
            let len = piece.min(size - off);
            check_range(r, expected, off, len, &format!("piece {piece}"));
            off += len;
        }
    }
    let mut rng = Rng::new(seed);
    for _ in 0..ranges {
        let off = rng.below(size);
        let max = (size - off).min(300_000);
        let len = if rng.below(4) == 0 {
            rng.below(max.min(4096)) + 1
        } else {
            rng.below(max) + 1
        };
        check_range(r, expected, off, len, "random range");
    }
}

/// A fresh temporary directory.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Writes `data` as a raw file `dir/name`.
pub fn write_raw(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, data).unwrap();
    p
}

/// `p` as &str.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
