//! Byte-for-byte comparison of the host reader with
//! `qemu-img convert -O raw` on VDI images made by qemu-img/qemu-io,
//! static and dynamic.

mod common;

use std::fs;

use common::*;
use vdi_format::map::{BLOCK_UNALLOCATED, BLOCK_ZERO};
use vdi_format::ImageType;

/// Data, zeros and the last sector written over an image.
fn overwrite(img: &std::path::Path, size: u64) {
    let last = format!("write -P 0x77 {} 512", size - 512);
    qemu_io(
        "vdi",
        img,
        &[
            "write -P 0x5a 1000 3000",
            "write -z 20k 40k",
            "write -P 0x11 1M 5k",
            "write -P 0x12 3000k 2M",
            &last,
        ],
    );
}

#[test]
fn dynamic_converted() {
    let dir = tempdir();
    let size = 8 << 20;
    let img = converted(dir.path(), "vdi", "static=off", size, 1);
    let image = open(&img);
    assert_eq!(image.header().image_type, ImageType::Dynamic);
    check_image(dir.path(), &img);
    overwrite(&img, size as u64);
    check_image(dir.path(), &img);
}

#[test]
fn dynamic_sparse() {
    let dir = tempdir();
    let img = dir.path().join("sparse.vdi");
    qemu_img(&["create", "-f", "vdi", s(&img), "64M"]);
    qemu_io(
        "vdi",
        &img,
        &[
            "write -P 0x01 0 512",
            "write -P 0x02 7M 64k",
            "write -P 0x03 20M 3M",
            "write -P 0x04 67101696 7k",
        ],
    );
    let image = open(&img);
    let unallocated = image
        .block_map()
        .iter()
        .filter(|&&e| e == BLOCK_UNALLOCATED)
        .count();
    assert!(unallocated > 50, "{unallocated} unallocated blocks");
    check_image(dir.path(), &img);
}

#[test]
fn static_image() {
    let dir = tempdir();
    let img = dir.path().join("static.vdi");
    let size = 6u64 << 20;
    qemu_img(&["create", "-f", "vdi", "-o", "static=on", s(&img), "6M"]);
    let image = open(&img);
    assert_eq!(image.header().image_type, ImageType::Static);
    assert!(image.block_map().iter().all(|&e| e < BLOCK_ZERO));
    check_image(dir.path(), &img);
    overwrite(&img, size);
    check_image(dir.path(), &img);
    let img2 = converted(dir.path(), "vdi", "static=on", 5 << 20, 2);
    check_image(dir.path(), &img2);
}

#[test]
fn odd_size() {
    let dir = tempdir();
    let img = dir.path().join("odd.vdi");
    qemu_img(&["create", "-f", "vdi", s(&img), "5000001"]);
    qemu_io(
        "vdi",
        &img,
        &["write -P 0x31 4999000 1192", "write -P 0x32 1M 1"],
    );
    let image = open(&img);
    assert_eq!(image.size() % 512, 0);
    check_image(dir.path(), &img);
}

/// A block map entry of 0xfffffffe (a zero block, which VirtualBox
/// writes for discarded blocks and qemu-img never does) reads as zeros,
/// in QEMU and here.
#[test]
fn zero_block_entries() {
    let dir = tempdir();
    let img = converted(dir.path(), "vdi", "static=off", 4 << 20, 3);
    let image = open(&img);
    let bmap = image.header().bmap_offset() as usize;
    let allocated: Vec<usize> = (0..image.block_map().len())
        .filter(|&i| image.block_map()[i] < BLOCK_ZERO)
        .collect();
    assert!(allocated.len() >= 2);
    let mut data = fs::read(&img).unwrap();
    let i = allocated[1];
    data[bmap + 4 * i..bmap + 4 * i + 4].copy_from_slice(&BLOCK_ZERO.to_le_bytes());
    fs::write(&img, &data).unwrap();
    let expected = oracle(dir.path(), "vdi", &img);
    assert!(expected[i << 20..(i + 1) << 20].iter().all(|&b| b == 0));
    compare(&mut VdiReader(open(&img)), &mut Bytes(expected), 100, 4);
}
