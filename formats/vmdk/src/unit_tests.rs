//! Unit tests of the format logic (no qemu needed).

use std::vec;
use std::vec::Vec;

use crate::format::header::{
    SparseHeader, FLAG_NEWLINE_DETECT, FLAG_ZERO_GRAIN, HEADER_LEN, MAGIC,
};
use crate::format::{
    Access, CreateType, Descriptor, Disk, Error, Extent, ExtentType, MappingKind, SparseExtent,
};

fn header(capacity: u64, grain: u64, flags: u32) -> Vec<u8> {
    let mut h = vec![0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&1u32.to_le_bytes());
    h[8..12].copy_from_slice(&flags.to_le_bytes());
    h[12..20].copy_from_slice(&capacity.to_le_bytes());
    h[20..28].copy_from_slice(&grain.to_le_bytes());
    h[44..48].copy_from_slice(&4u32.to_le_bytes());
    h[56..64].copy_from_slice(&1u64.to_le_bytes());
    h[73..77].copy_from_slice(b"\n \r\n");
    h
}

fn extent(flags: u32) -> SparseExtent {
    // 64 sectors, 8-sector grains, 4 entries per table: 2 tables.
    let h = SparseHeader::parse(&header(64, 8, flags)).unwrap();
    SparseExtent::new(&h, 1 << 20).unwrap()
}

fn table(entries: &[u32]) -> Vec<u8> {
    entries.iter().flat_map(|e| e.to_le_bytes()).collect()
}

#[test]
fn header_parse() {
    let h = SparseHeader::parse(&header(64, 8, FLAG_NEWLINE_DETECT)).unwrap();
    assert_eq!((h.capacity, h.grain_size, h.gtes_per_gt), (64, 8, 4));
    let mut bad = header(64, 8, FLAG_NEWLINE_DETECT);
    bad[75] = b'\n';
    assert_eq!(SparseHeader::parse(&bad), Err(Error::BadNewlineCheck));
    // Without the flag the bytes are not checked.
    bad[8] = 0;
    assert!(SparseHeader::parse(&bad).is_ok());
    assert!(matches!(
        SparseHeader::parse(&bad[..100]),
        Err(Error::Truncated { .. })
    ));
    let e = extent(0);
    assert_eq!(
        (e.gd_entries(), e.grain_len(), e.size()),
        (2, 4096, 64 * 512)
    );
}

#[test]
fn map_merges_runs() {
    let e = extent(FLAG_ZERO_GRAIN);
    let g = 4096u64;
    // Two contiguous data grains, a zeroed grain, an unallocated one.
    let t = table(&[100, 108, 1, 0]);
    let m = e.map_in_table(&t, 10, 4 * g).unwrap();
    assert_eq!(
        m.kind,
        MappingKind::Data {
            host_offset: 100 * 512 + 10
        }
    );
    assert_eq!(m.len, 2 * g - 10);
    let m = e.map_in_table(&t, 2 * g, 4 * g).unwrap();
    assert_eq!((m.kind, m.len), (MappingKind::Zero, g));
    let m = e.map_in_table(&t, 3 * g + 5, 100).unwrap();
    assert_eq!((m.kind, m.len), (MappingKind::Unallocated, 100));
    // Non-contiguous data grains are separate runs.
    let t = table(&[100, 200, 0, 0]);
    assert_eq!(e.map_in_table(&t, 0, 4 * g).unwrap().len, g);
    // Without flag bit 2, GTE 1 is a sector like any other.
    let e = extent(0);
    let m = e.map_in_table(&table(&[1, 0, 0, 0]), 0, g).unwrap();
    assert_eq!(m.kind, MappingKind::Data { host_offset: 512 });
    assert!(e.map_in_table(&t[..8], 0, g).is_err());
}

#[test]
fn descriptor_parse() {
    let text = b"# Disk DescriptorFile\r\nversion=1\r\nCID=fffffffe\r\n\
        createType = \"twoGbMaxExtentSparse\"\r\n\
        RW 4192256 SPARSE \"disk s001.vmdk\"\r\n\
        RDONLY 2048 FLAT \"flat.vmdk\" 7\r\n\
        RW 1000 ZERO\r\n\
        RW 10\tFLAT  \"f\"\r\n\
        ddb.geometry.heads = \"16\"\r\n\0\0\0garbage after the NUL";
    let d = Descriptor::parse(text).unwrap();
    assert_eq!(d.version, 1);
    assert_eq!(d.create_type, CreateType::TwoGbMaxExtentSparse);
    assert!(d.parent.is_none());
    let e: Vec<_> = d.extents().collect();
    assert_eq!(e.len(), 4);
    assert_eq!(e[0].name.unwrap().get(text), Some(&b"disk s001.vmdk"[..]));
    assert_eq!((e[0].kind, e[0].sectors), (ExtentType::Sparse, 4192256));
    assert_eq!(e[1].access, Access::ReadOnly);
    assert_eq!(e[1].kind, ExtentType::Flat { offset: 7 });
    assert_eq!((e[2].kind, e[2].name), (ExtentType::Zero, None));
    assert_eq!(e[3].kind, ExtentType::Flat { offset: 0 });
    assert_eq!(d.sectors(), 4192256 + 2048 + 1000 + 10);
    assert!(d.check_file(text).is_ok());
    assert!(super::descriptor::has_signature(text));
    assert!(!super::descriptor::has_signature(b"version=1\n"));
    assert_eq!(d.check_embedded(), Err(Error::CreateTypeMismatch));
    let p = Descriptor::parse(
        b"version=1\ncreateType=\"monolithicSparse\"\nparentFileNameHint=\"b.vmdk\"\n",
    )
    .unwrap();
    assert_eq!(
        p.parent
            .unwrap()
            .get(b"version=1\ncreateType=\"monolithicSparse\"\nparentFileNameHint=\"b.vmdk\"\n"),
        Some(&b"b.vmdk"[..])
    );
    assert_eq!(p.check_embedded(), Err(Error::ParentUnsupported));
    assert_eq!(
        Descriptor::parse(b"version=1\nversion=1\ncreateType=\"monolithicFlat\"\n").err(),
        Some(Error::MissingVersion)
    );
}

#[test]
fn disk_extents() {
    let mut d = Disk::new();
    d.push(Extent::zero(10).unwrap()).unwrap();
    d.push(Extent::flat(4, 2, 3072).unwrap()).unwrap();
    assert!(Extent::flat(4, 3, 3072).is_err());
    d.push(Extent::sparse(extent(0), Some(64)).unwrap())
        .unwrap();
    assert_eq!(
        Extent::sparse(extent(0), Some(63)),
        Err(Error::ExtentSizeMismatch {
            declared: 63,
            capacity: 64
        })
    );
    assert_eq!(d.size(), (10 + 4 + 64) * 512);
    assert_eq!(d.find(0).map(|f| f.0), Some(0));
    assert_eq!(d.find(10 * 512).map(|(i, _, s)| (i, s)), Some((1, 5120)));
    assert_eq!(d.find(14 * 512).map(|f| f.0), Some(2));
    assert!(d.find(78 * 512).is_none());
    for _ in 3..crate::MAX_EXTENTS {
        d.push(Extent::zero(1).unwrap()).unwrap();
    }
    assert_eq!(d.push(Extent::zero(1).unwrap()), Err(Error::TooManyExtents));
}

#[test]
fn descriptor_duplicates_and_file_count() {
    let text = b"version=1\ncreateType=\"monolithicFlat\"\nRW 10 FLAT \"a\"\nRW 1 ZERO\nRW 10 FLAT \"b\" 3\n";
    let d = Descriptor::parse(text).unwrap();
    assert_eq!((d.extent_count(), d.file_count()), (3, 2));
    assert!(d.check_file(text).is_ok());
    let dup = b"version=1\ncreateType=\"monolithicFlat\"\nRW 10 FLAT \"a\"\nRW 1 ZERO\nRW 10 FLAT \"a\" 10\n";
    let d = Descriptor::parse(dup).unwrap();
    assert_eq!(d.check_file(dup), Err(Error::DuplicateExtentName(5)));
    let vmfs = b"version=1\ncreateType=\"monolithicFlat\"\nRW 10 VMFS \"a\"\n";
    assert!(matches!(
        Descriptor::parse(vmfs),
        Err(Error::UnsupportedExtentType(_))
    ));
}
