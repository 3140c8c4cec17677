//! A run's artifact directory on disk: the run's random id ([`new_uid`]), the marker
//! that says whose directory it is ([`MARKER`]), manifests that say a file is complete
//! and this run's, sizes, and finding run directories under a root.
//!
//! `ROOT/run-<uid>/` with `run-<uid>/run.json`; the uid is 128 random bits, so two
//! databases sharing a root, or a database that reuses the id of a pruned run, never
//! meet the same directory.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::storage::{Storage, StorageError};

/// The marker file in every run directory.
pub const MARKER: &str = "run.json";

/// Prefix of run directory names (`run-<uid>`).
pub const DIR_PREFIX: &str = "run-";

/// Distinguishes ids made in one process.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A new random run id: 32 lowercase hex digits (128 bits) from the standard library's
/// randomly keyed SipHash over the time, process id and a counter.
pub fn new_uid() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut uid = String::with_capacity(32);
    for half in 0..2u8 {
        let mut h = RandomState::new().build_hasher();
        h.write_u128(nanos);
        h.write_u32(std::process::id());
        h.write_u64(n);
        h.write_u8(half);
        uid.push_str(&format!("{:016x}", h.finish()));
    }
    uid
}

/// Whether `s` has the form of a run uid (32 lowercase hex digits).
pub fn is_uid(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The artifact directory of a run: `root/run-<uid>`, or `root/run-<id>` for runs made
/// before runs had a uid.
pub fn run_dir(root: &Path, run_id: i64, uid: &str) -> PathBuf {
    if uid.is_empty() {
        root.join(format!("{DIR_PREFIX}{run_id}"))
    } else {
        root.join(format!("{DIR_PREFIX}{uid}"))
    }
}

/// The artifact directory named by a run's stored params (`artifacts` and `uid`);
/// `None` for runs without a uid (their directory name is not unique) or params that
/// are not a video run's.
pub fn run_dir_of_params(params: &serde_json::Value) -> Option<PathBuf> {
    let root = params.get("artifacts")?.as_str()?;
    let uid = params.get("uid")?.as_str()?;
    is_uid(uid).then(|| Path::new(root).join(format!("{DIR_PREFIX}{uid}")))
}

/// What `run.json` says about a run directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Marker {
    /// The run's uid (equals the directory name's).
    pub uid: String,
    /// The run's id in the database that made it (not unique across databases).
    pub run_id: i64,
    /// The input video.
    pub input: PathBuf,
    /// The output video.
    pub output: PathBuf,
}

/// Writes `dir/run.json` unless it is there (atomically; `dir` may be in object storage).
pub(crate) async fn ensure_marker(
    storage: &Storage,
    dir: &Path,
    marker: &Marker,
) -> Result<(), StorageError> {
    let path = dir.join(MARKER);
    if storage.exists(&path).await? {
        return Ok(());
    }
    let text = serde_json::to_vec_pretty(marker).expect("marker serialises");
    storage.put_bytes(&path, text).await
}

/// The marker of `dir`, if it has a readable one whose uid matches the directory name.
pub fn read_marker(dir: &Path) -> Option<Marker> {
    let name = dir.file_name()?.to_str()?;
    let uid = name.strip_prefix(DIR_PREFIX)?;
    let text = std::fs::read(dir.join(MARKER)).ok()?;
    let marker: Marker = serde_json::from_slice(&text).ok()?;
    (is_uid(uid) && marker.uid == uid).then_some(marker)
}

/// The run directories directly under `root`: `run-<uid>` directories (not symlinks)
/// with a matching marker. Anything else is never listed.
pub fn list_run_dirs(root: &Path) -> std::io::Result<Vec<(PathBuf, Marker)>> {
    let mut dirs = Vec::new();
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(dirs),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let path = entry.path();
        if let Some(marker) = read_marker(&path) {
            dirs.push((path, marker));
        }
    }
    dirs.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(dirs)
}

/// The marker of the run directory `dir` (local or in object storage), if it has a
/// readable one whose uid matches the directory name.
pub async fn read_marker_in(storage: &Storage, dir: &Path) -> Result<Option<Marker>, StorageError> {
    let Some(uid) = dir
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix(DIR_PREFIX))
        .filter(|uid| is_uid(uid))
    else {
        return Ok(None);
    };
    let Some(text) = storage.get_bytes(&dir.join(MARKER)).await? else {
        return Ok(None);
    };
    Ok(serde_json::from_slice::<Marker>(&text)
        .ok()
        .filter(|m| m.uid == uid))
}

/// [`list_run_dirs`] through `storage`: the run directories directly under `root`, a
/// local directory or an `s3://` prefix.
pub async fn list_run_dirs_in(
    storage: &Storage,
    root: &Path,
) -> Result<Vec<(PathBuf, Marker)>, StorageError> {
    let mut dirs = Vec::new();
    for dir in storage.subdirs(root).await? {
        if let Some(marker) = read_marker_in(storage, &dir).await? {
            dirs.push((dir, marker));
        }
    }
    Ok(dirs)
}

/// Removes the run directory (or key prefix) `dir` through `storage`; returns the bytes
/// it held, or `None` if there was nothing there.
pub async fn remove_tree(storage: &Storage, dir: &Path) -> Result<Option<u64>, StorageError> {
    if storage.list(dir).await?.is_empty() && !tokio::fs::try_exists(dir).await.unwrap_or(false) {
        return Ok(None);
    }
    let bytes = storage.tree_size(dir).await?;
    storage.delete_tree(dir).await?;
    Ok(Some(bytes))
}

/// Bytes the files under `path` take on disk: a file's length, less its holes (released
/// frames, slots not written yet). Symlinks are not followed; 0 if it is missing.
pub fn dir_size(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        // Blocks of 512 bytes, whatever the file system's block size.
        return meta.len().min(meta.blocks() * 512);
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| dir_size(&e.path()))
        .sum()
}

/// Removes the directory tree `path`; returns the bytes it held (0 if it was missing).
pub fn remove_dir(path: &Path) -> std::io::Result<u64> {
    let bytes = dir_size(path);
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

/// What identifies the file at `path` as the one a run wrote: size, modification time
/// (ns), device and inode. `None` if it does not exist.
pub fn file_stamp(path: &Path) -> Option<serde_json::Value> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    let mtime_ns = i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec());
    Some(serde_json::json!({
        "size": m.len(), "mtime_ns": mtime_ns.to_string(), "dev": m.dev(), "ino": m.ino(),
    }))
}

/// What a manifest says about the file next to it: whose it is, its size and its
/// FNV-1a 64 hash. Written after the file is complete, so a file with a matching
/// manifest is complete and this run's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The uid of the run that wrote the file.
    pub uid: String,
    /// Size in bytes.
    pub size: u64,
    /// FNV-1a 64 of the contents, 16 hex digits.
    pub fnv64: String,
}

/// `dir/NAME.manifest.json` for `dir/NAME`.
pub fn manifest_path(file: &Path) -> PathBuf {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    file.with_file_name(format!("{name}.manifest.json"))
}

/// Hashes the local file `file` and writes the manifest of `location` (where `file` was
/// published, or `file` itself) for run `uid`, atomically. Write it after the file is
/// in place: the manifest is what makes the file trusted.
pub async fn write_manifest(
    storage: &Storage,
    file: &Path,
    location: &Path,
    uid: &str,
) -> Result<Manifest, StorageError> {
    let (size, fnv64) = hash_file(file)
        .await
        .map_err(|e| StorageError::new(file, "hash", e))?;
    let manifest = Manifest {
        uid: uid.to_owned(),
        size,
        fnv64,
    };
    let text = serde_json::to_vec(&manifest).expect("manifest serialises");
    storage.put_bytes(&manifest_path(location), text).await?;
    Ok(manifest)
}

/// Checks that `file`, the local copy of `location`, is complete and run `uid`'s: the
/// manifest of `location` exists, names `uid`, and the size and hash match. The error
/// says what does not match.
pub async fn check_manifest(
    storage: &Storage,
    file: &Path,
    location: &Path,
    uid: &str,
) -> Result<(), String> {
    let m = read_own_manifest(storage, location, uid).await?;
    let (size, fnv64) = hash_file(file)
        .await
        .map_err(|e| format!("{}: {e}", location.display()))?;
    if size != m.size {
        return Err(format!(
            "{}: {size} bytes, its manifest says {}",
            location.display(),
            m.size
        ));
    }
    if fnv64 != m.fnv64 {
        return Err(format!(
            "{}: contents hash {fnv64}, its manifest says {}",
            location.display(),
            m.fnv64
        ));
    }
    Ok(())
}

/// [`check_manifest`] without the hash (and without a copy): the manifest names `uid`
/// and the size of `location` matches.
pub async fn check_manifest_quick(
    storage: &Storage,
    location: &Path,
    uid: &str,
) -> Result<(), String> {
    let m = read_own_manifest(storage, location, uid).await?;
    let size = storage
        .size(location)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{}: not found", location.display()))?;
    if size != m.size {
        return Err(format!(
            "{}: {size} bytes, its manifest says {}",
            location.display(),
            m.size
        ));
    }
    Ok(())
}

/// The manifest of `location`, if there is one and it names run `uid`.
async fn read_own_manifest(
    storage: &Storage,
    location: &Path,
    uid: &str,
) -> Result<Manifest, String> {
    let mpath = manifest_path(location);
    let text = storage
        .get_bytes(&mpath)
        .await
        .map_err(|e| format!("{}: manifest unreadable ({e})", location.display()))?
        .ok_or_else(|| format!("{}: no manifest", location.display()))?;
    let m: Manifest = serde_json::from_slice(&text)
        .map_err(|e| format!("{}: unreadable manifest ({e})", mpath.display()))?;
    if m.uid != uid {
        return Err(format!(
            "{}: written by run {}, not this run ({uid})",
            location.display(),
            m.uid
        ));
    }
    Ok(m)
}

/// Removes `location` and its manifest (missing ones are fine), the manifest first so
/// that a half-removed pair is never trusted.
pub(crate) async fn remove_with_manifest(
    storage: &Storage,
    location: &Path,
) -> Result<(), StorageError> {
    storage.delete(&manifest_path(location)).await?;
    storage.delete(location).await
}

/// Size and FNV-1a 64 (hex) of a file's contents.
pub(crate) async fn hash_file(file: &Path) -> std::io::Result<(u64, String)> {
    let file = file.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut f = std::fs::File::open(&file)?;
        let mut buf = vec![0u8; 1 << 16];
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut size = 0u64;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            size += n as u64;
            for &b in &buf[..n] {
                hash ^= u64::from(b);
                hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        Ok((size, format!("{hash:016x}")))
    })
    .await
    .map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_random_hex() {
        let (a, b) = (new_uid(), new_uid());
        assert!(is_uid(&a) && is_uid(&b), "{a} {b}");
        assert_ne!(a, b);
        assert!(!is_uid("1"));
        assert_eq!(run_dir(Path::new("/r"), 3, ""), Path::new("/r/run-3"));
        assert_eq!(
            run_dir(Path::new("/r"), 3, &a),
            Path::new("/r").join(format!("run-{a}"))
        );
    }
}
