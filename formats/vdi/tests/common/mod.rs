//! Glue between the host reader and the shared test helpers.

#![allow(dead_code, unused_imports)]

pub use format_test_support::*;

use std::path::Path;
use vdi_format::host::Image;

/// The host reader as a [`Reader`].
pub struct VdiReader(pub Image);

impl Reader for VdiReader {
    fn size(&self) -> u64 {
        self.0.size()
    }

    fn read(&mut self, buf: &mut [u8], offset: u64) -> Result<(), String> {
        self.0.read_at(buf, offset).map_err(|e| e.to_string())
    }
}

/// Opens `image` with the host reader.
pub fn open(image: &Path) -> Image {
    Image::open(image).unwrap_or_else(|e| panic!("open {image:?}: {e}"))
}

/// Compares the host reader with the oracle over the whole disk.
pub fn check_image(dir: &Path, image: &Path) {
    let mut expected = Bytes(oracle(dir, "vdi", image));
    compare(&mut VdiReader(open(image)), &mut expected, 150, 7);
}
