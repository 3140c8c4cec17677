//! Files the dashboard serves (frames, thumbnail, output video), resolved strictly
//! inside the allowed roots, and frame files converted to PNG.

use std::io::Cursor;
use std::path::{Component, Path, PathBuf};

use idempipe_engine::{Item, Run};
use image::{ImageFormat, RgbImage};

use crate::error::ApiError;
use crate::state::AppState;

/// Bytes before the pixels of a frame file: width and height, u32 little-endian
/// (the format of `idempipe_video::media::frame_file`).
const FRAME_HEADER_LEN: usize = 8;

/// Largest frame side served: 8K; anything larger is not a frame of ours.
const MAX_FRAME_SIDE: u32 = 8192;

/// The directories files of `run` may come from: the configured roots, or else the
/// run's own artifact directory and the directory of its output.
pub(crate) fn roots_for(state: &AppState, run: &Run) -> Vec<PathBuf> {
    if !state.artifact_roots().is_empty() {
        return state.artifact_roots().to_vec();
    }
    let mut roots = Vec::new();
    if let Some(a) = run.params.get("artifacts").and_then(|v| v.as_str()) {
        roots.push(PathBuf::from(a));
    }
    if let Some(parent) = param_path(run, "output").and_then(|o| o.parent().map(Path::to_owned)) {
        roots.push(parent);
    }
    roots
}

/// A path stored in the run's parameters (`output`, `thumbnail`).
pub(crate) fn param_path(run: &Run, name: &str) -> Option<PathBuf> {
    run.params.get(name)?.as_str().map(PathBuf::from)
}

/// Resolves `path` (symlinks included) and checks it lies inside one of `roots`.
/// `..` components are refused before touching the file system.
pub async fn resolve_inside(roots: &[PathBuf], path: &Path) -> Result<PathBuf, ApiError> {
    if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
        return Err(ApiError::forbidden(
            "file path is not absolute or contains `..`",
        ));
    }
    let real = match tokio::fs::canonicalize(path).await {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::not_found("the file is gone (or not written yet)"));
        }
        Err(e) => return Err(ApiError::internal(format!("{}: {e}", path.display()))),
    };
    for root in roots {
        if let Ok(root) = tokio::fs::canonicalize(root).await
            && real.starts_with(&root)
        {
            return Ok(real);
        }
    }
    tracing::warn!(path = %path.display(), resolved = %real.display(), "refused a file outside the artifact roots");
    Err(ApiError::forbidden(
        "the file is outside the artifact directory",
    ))
}

/// Whether `path` exists inside `roots` (for showing the thumbnail or the player).
pub(crate) async fn exists_inside(roots: &[PathBuf], path: Option<PathBuf>) -> bool {
    match path {
        Some(p) => resolve_inside(roots, &p).await.is_ok(),
        None => false,
    }
}

/// The frame item's file of originals, inside the run's roots: the frame size of its
/// segment's files of frames.
pub(crate) async fn originals_of(state: &AppState, run: &Run, item: &Item) -> Option<PathBuf> {
    let path = PathBuf::from(item.payload.get("original")?.as_str()?);
    resolve_inside(&roots_for(state, run), &path).await.ok()
}

/// Reads a frame file, or frame `slot` of a file of frames one after another (a
/// frame item's payload names its slot), and encodes it as PNG. `size_from`: another
/// file of frames of the same size (the segment's originals), for a file whose first
/// slot was never written (the enhanced frames of a segment whose frame 0 failed).
pub(crate) async fn frame_png(
    path: PathBuf,
    slot: Option<u64>,
    size_from: Option<PathBuf>,
) -> Result<Vec<u8>, ApiError> {
    let file = path.clone();
    let bytes = tokio::task::spawn_blocking(move || match slot {
        None => std::fs::read(&file),
        Some(slot) => read_slot(&file, slot, size_from.as_deref()),
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound if e.get_ref().is_some() => ApiError::not_found(e.to_string()),
        std::io::ErrorKind::NotFound => ApiError::not_found("the frame file is gone"),
        _ => ApiError::internal(format!("{}: {e}", path.display())),
    })?;
    tokio::task::spawn_blocking(move || encode_png(&bytes))
        .await
        .map_err(ApiError::internal)?
        .map_err(|m| ApiError::internal(format!("{}: {m}", path.display())))
}

/// The bytes (header and pixels) of frame `slot` of a file of frames of the size its
/// first header gives (or, where the first slot is unwritten, `size_from`'s).
fn read_slot(path: &Path, slot: u64, size_from: Option<&Path>) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(path)?;
    let mut header = [0u8; FRAME_HEADER_LEN];
    file.read_exact_at(&mut header, 0)?;
    if let Some(other) = size_from.filter(|_| header == [0; FRAME_HEADER_LEN]) {
        std::fs::File::open(other)?.read_exact_at(&mut header, 0)?;
    }
    let width = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
    let height = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    if width == 0 || height == 0 || width > MAX_FRAME_SIDE || height > MAX_FRAME_SIDE {
        return Err(std::io::Error::other(format!(
            "implausible frame size {width}x{height}"
        )));
    }
    let len = FRAME_HEADER_LEN as u64 + u64::from(width) * u64::from(height) * 3;
    if has_hole(&file, slot * len, len)? {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "this original was released once its enhanced frame was written",
        ));
    }
    let mut bytes = vec![0u8; len as usize];
    file.read_exact_at(&mut bytes, slot * len)?;
    Ok(bytes)
}

/// Whether `file` has a hole within `len` bytes at `at` (`SEEK_HOLE`; file systems that
/// cannot say have none).
fn has_hole(file: &std::fs::File, at: u64, len: u64) -> std::io::Result<bool> {
    match rustix::fs::seek(file, rustix::fs::SeekFrom::Hole(at)) {
        Ok(hole) => Ok(hole < at + len),
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NXIO) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// A frame file (header + RGB24) as PNG bytes.
fn encode_png(bytes: &[u8]) -> Result<Vec<u8>, String> {
    if bytes.len() < FRAME_HEADER_LEN {
        return Err("shorter than a frame header".into());
    }
    let width = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes"));
    let height = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    let expected = FRAME_HEADER_LEN as u64 + u64::from(width) * u64::from(height) * 3;
    if width == 0 || height == 0 || width > MAX_FRAME_SIDE || height > MAX_FRAME_SIDE {
        return Err(format!("implausible frame size {width}x{height}"));
    }
    if bytes.len() as u64 != expected {
        return Err(format!(
            "{width}x{height} needs {expected} bytes, file has {}",
            bytes.len()
        ));
    }
    let image = RgbImage::from_raw(width, height, bytes[FRAME_HEADER_LEN..].to_vec())
        .ok_or("frame size mismatch")?;
    let mut out = Cursor::new(Vec::new());
    image
        .write_to(&mut out, ImageFormat::Png)
        .map_err(|e| e.to_string())?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of enhanced frames whose first slot was never written (frame 0 failed)
    /// takes the frame size from the segment's originals instead of refusing every slot.
    #[test]
    fn a_file_without_its_first_frame_takes_the_size_from_the_originals() {
        let dir = idempipe_testkit::TempDir::new("web-size-from");
        std::fs::create_dir_all(dir.path()).unwrap();
        let (w, h) = (4u32, 3u32);
        let slot_len = FRAME_HEADER_LEN + (w * h * 3) as usize;
        let frame = |v: u8| {
            let mut b = [w.to_le_bytes(), h.to_le_bytes()].concat();
            b.extend(std::iter::repeat_n(v, slot_len - FRAME_HEADER_LEN));
            b
        };
        let originals = dir.join("originals.rgb");
        std::fs::write(&originals, [frame(1), frame(2)].concat()).unwrap();
        let enhanced = dir.join("enhanced.rgb");
        std::fs::write(&enhanced, [vec![0; slot_len], frame(9)].concat()).unwrap();
        assert!(
            read_slot(&enhanced, 1, None).is_err(),
            "no size without the originals"
        );
        let read = read_slot(&enhanced, 1, Some(&originals)).unwrap();
        assert_eq!(read, frame(9));
    }

    /// An original whose pixels were punched out (as idempipe-video does once its
    /// enhanced frame is written) is refused with a message, not served as black; its
    /// neighbours still read.
    #[test]
    fn a_released_original_is_not_served_as_a_black_frame() {
        let dir = idempipe_testkit::TempDir::new("web-release");
        std::fs::create_dir_all(dir.path()).unwrap();
        let path = dir.join("originals.rgb");
        let (w, h) = (64u32, 48u32);
        let pixels = (w * h * 3) as usize;
        let mut bytes = Vec::new();
        for v in [10u8, 20, 30] {
            bytes.extend_from_slice(&w.to_le_bytes());
            bytes.extend_from_slice(&h.to_le_bytes());
            bytes.extend(std::iter::repeat_n(v, pixels));
        }
        std::fs::write(&path, &bytes).unwrap();
        let slot_len = (FRAME_HEADER_LEN + pixels) as u64;
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let (start, end) = (
            (slot_len + 8).div_ceil(4096) * 4096,
            2 * slot_len / 4096 * 4096,
        );
        rustix::fs::fallocate(
            &file,
            rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
            start,
            end - start,
        )
        .unwrap();
        let err = read_slot(&path, 1, None).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
        assert!(err.to_string().contains("released"), "{err}");
        assert_eq!(read_slot(&path, 0, None).unwrap()[FRAME_HEADER_LEN], 10);
        assert_eq!(read_slot(&path, 2, None).unwrap()[FRAME_HEADER_LEN], 30);
    }

    #[test]
    fn frame_files_become_png() {
        let mut f = Vec::new();
        f.extend_from_slice(&2u32.to_le_bytes());
        f.extend_from_slice(&1u32.to_le_bytes());
        f.extend_from_slice(&[255, 0, 0, 0, 255, 0]);
        let png = encode_png(&f).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        f.pop();
        assert!(encode_png(&f).is_err());
    }
}
