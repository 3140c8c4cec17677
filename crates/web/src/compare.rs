//! One frame of a video run before and after enhancement, for the run page's side-by-side
//! view, at any time in the run's life.
//!
//! The raw frame files exist only while their segment is being worked on (`encode`
//! deletes them, `assemble` removes the whole artifact directory), so each side is taken
//! from the first source that still exists:
//!
//! - before: the decoded original frame file (runs through an API only: runs enhanced in
//!   process have no frame files; an original is released once its enhanced frame is
//!   written); else the stream-copied input segment; else the run's input video;
//! - after: the enhanced frame file; else the encoded segment; else the output video.
//!
//! Videos are decoded on demand by `ffmpeg` (one frame, seeking by time). Every path comes
//! from the store and must resolve inside the run's allowed roots; the run's own input
//! file is also allowed when no roots are configured (only a decoded frame of it is ever
//! served). With `--artifacts` roots, an input outside them has no "before" once its
//! segment copies are gone: the error says so.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use idempipe_engine::store::ItemFilter;
use idempipe_engine::{Item, ItemStatus, Run, Store};
use serde_json::Value;

use crate::artifacts::{frame_png, originals_of, param_path, resolve_inside, roots_for};
use crate::error::ApiError;
use crate::state::AppState;
use crate::view::FRAME_STAGE;

/// Which side of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// The original frame.
    Before,
    /// The enhanced frame.
    After,
}

/// The key of frame item number `n` (`frame/000123`).
fn frame_key(n: u64) -> String {
    format!("frame/{n:06}")
}

/// A segment as its `extract`/`encode` payload describes it.
struct Segment {
    /// The stream-copied input segment.
    path: Option<PathBuf>,
    first_frame: u64,
    frame_count: u64,
    /// Frames per second.
    fps: f64,
    /// The `encode` item's output, once encoded.
    encoded: Option<PathBuf>,
}

/// The object storage location (`s3://...`) of `run`'s artifacts or output, if it keeps
/// either there: the comparison reads only local files, so it is not offered for it.
pub(crate) fn in_object_storage(run: &Run) -> Option<String> {
    ["artifacts", "output"]
        .iter()
        .filter_map(|k| run.params.get(*k)?.as_str())
        .find(|p| p.starts_with("s3://"))
        .map(str::to_owned)
}

/// Why runs in object storage have no before/after view (the page shows it too).
pub(crate) fn object_storage_note(location: &str) -> String {
    format!(
        "the before/after view reads frames from local artifact directories only, and this \
         run keeps its files in object storage ({location}); download the output to compare"
    )
}

/// Frame `n` of `run` as PNG bytes, from the first source of `side` that exists.
/// Refused (501, naming the limitation) for a run whose files are in object storage.
pub(crate) async fn frame(
    state: &AppState,
    run: &Run,
    n: u64,
    side: Side,
) -> Result<Vec<u8>, ApiError> {
    if let Some(location) = in_object_storage(run) {
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_IMPLEMENTED,
            "object_storage",
            object_storage_note(&location),
        ));
    }
    let store = state.store().as_ref();
    let mut roots = roots_for(state, run);
    // 1. The raw frame file, while its segment is in flight. Runs enhanced in process
    // have no frame items: their frames exist only in the segments and videos.
    if let Ok(item) = store.item_get(run.id, FRAME_STAGE, &frame_key(n)).await {
        let field = if side == Side::Before {
            "original"
        } else {
            "enhanced"
        };
        let raw = item.payload.get(field).and_then(Value::as_str);
        if (side == Side::Before || item.status == ItemStatus::Completed)
            && let Some(path) = raw.map(PathBuf::from)
            && let Ok(real) = resolve_inside(&roots, &path).await
        {
            let slot = item.payload.get("slot").and_then(Value::as_u64);
            // An original released once its enhanced frame was written is gone from the
            // file: the segment's video still has it.
            let size_from = originals_of(state, run, &item).await;
            match frame_png(real, slot, size_from).await {
                Err(e) if e.status == axum::http::StatusCode::NOT_FOUND => {}
                done => return done,
            }
        }
    }
    let segment = segment_of(store, run.id, n).await?;
    let Some(segment) = segment else {
        return Err(ApiError::not_found(format!(
            "frame {n} is in no segment of run {}",
            run.id
        )));
    };
    // 2. The segment's video file; 3. the whole video.
    let (segment_file, whole, whole_name) = match side {
        Side::Before => (segment.path.clone(), param_path(run, "input"), "input"),
        Side::After => (segment.encoded.clone(), param_path(run, "output"), "output"),
    };
    if let Some(path) = segment_file
        && let Ok(real) = resolve_inside(&roots, &path).await
    {
        return decode(&real, n - segment.first_frame, segment.fps).await;
    }
    if side == Side::After && run.status != idempipe_engine::RunStatus::Completed {
        return Err(ApiError::not_found(format!(
            "frame {n} is not enhanced and encoded yet"
        )));
    }
    let Some(whole) = whole else {
        return Err(ApiError::not_found(format!(
            "run {} names no {whole_name}",
            run.id
        )));
    };
    if side == Side::Before && state.artifact_roots().is_empty() {
        roots.push(whole.clone());
    }
    let real = resolve_inside(&roots, &whole).await.map_err(|e| {
        ApiError::not_found(format!(
            "the {whole_name} video is not available ({}); serve its directory with --artifacts",
            e.message
        ))
    })?;
    decode(&real, n, segment.fps).await
}

/// The segment holding frame `n`, with its encoded file if `encode` completed. Its
/// `extract` item describes it, or on runs enhanced in process (no extract items) its
/// `encode` item, whose payload is the same.
async fn segment_of(store: &dyn Store, run_id: i64, n: u64) -> Result<Option<Segment>, ApiError> {
    let extracts = items(store, run_id, "extract").await?;
    let encodes = items(store, run_id, "encode").await?;
    let Some(described) = extracts
        .iter()
        .chain(&encodes)
        .find(|i| covers(&i.payload, n))
    else {
        return Ok(None);
    };
    let p = &described.payload;
    let fps = match (p["fps"]["num"].as_f64(), p["fps"]["den"].as_f64()) {
        (Some(num), Some(den)) if num > 0.0 && den > 0.0 => num / den,
        _ => return Err(ApiError::internal("the segment's frame rate is unknown")),
    };
    let encoded = encodes
        .iter()
        .find(|i| i.status == ItemStatus::Completed && covers(&i.payload, n))
        .and_then(|i| i.result.as_ref()?.get("path")?.as_str().map(PathBuf::from));
    Ok(Some(Segment {
        path: p["path"].as_str().map(PathBuf::from),
        first_frame: p["first_frame"].as_u64().unwrap_or(0),
        frame_count: p["frame_count"].as_u64().unwrap_or(0),
        fps,
        encoded,
    })
    .filter(|s| s.frame_count > 0))
}

fn covers(payload: &Value, n: u64) -> bool {
    match (
        payload["first_frame"].as_u64(),
        payload["frame_count"].as_u64(),
    ) {
        (Some(first), Some(count)) => (first..first + count).contains(&n),
        _ => false,
    }
}

async fn items(store: &dyn Store, run_id: i64, stage: &str) -> Result<Vec<Item>, ApiError> {
    Ok(store
        .item_list(&ItemFilter {
            run_id,
            stage: Some(stage.into()),
            statuses: Vec::new(),
            limit: 100_000,
            after_id: 0,
        })
        .await?)
}

/// The frame shown by default: the thumbnail's, else the first enhanced one, else 0.
pub(crate) async fn default_frame(store: &dyn Store, run_id: i64) -> Result<u64, ApiError> {
    if let Ok(thumb) = store.item_get(run_id, "thumbnail", "thumbnail").await
        && let Some(n) = thumb.result.as_ref().and_then(|r| r["frame"].as_u64())
    {
        return Ok(n);
    }
    let done = store
        .item_list(&ItemFilter {
            run_id,
            stage: Some(FRAME_STAGE.into()),
            statuses: vec![ItemStatus::Completed],
            limit: 1,
            after_id: 0,
        })
        .await?;
    Ok(done
        .first()
        .and_then(|i| i.payload["global"].as_u64())
        .unwrap_or(0))
}

/// Decodes frame `index` of `video` (constant `fps`) as PNG with ffmpeg.
async fn decode(video: &Path, index: u64, fps: f64) -> Result<Vec<u8>, ApiError> {
    // Seek a quarter frame before the frame's time: ffmpeg drops the frames before the
    // seek point, so the first frame left is `index`.
    let at = ((index as f64 - 0.25) / fps).max(0.0);
    let out = tokio::process::Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-ss", &format!("{at:.6}"), "-i"])
        .arg(video)
        .args(["-frames:v", "1", "-f", "image2pipe", "-c:v", "png", "-"])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| ApiError::internal(format!("cannot run ffmpeg: {e}")))?;
    if !out.status.success() || out.stdout.len() < 8 {
        return Err(ApiError::internal(format!(
            "ffmpeg could not decode frame {index} of {}: {}",
            video.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out.stdout)
}
