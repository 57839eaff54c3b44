//! Helpers shared by the integration tests: running qemu-img/qemu-io,
//! deterministic pseudo-random data, comparing reads with the oracle.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use qcow2_format::host::Image;

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
    run("qemu-img", args);
}

/// `qemu-io -f FMT -c CMD... IMAGE`.
pub fn qemu_io(image: &Path, cmds: &[&str]) {
    let mut args: Vec<&str> = vec!["-f", "qcow2"];
    for c in cmds {
        args.push("-c");
        args.push(c);
    }
    let p = image.to_str().unwrap();
    args.push(p);
    run("qemu-io", &args);
}

/// A small xorshift generator, deterministic per seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Data with a mix of zero runs, random bytes, low-entropy text-like bytes
/// and repeated patterns, in 4 KiB pieces, so compressed clusters have
/// varied sizes.
pub fn mixed_data(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut v = vec![0u8; len];
    for chunk in v.chunks_mut(4096) {
        match rng.below(5) {
            0 => {}
            1 => chunk.iter_mut().for_each(|b| *b = rng.next() as u8),
            2 => chunk
                .iter_mut()
                .for_each(|b| *b = b"abcdefgh "[rng.below(9) as usize]),
            3 => {
                let p = rng.next() as u8;
                chunk.iter_mut().for_each(|b| *b = p)
            }
            _ => chunk.iter_mut().enumerate().for_each(|(i, b)| {
                *b = if rng.below(8) == 0 {
                    rng.next() as u8
                } else {
                    i as u8
                }
            }),
        }
    }
    v
}

/// The oracle: `qemu-img convert -O raw [extra...] IMAGE` read back.
pub fn oracle(dir: &Path, image: &Path, extra: &[&str]) -> Vec<u8> {
    let out = dir.join(format!(
        "oracle-{}.raw",
        image.file_name().unwrap().to_str().unwrap()
    ));
    let mut args = vec!["convert"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-O", "raw", image.to_str().unwrap(), out.to_str().unwrap()]);
    qemu_img(&args);
    let data = fs::read(&out).unwrap();
    fs::remove_file(&out).unwrap();
    data
}

/// Compares the whole disk and `ranges` random unaligned sub-ranges of
/// `image` with `expected`.
pub fn compare(image: &mut Image, expected: &[u8], ranges: usize, seed: u64) {
    assert_eq!(image.size(), expected.len() as u64, "virtual size");
    let all = image.read_all().expect("read whole disk");
    if all != expected {
        let first = all.iter().zip(expected).position(|(a, b)| a != b).unwrap();
        panic!("whole-disk mismatch at byte {first:#x}");
    }
    // Small reads going up through the first clusters: a compressed
    // cluster is first decoded only as far as a read needs, then whole.
    let size = expected.len() as u64;
    for off in (0..size.min(1 << 18)).step_by(3584) {
        let len = (size - off).min(4096);
        let mut buf = vec![0u8; len as usize];
        image.read_at(&mut buf, off).expect("read small range");
        assert!(
            buf == expected[off as usize..(off + len) as usize],
            "small read mismatch at {off:#x}+{len:#x}"
        );
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
        let mut buf = vec![0u8; len as usize];
        image.read_at(&mut buf, off).expect("read range");
        assert!(
            buf == expected[off as usize..(off + len) as usize],
            "range mismatch at {off:#x}+{len:#x}"
        );
    }
}

/// Opens `image` with the host reader and compares it with the oracle.
pub fn check_image(dir: &Path, image: &Path) {
    let expected = oracle(dir, image, &[]);
    let mut img = Image::open(image).unwrap_or_else(|e| panic!("open {image:?}: {e}"));
    compare(&mut img, &expected, 150, 7);
}

/// A fresh temporary directory.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// `dir/name` as a PathBuf.
pub fn path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
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

/// Counts the compressed clusters of a (single-layer) qcow2 image and how
/// many of them have data crossing a host cluster boundary.
pub fn compressed_stats(image: &Path) -> (usize, usize) {
    use qcow2_format::format::table::{decode_l1_entry, decode_l2_entry, l2_table_entry};
    use qcow2_format::{Header, L2Entry};
    let data = fs::read(image).unwrap();
    let h = Header::parse(&data).unwrap();
    let g = h.geometry();
    let cs = g.cluster_size();
    let (mut count, mut crossing) = (0, 0);
    for i in 0..h.l1_size as usize {
        let off = h.l1_table_offset as usize + i * 8;
        let raw = u64::from_be_bytes(data[off..off + 8].try_into().unwrap());
        let Some(l2) = decode_l1_entry(&g, i as u64, raw).unwrap() else {
            continue;
        };
        let table = &data[l2 as usize..(l2 + cs) as usize];
        for j in 0..g.l2_entries() {
            let (raw, bitmap) = l2_table_entry(&g, table, j).unwrap();
            if let L2Entry::Compressed(d) = decode_l2_entry(&g, raw, bitmap).unwrap() {
                let (start, len) = d.read_range(data.len() as u64).unwrap();
                count += 1;
                if start / cs != (start + len - 1) / cs {
                    crossing += 1;
                }
            }
        }
    }
    (count, crossing)
}
