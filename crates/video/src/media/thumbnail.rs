//! JPEG thumbnails.

use std::path::Path;

use image::RgbImage;
use image::codecs::jpeg::JpegEncoder;
use image::imageops::{self, FilterType};

use super::MediaError;
use super::atomic::write_atomic;

/// Thumbnails are at most this wide; smaller frames are not enlarged.
pub const THUMBNAIL_MAX_WIDTH: u32 = 640;

/// JPEG quality: small files without visible blocking at thumbnail size.
const JPEG_QUALITY: u8 = 85;

/// `frame` scaled (Triangle filter, aspect kept) to at most [`THUMBNAIL_MAX_WIDTH`] wide.
pub fn thumbnail_image(frame: &RgbImage) -> RgbImage {
    let (w, h) = frame.dimensions();
    if w <= THUMBNAIL_MAX_WIDTH {
        return frame.clone();
    }
    let new_h =
        ((u64::from(h) * u64::from(THUMBNAIL_MAX_WIDTH) + u64::from(w) / 2) / u64::from(w)).max(1);
    imageops::resize(
        frame,
        THUMBNAIL_MAX_WIDTH,
        new_h as u32,
        FilterType::Triangle,
    )
}

/// Writes a JPEG thumbnail of `frame` to `path` atomically; the resize and encode run
/// on the blocking pool.
pub async fn write_thumbnail(path: &Path, frame: &RgbImage) -> Result<(), MediaError> {
    let frame = frame.clone();
    let encoded = tokio::task::spawn_blocking(move || thumbnail_jpeg(&frame))
        .await
        .expect("thumbnail task panicked");
    let jpeg = encoded.map_err(|source| MediaError::Image {
        path: path.to_owned(),
        source,
    })?;
    write_atomic(path, &jpeg).await
}

/// The JPEG bytes of the thumbnail of `frame` (what [`write_thumbnail`] writes), made on
/// the calling thread.
pub fn thumbnail_jpeg(frame: &RgbImage) -> Result<Vec<u8>, image::ImageError> {
    let thumb = thumbnail_image(frame);
    let mut jpeg = Vec::new();
    JpegEncoder::new_with_quality(&mut jpeg, JPEG_QUALITY)
        .encode_image(&thumb)
        .map(|()| jpeg)
}
