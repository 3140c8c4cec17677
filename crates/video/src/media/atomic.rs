//! Temporary names and rename-into-place, so half-written files never look complete.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::MediaError;

/// Distinguishes temporary names created by one process.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A hidden sibling name for `path` that keeps its extension (ffmpeg picks the
/// container from it): `dir/.name.tmp<pid>_<n>.ext`.
pub(crate) fn temp_path_for(path: &Path) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut name = format!(".{stem}.tmp{}_{n}", std::process::id());
    if let Some(ext) = path.extension() {
        name.push('.');
        name.push_str(&ext.to_string_lossy());
    }
    path.with_file_name(name)
}

/// Renames `tmp` to `path`, removing `tmp` if that fails.
pub(crate) async fn rename_into_place(tmp: &Path, path: &Path) -> Result<(), MediaError> {
    if let Err(source) = tokio::fs::rename(tmp, path).await {
        let _ = tokio::fs::remove_file(tmp).await;
        return Err(MediaError::Io {
            path: path.to_owned(),
            action: "rename into place",
            source,
        });
    }
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file and a rename.
///
/// No fsync: these are re-creatable pipeline artifacts, and readers validate sizes.
pub(crate) async fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), MediaError> {
    let tmp = temp_path_for(path);
    if let Err(source) = tokio::fs::write(&tmp, bytes).await {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(MediaError::Io {
            path: path.to_owned(),
            action: "write",
            source,
        });
    }
    rename_into_place(&tmp, path).await
}

/// Creates `dir` and its parents.
pub(crate) async fn create_dir(dir: &Path) -> Result<(), MediaError> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|source| MediaError::Io {
            path: dir.to_owned(),
            action: "create directory",
            source,
        })
}
