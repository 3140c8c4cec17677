//! PNG and JPEG encoding and decoding of RGB frames.
//!
//! PNG comes in two compressions ([`PngCompression`]): `Stored` (deflate's stored blocks,
//! no filter: the pixels are copied with two checksums, the cheapest PNG there is, about
//! the raw size) and `Fast` (fdeflate's ultra-fast mode with the `Up` filter, about half
//! the raw size for video frames at several times the CPU). Both are lossless, so results
//! stay deterministic. JPEG uses quality 90: visually clean, about 5x smaller than PNG,
//! but lossy.

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ImageEncoder, ImageReader, RgbImage};
use serde::{Deserialize, Serialize};

use crate::stored_png;

/// JPEG quality (1..=100) used when encoding.
pub const JPEG_QUALITY: u8 = 90;

/// An image format of the enhancement API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    /// PNG, lossless.
    Png,
    /// JPEG, lossy.
    Jpeg,
}

impl ImageFormat {
    /// The MIME type, as sent in `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            ImageFormat::Png => "image/png",
            ImageFormat::Jpeg => "image/jpeg",
        }
    }

    /// Parses a `Content-Type` value, ignoring parameters and case; `None` if unsupported.
    pub fn from_content_type(value: &str) -> Option<Self> {
        let mime = value.split(';').next().unwrap_or("").trim();
        if mime.eq_ignore_ascii_case("image/png") {
            Some(ImageFormat::Png)
        } else if mime.eq_ignore_ascii_case("image/jpeg") || mime.eq_ignore_ascii_case("image/jpg")
        {
            Some(ImageFormat::Jpeg)
        } else {
            None
        }
    }

    fn to_image(self) -> image::ImageFormat {
        match self {
            ImageFormat::Png => image::ImageFormat::Png,
            ImageFormat::Jpeg => image::ImageFormat::Jpeg,
        }
    }
}

impl std::fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ImageFormat::Png => "png",
            ImageFormat::Jpeg => "jpeg",
        })
    }
}

impl std::str::FromStr for ImageFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "png" => Ok(ImageFormat::Png),
            "jpeg" | "jpg" => Ok(ImageFormat::Jpeg),
            other => Err(format!(
                "unknown image format {other:?}; expected png or jpeg"
            )),
        }
    }
}

/// Why an image could not be decoded or encoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The bytes are not a valid image of the expected format.
    #[error("not a decodable {format} image: {source}")]
    Undecodable {
        /// The format the bytes were read as.
        format: ImageFormat,
        /// The decoder's error.
        source: image::ImageError,
    },
    /// The image has more pixels than allowed.
    #[error("image is {width}x{height} = {} pixels, more than the limit of {max_pixels}", *width as u64 * *height as u64)]
    TooLarge {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// The limit that was exceeded.
        max_pixels: u64,
    },
    /// The decoder refused the image as too large for its memory limits (a header
    /// declaring an absurd size, e.g. 2147483647x2), before allocating it.
    #[error("{format} image is too large to decode: {source}")]
    OverLimits {
        /// The format the bytes were read as.
        format: ImageFormat,
        /// The decoder's limit error.
        source: image::ImageError,
    },
    /// Encoding failed (only on I/O-like failures of the encoder).
    #[error("could not encode {format}: {source}")]
    Encode {
        /// The target format.
        format: ImageFormat,
        /// The encoder's error.
        source: image::ImageError,
    },
}

/// Decodes `bytes` as `format` into RGB, with no pixel limit.
pub fn decode(bytes: &[u8], format: ImageFormat) -> Result<RgbImage, CodecError> {
    decode_limited(bytes, format, u64::MAX)
}

/// Decodes `bytes` as `format` into RGB, refusing images over `max_pixels` from their
/// header, before any pixel buffer is allocated.
pub fn decode_limited(
    bytes: &[u8],
    format: ImageFormat,
    max_pixels: u64,
) -> Result<RgbImage, CodecError> {
    decode_limited_into(bytes, format, max_pixels, Vec::new())
}

/// [`decode_limited`] into `buf`'s memory when it can (a stored PNG: see
/// [`PngCompression::Stored`]); other images get a buffer of their own.
pub fn decode_limited_into(
    bytes: &[u8],
    format: ImageFormat,
    max_pixels: u64,
    mut buf: Vec<u8>,
) -> Result<RgbImage, CodecError> {
    if format == ImageFormat::Png
        && let Some((w, h)) = stored_png::read(bytes, max_pixels, &mut buf)
    {
        return Ok(RgbImage::from_raw(w, h, buf).expect("a whole frame was read"));
    }
    let undecodable = |source| match source {
        image::ImageError::Limits(_) => CodecError::OverLimits { format, source },
        source => CodecError::Undecodable { format, source },
    };
    let reader = || ImageReader::with_format(Cursor::new(bytes), format.to_image());
    let (width, height) = reader().into_dimensions().map_err(undecodable)?;
    if width as u64 * height as u64 > max_pixels {
        return Err(CodecError::TooLarge {
            width,
            height,
            max_pixels,
        });
    }
    let img = reader().decode().map_err(undecodable)?;
    Ok(img.into_rgb8())
}

/// How a PNG body is compressed (the API accepts either; see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PngCompression {
    /// Stored deflate blocks, no filter: the least CPU, the raw size on the wire.
    #[default]
    Stored,
    /// fdeflate's ultra-fast mode with the `Up` filter: about half the size.
    Fast,
}

impl PngCompression {
    /// What a server answers with for a request `body` of a `width` x `height` frame:
    /// `Stored` when the client sent at least the raw size (it did not compress, so CPU
    /// matters more to it than bytes), `Fast` otherwise.
    pub fn mirroring(body_len: usize, width: u32, height: u32) -> Self {
        let raw = u64::from(width) * u64::from(height) * 3;
        if body_len as u64 >= raw {
            PngCompression::Stored
        } else {
            PngCompression::Fast
        }
    }
}

/// Encodes `frame` as `format`, PNG with fast compression.
pub fn encode(frame: &RgbImage, format: ImageFormat) -> Result<Vec<u8>, CodecError> {
    encode_with(frame, format, PngCompression::Fast)
}

/// Encodes `frame` as `format`, PNG compressed as `png` says (ignored for JPEG).
pub fn encode_with(
    frame: &RgbImage,
    format: ImageFormat,
    png: PngCompression,
) -> Result<Vec<u8>, CodecError> {
    let (w, h) = frame.dimensions();
    if (format, png) == (ImageFormat::Png, PngCompression::Stored) {
        let mut out = Vec::new();
        if stored_png::write(frame.as_raw(), w, h, &mut out).is_some() {
            return Ok(out);
        }
    }
    let raw = frame.as_raw().len();
    let mut out = Vec::with_capacity(match (format, png) {
        // Stored blocks add 5 bytes per 64 KiB, rows a filter byte each, chunks 12 bytes.
        (ImageFormat::Png, PngCompression::Stored) => raw + raw / 8192 + h as usize + 1024,
        _ => raw / 2,
    });
    let result = match format {
        ImageFormat::Png => {
            let (compression, filter) = match png {
                PngCompression::Stored => (CompressionType::Uncompressed, FilterType::NoFilter),
                PngCompression::Fast => (CompressionType::Fast, FilterType::Up),
            };
            PngEncoder::new_with_quality(&mut out, compression, filter).write_image(
                frame.as_raw(),
                w,
                h,
                image::ExtendedColorType::Rgb8,
            )
        }
        ImageFormat::Jpeg => JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY).write_image(
            frame.as_raw(),
            w,
            h,
            image::ExtendedColorType::Rgb8,
        ),
    };
    result.map_err(|source| CodecError::Encode { format, source })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img() -> RgbImage {
        RgbImage::from_fn(33, 17, |x, y| {
            image::Rgb([(x * 7) as u8, (y * 11) as u8, (x + y) as u8])
        })
    }

    #[test]
    fn png_round_trip_is_lossless() {
        let bytes = encode(&img(), ImageFormat::Png).unwrap();
        assert_eq!(decode(&bytes, ImageFormat::Png).unwrap(), img());
    }

    #[test]
    fn stored_png_round_trip_is_lossless_and_raw_sized() {
        let frame = img();
        let bytes = encode_with(&frame, ImageFormat::Png, PngCompression::Stored).unwrap();
        assert_eq!(decode(&bytes, ImageFormat::Png).unwrap(), frame);
        let raw = frame.as_raw().len();
        assert!(bytes.len() > raw, "{} bytes for {raw} raw", bytes.len());
        assert_eq!(
            PngCompression::mirroring(bytes.len(), 33, 17),
            PngCompression::Stored
        );
        let fast = encode(&frame, ImageFormat::Png).unwrap();
        assert_eq!(decode(&fast, ImageFormat::Png).unwrap(), frame);
        assert_eq!(
            PngCompression::mirroring(raw - 1, 33, 17),
            PngCompression::Fast
        );
    }

    #[test]
    fn jpeg_round_trip_keeps_size() {
        let bytes = encode(&img(), ImageFormat::Jpeg).unwrap();
        assert_eq!(
            decode(&bytes, ImageFormat::Jpeg).unwrap().dimensions(),
            (33, 17)
        );
    }

    #[test]
    fn garbage_and_limits() {
        assert!(matches!(
            decode(b"nope", ImageFormat::Png),
            Err(CodecError::Undecodable { .. })
        ));
        let bytes = encode(&img(), ImageFormat::Png).unwrap();
        assert!(matches!(
            decode_limited(&bytes, ImageFormat::Png, 100),
            Err(CodecError::TooLarge { .. })
        ));
    }

    #[test]
    fn content_types() {
        assert_eq!(
            ImageFormat::from_content_type("IMAGE/PNG; x=y"),
            Some(ImageFormat::Png)
        );
        assert_eq!(
            ImageFormat::from_content_type("image/jpeg"),
            Some(ImageFormat::Jpeg)
        );
        assert_eq!(ImageFormat::from_content_type("image/gif"), None);
    }
}
