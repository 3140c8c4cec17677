//! Files the dashboard serves (frames, thumbnail, output video), resolved strictly
//! inside the allowed roots, and frame files converted to PNG.

use std::io::Cursor;
use std::path::{Component, Path, PathBuf};

use idempipe_engine::Run;
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

/// Reads a frame file, or frame `slot` of a file of frames one after another (a
/// frame item's payload names its slot), and encodes it as PNG.
pub(crate) async fn frame_png(path: PathBuf, slot: Option<u64>) -> Result<Vec<u8>, ApiError> {
    let file = path.clone();
    let bytes = tokio::task::spawn_blocking(move || match slot {
        None => std::fs::read(&file),
        Some(slot) => read_slot(&file, slot),
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ApiError::not_found("the frame file is gone"),
        _ => ApiError::internal(format!("{}: {e}", path.display())),
    })?;
    tokio::task::spawn_blocking(move || encode_png(&bytes))
        .await
        .map_err(ApiError::internal)?
        .map_err(|m| ApiError::internal(format!("{}: {m}", path.display())))
}

/// The bytes (header and pixels) of frame `slot` of a file of frames of the size its
/// first header gives.
fn read_slot(path: &Path, slot: u64) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(path)?;
    let mut header = [0u8; FRAME_HEADER_LEN];
    file.read_exact_at(&mut header, 0)?;
    let width = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
    let height = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    if width == 0 || height == 0 || width > MAX_FRAME_SIDE || height > MAX_FRAME_SIDE {
        return Err(std::io::Error::other(format!(
            "implausible frame size {width}x{height}"
        )));
    }
    let len = FRAME_HEADER_LEN as u64 + u64::from(width) * u64::from(height) * 3;
    let mut bytes = vec![0u8; len as usize];
    file.read_exact_at(&mut bytes, slot * len)?;
    Ok(bytes)
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
