//! Helpers shared by the integration tests: running qemu-img/qemu-io,
//! deterministic pseudo-random data, comparing reads with the oracle.

#![allow(dead_code, unused_imports)]

use std::fs;
use std::path::{Path, PathBuf};

use qcow2_format::host::Image;

pub use format_test_support::{mixed_data, run, s, tempdir, try_run, write_raw, Rng};

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

/// `dir/name` as a PathBuf.
pub fn path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
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
