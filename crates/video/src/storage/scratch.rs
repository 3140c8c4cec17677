//! A worker's own scratch directory: local copies of remote files, and files written
//! before they are uploaded. Each file is removed when its handle drops, so the
//! directory holds only what the items in flight use.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Distinguishes scratch names made in one process.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The scratch directory of one worker process.
#[derive(Debug, Clone)]
pub struct Scratch(PathBuf);

impl Scratch {
    /// Scratch files go in `dir` (created if missing).
    pub fn new(dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }

    /// A directory of this process under the system temporary directory.
    pub fn temporary() -> std::io::Result<Self> {
        Self::new(std::env::temp_dir().join(format!("idempipe-scratch-{}", std::process::id())))
    }

    /// `dir` as it is, not created (the last resort when no directory can be made).
    pub fn unchecked(dir: PathBuf) -> Self {
        Self(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A fresh scratch name for a copy of `location`, keeping its file name (and so
    /// its extension, which ffmpeg reads the container from).
    fn name_for(&self, location: &Path) -> PathBuf {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = location
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".into());
        self.0.join(format!("{}-{n}-{name}", std::process::id()))
    }

    /// A scratch file for a copy of `location`, removed on drop.
    pub(super) fn file_for(&self, location: &Path) -> ScratchEntry {
        ScratchEntry(self.name_for(location))
    }

    /// A scratch directory standing for the location directory `location`, removed
    /// with its contents on drop.
    pub(super) fn dir_for(&self, location: &Path) -> ScratchEntry {
        ScratchEntry(self.name_for(location))
    }
}

/// A file or directory in the scratch directory, removed on drop.
#[derive(Debug)]
pub(super) struct ScratchEntry(PathBuf);

impl ScratchEntry {
    pub(super) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchEntry {
    fn drop(&mut self) {
        match std::fs::symlink_metadata(&self.0) {
            Ok(m) if m.is_dir() => {
                let _ = std::fs::remove_dir_all(&self.0);
            }
            Ok(_) => {
                let _ = std::fs::remove_file(&self.0);
            }
            Err(_) => {}
        }
    }
}

/// A local file with the contents of a location (see [`super::Storage::fetch`]).
#[derive(Debug)]
pub struct Fetched {
    path: PathBuf,
    _scratch: Option<ScratchEntry>,
}

impl Fetched {
    pub(super) fn local(path: PathBuf) -> Self {
        Self {
            path,
            _scratch: None,
        }
    }

    pub(super) fn scratch(entry: ScratchEntry) -> Self {
        Self {
            path: entry.path().to_owned(),
            _scratch: Some(entry),
        }
    }

    /// The local file (valid while `self` lives).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Where a file (or directory of files) bound for a location is written before it is
/// published (see [`super::Storage::stage`]).
#[derive(Debug)]
pub struct Staged {
    path: PathBuf,
    location: PathBuf,
    _scratch: Option<ScratchEntry>,
}

impl Staged {
    pub(super) fn local(location: PathBuf) -> Self {
        Self {
            path: location.clone(),
            location,
            _scratch: None,
        }
    }

    pub(super) fn scratch(entry: ScratchEntry, location: PathBuf) -> Self {
        Self {
            path: entry.path().to_owned(),
            location,
            _scratch: Some(entry),
        }
    }

    /// Where to write (valid while `self` lives).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The location the file is bound for.
    pub fn location(&self) -> &Path {
        &self.location
    }

    /// The location of the file `path` inside this staged directory.
    pub fn location_of(&self, path: &Path) -> PathBuf {
        match path.strip_prefix(&self.path) {
            Ok(rel) => self.location.join(rel),
            Err(_) => path.to_owned(),
        }
    }

    /// Whether the file is written at its location directly (local storage).
    pub(super) fn is_in_place(&self) -> bool {
        self._scratch.is_none()
    }
}
