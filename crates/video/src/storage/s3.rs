//! S3-compatible object storage through `object_store`: one client per bucket,
//! configured from the standard AWS environment variables.

use std::path::Path;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as Key;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig, WriteMultipart,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::StorageError;

/// Files larger than this are uploaded in parts (S3's single PUT tops out at 5 GiB, and
/// parts retry individually).
pub const MULTIPART_ABOVE: u64 = 16 * 1024 * 1024;
/// Size of each part of a multipart upload (S3's minimum is 5 MiB).
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts uploaded at once.
const PARTS_IN_FLIGHT: usize = 4;
/// Objects deleted at once when a prefix is removed.
const DELETES_IN_FLIGHT: usize = 8;

/// How long one request may take, connecting included, and how long retries of a
/// failed request go on: a store that restarts within that time costs retries, one
/// that stays away fails the item (which the engine retries, maybe on another worker).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const RETRY_FOR: Duration = Duration::from_secs(20);

/// Settings that override the AWS environment (tests, or a program that configures
/// its store itself). `None` fields come from the environment.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// The endpoint URL (`AWS_ENDPOINT_URL`).
    pub endpoint: Option<String>,
    /// The region (`AWS_REGION`, `AWS_DEFAULT_REGION`; default `us-east-1`).
    pub region: Option<String>,
    /// Access key id and secret (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`).
    pub credentials: Option<(String, String)>,
}

impl S3Options {
    /// The endpoint and region from the environment where not set here.
    fn resolved(&self) -> (Option<String>, String) {
        let endpoint = self.endpoint.clone().or_else(|| {
            std::env::var("AWS_ENDPOINT_URL_S3")
                .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
                .ok()
                .filter(|e| !e.is_empty())
        });
        let region = self.region.clone().unwrap_or_else(|| {
            std::env::var("AWS_REGION")
                .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|_| "us-east-1".into())
        });
        (endpoint, region)
    }
}

/// What the HTTP client says when no answer came at all (after the retries).
const UNREACHABLE: [&str; 4] = [
    "error sending request",
    "Connection refused",
    "timed out",
    "dns error",
];

/// The client of one bucket.
#[derive(Debug)]
pub(super) struct Bucket {
    store: AmazonS3,
    /// The endpoint the client talks to, named in errors.
    endpoint: String,
}

impl Bucket {
    /// A client for `bucket` from the AWS environment: `AWS_ENDPOINT_URL` (plain
    /// `http://` endpoints are allowed, as MinIO-style servers often use them),
    /// `AWS_REGION` or `AWS_DEFAULT_REGION` (default `us-east-1`), and the credentials.
    /// `options` override the environment.
    pub(super) fn new(bucket: &str, options: &S3Options) -> Result<Self, String> {
        let (endpoint, region) = options.resolved();
        // reqwest is built without a TLS crypto provider: the tree's (ring) is installed.
        idempipe_enhance::provider::tls::install_crypto_provider();
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_region(region.clone())
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(2),
                    base: 2.0,
                },
                max_retries: 30,
                retry_timeout: RETRY_FOR,
            })
            .with_client_options(
                ClientOptions::new()
                    .with_timeout(REQUEST_TIMEOUT)
                    .with_connect_timeout(CONNECT_TIMEOUT)
                    .with_allow_http(
                        endpoint
                            .as_deref()
                            .is_some_and(|e| e.starts_with("http://")),
                    ),
            );
        if let Some(e) = &endpoint {
            builder = builder.with_endpoint(e.clone());
        }
        if let Some((id, secret)) = &options.credentials {
            builder = builder
                .with_access_key_id(id.clone())
                .with_secret_access_key(secret.clone());
        }
        let store = builder.build().map_err(|e| e.to_string())?;
        Ok(Self {
            store,
            endpoint: endpoint.unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com")),
        })
    }

    /// An error of `action` on `location`, naming the endpoint; a missing object is
    /// [`StorageError::NotFound`].
    fn error(&self, location: &Path, action: &'static str, e: object_store::Error) -> StorageError {
        if matches!(e, object_store::Error::NotFound { .. }) {
            return StorageError::not_found(location);
        }
        let detail = format!("object store at {}: {}", self.endpoint, chain(&e));
        if UNREACHABLE.iter().any(|m| detail.contains(m)) {
            return StorageError::Unreachable {
                location: location.display().to_string(),
                action,
                detail,
            };
        }
        StorageError::new(location, action, detail)
    }

    /// Downloads `key` into `file` (a temporary name, then renamed).
    pub(super) async fn download(
        &self,
        location: &Path,
        key: &str,
        file: &Path,
    ) -> Result<(), StorageError> {
        let tmp = file.with_extension("part");
        let result = async {
            let got = self
                .store
                .get(&Key::from(key))
                .await
                .map_err(|e| self.error(location, "download", e))?;
            let mut out = tokio::fs::File::create(&tmp)
                .await
                .map_err(|e| StorageError::new(&tmp, "create the scratch file", e))?;
            let mut stream = got.into_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| self.error(location, "download", e))?;
                out.write_all(&chunk)
                    .await
                    .map_err(|e| StorageError::new(&tmp, "write the scratch file", e))?;
            }
            out.flush()
                .await
                .map_err(|e| StorageError::new(&tmp, "write the scratch file", e))?;
            tokio::fs::rename(&tmp, file)
                .await
                .map_err(|e| StorageError::new(file, "rename the scratch file", e))
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    /// Uploads `file` to `key`: one PUT up to [`MULTIPART_ABOVE`], else a multipart
    /// upload, aborted on failure. Either way the object appears only when complete.
    pub(super) async fn upload(
        &self,
        location: &Path,
        key: &str,
        file: &Path,
    ) -> Result<(), StorageError> {
        let len = tokio::fs::metadata(file)
            .await
            .map_err(|e| StorageError::new(file, "read metadata", e))?
            .len();
        if len <= MULTIPART_ABOVE {
            let bytes = tokio::fs::read(file)
                .await
                .map_err(|e| StorageError::new(file, "read", e))?;
            return self.put(location, key, bytes).await;
        }
        let upload = self
            .store
            .put_multipart(&Key::from(key))
            .await
            .map_err(|e| self.error(location, "start a multipart upload", e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut input = tokio::fs::File::open(file)
            .await
            .map_err(|e| StorageError::new(file, "open", e))?;
        let mut buf = vec![0u8; PART_SIZE];
        loop {
            let n = match input.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(StorageError::new(file, "read", e));
                }
            };
            if n == 0 {
                break;
            }
            if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                // The writer aborts itself when a part fails.
                return Err(self.error(location, "upload a part", e));
            }
            writer.write(&buf[..n]);
        }
        writer
            .finish()
            .await
            .map(|_| ())
            .map_err(|e| self.error(location, "complete the multipart upload", e))
    }

    /// Writes `bytes` to `key` in one PUT.
    pub(super) async fn put(
        &self,
        location: &Path,
        key: &str,
        bytes: Vec<u8>,
    ) -> Result<(), StorageError> {
        self.store
            .put(&Key::from(key), bytes.into())
            .await
            .map(|_| ())
            .map_err(|e| self.error(location, "upload", e))
    }

    /// The object's contents, `None` if there is none.
    pub(super) async fn get(
        &self,
        location: &Path,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        let got = match self.store.get(&Key::from(key)).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.error(location, "download", e)),
        };
        let bytes = got
            .bytes()
            .await
            .map_err(|e| self.error(location, "download", e))?;
        Ok(Some(bytes.to_vec()))
    }

    /// The object's size, `None` if there is none.
    pub(super) async fn size(
        &self,
        location: &Path,
        key: &str,
    ) -> Result<Option<u64>, StorageError> {
        Ok(self.version(location, key).await?.map(|v| v.size))
    }

    /// The object's size and entity tag, `None` if there is none.
    pub(super) async fn version(
        &self,
        location: &Path,
        key: &str,
    ) -> Result<Option<super::ObjectVersion>, StorageError> {
        match self.store.head(&Key::from(key)).await {
            Ok(meta) => Ok(Some(super::ObjectVersion {
                size: meta.size,
                e_tag: meta.e_tag,
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error(location, "read metadata", e)),
        }
    }

    /// Deletes the object (a missing one is fine).
    pub(super) async fn delete(&self, location: &Path, key: &str) -> Result<(), StorageError> {
        match self.store.delete(&Key::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error(location, "delete", e)),
        }
    }

    /// The keys under the directory-like prefix `prefix`, sorted.
    pub(super) async fn list(
        &self,
        location: &Path,
        prefix: &str,
    ) -> Result<Vec<String>, StorageError> {
        let prefix = Key::from(prefix);
        let mut keys: Vec<String> = self
            .store
            .list(Some(&prefix))
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await
            .map_err(|e| self.error(location, "list", e))?;
        keys.sort();
        Ok(keys)
    }

    /// Bytes in the objects under the directory-like prefix `prefix`.
    pub(super) async fn tree_size(
        &self,
        location: &Path,
        prefix: &str,
    ) -> Result<u64, StorageError> {
        self.store
            .list(Some(&Key::from(prefix)))
            .try_fold(0u64, |sum, meta| async move { Ok(sum + meta.size) })
            .await
            .map_err(|e| self.error(location, "list", e))
    }

    /// The directory-like prefixes directly under `prefix` (keys up to the next `/`),
    /// sorted.
    pub(super) async fn subdirs(
        &self,
        location: &Path,
        prefix: &str,
    ) -> Result<Vec<String>, StorageError> {
        let key = Key::from(prefix);
        let listed = self
            .store
            .list_with_delimiter((!prefix.is_empty()).then_some(&key))
            .await
            .map_err(|e| self.error(location, "list", e))?;
        let mut dirs: Vec<String> = listed
            .common_prefixes
            .iter()
            .map(ToString::to_string)
            .collect();
        dirs.sort();
        Ok(dirs)
    }

    /// Deletes every object under the directory-like prefix `prefix`.
    pub(super) async fn delete_prefix(
        &self,
        location: &Path,
        prefix: &str,
    ) -> Result<(), StorageError> {
        let keys = self.list(location, prefix).await?;
        futures_util::stream::iter(keys)
            .map(|key| async move { self.delete(location, &key).await })
            .buffer_unordered(DELETES_IN_FLIGHT)
            .try_collect::<Vec<()>>()
            .await
            .map(|_| ())
    }
}

/// An error and its sources, joined with ": " (repeats left out).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let message = s.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = s.source();
    }
    text
}
