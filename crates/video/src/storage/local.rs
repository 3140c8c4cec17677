//! Local-directory operations of [`super::Storage`].

use std::path::{Path, PathBuf};

use super::StorageError;

/// Creates the directory `path` goes into.
pub(super) async fn create_parent(path: &Path) -> Result<(), StorageError> {
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| StorageError::new(parent, "create the directory", e))?;
    }
    Ok(())
}

/// A hidden temporary name next to `path`.
fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp{}", std::process::id()))
}

/// Writes `bytes` to `path` under a temporary name, then renames it into place.
pub(super) async fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StorageError> {
    create_parent(path).await?;
    let tmp = temp_name(path);
    let result = async {
        tokio::fs::write(&tmp, bytes).await?;
        tokio::fs::rename(&tmp, path).await
    }
    .await;
    if let Err(e) = result {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(StorageError::new(path, "write", e));
    }
    Ok(())
}

/// Copies `file` to `path` under a temporary name, then renames it into place.
pub(super) async fn copy_atomic(file: &Path, path: &Path) -> Result<(), StorageError> {
    create_parent(path).await?;
    let tmp = temp_name(path);
    let result = async {
        tokio::fs::copy(file, &tmp).await?;
        tokio::fs::rename(&tmp, path).await
    }
    .await;
    if let Err(e) = result {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(StorageError::new(path, "write", e));
    }
    Ok(())
}

/// The files under `dir`, recursively, sorted (none if it is missing).
pub(super) async fn list(dir: &Path) -> Result<Vec<PathBuf>, StorageError> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut files = Vec::new();
        let mut todo = vec![dir.clone()];
        while let Some(d) = todo.pop() {
            let entries = match std::fs::read_dir(&d) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StorageError::new(&d, "list", e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| StorageError::new(&d, "list", e))?;
                let kind = entry
                    .file_type()
                    .map_err(|e| StorageError::new(&entry.path(), "list", e))?;
                if kind.is_dir() {
                    todo.push(entry.path());
                } else if kind.is_file() {
                    files.push(entry.path());
                }
            }
        }
        files.sort();
        Ok(files)
    })
    .await
    .map_err(|e| StorageError::new(Path::new("."), "list", e))?
}

/// Bytes in the files under `dir` (symlinks not followed; 0 when it is missing).
pub(super) async fn tree_size(dir: &Path) -> Result<u64, StorageError> {
    let mut total = 0;
    for file in list(dir).await? {
        match tokio::fs::symlink_metadata(&file).await {
            Ok(m) => total += m.len(),
            // Removed since it was listed.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StorageError::new(&file, "read metadata", e)),
        }
    }
    Ok(total)
}

/// The directories (not symlinks) directly under `dir`, sorted; none when it is missing.
pub(super) async fn subdirs(dir: &Path) -> Result<Vec<PathBuf>, StorageError> {
    let mut entries = match tokio::fs::read_dir(dir).await {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StorageError::new(dir, "list", e)),
    };
    let mut dirs = Vec::new();
    while let Some(entry) = entries
        .next_entry()
        .await
        .map_err(|e| StorageError::new(dir, "list", e))?
    {
        let kind = entry
            .file_type()
            .await
            .map_err(|e| StorageError::new(&entry.path(), "list", e))?;
        if kind.is_dir() {
            dirs.push(entry.path());
        }
    }
    dirs.sort();
    Ok(dirs)
}
