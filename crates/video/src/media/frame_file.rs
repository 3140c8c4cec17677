//! Per-frame artifact files: raw RGB24 behind an 8-byte size header.
//!
//! Layout: width (u32 little-endian), height (u32 LE), then width x height x 3 bytes
//! of RGB, row by row. Measured at 720p (a Big Buck Bunny frame, release build): raw
//! write 3-9 ms, read about 1 ms; PNG with fast compression write 8-11 ms, read
//! 10-13 ms (in the dev profile PNG writes take about 150 ms). PNG is half the size
//! (1.3 MB against 2.76 MB), but the pipeline keeps only segments in flight on disk.
//! The `raw_frame_files_beat_png_at_720p` test prints the comparison.
//!
//! Each read or write is one blocking task that moves the pixels once between the
//! file and the frame's own buffer (no intermediate copy, no header shifted out).

use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::Arc;

use image::RgbImage;

use super::MediaError;
use super::atomic::temp_path_for;
use super::pipe::splice_all;

/// Bytes before the pixels: width and height.
const HEADER_LEN: usize = 8;

/// Writes `frame` to `path` atomically (temporary name, then rename), creating its
/// directory if needed.
pub async fn write_frame_file(path: &Path, frame: &RgbImage) -> Result<(), MediaError> {
    write_frame_file_owned(path, frame.clone()).await.map(drop)
}

/// Writes `frame` to `path` atomically (temporary name, then rename) without copying
/// its pixels, and gives the frame back so that its buffer can be reused.
pub async fn write_frame_file_owned(path: &Path, frame: RgbImage) -> Result<RgbImage, MediaError> {
    let frame = Arc::new(frame);
    write_frame_file_shared(path, frame.clone()).await?;
    // The write's clone was dropped with its task.
    Ok(Arc::try_unwrap(frame).unwrap_or_else(|shared| (*shared).clone()))
}

/// Writes a shared `frame` to `path` atomically without copying its pixels: for a caller
/// that may have to write it again (after waiting for disk space).
pub async fn write_frame_file_shared(path: &Path, frame: Arc<RgbImage>) -> Result<(), MediaError> {
    let owned = path.to_owned();
    tokio::task::spawn_blocking(move || write_blocking(&owned, &frame))
        .await
        .map_err(|e| MediaError::Io {
            path: path.to_owned(),
            action: "write frame",
            source: std::io::Error::other(e),
        })?
}

/// Reads a frame written by [`write_frame_file`], checking its size against the header.
pub async fn read_frame_file(path: &Path) -> Result<RgbImage, MediaError> {
    let owned = path.to_owned();
    tokio::task::spawn_blocking(move || read_blocking(&owned))
        .await
        .map_err(|e| MediaError::Io {
            path: path.to_owned(),
            action: "read frame",
            source: std::io::Error::other(e),
        })?
}

/// Opens a file written in place (frame files of decoded frames, frames files of slots)
/// for writing: created if missing, with its directory, and never truncated.
pub(crate) fn open_in_place(path: &Path) -> std::io::Result<std::fs::File> {
    let open = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
    };
    open().or_else(|e| match path.parent() {
        Some(dir) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)?;
            open()
        }
        _ => Err(e),
    })
}

/// [`write_frame_file`] on the calling thread, for callers already on a blocking one.
pub(crate) fn write_blocking(path: &Path, frame: &RgbImage) -> Result<(), MediaError> {
    let tmp = temp_path_for(path);
    let header = header(frame.width(), frame.height());
    let created = std::fs::File::create(&tmp).or_else(|e| match path.parent() {
        // The directory is made once, by the first write that finds it missing.
        Some(dir) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)?;
            std::fs::File::create(&tmp)
        }
        _ => Err(e),
    });
    let written = created.and_then(|mut file| {
        file.write_all(&header)?;
        file.write_all(frame.as_raw())
    });
    // No fsync: frame files are re-creatable artifacts, and readers check their size.
    let result = written.and_then(|()| std::fs::rename(&tmp, path));
    result.map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        MediaError::Io {
            path: path.to_owned(),
            action: "write frame",
            source,
        }
    })
}

/// Moves the next `width` x `height` frame from `source` (a decoder's pipe) into a frame
/// file at `path`: the header, then the pixels, which the kernel moves from the pipe to
/// the file ([`splice_all`]) without a copy through this process.
/// Returns the pixel bytes moved: the frame's size, fewer when `source` ended first
/// (0 at a clean end), in which case the file is incomplete.
///
/// The file is written in place, not renamed: for frames decoded from an input, whose
/// bytes are the same at every attempt and which nothing reads before the attempt that
/// wrote them all completes. It is not truncated on opening (an attempt that lost its
/// lease rewriting a frame another attempt finished writes the same bytes over them)
/// and its length is set once full.
pub(crate) fn splice_from_blocking(
    source: &mut std::fs::File,
    path: &Path,
    width: u32,
    height: u32,
) -> Result<u64, MediaError> {
    let io = |source| MediaError::Io {
        path: path.to_owned(),
        action: "write frame",
        source,
    };
    let pixels = u64::from(width) * u64::from(height) * 3;
    let file = open_in_place(path).map_err(io)?;
    file.write_all_at(&header(width, height), 0).map_err(io)?;
    let moved = splice_all(source, None, &file, Some(HEADER_LEN as u64), pixels).map_err(io)?;
    if moved == pixels {
        file.set_len(HEADER_LEN as u64 + pixels).map_err(io)?;
    }
    Ok(moved)
}

/// Moves the pixels of the frame file at `path` into `sink` (an encoder's pipe) after
/// checking its header and length against a `width` x `height` frame; the kernel moves
/// them from the file to the pipe ([`splice_all`]).
/// A failed write to `sink` is [`SpliceError::Sink`] (the encoder is gone).
pub(crate) fn splice_into_blocking(
    path: &Path,
    sink: &mut std::fs::File,
    width: u32,
    height: u32,
) -> Result<(), SpliceError> {
    let io = |source| SpliceError::File(MediaError::reading(path, "read frame", source));
    let mut file = std::fs::File::open(path).map_err(io)?;
    let pixels = u64::from(width) * u64::from(height) * 3;
    let expected = HEADER_LEN as u64 + pixels;
    let len = file.metadata().map_err(io)?.len();
    let mut head = [0u8; HEADER_LEN];
    if len == expected {
        file.read_exact(&mut head).map_err(io)?;
    }
    if len != expected || head != header(width, height) {
        return Err(SpliceError::File(MediaError::BadFrameFile {
            path: path.to_owned(),
            detail: format!(
                "{len} bytes, expected a {width}x{height} frame file of {expected} bytes"
            ),
        }));
    }
    let moved = splice_all(&file, Some(HEADER_LEN as u64), sink, None, pixels)
        .map_err(SpliceError::Sink)?;
    if moved != pixels {
        return Err(SpliceError::File(MediaError::BadFrameFile {
            path: path.to_owned(),
            detail: format!("the file shrank while being read: {moved} of {pixels} pixel bytes"),
        }));
    }
    Ok(())
}

/// Moves the next `width` x `height` frame from `source` (a decoder's pipe) into slot
/// `slot` of the frames file `file`: frames one after another, each with its header, the
/// slot at `slot` times their size. One file holds a segment's frames, so a frame costs
/// no file of its own (creating and deleting a file per frame kept ext4 busy looking
/// for free inodes). As with [`splice_from_blocking`], the bytes are the same at every
/// attempt and are written in place. Returns the pixel bytes moved: fewer than a frame
/// when `source` ended first, and then the file ends before the slot.
pub(crate) fn splice_into_slot_blocking(
    source: &std::fs::File,
    file: &std::fs::File,
    slot: u64,
    width: u32,
    height: u32,
) -> std::io::Result<u64> {
    let pixels = u64::from(width) * u64::from(height) * 3;
    let at = slot * (HEADER_LEN as u64 + pixels);
    file.write_all_at(&header(width, height), at)?;
    let moved = splice_all(source, None, file, Some(at + HEADER_LEN as u64), pixels)?;
    if moved != pixels {
        // Past the decoder's last frame: no slot (the file ends with the last whole one).
        file.set_len(at)?;
    }
    Ok(moved)
}

/// Reads frame `slot` of a frames file written by [`splice_into_slot_blocking`], checking
/// its header against the first frame's and the file's length, into `buf`'s memory (a
/// reused buffer saves the kernel mapping fresh pages for every frame).
pub(crate) fn read_slot_blocking(
    path: &Path,
    slot: u64,
    mut buf: Vec<u8>,
) -> Result<RgbImage, MediaError> {
    let io = |source| MediaError::reading(path, "read frame", source);
    let bad = |detail: String| MediaError::BadFrameFile {
        path: path.to_owned(),
        detail,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let mut first = [0u8; HEADER_LEN];
    file.read_exact_at(&mut first, 0).map_err(io)?;
    let width = u32::from_le_bytes(first[0..4].try_into().expect("4 bytes"));
    let height = u32::from_le_bytes(first[4..8].try_into().expect("4 bytes"));
    let pixels = u64::from(width) * u64::from(height) * 3;
    let at = slot * (HEADER_LEN as u64 + pixels);
    let mut head = [0u8; HEADER_LEN];
    if width == 0 || height == 0 || len < at + HEADER_LEN as u64 + pixels {
        return Err(bad(format!(
            "{len} bytes cannot hold frame {slot} of {width}x{height}"
        )));
    }
    file.read_exact_at(&mut head, at).map_err(io)?;
    if head != first {
        return Err(bad(format!("frame {slot} is not {width}x{height}")));
    }
    let pixels =
        usize::try_from(pixels).map_err(|_| bad(format!("{width}x{height} is too large")))?;
    if slot_has_hole(&file, slot, width, height).map_err(io)? {
        // Released once its enhanced frame was written: zeros, never a frame to send.
        return Err(MediaError::ReleasedFrame {
            path: path.to_owned(),
            slot,
        });
    }
    buf.clear();
    buf.resize(pixels, 0);
    file.read_exact_at(&mut buf, at + HEADER_LEN as u64)
        .map_err(io)?;
    Ok(RgbImage::from_raw(width, height, buf).expect("length checked above"))
}

/// Writes `frame` into slot `slot` of the frames file at `path` (the layout of
/// [`splice_into_slot_blocking`]), creating the file if needed. In place, not renamed:
/// nothing reads a slot before the item that writes it completes, and ext4 serialises
/// the writes of two attempts to the same slot.
pub(crate) fn write_slot_blocking(
    path: &Path,
    slot: u64,
    frame: &RgbImage,
) -> Result<(), MediaError> {
    let io = |source| MediaError::Io {
        path: path.to_owned(),
        action: "write frame",
        source,
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io)?;
    let pixels = frame.as_raw();
    let at = slot * (HEADER_LEN + pixels.len()) as u64;
    // Pixels first, header last: a slot whose header is written holds its whole frame
    // (what [`read_written_slot_blocking`] relies on after a kill).
    file.write_all_at(pixels, at + HEADER_LEN as u64)
        .map_err(io)?;
    file.write_all_at(&header(frame.width(), frame.height()), at)
        .map_err(io)
}

/// Frame `slot` of the frames file at `path` when [`write_slot_blocking`] wrote it whole
/// as a `width` x `height` frame (its header is written last), else `None` (no file, or
/// the slot not written yet). The frame is read into `buf`'s memory.
pub(crate) fn read_written_slot_blocking(
    path: &Path,
    slot: u64,
    width: u32,
    height: u32,
    mut buf: Vec<u8>,
) -> Result<Option<RgbImage>, MediaError> {
    let io = |source| MediaError::reading(path, "read frame", source);
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let pixels = u64::from(width) * u64::from(height) * 3;
    let at = slot * (HEADER_LEN as u64 + pixels);
    let len = file.metadata().map_err(io)?.len();
    if len < at + HEADER_LEN as u64 + pixels {
        return Ok(None);
    }
    let mut head = [0u8; HEADER_LEN];
    file.read_exact_at(&mut head, at).map_err(io)?;
    if head != header(width, height) {
        return Ok(None);
    }
    buf.clear();
    buf.resize(pixels as usize, 0);
    file.read_exact_at(&mut buf, at + HEADER_LEN as u64)
        .map_err(io)?;
    Ok(Some(
        RgbImage::from_raw(width, height, buf).expect("length checked above"),
    ))
}

/// The size of the frames in the frames file at `path`, from its first slot's header
/// (headers are never released, see [`release_slot_blocking`]).
pub(crate) fn slot_size_blocking(path: &Path) -> Result<(u32, u32), MediaError> {
    let file = std::fs::File::open(path).map_err(|e| MediaError::reading(path, "read frame", e))?;
    let mut first = [0u8; HEADER_LEN];
    file.read_exact_at(&mut first, 0)
        .map_err(|e| MediaError::reading(path, "read frame", e))?;
    let width = u32::from_le_bytes(first[0..4].try_into().expect("4 bytes"));
    let height = u32::from_le_bytes(first[4..8].try_into().expect("4 bytes"));
    Ok((width, height))
}

/// Gives the disk blocks of frame `slot`'s pixels in the frames file at `path` back to
/// the file system (`fallocate(FALLOC_FL_PUNCH_HOLE)`), keeping the file's length and
/// every header. For originals whose enhanced frame is written: nothing reads them again.
/// Only whole blocks inside the pixels are released: a punch inside one block zeroes
/// the bytes without leaving a hole, and [`read_slot_blocking`] would then read zeros as
/// the frame (a frame under two blocks keeps its bytes). A file system that cannot punch
/// holes keeps the bytes (the segment's encode deletes the file). Returns whether blocks
/// were released.
pub(crate) fn release_slot_blocking(
    path: &Path,
    slot: u64,
    width: u32,
    height: u32,
) -> Result<bool, MediaError> {
    let io = |source| MediaError::Io {
        path: path.to_owned(),
        action: "release frame",
        source,
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io)?;
    let pixels = u64::from(width) * u64::from(height) * 3;
    let at = slot * (HEADER_LEN as u64 + pixels) + HEADER_LEN as u64;
    let block = file.metadata().map_err(io)?.blksize().max(512);
    let (start, end) = (at.div_ceil(block) * block, (at + pixels) / block * block);
    if end <= start {
        return Ok(false);
    }
    punch_hole(&file, start, end - start).map_err(io)
}

/// Punches a hole of `len` bytes at `at` in `file`, keeping its length; `false` where the
/// file system (or the system) cannot.
#[cfg(target_os = "linux")]
fn punch_hole(file: &std::fs::File, at: u64, len: u64) -> std::io::Result<bool> {
    use rustix::fs::{FallocateFlags, fallocate};
    match fallocate(
        file,
        FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
        at,
        len,
    ) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::NOSYS) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[cfg(not(target_os = "linux"))]
fn punch_hole(_file: &std::fs::File, _at: u64, _len: u64) -> std::io::Result<bool> {
    Ok(false)
}

/// Whether frame `slot`'s pixels in the frames file `file` have a hole (released by
/// [`release_slot_blocking`]): the frame is no longer there, and must never be read as
/// one. Frames written by a decoder have none. File systems without `SEEK_HOLE` report
/// none (they cannot punch holes either).
pub(crate) fn slot_has_hole(
    file: &std::fs::File,
    slot: u64,
    width: u32,
    height: u32,
) -> std::io::Result<bool> {
    let pixels = u64::from(width) * u64::from(height) * 3;
    let at = slot * (HEADER_LEN as u64 + pixels) + HEADER_LEN as u64;
    Ok(first_hole(file, at)?.is_some_and(|hole| hole < at + pixels))
}

/// The offset of the first hole at or after `at` in `file` (`SEEK_HOLE`; the file's end
/// counts as one), `None` where the file system cannot say.
#[cfg(target_os = "linux")]
fn first_hole(file: &std::fs::File, at: u64) -> std::io::Result<Option<u64>> {
    match rustix::fs::seek(file, rustix::fs::SeekFrom::Hole(at)) {
        Ok(hole) => Ok(Some(hole)),
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NXIO) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(not(target_os = "linux"))]
fn first_hole(_file: &std::fs::File, _at: u64) -> std::io::Result<Option<u64>> {
    Ok(None)
}

/// Moves the pixels of frame `slot` of the frames file `path` into `sink` (an encoder's
/// pipe), as [`splice_into_blocking`] does for a frame file.
pub(crate) fn splice_slot_into_blocking(
    path: &Path,
    file: &std::fs::File,
    slot: u64,
    sink: &std::fs::File,
    width: u32,
    height: u32,
) -> Result<(), SpliceError> {
    let io = |source| SpliceError::File(MediaError::reading(path, "read frame", source));
    let pixels = u64::from(width) * u64::from(height) * 3;
    let at = slot * (HEADER_LEN as u64 + pixels);
    let mut head = [0u8; HEADER_LEN];
    file.read_exact_at(&mut head, at).map_err(io)?;
    if head != header(width, height) {
        return Err(SpliceError::File(MediaError::BadFrameFile {
            path: path.to_owned(),
            detail: format!("frame {slot} is not a {width}x{height} frame"),
        }));
    }
    let moved = splice_all(file, Some(at + HEADER_LEN as u64), sink, None, pixels)
        .map_err(SpliceError::Sink)?;
    if moved != pixels {
        return Err(SpliceError::File(MediaError::BadFrameFile {
            path: path.to_owned(),
            detail: format!("frame {slot} is cut short: {moved} of {pixels} pixel bytes"),
        }));
    }
    Ok(())
}

/// Why [`splice_into_blocking`] failed.
#[derive(Debug)]
pub(crate) enum SpliceError {
    /// The frame file is missing, unreadable or not a frame of the expected size.
    File(MediaError),
    /// Writing to the sink failed.
    Sink(std::io::Error),
}

/// The header of a `width` x `height` frame file.
fn header(width: u32, height: u32) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[..4].copy_from_slice(&width.to_le_bytes());
    header[4..].copy_from_slice(&height.to_le_bytes());
    header
}

/// [`read_frame_file`] on the calling thread, for callers already on a blocking one.
pub(crate) fn read_blocking(path: &Path) -> Result<RgbImage, MediaError> {
    let io = |source| MediaError::reading(path, "read frame", source);
    let bad = |detail: String| MediaError::BadFrameFile {
        path: path.to_owned(),
        detail,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len < HEADER_LEN as u64 {
        return Err(bad(format!(
            "{len} bytes is shorter than the {HEADER_LEN}-byte header"
        )));
    }
    let mut header = [0u8; HEADER_LEN];
    file.read_exact(&mut header).map_err(io)?;
    let width = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
    let height = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    let pixels = u64::from(width) * u64::from(height) * 3;
    let expected = HEADER_LEN as u64 + pixels;
    if width == 0 || height == 0 || len != expected {
        return Err(bad(format!(
            "header says {width}x{height} ({expected} bytes) but the file has {len}"
        )));
    }
    let pixels =
        usize::try_from(pixels).map_err(|_| bad(format!("{width}x{height} is too large")))?;
    // Read into capacity (not a zeroed buffer): one copy from the page cache.
    let mut buf = Vec::with_capacity(pixels);
    file.take(pixels as u64).read_to_end(&mut buf).map_err(io)?;
    if buf.len() != pixels {
        return Err(bad(format!(
            "the file shrank while being read: {} of {pixels} pixel bytes",
            buf.len()
        )));
    }
    Ok(RgbImage::from_raw(width, height, buf).expect("length checked above"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use idempipe_testkit::TempDir;
    use std::os::unix::fs::MetadataExt;

    /// A 64x48 frame whose pixels are all `value`.
    fn flat(value: u8) -> RgbImage {
        RgbImage::from_pixel(64, 48, image::Rgb([value; 3]))
    }

    /// A released slot gives its blocks back, keeps the file's length and every header,
    /// and is never read as a frame; a black frame (zeros on disk) still reads as one.
    /// Needs a file system that punches holes (ext4, tmpfs, xfs, btrfs).
    #[test]
    fn released_slots_free_their_blocks_and_are_never_read_as_frames() {
        let dir = TempDir::new("release");
        let path = dir.join("originals.rgb");
        std::fs::create_dir_all(dir.path()).unwrap();
        let frames = [flat(0), flat(7), flat(200)];
        for (slot, frame) in frames.iter().enumerate() {
            write_slot_blocking(&path, slot as u64, frame).unwrap();
        }
        let before = std::fs::metadata(&path).unwrap();
        assert!(
            release_slot_blocking(&path, 1, 64, 48).unwrap(),
            "no hole punched"
        );
        let after = std::fs::metadata(&path).unwrap();
        assert_eq!(after.len(), before.len(), "the length is kept");
        assert!(
            after.blocks() < before.blocks(),
            "{} blocks before, {} after",
            before.blocks(),
            after.blocks()
        );
        assert!(read_slot_blocking(&path, 0, Vec::new()).unwrap() == frames[0]);
        assert!(read_slot_blocking(&path, 2, Vec::new()).unwrap() == frames[2]);
        match read_slot_blocking(&path, 1, Vec::new()) {
            Err(MediaError::ReleasedFrame { slot: 1, .. }) => {}
            other => panic!("a released slot read as {other:?}"),
        }
        assert_eq!(slot_size_blocking(&path).unwrap(), (64, 48));
    }

    /// A frame too small to hold a whole block keeps its bytes: a punch there would
    /// zero them without a hole to tell, and the zeros would be read as the frame.
    #[test]
    fn a_frame_under_a_block_is_not_released_and_reads_as_itself() {
        let dir = TempDir::new("release-small");
        let path = dir.join("originals.rgb");
        std::fs::create_dir_all(dir.path()).unwrap();
        let small = |v: u8| RgbImage::from_pixel(16, 12, image::Rgb([v, v / 2, 255 - v]));
        for slot in 0..3u8 {
            write_slot_blocking(&path, u64::from(slot), &small(slot * 50 + 20)).unwrap();
        }
        let released = release_slot_blocking(&path, 1, 16, 12).unwrap();
        assert!(
            read_slot_blocking(&path, 1, Vec::new()).unwrap() == small(70),
            "the frame read back is not the frame written (zeroed without a hole?)"
        );
        assert!(!released, "no whole block to release");
    }

    /// Only a slot written whole counts as written.
    #[test]
    fn written_slots_are_found_and_others_are_not() {
        let dir = TempDir::new("written");
        let path = dir.join("enhanced.rgb");
        std::fs::create_dir_all(dir.path()).unwrap();
        let read = |slot| read_written_slot_blocking(&path, slot, 64, 48, Vec::new()).unwrap();
        assert!(read(0).is_none(), "no file yet");
        write_slot_blocking(&path, 2, &flat(9)).unwrap();
        assert!(read(0).is_none(), "slot 0 is a hole before slot 2");
        assert!(read(3).is_none(), "past the end");
        assert!(read(2) == Some(flat(9)));
        assert!(
            read_written_slot_blocking(&path, 2, 32, 24, Vec::new())
                .unwrap()
                .is_none(),
            "another size"
        );
    }
}
