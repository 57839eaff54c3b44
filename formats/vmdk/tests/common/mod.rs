//! Glue between the host reader and the shared test helpers.

#![allow(dead_code)]

pub use format_test_support::*;

use std::path::Path;
use vmdk_format::host::Image;

/// The host reader as a [`Reader`].
pub struct Vmdk(pub Image);

impl Reader for Vmdk {
    fn size(&self) -> u64 {
        self.0.size()
    }

    fn read(&mut self, buf: &mut [u8], offset: u64) -> Result<(), String> {
        self.0.read_at(buf, offset).map_err(|e| e.to_string())
    }
}

/// Opens `image` with the host reader.
pub fn open(image: &Path) -> Vmdk {
    Vmdk(Image::open(image).unwrap_or_else(|e| panic!("open {image:?}: {e}")))
}

/// Compares the host reader with the oracle over the whole (small) disk.
pub fn check_image(dir: &Path, image: &Path) {
    let mut expected = Bytes(oracle(dir, "vmdk", image));
    compare(&mut open(image), &mut expected, 150, 7);
}

/// The raw grain table entries of a monolithic sparse image, in order.
pub fn grain_table_entries(image: &Path) -> Vec<u32> {
    use vmdk_format::header::SECTOR;
    let img = Image::open(image).unwrap();
    let data = std::fs::read(image).unwrap();
    let vmdk_format::ExtentKind::Sparse(s) = img.disk().extent(0).unwrap().kind() else {
        panic!("not sparse");
    };
    let le = |at: usize| u32::from_le_bytes(data[at..at + 4].try_into().unwrap());
    let mut out = Vec::new();
    for i in 0..s.gd_entries() as usize {
        let gt = le(s.gd_offset() as usize + 4 * i) as u64 * SECTOR;
        if gt == 0 {
            continue;
        }
        for j in 0..s.gtes_per_gt() as usize {
            out.push(le(gt as usize + 4 * j));
        }
    }
    out
}
