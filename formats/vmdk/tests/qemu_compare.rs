//! Byte-for-byte comparison of the host reader with
//! `qemu-img convert -O raw` on images made by qemu-img/qemu-io, for
//! every VMDK subformat qemu-img creates.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use vmdk_format::header::{GD_AT_END, SECTOR};
use vmdk_format::host::Image;
use vmdk_format::{CreateType, Directory, ExtentKind};

/// Mixed data of `size` bytes converted to VMDK with `opts`.
fn converted(dir: &Path, opts: &str, size: usize, seed: u64) -> PathBuf {
    common::converted(dir, "vmdk", opts, size, seed)
}

/// Writes over an image: data, zeros, the last sector.
fn overwrite(img: &Path, size: u64) {
    let last = format!("write -P 0x77 {} 512", size - 512);
    qemu_io(
        "vmdk",
        img,
        &[
            "write -P 0x5a 1000 3000",
            "write -z 20k 40k",
            "write -P 0x11 200k 5k",
            "write -z 1M 256k",
            &last,
        ],
    );
}

fn create_type(img: &Path) -> CreateType {
    let image = Image::open(img).unwrap();
    image.descriptor().unwrap().0.create_type
}

#[test]
fn monolithic_sparse() {
    let dir = tempdir();
    let size = 8 << 20;
    let img = converted(dir.path(), "subformat=monolithicSparse", size, 1);
    assert_eq!(create_type(&img), CreateType::MonolithicSparse);
    check_image(dir.path(), &img);
    overwrite(&img, size as u64);
    check_image(dir.path(), &img);
}

#[test]
fn monolithic_sparse_created_and_written() {
    let dir = tempdir();
    let img = dir.path().join("img.vmdk");
    qemu_img(&["create", "-f", "vmdk", s(&img), "20M"]);
    qemu_io(
        "vmdk",
        &img,
        &[
            "write -P 0x01 0 512",
            "write -P 0x02 64k 64k",
            "write -P 0x03 5M 1M",
            "write -P 0x04 19M 7k",
        ],
    );
    check_image(dir.path(), &img);
}

#[test]
fn zeroed_grain_entries() {
    let dir = tempdir();
    let size = 4 << 20;
    let img = converted(dir.path(), "zeroed_grain=on", size, 2);
    qemu_io("vmdk", &img, &["write -z 128k 256k", "write -z 3M 64k"]);
    let gtes = grain_table_entries(&img);
    assert!(gtes.contains(&1), "no zeroed grain entry (GTE 1)");
    let image = Image::open(&img).unwrap();
    let ExtentKind::Sparse(s) = image.disk().extent(0).unwrap().kind() else {
        panic!("not sparse");
    };
    assert!(s.zero_grain());
    check_image(dir.path(), &img);
}

#[test]
fn size_not_grain_aligned() {
    // 3 MiB + 3 sectors: the last grain is short.
    let size = (3 << 20) + 1536;
    for opts in ["subformat=monolithicSparse", "subformat=streamOptimized"] {
        let dir = tempdir();
        let img = converted(dir.path(), opts, size, 3);
        check_image(dir.path(), &img);
    }
}

#[test]
fn stream_optimized() {
    let dir = tempdir();
    let img = converted(dir.path(), "subformat=streamOptimized", 8 << 20, 4);
    assert_eq!(create_type(&img), CreateType::StreamOptimized);
    let image = Image::open(&img).unwrap();
    let ExtentKind::Sparse(s) = image.disk().extent(0).unwrap().kind() else {
        panic!("not sparse");
    };
    assert!(s.compressed() && s.markers());
    let gtes = grain_table_entries(&img);
    assert!(gtes.iter().filter(|&&g| g > 1).count() > 50, "few grains");
    check_image(dir.path(), &img);
}

/// Moves the header of a streamOptimized image into a footer, with
/// `GD_AT_END` in the first sector, as a streaming writer (VMware's
/// ovftool) makes them.
fn with_footer(img: &Path) -> PathBuf {
    let mut data = fs::read(img).unwrap();
    let header: Vec<u8> = data[..512].to_vec();
    data[56..64].copy_from_slice(&GD_AT_END.to_le_bytes());
    let mut marker = [0u8; 512];
    marker[0..8].copy_from_slice(&1u64.to_le_bytes());
    marker[12..16].copy_from_slice(&3u32.to_le_bytes());
    data.extend_from_slice(&marker);
    data.extend_from_slice(&header);
    data.extend_from_slice(&[0u8; 512]);
    let out = img.with_file_name("footer.vmdk");
    fs::write(&out, data).unwrap();
    out
}

#[test]
fn stream_optimized_footer() {
    let dir = tempdir();
    let img = converted(dir.path(), "subformat=streamOptimized", 4 << 20, 5);
    let footer = with_footer(&img);
    // QEMU reads the footer too: both oracles agree.
    assert_eq!(
        oracle(dir.path(), "vmdk", &img),
        oracle(dir.path(), "vmdk", &footer)
    );
    check_image(dir.path(), &footer);
}

#[test]
fn redundant_grain_directory() {
    let dir = tempdir();
    let img = converted(dir.path(), "subformat=monolithicSparse", 4 << 20, 6);
    let expected = oracle(dir.path(), "vmdk", &img);
    let mut image = Image::open(&img).unwrap();
    let ExtentKind::Sparse(s) = *image.disk().extent(0).unwrap().kind() else {
        panic!("not sparse");
    };
    let rgd = s
        .redundant_gd_offset()
        .expect("qemu-img writes a redundant GD");
    assert_ne!(rgd, s.gd_offset());
    image.use_directory(Directory::Redundant).unwrap();
    compare(&mut Vmdk(image), &mut Bytes(expected.clone()), 50, 1);
    // With the primary directory wiped, the redundant one still reads
    // the data; the primary one reads zeros.
    let mut data = fs::read(&img).unwrap();
    let gd = s.gd_offset() as usize;
    data[gd..gd + s.gd_len()].fill(0);
    fs::write(&img, &data).unwrap();
    let mut image = Image::open(&img).unwrap();
    assert!(image.read_all().unwrap().iter().all(|&b| b == 0));
    image.use_directory(Directory::Redundant).unwrap();
    assert!(image.read_all().unwrap() == expected);
}

#[test]
fn monolithic_flat() {
    let dir = tempdir();
    let size = 6 << 20;
    let img = converted(dir.path(), "subformat=monolithicFlat", size, 7);
    assert_eq!(create_type(&img), CreateType::MonolithicFlat);
    check_image(dir.path(), &img);
    overwrite(&img, size as u64);
    check_image(dir.path(), &img);
}

/// A 5 GiB split image (three extents) written across the extent
/// boundaries, compared with the oracle around them and at random.
fn split(subformat: &str, expected_type: CreateType) {
    let dir = tempdir();
    let d = dir.path();
    let img = d.join("split.vmdk");
    let opts = format!("subformat={subformat}");
    qemu_img(&["create", "-f", "vmdk", "-o", &opts, s(&img), "5G"]);
    let g = 1u64 << 30;
    let writes: Vec<String> = [
        (0x21, 0, 100 << 10),
        (0x22, 2 * g - 4096, 12288),
        (0x23, 3 * g + 777, 70000),
        (0x24, 4 * g - 512, 1024),
        (0x25, 5 * g - 65536, 65536),
    ]
    .iter()
    .map(|(p, o, l)| format!("write -P {p:#x} {o} {l}"))
    .collect();
    let cmds: Vec<&str> = writes.iter().map(String::as_str).collect();
    qemu_io("vmdk", &img, &cmds);
    let image = Image::open(&img).unwrap();
    assert_eq!(image.descriptor().unwrap().0.create_type, expected_type);
    assert_eq!(image.disk().len(), 3);
    let starts: Vec<u64> = (0..3)
        .map(|i| image.disk().extent_start(i).unwrap())
        .collect();
    assert_eq!(starts, [0, 2 * g, 4 * g]);
    let mut r = Vmdk(image);
    let oracle = oracle_file(d, "vmdk", &img);
    let mut expected = RawFile(fs::File::open(&oracle).unwrap());
    assert_eq!(r.size(), 5 * g);
    for &b in &[2 * g, 4 * g] {
        for (off, len) in [(b - 8192, 16384), (b - 1, 2), (b - 512, 512), (b, 512)] {
            check_range(&mut r, &mut expected, off, len, "boundary");
        }
    }
    for (off, len) in [(0, 1 << 20), (3 * g, 1 << 20), (5 * g - (1 << 20), 1 << 20)] {
        check_range(&mut r, &mut expected, off, len, "written");
    }
    compare(&mut r, &mut expected, 100, 9);
}

#[test]
fn two_gb_max_extent_sparse() {
    split("twoGbMaxExtentSparse", CreateType::TwoGbMaxExtentSparse);
}

#[test]
fn two_gb_max_extent_flat() {
    split("twoGbMaxExtentFlat", CreateType::TwoGbMaxExtentFlat);
}

/// A hand-written descriptor mixing a flat extent at an offset, a ZERO
/// extent and a sparse extent (QEMU skips ZERO extents, so the expected
/// bytes are put together here).
#[test]
fn mixed_descriptor() {
    let dir = tempdir();
    let d = dir.path();
    let flat = mixed_data(2 << 20, 11);
    write_raw(d, "a.raw", &flat);
    let sparse = d.join("b.vmdk");
    qemu_img(&["create", "-f", "vmdk", s(&sparse), "1M"]);
    qemu_io("vmdk", &sparse, &["write -P 0x61 4k 100k"]);
    let text = "# Disk DescriptorFile\r\nversion=1\r\nCID=12345678\r\n\
                parentCID=ffffffff\r\ncreateType=\"monolithicFlat\"\r\n\r\n\
                RW 2048 FLAT \"a.raw\" 8\r\nRDONLY 1000 ZERO\r\n\
                RW 2048 SPARSE \"b.vmdk\"\r\n\r\nddb.adapterType = \"ide\"\r\n";
    let desc = write_raw(d, "mixed.vmdk", text.as_bytes());
    let mut expected = flat[4096..4096 + (1 << 20)].to_vec();
    expected.extend(std::iter::repeat_n(0u8, 1000 * SECTOR as usize));
    expected.extend(oracle(d, "vmdk", &sparse));
    let mut image = open(&desc);
    assert_eq!(image.0.disk().len(), 3);
    compare(&mut image, &mut Bytes(expected), 100, 3);
}
