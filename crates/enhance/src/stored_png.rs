//! PNG of stored deflate blocks, written and read in one pass over the pixels.
//!
//! The API's cheapest PNG (8-bit RGB, no filter, deflate's stored blocks: the pixels
//! copied, with two checksums) is what the pipeline sends and the server answers to a
//! client that did not compress. The `png` crate handles it like any PNG: the encoder
//! gathers the zlib stream in a growing buffer and copies it into the file, the decoder
//! inflates into a buffer and unfilters into another. Here each is one copy of the
//! pixels, into a buffer the caller may reuse: at 1080p (6 MB a frame) that is most of
//! a codec's cost. Any other PNG is left to the `png` crate ([`read`] says so).

/// The PNG file signature.
const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
/// Largest payload of one stored deflate block.
const BLOCK: usize = 65_535;
/// zlib header: deflate, 32 KiB window, no dictionary, fastest level (checksum valid).
const ZLIB_HEADER: [u8; 2] = [0x78, 0x01];
/// Largest chunk payload the PNG format allows (2^31 - 1).
const MAX_CHUNK: usize = 0x7fff_ffff;
/// IHDR payload length.
const IHDR_LEN: usize = 13;

/// Bytes of the stored PNG of a `width` x `height` RGB frame.
pub(crate) fn stored_len(width: u32, height: u32) -> usize {
    let stream = stream_len(width, height);
    let blocks = stream.div_ceil(BLOCK).max(1);
    let zlib = ZLIB_HEADER.len() + 5 * blocks + stream + 4;
    SIGNATURE.len() + (12 + IHDR_LEN) + (12 + zlib) + 12
}

/// Filtered-stream length: a filter byte before each row of pixels.
fn stream_len(width: u32, height: u32) -> usize {
    (width as usize * 3 + 1) * height as usize
}

/// Writes the stored PNG of the `width` x `height` RGB `pixels` into `out` (cleared
/// first; its capacity is reused). `None` when the zlib stream would not fit one IDAT
/// chunk (over 700 megapixels), or `pixels` is not the frame's size.
pub(crate) fn write(pixels: &[u8], width: u32, height: u32, out: &mut Vec<u8>) -> Option<()> {
    let stride = width as usize * 3;
    if pixels.len() != stride * height as usize || width == 0 || height == 0 {
        return None;
    }
    let total = stored_len(width, height);
    let idat_len = total - SIGNATURE.len() - (12 + IHDR_LEN) - 12 - 12;
    if idat_len > MAX_CHUNK {
        return None;
    }
    out.clear();
    out.reserve(total);
    out.extend_from_slice(&SIGNATURE);
    let mut ihdr = [0u8; IHDR_LEN];
    ihdr[0..4].copy_from_slice(&width.to_be_bytes());
    ihdr[4..8].copy_from_slice(&height.to_be_bytes());
    // 8 bits, truecolour (RGB), deflate, adaptive filtering, no interlace.
    ihdr[8..].copy_from_slice(&[8, 2, 0, 0, 0]);
    chunk(out, b"IHDR", &ihdr);

    out.extend_from_slice(&(idat_len as u32).to_be_bytes());
    let idat_start = out.len();
    out.extend_from_slice(b"IDAT");
    out.extend_from_slice(&ZLIB_HEADER);
    let mut stream = Stream {
        out,
        left_in_block: 0,
        to_go: stream_len(width, height),
        adler: simd_adler32::Adler32::new(),
    };
    for row in pixels.chunks_exact(stride) {
        stream.push(&[0]);
        stream.push(row);
    }
    let adler = stream.adler.finish();
    out.extend_from_slice(&adler.to_be_bytes());
    let crc = crc32fast::hash(&out[idat_start..]);
    out.extend_from_slice(&crc.to_be_bytes());
    chunk(out, b"IEND", &[]);
    debug_assert_eq!(out.len(), total);
    Some(())
}

/// The zlib stream being written: stored blocks opened as bytes arrive.
struct Stream<'a> {
    out: &'a mut Vec<u8>,
    /// Payload bytes the open block still takes.
    left_in_block: usize,
    /// Stream bytes not written yet.
    to_go: usize,
    adler: simd_adler32::Adler32,
}

impl Stream<'_> {
    fn push(&mut self, mut bytes: &[u8]) {
        self.adler.write(bytes);
        while !bytes.is_empty() {
            if self.left_in_block == 0 {
                let len = self.to_go.min(BLOCK);
                let last = u8::from(len == self.to_go);
                self.out.push(last);
                self.out.extend_from_slice(&(len as u16).to_le_bytes());
                self.out.extend_from_slice(&(!(len as u16)).to_le_bytes());
                self.left_in_block = len;
            }
            let n = bytes.len().min(self.left_in_block);
            self.out.extend_from_slice(&bytes[..n]);
            self.left_in_block -= n;
            self.to_go -= n;
            bytes = &bytes[n..];
        }
    }
}

/// Appends a whole chunk: length, type, data, CRC of type and data.
fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// Reads `bytes` as a stored PNG of 8-bit RGB with unfiltered rows into `pixels`
/// (cleared first; its capacity is reused) and returns its size. `None` when it is any
/// other PNG, is damaged (a chunk's CRC is checked, as the `png` crate does; the zlib
/// checksum is not, as the `png` crate does not), or is over `max_pixels`: the caller
/// then hands it to the `png` crate, which decodes it or says what is wrong with it.
pub(crate) fn read(bytes: &[u8], max_pixels: u64, pixels: &mut Vec<u8>) -> Option<(u32, u32)> {
    let mut chunks = Chunks {
        rest: bytes.strip_prefix(&SIGNATURE)?,
    };
    let (kind, ihdr) = chunks.next()?;
    if &kind != b"IHDR" || ihdr.len() != IHDR_LEN || ihdr[8..] != [8, 2, 0, 0, 0] {
        return None;
    }
    let width = u32::from_be_bytes(ihdr[0..4].try_into().ok()?);
    let height = u32::from_be_bytes(ihdr[4..8].try_into().ok()?);
    if width == 0 || height == 0 || u64::from(width) * u64::from(height) > max_pixels {
        return None;
    }
    // The zlib stream: every IDAT, in order, with nothing between them; any other chunk
    // before IEND sends the image to the general decoder.
    let mut parts: Vec<&[u8]> = Vec::new();
    loop {
        let (kind, data) = chunks.next()?;
        match &kind {
            b"IDAT" => parts.push(data),
            b"IEND" if !parts.is_empty() => break,
            _ => return None,
        }
    }
    let mut zlib = Parts::new(parts);
    let header = zlib.take::<2>()?;
    if header[0] != ZLIB_HEADER[0] || header[1] & 0x20 != 0 || u16::from_be_bytes(header) % 31 != 0
    {
        return None;
    }
    let stride = width as usize * 3;
    pixels.clear();
    pixels.reserve(stride * height as usize);
    // Position within the current row, the filter byte being position 0.
    let mut col = 0usize;
    let mut rows_done = 0u32;
    let mut last = false;
    while !last {
        let head = zlib.take::<5>()?;
        // A stored block: BFINAL, then BTYPE 00 (the other five bits are padding).
        if head[0] & 0b110 != 0 {
            return None;
        }
        last = head[0] & 1 == 1;
        let len = u16::from_le_bytes([head[1], head[2]]);
        if len != !u16::from_le_bytes([head[3], head[4]]) {
            return None;
        }
        let mut len = len as usize;
        while len > 0 {
            if rows_done == height {
                return None;
            }
            if col == 0 {
                // Only unfiltered rows here.
                if zlib.take::<1>()?[0] != 0 {
                    return None;
                }
                col = 1;
                len -= 1;
                continue;
            }
            let n = len.min(stride + 1 - col);
            zlib.copy_into(n, pixels)?;
            col += n;
            len -= n;
            if col == stride + 1 {
                col = 0;
                rows_done += 1;
            }
        }
    }
    // The zlib checksum must follow, and nothing after it.
    zlib.take::<4>()?;
    (rows_done == height && col == 0 && zlib.is_empty()).then_some((width, height))
}

/// The chunks after the signature, each checked against its CRC.
struct Chunks<'a> {
    rest: &'a [u8],
}

impl<'a> Chunks<'a> {
    /// The next chunk's type and data; `None` at a cut or damaged chunk.
    fn next(&mut self) -> Option<([u8; 4], &'a [u8])> {
        let len = u32::from_be_bytes(self.rest.get(0..4)?.try_into().ok()?) as usize;
        let body = self.rest.get(4..8 + len)?;
        let crc = u32::from_be_bytes(self.rest.get(8 + len..12 + len)?.try_into().ok()?);
        if crc32fast::hash(body) != crc {
            return None;
        }
        self.rest = &self.rest[12 + len..];
        Some((body[..4].try_into().ok()?, &body[4..]))
    }
}

/// The zlib stream spread over IDAT chunks, read front to back.
struct Parts<'a> {
    parts: std::collections::VecDeque<&'a [u8]>,
}

impl<'a> Parts<'a> {
    fn new(parts: Vec<&'a [u8]>) -> Self {
        Self {
            parts: parts.into_iter().filter(|p| !p.is_empty()).collect(),
        }
    }

    /// The next `N` bytes (gathered across chunks when cut by one).
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let mut out = [0u8; N];
        let mut got = 0;
        while got < N {
            let part = self.parts.front_mut()?;
            let k = (N - got).min(part.len());
            out[got..got + k].copy_from_slice(&part[..k]);
            *part = &part[k..];
            if part.is_empty() {
                self.parts.pop_front();
            }
            got += k;
        }
        Some(out)
    }

    /// Appends the next `n` bytes to `to`.
    fn copy_into(&mut self, mut n: usize, to: &mut Vec<u8>) -> Option<()> {
        while n > 0 {
            let part = self.parts.front_mut()?;
            let k = n.min(part.len());
            to.extend_from_slice(&part[..k]);
            *part = &part[k..];
            if part.is_empty() {
                self.parts.pop_front();
            }
            n -= k;
        }
        Some(())
    }

    fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    use image::{ImageEncoder, RgbImage};

    use super::*;

    fn frame(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x * 7 + y) as u8, (y * 11) as u8, (x ^ y) as u8])
        })
    }

    fn png_crate(frame: &RgbImage, compression: CompressionType, filter: FilterType) -> Vec<u8> {
        let mut out = Vec::new();
        PngEncoder::new_with_quality(&mut out, compression, filter)
            .write_image(
                frame.as_raw(),
                frame.width(),
                frame.height(),
                image::ExtendedColorType::Rgb8,
            )
            .unwrap();
        out
    }

    #[test]
    fn written_pngs_decode_to_the_frame_with_the_png_crate() {
        // Sizes whose rows end inside, at and across the 65,535-byte blocks.
        for (w, h) in [(1, 1), (33, 17), (21845, 2), (300, 300), (1920, 40)] {
            let f = frame(w, h);
            let mut out = vec![1, 2, 3];
            write(f.as_raw(), w, h, &mut out).unwrap();
            assert_eq!(out.len(), stored_len(w, h));
            let decoded = image::load_from_memory_with_format(&out, image::ImageFormat::Png)
                .unwrap()
                .into_rgb8();
            assert_eq!(decoded, f, "{w}x{h}");
            let mut pixels = Vec::new();
            assert_eq!(read(&out, u64::MAX, &mut pixels), Some((w, h)));
            assert_eq!(pixels, f.into_raw(), "{w}x{h}");
        }
    }

    #[test]
    fn reads_the_png_crates_stored_pngs_and_leaves_it_the_others() {
        let f = frame(300, 300);
        let stored = png_crate(&f, CompressionType::Uncompressed, FilterType::NoFilter);
        let mut pixels = Vec::new();
        assert_eq!(read(&stored, u64::MAX, &mut pixels), Some((300, 300)));
        assert_eq!(pixels, f.as_raw().as_slice());
        let fast = png_crate(&f, CompressionType::Fast, FilterType::Up);
        assert_eq!(read(&fast, u64::MAX, &mut pixels), None);
        assert_eq!(
            read(&stored, 300 * 299, &mut pixels),
            None,
            "over the pixel limit"
        );
    }

    #[test]
    fn idat_split_into_many_chunks_is_read() {
        let f = frame(100, 50);
        let mut one = Vec::new();
        write(f.as_raw(), 100, 50, &mut one).unwrap();
        // Re-chunk the IDAT data into 1000-byte chunks, as libpng-style writers do.
        let idat_at = 8 + 25;
        let len = u32::from_be_bytes(one[idat_at..idat_at + 4].try_into().unwrap()) as usize;
        let data = &one[idat_at + 8..idat_at + 8 + len];
        let mut split = one[..idat_at].to_vec();
        for part in data.chunks(1000) {
            chunk(&mut split, b"IDAT", part);
        }
        chunk(&mut split, b"IEND", &[]);
        let mut pixels = Vec::new();
        assert_eq!(read(&split, u64::MAX, &mut pixels), Some((100, 50)));
        assert_eq!(pixels, f.into_raw());
    }

    #[test]
    fn damaged_or_cut_pngs_are_left_to_the_general_decoder() {
        let f = frame(40, 30);
        let mut good = Vec::new();
        write(f.as_raw(), 40, 30, &mut good).unwrap();
        let mut pixels = Vec::new();
        for cut in [0, 8, 20, good.len() / 2, good.len() - 1] {
            assert_eq!(
                read(&good[..cut], u64::MAX, &mut pixels),
                None,
                "cut at {cut}"
            );
        }
        let mut flipped = good.clone();
        flipped[good.len() / 2] ^= 1;
        assert_eq!(read(&flipped, u64::MAX, &mut pixels), None, "CRC mismatch");
        assert!(
            image::load_from_memory_with_format(&flipped, image::ImageFormat::Png).is_err(),
            "the png crate refuses it too"
        );
    }
}
