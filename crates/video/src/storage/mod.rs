//! Where a run's files live: a local directory or S3-compatible object storage.
//!
//! Every file the pipeline shares between stages (segments, frames, encoded segments,
//! manifests, the run marker) and the run's input and outputs has a *location*: a local
//! path, or an `s3://bucket/key` URL held in a `Path` (so `join` and `with_file_name`
//! work on both). [`Storage`] does the few things stages need with a location:
//!
//! - [`Storage::fetch`]: a local file with the contents (the file itself when local,
//!   a copy in this worker's scratch directory when remote, removed when dropped);
//! - [`Storage::stage`] then [`Storage::publish`]: where to write a file bound for a
//!   location, then make it visible there. Local writes are already atomic (temporary
//!   name, then rename); remote ones are one PUT, or a multipart upload above
//!   [`s3::MULTIPART_ABOVE`], which S3 shows only once complete;
//! - [`Storage::put_bytes`], [`Storage::get_bytes`], [`Storage::exists`],
//!   [`Storage::size`], [`Storage::version`], [`Storage::delete`], [`Storage::delete_tree`],
//!   [`Storage::list`], [`Storage::tree_size`], [`Storage::subdirs`].
//!
//! S3 endpoints, region and credentials come from the standard AWS environment
//! variables (`AWS_ENDPOINT_URL`, `AWS_REGION`/`AWS_DEFAULT_REGION`,
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`).

mod error;
mod local;
pub mod s3;
mod scratch;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use error::StorageError;
pub use scratch::{Fetched, Scratch, Staged};

/// The URL scheme of object storage locations.
pub const S3_SCHEME: &str = "s3://";

/// Whether `location` is an object storage URL (`s3://bucket/key`).
pub fn is_remote(location: &Path) -> bool {
    location.to_str().is_some_and(|s| s.starts_with(S3_SCHEME))
}

/// The bucket and key of an `s3://bucket/key` location (`None` for local paths). The
/// key has no leading, trailing or doubled slashes.
pub fn bucket_and_key(location: &Path) -> Option<(String, String)> {
    let rest = location.to_str()?.strip_prefix(S3_SCHEME)?;
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    let key: Vec<&str> = key.split('/').filter(|p| !p.is_empty()).collect();
    Some((bucket.to_owned(), key.join("/")))
}

/// Checks that an `s3://` location names a bucket; local paths always pass.
pub fn check_location(location: &Path) -> Result<(), StorageError> {
    match bucket_and_key(location) {
        Some((bucket, _)) if bucket.is_empty() => Err(StorageError::new(
            location,
            "parse",
            "no bucket: write s3://BUCKET/KEY",
        )),
        _ => Ok(()),
    }
}

/// What identifies one version of an object: a replaced object has another entity tag
/// (and usually another size).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectVersion {
    /// Size in bytes.
    pub size: u64,
    /// The entity tag the store gave it, if any.
    pub e_tag: Option<String>,
}

/// Local files and object storage behind one interface, with this worker's scratch
/// directory for the local copies of remote files. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct Storage {
    scratch: Scratch,
    options: s3::S3Options,
    buckets: Mutex<HashMap<String, Arc<s3::Bucket>>>,
    /// The last "object store unreachable" error, for whoever watches.
    unreachable: tokio::sync::watch::Sender<Option<String>>,
}

impl Storage {
    /// A storage whose remote files are copied into `scratch`, with S3 settings from
    /// the AWS environment.
    pub fn new(scratch: Scratch) -> Self {
        Self::with_s3_options(scratch, s3::S3Options::default())
    }

    /// As [`new`](Self::new), with `options` overriding the environment.
    pub fn with_s3_options(scratch: Scratch, options: s3::S3Options) -> Self {
        Self {
            scratch,
            options,
            buckets: Mutex::default(),
            unreachable: tokio::sync::watch::Sender::new(None),
        }
    }

    /// Changes to `Some(error)` each time a request finds the object store unreachable
    /// after its retries (a worker that cannot reach it stops taking work).
    pub fn unreachable(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.unreachable.subscribe()
    }

    /// Passes `result` on, telling watchers when it is an unreachable store.
    fn noted<T>(&self, result: Result<T, StorageError>) -> Result<T, StorageError> {
        if let Err(e) = &result
            && e.is_unreachable()
        {
            self.unreachable.send_replace(Some(e.to_string()));
        }
        result
    }

    /// The scratch directory.
    pub fn scratch(&self) -> &Scratch {
        &self.scratch
    }

    /// The client of `bucket`, built once from the environment.
    fn bucket(&self, location: &Path, bucket: &str) -> Result<Arc<s3::Bucket>, StorageError> {
        let mut cache = self.buckets.lock().expect("bucket cache");
        if let Some(b) = cache.get(bucket) {
            return Ok(b.clone());
        }
        let b =
            Arc::new(s3::Bucket::new(bucket, &self.options).map_err(|e| {
                StorageError::new(location, "configure the object store client", e)
            })?);
        cache.insert(bucket.to_owned(), b.clone());
        Ok(b)
    }

    /// The bucket client and key of a remote location, `None` for a local one.
    fn remote(&self, location: &Path) -> Result<Option<(Arc<s3::Bucket>, String)>, StorageError> {
        match bucket_and_key(location) {
            None => Ok(None),
            Some((bucket, key)) => {
                check_location(location)?;
                Ok(Some((self.bucket(location, &bucket)?, key)))
            }
        }
    }

    /// A local file with the contents of `location`: the file itself when local, else
    /// a copy downloaded into the scratch directory (removed when the result drops).
    /// A missing file or object is [`StorageError::NotFound`].
    pub async fn fetch(&self, location: &Path) -> Result<Fetched, StorageError> {
        match self.remote(location)? {
            None => {
                if tokio::fs::try_exists(location).await.unwrap_or(false) {
                    Ok(Fetched::local(location.to_owned()))
                } else {
                    Err(StorageError::not_found(location))
                }
            }
            Some((bucket, key)) => {
                let file = self.scratch.file_for(location);
                self.noted(bucket.download(location, &key, file.path()).await)?;
                Ok(Fetched::scratch(file))
            }
        }
    }

    /// Where to write a file bound for `location`: `location` itself when local (its
    /// directory created; write it atomically), else a scratch file. Pass the result
    /// to [`publish`](Self::publish) once the file is complete.
    pub async fn stage(&self, location: &Path) -> Result<Staged, StorageError> {
        if is_remote(location) {
            check_location(location)?;
            return Ok(Staged::scratch(
                self.scratch.file_for(location),
                location.to_owned(),
            ));
        }
        local::create_parent(location).await?;
        Ok(Staged::local(location.to_owned()))
    }

    /// A directory to write files bound for the location directory `dir` into: `dir`
    /// itself when local, else a scratch directory (removed when the result drops).
    /// Publish each file with [`publish_file`](Self::publish_file).
    pub async fn stage_dir(&self, dir: &Path) -> Result<Staged, StorageError> {
        if is_remote(dir) {
            check_location(dir)?;
            let staged = self.scratch.dir_for(dir);
            tokio::fs::create_dir_all(staged.path())
                .await
                .map_err(|e| StorageError::new(staged.path(), "create the scratch directory", e))?;
            return Ok(Staged::scratch(staged, dir.to_owned()));
        }
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| StorageError::new(dir, "create the directory", e))?;
        Ok(Staged::local(dir.to_owned()))
    }

    /// Makes a staged file visible at its location (an upload when remote; nothing to
    /// do when local, where it was written in place).
    pub async fn publish(&self, staged: &Staged) -> Result<(), StorageError> {
        if staged.is_in_place() {
            return Ok(());
        }
        self.publish_file(staged.path(), staged.location()).await
    }

    /// Makes the complete local file `file` visible at `location`: an upload when
    /// remote, an atomic rename or copy when local (nothing when it is already there).
    pub async fn publish_file(&self, file: &Path, location: &Path) -> Result<(), StorageError> {
        match self.remote(location)? {
            Some((bucket, key)) => self.noted(bucket.upload(location, &key, file).await),
            None if file == location => Ok(()),
            None => local::copy_atomic(file, location).await,
        }
    }

    /// Writes `bytes` at `location` atomically (temporary name then rename; one PUT).
    pub async fn put_bytes(&self, location: &Path, bytes: Vec<u8>) -> Result<(), StorageError> {
        match self.remote(location)? {
            Some((bucket, key)) => self.noted(bucket.put(location, &key, bytes).await),
            None => local::write_atomic(location, &bytes).await,
        }
    }

    /// The contents of `location`, `None` when it does not exist.
    pub async fn get_bytes(&self, location: &Path) -> Result<Option<Vec<u8>>, StorageError> {
        match self.remote(location)? {
            Some((bucket, key)) => self.noted(bucket.get(location, &key).await),
            None => match tokio::fs::read(location).await {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(StorageError::new(location, "read", e)),
            },
        }
    }

    /// The size of `location` in bytes, `None` when it does not exist.
    pub async fn size(&self, location: &Path) -> Result<Option<u64>, StorageError> {
        match self.remote(location)? {
            Some((bucket, key)) => self.noted(bucket.size(location, &key).await),
            None => match tokio::fs::metadata(location).await {
                Ok(m) => Ok(Some(m.len())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(StorageError::new(location, "read metadata", e)),
            },
        }
    }

    /// The size and entity tag of the object at the remote `location`, `None` when it
    /// does not exist or `location` is a local path (a local file's stamp is its inode
    /// and times, not known here).
    pub async fn version(&self, location: &Path) -> Result<Option<ObjectVersion>, StorageError> {
        match self.remote(location)? {
            Some((bucket, key)) => self.noted(bucket.version(location, &key).await),
            None => Ok(None),
        }
    }

    /// Whether `location` exists.
    pub async fn exists(&self, location: &Path) -> Result<bool, StorageError> {
        Ok(self.size(location).await?.is_some())
    }

    /// Removes `location`; a missing one is fine.
    pub async fn delete(&self, location: &Path) -> Result<(), StorageError> {
        match self.remote(location)? {
            Some((bucket, key)) => self.noted(bucket.delete(location, &key).await),
            None => match tokio::fs::remove_file(location).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(StorageError::new(location, "remove", e))
                }
                _ => Ok(()),
            },
        }
    }

    /// Removes everything under the directory (or key prefix) `dir`; a missing one is
    /// fine.
    pub async fn delete_tree(&self, dir: &Path) -> Result<(), StorageError> {
        match self.remote(dir)? {
            Some((bucket, key)) => self.noted(bucket.delete_prefix(dir, &key).await),
            None => match tokio::fs::remove_dir_all(dir).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(StorageError::new(dir, "remove", e))
                }
                _ => Ok(()),
            },
        }
    }

    /// Bytes in the files under the directory (or key prefix) `dir`, recursively; 0 when
    /// it is missing.
    pub async fn tree_size(&self, dir: &Path) -> Result<u64, StorageError> {
        match self.remote(dir)? {
            Some((bucket, key)) => self.noted(bucket.tree_size(dir, &key).await),
            None => local::tree_size(dir).await,
        }
    }

    /// The directories (or key prefixes) directly under `dir`, sorted; none when it is
    /// missing. Local symlinks are not directories here.
    pub async fn subdirs(&self, dir: &Path) -> Result<Vec<PathBuf>, StorageError> {
        match self.remote(dir)? {
            Some((bucket, key)) => {
                let (name, _) = bucket_and_key(dir).expect("remote");
                let keys = self.noted(bucket.subdirs(dir, &key).await)?;
                Ok(keys
                    .into_iter()
                    .map(|k| PathBuf::from(format!("{S3_SCHEME}{name}/{k}")))
                    .collect())
            }
            None => local::subdirs(dir).await,
        }
    }

    /// The locations of the files under `dir` (recursively), sorted.
    pub async fn list(&self, dir: &Path) -> Result<Vec<PathBuf>, StorageError> {
        match self.remote(dir)? {
            Some((bucket, key)) => {
                let (name, _) = bucket_and_key(dir).expect("remote");
                let keys = self.noted(bucket.list(dir, &key).await)?;
                Ok(keys
                    .into_iter()
                    .map(|k| PathBuf::from(format!("{S3_SCHEME}{name}/{k}")))
                    .collect())
            }
            None => local::list(dir).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_locations_keep_their_form_through_path_operations() {
        let root = Path::new("s3://media/jobs/");
        let file = root.join("run-1").join("segments").join("seg_00000.mp4");
        assert!(is_remote(&file));
        assert_eq!(
            file.to_str(),
            Some("s3://media/jobs/run-1/segments/seg_00000.mp4")
        );
        assert_eq!(
            bucket_and_key(&file),
            Some((
                "media".to_owned(),
                "jobs/run-1/segments/seg_00000.mp4".to_owned()
            ))
        );
        let sibling = file.with_file_name("seg_00000.mp4.manifest.json");
        assert_eq!(
            bucket_and_key(&sibling).unwrap().1,
            "jobs/run-1/segments/seg_00000.mp4.manifest.json"
        );
        assert_eq!(bucket_and_key(Path::new("/tmp/a")), None);
        assert!(!is_remote(Path::new("/tmp/s3://x")));
        assert!(check_location(Path::new("s3:///key")).is_err());
        assert_eq!(
            bucket_and_key(Path::new("s3://b")),
            Some(("b".into(), String::new()))
        );
    }
}
