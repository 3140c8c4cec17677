//! The artifact store against a real S3-compatible server (s3rver, a separate process
//! that checks SigV4 signatures) and a local directory: the same operations give the
//! same answers; large files go up in parts and come back byte for byte; fetched copies
//! leave the scratch directory when dropped; an unreachable store is an error naming the
//! location and the endpoint; a restarted store keeps serving its objects.

use std::path::{Path, PathBuf};

use idempipe_testkit::TempDir;
use idempipe_testkit::s3::{CREDENTIALS, S3Server};
use idempipe_video::storage::s3::{MULTIPART_ABOVE, S3Options};
use idempipe_video::storage::{Scratch, Storage};

fn storage_for(server: &S3Server, scratch: &Path) -> Storage {
    let options = S3Options {
        endpoint: Some(server.endpoint()),
        region: Some("us-east-1".into()),
        credentials: Some((CREDENTIALS.into(), CREDENTIALS.into())),
    };
    Storage::with_s3_options(Scratch::new(scratch.to_owned()).unwrap(), options)
}

/// Bytes that differ everywhere, so a misplaced part would show.
fn pattern(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn scratch_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

/// Every operation, on the root `root` (an s3:// URL or a local directory).
async fn exercise(storage: &Storage, root: &Path, scratch: &Path) {
    let a = root.join("run-x/segments/a.mp4");
    assert!(!storage.exists(&a).await.unwrap());
    assert_eq!(storage.get_bytes(&a).await.unwrap(), None);
    let err = storage.fetch(&a).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");

    storage.put_bytes(&a, b"first".to_vec()).await.unwrap();
    assert_eq!(
        storage.get_bytes(&a).await.unwrap().as_deref(),
        Some(&b"first"[..])
    );
    assert_eq!(storage.size(&a).await.unwrap(), Some(5));

    // A staged file appears at its location only once published.
    let b = root.join("run-x/frames/00000/000001.enh.rgb");
    let staged = storage.stage(&b).await.unwrap();
    std::fs::write(staged.path(), b"enhanced").unwrap();
    storage.publish(&staged).await.unwrap();
    drop(staged);
    let fetched = storage.fetch(&b).await.unwrap();
    assert_eq!(std::fs::read(fetched.path()).unwrap(), b"enhanced");
    let fetched_path = fetched.path().to_owned();
    drop(fetched);
    // A local file is fetched as itself; a remote one's copy is gone once dropped.
    assert_ne!(
        fetched_path.exists(),
        idempipe_video::storage::is_remote(&b)
    );

    let listed = storage.list(&root.join("run-x")).await.unwrap();
    assert_eq!(listed, vec![b.clone(), a.clone()]);
    assert_eq!(storage.tree_size(&root.join("run-x")).await.unwrap(), 13);
    assert_eq!(storage.tree_size(&root.join("nothing")).await.unwrap(), 0);
    // Directories with a file directly in them (s3rver, unlike S3, lists a prefix as a
    // directory only when an object sits directly under it).
    let marker = root.join("run-x/run.json");
    storage.put_bytes(&marker, b"{}".to_vec()).await.unwrap();
    let index = root.join("run-x/frames/index");
    storage.put_bytes(&index, b"{}".to_vec()).await.unwrap();
    assert_eq!(
        storage.subdirs(root).await.unwrap(),
        vec![root.join("run-x")]
    );
    assert_eq!(
        storage.subdirs(&root.join("run-x")).await.unwrap(),
        vec![root.join("run-x/frames"), root.join("run-x/segments")]
    );
    assert!(
        storage
            .subdirs(&root.join("nothing"))
            .await
            .unwrap()
            .is_empty()
    );
    storage.delete(&marker).await.unwrap();
    storage.delete(&index).await.unwrap();
    // An object's version changes when it is replaced; local files have none here.
    let version = storage.version(&a).await.unwrap();
    if idempipe_video::storage::is_remote(&a) {
        let first = version.expect("the object's version");
        assert_eq!(first.size, 5);
        storage.put_bytes(&a, b"other".to_vec()).await.unwrap();
        let second = storage.version(&a).await.unwrap().unwrap();
        assert_eq!(second.size, 5);
        assert_ne!(first.e_tag, second.e_tag, "same size, other contents");
    } else {
        assert_eq!(version, None);
    }

    storage
        .delete_tree(&root.join("run-x/frames"))
        .await
        .unwrap();
    assert!(!storage.exists(&b).await.unwrap());
    assert!(storage.exists(&a).await.unwrap());
    storage.delete(&a).await.unwrap();
    storage.delete(&a).await.unwrap();
    assert!(storage.list(&root.join("run-x")).await.unwrap().is_empty());
    assert!(
        scratch_files(scratch).is_empty(),
        "scratch left: {:?}",
        scratch_files(scratch)
    );
}

#[tokio::test]
async fn s3_and_local_directory_answer_alike() {
    let server = S3Server::start("store-test");
    let scratch = TempDir::new("scratch");
    let storage = storage_for(&server, scratch.path());
    exercise(&storage, Path::new(&server.url("jobs")), scratch.path()).await;
    let local = TempDir::new("local-store");
    exercise(&storage, local.path(), scratch.path()).await;
}

#[tokio::test]
async fn large_files_go_up_in_parts_and_come_back_whole() {
    let server = S3Server::start("store-test");
    let scratch = TempDir::new("scratch");
    let storage = storage_for(&server, scratch.path());
    let src = TempDir::new("src");
    let file = src.join("big.mp4");
    let bytes = pattern(MULTIPART_ABOVE as usize + 3 * 1024 * 1024 + 17);
    std::fs::write(&file, &bytes).unwrap();
    let location = PathBuf::from(server.url("out/big.mp4"));
    storage.publish_file(&file, &location).await.unwrap();
    assert_eq!(
        storage.size(&location).await.unwrap(),
        Some(bytes.len() as u64)
    );
    let fetched = storage.fetch(&location).await.unwrap();
    assert!(
        std::fs::read(fetched.path()).unwrap() == bytes,
        "contents differ"
    );
    // The server saw three parts (16 MiB + 3 MiB in 8 MiB parts), not one PUT.
    let log = server.log();
    let parts = log
        .lines()
        .filter(|l| l.contains("out/big.mp4") && l.contains("partNumber="))
        .count();
    assert!(parts >= 3, "expected a 3-part upload, log:\n{log}");
}

#[tokio::test]
async fn an_unreachable_store_names_the_location_and_endpoint() {
    let port = idempipe_testkit::free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let scratch = TempDir::new("scratch");
    let options = S3Options {
        endpoint: Some(endpoint.clone()),
        region: None,
        credentials: Some(("k".into(), "s".into())),
    };
    let storage = Storage::with_s3_options(Scratch::new(scratch.join("s")).unwrap(), options);
    let location = Path::new("s3://nowhere/run-1/segments/a.mp4");
    let started = std::time::Instant::now();
    let err = storage.fetch(location).await.unwrap_err().to_string();
    assert!(err.contains("s3://nowhere/run-1/segments/a.mp4"), "{err}");
    assert!(err.contains(&endpoint), "{err}");
    assert!(err.contains("download"), "{err}");
    // Bounded retries: the item fails and goes back to the queue instead of hanging.
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
}

#[tokio::test]
async fn a_restarted_store_serves_what_it_held_and_requests_retry_through_the_gap() {
    let mut server = S3Server::start("store-test");
    let scratch = TempDir::new("scratch");
    let storage = storage_for(&server, scratch.path());
    let a = PathBuf::from(server.url("jobs/a"));
    storage.put_bytes(&a, b"kept".to_vec()).await.unwrap();
    server.kill();
    let b = PathBuf::from(server.url("jobs/b"));
    let put = tokio::spawn({
        let storage = std::sync::Arc::new(storage);
        let s = storage.clone();
        async move { (s.put_bytes(&b, b"later".to_vec()).await, storage) }
    });
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    server.restart();
    let (result, storage) = put.await.unwrap();
    result.expect("the PUT retried until the store was back");
    assert_eq!(
        storage.get_bytes(&a).await.unwrap().as_deref(),
        Some(&b"kept"[..])
    );
}
