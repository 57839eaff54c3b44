//! Byte-for-byte comparison of the host reader with `qemu-img convert -O raw`
//! on images made by qemu-img/qemu-io.

mod common;

use common::*;
use qcow2_format::host::Image;
use qcow2_format::{CompressionType, SnapshotSelector};

/// Raw data converted to qcow2 with `opts`, then overwritten in places.
fn converted(cluster: &str, size: usize, extra_opts: &str, compress: bool, seed: u64) {
    let dir = tempdir();
    let d = dir.path();
    let raw = write_raw(d, "src.raw", &mixed_data(size, seed));
    let img = path(d, "img.qcow2");
    let opts = format!("cluster_size={cluster}{extra_opts}");
    let mut args = vec!["convert", "-f", "raw", "-O", "qcow2", "-o", &opts];
    if compress {
        args.push("-c");
    }
    args.extend_from_slice(&[s(&raw), s(&img)]);
    qemu_img(&args);
    if compress {
        let (count, crossing) = compressed_stats(&img);
        assert!(count > 0, "no compressed clusters");
        assert!(crossing > 0, "no compressed cluster crosses a host cluster");
    }
    check_image(d, &img);
    // Later writes: uncompressed data, zeros and discards over the image.
    qemu_io(
        &img,
        &[
            "write -P 0x5a 1000 3000",
            "write -z 20k 40k",
            "discard 128k 64k",
            "write -P 0x11 200k 5k",
        ],
    );
    check_image(d, &img);
}

#[test]
fn cluster_512() {
    converted("512", 1 << 20, "", false, 1);
}

#[test]
fn cluster_4k() {
    converted("4k", 3 << 20, "", false, 2);
}

#[test]
fn cluster_64k() {
    converted("64k", 4 << 20, "", false, 3);
}

#[test]
fn cluster_2m() {
    converted("2M", 8 << 20, "", false, 4);
}

#[test]
fn zlib_compressed_4k() {
    converted("4k", 2 << 20, "", true, 5);
}

#[test]
fn zlib_compressed_64k() {
    converted("64k", 4 << 20, "", true, 6);
}

#[test]
fn zlib_compressed_512() {
    converted("512", 1 << 20, "", true, 12);
}

#[test]
fn zstd_compressed_64k() {
    converted("64k", 4 << 20, ",compression_type=zstd", true, 7);
    // The header records the type.
    let dir = tempdir();
    let img = path(dir.path(), "z.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "compression_type=zstd",
        s(&img),
        "1M",
    ]);
    let image = Image::open(&img).unwrap();
    assert_eq!(
        image.header(0).unwrap().compression_type,
        CompressionType::Zstd
    );
}

#[test]
fn zstd_compressed_2m() {
    converted("2M", 6 << 20, ",compression_type=zstd", true, 8);
}

#[test]
fn zstd_compressed_16k_extended_l2() {
    converted(
        "16k",
        2 << 20,
        ",compression_type=zstd,extended_l2=on",
        true,
        9,
    );
}

#[test]
fn version2() {
    converted("64k", 2 << 20, ",compat=0.10", false, 10);
    converted("4k", 1 << 20, ",compat=0.10", true, 11);
}

#[test]
fn extended_l2_partial_writes_over_backing() {
    let dir = tempdir();
    let d = dir.path();
    let base = path(d, "base.qcow2");
    let raw = write_raw(d, "base.raw", &mixed_data(2 << 20, 20));
    qemu_img(&["convert", "-f", "raw", "-O", "qcow2", s(&raw), s(&base)]);
    for cluster in ["16k", "64k", "2M"] {
        let top = path(d, &format!("top-{cluster}.qcow2"));
        let opts = format!("extended_l2=on,cluster_size={cluster}");
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            &opts,
            "-b",
            s(&base),
            "-F",
            "qcow2",
            s(&top),
            "3M",
        ]);
        qemu_io(
            &top,
            &[
                "write -P 0xab 4k 8k",
                "write -P 0xcd 70k 3k",
                "write -z 100k 12k",
                "write -P 0xef 130k 60k",
                "discard 140k 8k",
                "write -z 1M 200k",
                "write -P 0x77 2047k 10k",
                "write -P 0x12 2500k 1k",
            ],
        );
        check_image(d, &top);
    }
    // Without a backing file, unallocated subclusters read as zeros.
    let lone = path(d, "lone.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "extended_l2=on",
        s(&lone),
        "1M",
    ]);
    qemu_io(
        &lone,
        &[
            "write -P 0x42 6k 5k",
            "write -z 40k 4k",
            "write -P 1 300k 1",
        ],
    );
    check_image(d, &lone);
}

#[test]
fn zero_flags_and_discards() {
    let dir = tempdir();
    let d = dir.path();
    let img = path(d, "z.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=4k",
        s(&img),
        "2M",
    ]);
    qemu_io(
        &img,
        &[
            "write -P 0x33 0 1M",
            "write -z 64k 64k",
            "write -z -u 256k 128k",
            "discard 512k 100k",
            "write -P 0x44 520k 1k",
        ],
    );
    check_image(d, &img);
}

#[test]
fn odd_virtual_size() {
    let dir = tempdir();
    let d = dir.path();
    let img = path(d, "odd.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&img), "1000000"]);
    qemu_io(&img, &["write -P 0x99 0 900k", "write -P 0x98 976k 448"]);
    check_image(d, &img);
    // A base shorter than its overlay, both of odd sizes.
    let base = path(d, "base.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=4k",
        s(&base),
        "300001",
    ]);
    qemu_io(&base, &["write -P 0x21 0 290k", "write -P 0x22 292k 1k"]);
    let top = path(d, "top.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        s(&base),
        "-F",
        "qcow2",
        s(&top),
        "777777",
    ]);
    qemu_io(&top, &["write -P 0x23 100k 10k"]);
    check_image(d, &top);
}

/// Renames the backing format header extension to an unknown type, so the
/// image no longer records the backing format.
fn remove_backing_format(image: &std::path::Path) {
    let mut data = std::fs::read(image).unwrap();
    let pos = data[..4096]
        .windows(4)
        .position(|w| w == [0xe2, 0x79, 0x2a, 0xca])
        .expect("backing format extension");
    data[pos..pos + 4].copy_from_slice(&[0x12, 0x34, 0x56, 0x78]);
    std::fs::write(image, data).unwrap();
}

#[test]
fn three_layer_chain_with_raw_base() {
    let dir = tempdir();
    let d = dir.path();
    // Raw base shorter than the others, of a size that is not a multiple of
    // anything.
    write_raw(d, "base.raw", &mixed_data(1_000_003, 30));
    let mid = path(d, "mid.qcow2");
    // Relative backing file name, resolved against the image's directory.
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=4k",
        "-b",
        "base.raw",
        "-F",
        "raw",
        s(&mid),
        "3M",
    ]);
    qemu_io(
        &mid,
        &[
            "write -P 0x61 10k 20k",
            "write -z 500k 100k",
            "write -P 0x62 990k 100k",
        ],
    );
    let top = path(d, "top.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "mid.qcow2",
        "-F",
        "qcow2",
        s(&top),
        "4M",
    ]);
    qemu_io(
        &top,
        &[
            "write -P 0x71 0 5k",
            "write -P 0x72 2M 100k",
            "write -z 15k 2k",
        ],
    );
    let image = Image::open(&top).unwrap();
    assert_eq!(image.chain().len(), 3);
    drop(image);
    check_image(d, &top);
    // The same chain from memory.
    let layers = ["top.qcow2", "mid.qcow2", "base.raw"]
        .iter()
        .map(|n| std::fs::read(d.join(n)).unwrap())
        .collect();
    let mut image = Image::from_memory(layers, None).unwrap();
    compare(&mut image, &oracle(d, &top, &[]), 50, 5);
    // Backing format not recorded: probed (qcow2 magic or raw).
    let probed = path(d, "probed.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-u",
        "-b",
        "mid.qcow2",
        "-F",
        "qcow2",
        s(&probed),
        "4M",
    ]);
    remove_backing_format(&probed);
    let mut image = Image::open(&probed).unwrap();
    assert_eq!(image.chain().len(), 3);
    let expected = oracle(d, &mid, &[]);
    let all = image.read_all().unwrap();
    assert_eq!(&all[..3 << 20], &expected[..]);
    assert!(all[3 << 20..].iter().all(|&b| b == 0));
}

#[test]
fn compressed_over_backing_with_extended_l2() {
    let dir = tempdir();
    let d = dir.path();
    write_raw(d, "base.raw", &mixed_data(1 << 20, 40));
    let top = path(d, "top.qcow2");
    let src = write_raw(d, "src.raw", &mixed_data(1 << 20, 41));
    let tmp = path(d, "tmp.qcow2");
    qemu_img(&[
        "convert",
        "-c",
        "-f",
        "raw",
        "-O",
        "qcow2",
        "-o",
        "cluster_size=32k,extended_l2=on",
        s(&src),
        s(&tmp),
    ]);
    // Rebase the compressed image onto the raw file (unsafe: no data copy),
    // then discard some clusters so they fall through to the base.
    std::fs::rename(&tmp, &top).unwrap();
    qemu_img(&["rebase", "-u", "-b", "base.raw", "-F", "raw", s(&top)]);
    qemu_io(&top, &["discard 64k 64k", "write -P 0x5 200k 3k"]);
    check_image(d, &top);
}

#[test]
fn internal_snapshots() {
    let dir = tempdir();
    let d = dir.path();
    let img = path(d, "snap.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=4k",
        s(&img),
        "2M",
    ]);
    qemu_io(&img, &["write -P 0xa1 0 1M", "write -P 0xa2 1500k 100k"]);
    qemu_img(&["snapshot", "-c", "first", s(&img)]);
    qemu_io(
        &img,
        &[
            "write -P 0xb1 4k 600k",
            "write -z 1M 64k",
            "discard 1500k 20k",
        ],
    );
    qemu_img(&["snapshot", "-c", "second", s(&img)]);
    // The image grows after the snapshots: QEMU reads a snapshot with the
    // current virtual size, zeros beyond the snapshot's own L1 table.
    qemu_img(&["resize", "-q", s(&img), "3M"]);
    qemu_io(
        &img,
        &[
            "write -P 0xc1 100k 1M",
            "discard 0 16k",
            "write -P 0xc2 2600k 8k",
        ],
    );

    check_image(d, &img);
    let names: Vec<Vec<u8>> = Image::open(&img)
        .unwrap()
        .snapshots()
        .unwrap()
        .into_iter()
        .map(|(_, n)| n)
        .collect();
    assert_eq!(names, vec![b"first".to_vec(), b"second".to_vec()]);

    for (sel, qemu_opt) in [
        (SnapshotSelector::Name(b"first"), "snapshot.name=first"),
        (SnapshotSelector::Name(b"second"), "snapshot.name=second"),
        (SnapshotSelector::Id(b"1"), "snapshot.id=1"),
        (
            SnapshotSelector::IdOrName(b"second"),
            "snapshot.name=second",
        ),
        (SnapshotSelector::IdOrName(b"1"), "snapshot.id=1"),
    ] {
        let expected = oracle(d, &img, &["-l", qemu_opt]);
        let mut image = Image::open_snapshot(&img, sel).unwrap();
        compare(&mut image, &expected, 50, 3);
    }
    let err = Image::open_snapshot(&img, SnapshotSelector::Name(b"nope"))
        .err()
        .unwrap();
    assert_eq!(err, qcow2_format::Error::SnapshotNotFound);
    assert_eq!(err.kind(), qcow2_format::ErrorKind::NotFound);
}
