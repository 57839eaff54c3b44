//! Unit tests of the format logic (no qemu needed).

use std::vec;
use std::vec::Vec;

use crate::format::header::{Header, BLOCK_SIZE, SIGNATURE, VERSION_1_1};
use crate::format::map::{BLOCK_UNALLOCATED, BLOCK_ZERO};
use crate::format::{BlockMap, Error, ImageType, MappingKind, Sink, Vdi};

/// A header of `blocks` 1 MiB blocks and `disk_size` bytes, map at 512,
/// data at 1024.
fn header(blocks: u32, disk_size: u64) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    let mut put = |at: usize, v: u32| h[at..at + 4].copy_from_slice(&v.to_le_bytes());
    put(64, SIGNATURE);
    put(68, VERSION_1_1);
    put(72, 400);
    put(76, 1);
    put(340, 512);
    put(344, 1024);
    put(360, 512);
    put(376, BLOCK_SIZE);
    put(384, blocks);
    h[368..376].copy_from_slice(&disk_size.to_le_bytes());
    h
}

struct Map(Vec<u32>);

impl BlockMap for Map {
    fn entry(&mut self, index: u32) -> crate::Result<u32> {
        self.0.get(index as usize).copied().ok_or(Error::Internal)
    }
}

/// Records what the engine asks for.
#[derive(Default)]
struct Log(Vec<(bool, u64, usize)>);

impl Sink for Log {
    fn fill_zero(&mut self, len: usize) -> crate::Result<()> {
        self.0.push((false, 0, len));
        Ok(())
    }

    fn read_from_storage(&mut self, offset: u64, len: usize) -> crate::Result<()> {
        self.0.push((true, offset, len));
        Ok(())
    }
}

#[test]
fn header_and_size() {
    let h = Header::parse(&header(4, (3 << 20) + 700), 1 << 30).unwrap();
    assert_eq!(h.image_type, ImageType::Dynamic);
    assert_eq!(h.size(), (3 << 20) + 512);
    assert_eq!((h.bmap_offset(), h.bmap_len()), (512, 16));
    assert_eq!(
        Header::parse(&header(4, 5 << 20), 1 << 30),
        Err(Error::DiskSizeBeyondBlocks {
            disk_size: 5 << 20,
            room: 4 << 20
        })
    );
    // The map (512 + 4 * 200) reaches into the data at 1024.
    assert!(matches!(
        Header::parse(&header(200, 1 << 20), 1 << 30),
        Err(Error::BadOffset { .. })
    ));
}

#[test]
fn runs_merge() {
    let h = Header::parse(&header(6, 6 << 20), 1 << 30).unwrap();
    let vdi = Vdi::new(&h, 1 << 30);
    let mut map = Map(vec![0, 1, 5, BLOCK_ZERO, BLOCK_UNALLOCATED, BLOCK_ZERO]);
    let m = vdi.map(&mut map, 100, (6 << 20) - 100).unwrap();
    assert_eq!(
        m.kind,
        MappingKind::Data {
            host_offset: 1024 + 100
        }
    );
    assert_eq!(m.len, (2 << 20) - 100);
    let m = vdi.map(&mut map, 3 << 20, 3 << 20).unwrap();
    assert_eq!((m.kind, m.len), (MappingKind::Zero, 1 << 20));
    let mut log = Log::default();
    vdi.read(&mut map, (1 << 20) + 10, 3 << 20, &mut log)
        .unwrap();
    assert_eq!(
        log.0,
        [
            (true, 1024 + (1 << 20) + 10, (1 << 20) - 10),
            (true, 1024 + (5 << 20), 1 << 20),
            (false, 0, 1 << 20),
            (false, 0, 10),
        ]
    );
    assert!(matches!(
        vdi.read(&mut map, 6 << 20, 1, &mut log),
        Err(Error::OutOfRange { .. })
    ));
    // A block past the end of a short file fails the read.
    let short = Vdi::new(&h, 2 << 20);
    assert!(matches!(
        short.read(&mut map, 2 << 20, 10, &mut log),
        Err(Error::PastEndOfFile { .. })
    ));
}
