//! The VDI pre-header and v1.1 header (VirtualBox `VDIPREHEADER` and
//! `VDIHEADER1`), all little endian:
//!
//! | bytes | field |
//! | --- | --- |
//! | 0 - 63 | text (`<<< Oracle VM VirtualBox Disk Image >>>`, not checked: QEMU writes its own) |
//! | 64 - 67 | signature `0xbeda107f` |
//! | 68 - 71 | version, 0x00010001 for 1.1 |
//! | 72 - 75 | header size (from byte 72; VirtualBox writes 400, QEMU 384) |
//! | 76 - 79 | image type: 1 dynamic, 2 static (3 undo, 4 differencing) |
//! | 80 - 83 | image flags |
//! | 84 - 339 | description |
//! | 340 - 343 | block map offset |
//! | 344 - 347 | data offset |
//! | 348 - 359 | legacy geometry (cylinders, heads, sectors) |
//! | 360 - 363 | legacy sector size (512) |
//! | 368 - 375 | disk size in bytes |
//! | 376 - 379 | block size (1 MiB) |
//! | 380 - 383 | extra bytes before each block |
//! | 384 - 387 | blocks in the image (block map entries) |
//! | 388 - 391 | blocks allocated |
//! | 392 - 455 | UUIDs: image, last snapshot, link, parent |
//!
//! [`Header::parse`] checks every field QEMU checks (signature, version
//! 1.1, sector aligned offsets, sector size 512, block size 1 MiB, disk
//! size within the blocks, null link and parent UUIDs, a bounded number of
//! blocks) and more: a dynamic or static type, no block extra data, a
//! header size that fits before the block map, and a block map inside the
//! file that ends before the data.

use super::error::{Error, Result, Structure};

/// Bytes of the file [`Header::parse`] needs.
pub const HEADER_LEN: usize = 512;
/// The signature at byte 64.
pub const SIGNATURE: u32 = 0xbeda_107f;
/// Version 1.1.
pub const VERSION_1_1: u32 = 0x0001_0001;
/// Sector size.
pub const SECTOR: u64 = 512;
/// The only block size read (VirtualBox's and QEMU's).
pub const BLOCK_SIZE: u32 = 1 << 20;
/// Most blocks: 8 Mi (a 32 MiB block map, an 8 TiB disk).
pub const MAX_BLOCKS: u32 = 1 << 23;
/// Smallest header size field seen in practice (QEMU's).
pub const MIN_HEADER_SIZE: u32 = 384;
/// Where the header size is counted from.
const HEADER_START: u64 = 72;

/// The type of a VDI image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageType {
    /// Blocks allocated on first write.
    Dynamic,
    /// All blocks allocated at creation.
    Static,
}

/// A validated VDI header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Dynamic or static.
    pub image_type: ImageType,
    /// Image flags (informational).
    pub image_flags: u32,
    /// Block map offset in the file.
    pub offset_bmap: u32,
    /// Data offset in the file: block `n` starts at
    /// `offset_data + n * block_size`.
    pub offset_data: u32,
    /// Disk size in bytes, as stored.
    pub disk_size: u64,
    /// Block size in bytes.
    pub block_size: u32,
    /// Number of block map entries.
    pub blocks_in_image: u32,
    /// Blocks allocated (informational).
    pub blocks_allocated: u32,
}

fn u32_at(buf: &[u8], off: usize) -> u32 {
    let mut b = [0u8; 4];
    if let Some(src) = buf.get(off..off + 4) {
        b.copy_from_slice(src);
    }
    u32::from_le_bytes(b)
}

fn u64_at(buf: &[u8], off: usize) -> u64 {
    u64::from(u32_at(buf, off)) | u64::from(u32_at(buf, off + 4)) << 32
}

impl Header {
    /// Parses and validates the header in `buf` (the first
    /// [`HEADER_LEN`] bytes of a file of `file_len` bytes).
    pub fn parse(buf: &[u8], file_len: u64) -> Result<Header> {
        if buf.len() < HEADER_LEN || file_len < HEADER_LEN as u64 {
            return Err(Error::Truncated {
                what: Structure::Header,
                needed: HEADER_LEN as u64,
                available: (buf.len() as u64).min(file_len),
            });
        }
        let signature = u32_at(buf, 64);
        if signature != SIGNATURE {
            return Err(Error::BadSignature(signature));
        }
        let version = u32_at(buf, 68);
        if version != VERSION_1_1 {
            return Err(Error::UnsupportedVersion(version));
        }
        let header_size = u32_at(buf, 72);
        let image_type = match u32_at(buf, 76) {
            1 => ImageType::Dynamic,
            2 => ImageType::Static,
            other => return Err(Error::UnsupportedImageType(other)),
        };
        let offset_bmap = u32_at(buf, 340);
        let offset_data = u32_at(buf, 344);
        if header_size < MIN_HEADER_SIZE
            || HEADER_START + u64::from(header_size) > u64::from(offset_bmap)
        {
            return Err(Error::BadHeaderSize(header_size));
        }
        for (what, offset) in [
            (Structure::BlockMap, offset_bmap),
            (Structure::Block, offset_data),
        ] {
            if u64::from(offset) % SECTOR != 0 {
                return Err(Error::BadOffset { what, offset });
            }
        }
        let sector_size = u32_at(buf, 360);
        if u64::from(sector_size) != SECTOR {
            return Err(Error::BadSectorSize(sector_size));
        }
        let block_size = u32_at(buf, 376);
        if block_size != BLOCK_SIZE {
            return Err(Error::UnsupportedBlockSize(block_size));
        }
        let block_extra = u32_at(buf, 380);
        if block_extra != 0 {
            return Err(Error::UnsupportedBlockExtra(block_extra));
        }
        let blocks_in_image = u32_at(buf, 384);
        if blocks_in_image > MAX_BLOCKS {
            return Err(Error::TooManyBlocks(blocks_in_image));
        }
        let disk_size = u64_at(buf, 368);
        let room = u64::from(blocks_in_image) * u64::from(block_size);
        if disk_size > room {
            return Err(Error::DiskSizeBeyondBlocks { disk_size, room });
        }
        // uuid_link (424) and uuid_parent (440) must be null.
        if !matches!(buf.get(424..456), Some(u) if u.iter().all(|&b| b == 0)) {
            return Err(Error::ParentUnsupported);
        }
        // blocks_in_image <= 2^23: no overflow.
        let bmap_end = u64::from(offset_bmap) + u64::from(blocks_in_image) * 4;
        if bmap_end > u64::from(offset_data) {
            return Err(Error::BadOffset {
                what: Structure::BlockMap,
                offset: offset_bmap,
            });
        }
        if bmap_end > file_len {
            return Err(Error::Truncated {
                what: Structure::BlockMap,
                needed: bmap_end,
                available: file_len,
            });
        }
        Ok(Header {
            image_type,
            image_flags: u32_at(buf, 80),
            offset_bmap,
            offset_data,
            disk_size,
            block_size,
            blocks_in_image,
            blocks_allocated: u32_at(buf, 388),
        })
    }

    /// The virtual disk size: the disk size in whole sectors, as QEMU
    /// reads it.
    pub fn size(&self) -> u64 {
        self.disk_size / SECTOR * SECTOR
    }

    /// Offset of the block map in the file.
    pub fn bmap_offset(&self) -> u64 {
        u64::from(self.offset_bmap)
    }

    /// Size of the block map in bytes (at most 32 MiB).
    pub fn bmap_len(&self) -> usize {
        self.blocks_in_image as usize * 4
    }
}

/// Whether `first` (the first bytes of a file) has the VDI signature.
pub fn has_signature(first: &[u8]) -> bool {
    first.len() >= 68 && u32_at(first, 64) == SIGNATURE
}
