//! Test harness: a fresh database per test on each backend, a run whose items are in
//! every interesting status (made through the engine's store API), and requests through
//! the router without a socket.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use idempipe_engine::store::{ClaimParams, Outcome, OutcomeKind, RunCreate};
use idempipe_engine::{Clock, NewItem, SharedStore, SystemClock};
use idempipe_web::AppState;
use serde_json::{Value, json};
use tower::ServiceExt;

/// A token long enough for the builder.
pub const TOKEN: &str = "test-token-0123456789abcdef";

#[allow(unused_imports)]
pub use idempipe_testkit::{TempDir, TestDb};

/// Writes a frame file (u32 LE width, u32 LE height, RGB24) of one colour.
pub fn write_frame(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&w.to_le_bytes());
    bytes.extend_from_slice(&h.to_le_bytes());
    for _ in 0..w * h {
        bytes.extend_from_slice(&rgb);
    }
    std::fs::write(path, bytes).unwrap();
}

/// Writes a file of `w`x`h` frames one after another, each one colour.
pub fn write_frames(path: &Path, w: u32, h: u32, colours: &[[u8; 3]]) {
    let mut bytes = Vec::new();
    for (i, rgb) in colours.iter().enumerate() {
        let one = path.with_extension(format!("part{i}"));
        write_frame(&one, w, h, *rgb);
        bytes.extend(std::fs::read(&one).unwrap());
        std::fs::remove_file(one).unwrap();
    }
    std::fs::write(path, bytes).unwrap();
}

/// A video-like run made through the store API, with files under `root`:
/// ingest completed; frames 0-4 completed, 5-6 failed (503), 7 dead (400), 8 running,
/// 9 pending. Frame 0 has both files, frame 7 its original only; frame 2's are slots of
/// the segment's files of frames.
pub struct Fixture {
    pub run: i64,
    pub root: PathBuf,
    pub artifacts: PathBuf,
}

pub fn frame_key(i: u32) -> String {
    format!("frame/{i:06}")
}

pub async fn fixture(store: &SharedStore, root: &Path) -> Fixture {
    let artifacts = root.join("artifacts");
    let out = root.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let frames = artifacts.join("run-x/frames/00000");
    let mut items = vec![NewItem::new("ingest", "ingest", json!({}))];
    for i in 0..10u32 {
        let payload = if i == 2 {
            // The layout of runs on local artifacts: the segment's frames in one file
            // each for originals and enhanced frames, the frame at its slot.
            json!({
                "segment": 0, "index_in_segment": i, "global": i,
                "original": frames.join("originals.rgb"),
                "enhanced": frames.join("enhanced.rgb"),
                "slot": i,
            })
        } else {
            json!({
                "segment": 0, "index_in_segment": i, "global": i,
                "original": frames.join(format!("{i:06}.orig.rgb")),
                "enhanced": frames.join(format!("{i:06}.enh.rgb")),
            })
        };
        items.push(NewItem::new("frame", frame_key(i), payload));
    }
    write_frames(
        &frames.join("originals.rgb"),
        4,
        3,
        &[[0; 3], [0; 3], [70, 80, 90]],
    );
    write_frames(
        &frames.join("enhanced.rgb"),
        4,
        3,
        &[[0; 3], [0; 3], [100, 110, 120]],
    );
    write_frame(&frames.join("000000.orig.rgb"), 4, 3, [10, 20, 30]);
    write_frame(&frames.join("000000.enh.rgb"), 4, 3, [40, 50, 60]);
    write_frame(&frames.join("000007.orig.rgb"), 4, 3, [1, 2, 3]);
    let now = SystemClock.now();
    let run = store
        .run_create(
            &RunCreate {
                pipeline: "video".into(),
                fingerprint: out.join("out.mp4").display().to_string(),
                input: "/videos/in.mp4".into(),
                params: json!({
                    "artifacts": artifacts,
                    "output": out.join("out.mp4"),
                    "thumbnail": out.join("out.thumb.jpg"),
                }),
                items,
            },
            now,
        )
        .await
        .unwrap();
    let claim = |stage: &str, limit: i64, token: i64| ClaimParams {
        stage: stage.into(),
        limit,
        worker: "test-worker".into(),
        lease_token: token,
        lease_expires_at: now + 600_000,
        now,
        run_id: None,
    };
    let ingest = store.item_claim(&claim("ingest", 1, 1)).await.unwrap();
    let mut outcomes = vec![Outcome {
        item_id: ingest[0].id,
        lease_token: 1,
        kind: OutcomeKind::Completed(json!({})),
        spawns: vec![],
    }];
    let frames = store.item_claim(&claim("frame", 9, 2)).await.unwrap();
    assert_eq!(frames.len(), 9);
    for f in &frames {
        let i: u32 = f.key[6..].parse().unwrap();
        let kind = match i {
            0..=4 => OutcomeKind::Completed(json!({ "score": 1.0 })),
            5 | 6 => OutcomeKind::Failed {
                error: json!({ "kind": "transient", "status": 503, "message": "injected failure" }),
                retry_at: now + 3_600_000,
            },
            7 => OutcomeKind::Dead(
                json!({ "kind": "permanent", "status": 400, "message": "bad image" }),
            ),
            _ => continue,
        };
        outcomes.push(Outcome {
            item_id: f.id,
            lease_token: 2,
            kind,
            spawns: vec![],
        });
    }
    let recorded = store.item_record(&outcomes, now).await.unwrap();
    assert!(recorded.iter().all(|r| *r));
    Fixture {
        run,
        root: root.to_owned(),
        artifacts,
    }
}

/// A state over `store` with files allowed under `root`.
pub fn state(store: &SharedStore, root: &Path, token: Option<&str>) -> AppState {
    AppState::builder(store.clone())
        .artifact_roots(vec![root.to_owned()])
        .token(token.map(String::from))
        .build()
        .unwrap()
}

/// A GET addressed to localhost.
pub fn get(uri: &str) -> Request<Body> {
    Request::get(uri)
        .header("host", "127.0.0.1:8090")
        .body(Body::empty())
        .unwrap()
}

/// A POST the page would send.
pub fn action(uri: &str) -> Request<Body> {
    Request::post(uri)
        .header("host", "127.0.0.1:8090")
        .header("x-idempipe-action", "1")
        .header("origin", "http://127.0.0.1:8090")
        .header("sec-fetch-site", "same-origin")
        .body(Body::empty())
        .unwrap()
}

/// Sends a request through the router.
pub async fn send(app: &Router, request: Request<Body>) -> (StatusCode, Response<Body>) {
    let response = app.clone().oneshot(request).await.unwrap();
    (response.status(), response)
}

/// Body as text.
pub async fn text(response: Response<Body>) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Status and JSON body of a request.
pub async fn json_of(app: &Router, request: Request<Body>) -> (StatusCode, Value) {
    let (status, response) = send(app, request).await;
    let body = text(response).await;
    (
        status,
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}")),
    )
}

/// Instantiates each `async fn name(db: TestDb)` once per backend.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::common::TestDb::sqlite()).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::common::TestDb::postgres().await).await
                }
            )*
        }
    };
}
