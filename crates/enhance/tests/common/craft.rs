//! Hostile images made by hand: small files whose header declares huge dimensions
//! (decompression bombs).

#![allow(dead_code)]

use idempipe_enhance::{ImageFormat, codec};
use image::RgbImage;

/// A PNG of a few hundred bytes whose header declares `width`x`height` (the pixel data
/// is that of an 8x8 image, so decoding it fully would fail, after allocating).
pub(crate) fn png_declaring(width: u32, height: u32) -> Vec<u8> {
    let mut png = codec::encode(&RgbImage::new(8, 8), ImageFormat::Png).unwrap();
    // Signature (8), IHDR length (4), "IHDR" (4), then width and height.
    assert_eq!(&png[12..16], b"IHDR");
    png[16..20].copy_from_slice(&width.to_be_bytes());
    png[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

/// A JPEG of an 8x8 image whose frame header (SOF0) declares `width`x`height`.
pub(crate) fn jpeg_declaring(width: u16, height: u16) -> Vec<u8> {
    let mut jpeg = codec::encode(&RgbImage::new(8, 8), ImageFormat::Jpeg).unwrap();
    let sof = jpeg
        .windows(2)
        .position(|w| w == [0xff, 0xc0])
        .expect("a baseline JPEG has SOF0");
    // Marker (2), length (2), precision (1), then height and width.
    jpeg[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    jpeg[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    jpeg
}

/// CRC-32 (IEEE), as PNG chunks carry it.
pub(crate) fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
