//! End to end with the local provider on real videos: the output is complete, keeps
//! frame count, rate, duration and audio, and its frames are really enhanced.

#[path = "support/pipeline.rs"]
mod support;

use std::path::Path;

use idempipe_engine::{RunStatus, connect};
use idempipe_enhance::metrics;
use idempipe_video::media::{FrameReader, probe, thumbnail_jpeg};
use image::RgbImage;
use support::{TempDir, frame_attempts, process, request, sample, settings, stage_attempts};

/// Frames `indices` (ascending) of `path`.
async fn frames_at(path: &Path, indices: &[u64]) -> Vec<RgbImage> {
    let mut reader = FrameReader::open(path).await.unwrap();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(frame) = reader.next_frame().await.unwrap() {
        if indices.contains(&i) {
            out.push(frame);
        }
        i += 1;
    }
    assert_eq!(out.len(), indices.len());
    out
}

async fn end_to_end(name: &str) {
    let dir = TempDir::new("e2e");
    let input = sample(name);
    let store = connect(&dir.join("state.db").display().to_string())
        .await
        .unwrap();
    let req = request(&input, dir.path(), settings("local"));
    let (start, run) = process(&store, &req, 3).await;
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.summary);

    let (inp, out) = (
        probe(&input).await.unwrap(),
        probe(&req.output).await.unwrap(),
    );
    assert_eq!(out.frame_count, inp.frame_count);
    assert_eq!(out.fps, inp.fps);
    let frame = 1.0 / inp.fps.as_f64();
    assert!(
        (out.duration_secs - inp.duration_secs).abs() <= frame + 1e-6,
        "{} vs {}",
        out.duration_secs,
        inp.duration_secs
    );
    assert_eq!(out.has_audio, inp.has_audio);
    assert_eq!((out.width, out.height), (inp.width, inp.height));

    let n = inp.frame_count;
    let picks = [0, n / 3, 2 * n / 3, n - 1];
    let (before, after) = (
        frames_at(&input, &picks).await,
        frames_at(&req.output, &picks).await,
    );
    for ((b, a), i) in before.iter().zip(&after).zip(picks) {
        let (sb, sa) = (metrics::sharpness(b), metrics::sharpness(a));
        let (cb, ca) = (metrics::contrast(b), metrics::contrast(a));
        assert!(
            sa > sb || ca > cb,
            "frame {i}: sharpness {sb}->{sa}, contrast {cb}->{ca}"
        );
    }

    eprintln!("{name}: stages {}", report_stages(&start.params.report));
    // The local provider enhances inside each segment's encode: no frame items, and
    // every segment encoded exactly once.
    assert!(frame_attempts(&store, run.id).await.is_empty());
    let encodes = stage_attempts(&store, run.id, "encode").await;
    assert!(!encodes.is_empty());
    for (key, done, _) in &encodes {
        assert_eq!(*done, 1, "encode {key} completed {done} times");
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&start.params.report).unwrap()).unwrap();
    assert_eq!(report["frames"]["total"], n);
    assert_eq!(report["frames"]["enhanced"], n);
    assert_eq!(Some(&report), run.summary.as_ref());
    assert!(report["stages"]["encode"]["busy_ms"].as_i64().unwrap() > 0);
    assert!(report["enhance_cpu_ms"].as_f64().unwrap() > 0.0);
    assert!(
        report["stages"].get("extract").is_none(),
        "nothing is extracted to disk"
    );
    let thumb = image::open(&start.params.thumbnail).unwrap();
    assert_eq!(thumb.width(), inp.width.min(640));
    // The thumbnail is the best frame as enhanced, before encoding: kept by its
    // segment's encode, not decoded again from the encoded segment.
    let best = report["thumbnail"]["frame"].as_u64().unwrap();
    let original = frames_at(&input, &[best]).await.remove(0);
    let mut enhanced = RgbImage::new(0, 0);
    idempipe_enhance::enhance_into(&original, &req.settings.enhance, &mut enhanced);
    assert_eq!(
        std::fs::read(&start.params.thumbnail).unwrap(),
        thumbnail_jpeg(&enhanced).unwrap(),
        "the thumbnail of frame {best}"
    );
    // Intermediate files are gone once the output is written.
    assert!(
        !dir.join(&format!("artifacts/run-{}", start.params.uid))
            .exists()
    );
    assert!(dir.join("artifacts").exists(), "the artifact root stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bigbuckbunny_with_audio() {
    end_to_end("bigbuckbunny.mp4").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bikes_without_audio() {
    end_to_end("bikes.mp4").await;
}

fn report_stages(path: &Path) -> serde_json::Value {
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    report["stages"].clone()
}
