//! Decode -> encode -> assemble, end to end with the real ffmpeg.

#[path = "support/media.rs"]
mod support;

use std::path::{Path, PathBuf};

use idempipe_video::media::{
    EncodeSettings, FrameReader, MediaError, MediaInfo, SegmentEncoder, Subtitles, assemble, probe,
    split,
};
use image::RgbImage;
use support::{TempDir, ffprobe_json, file_names, sample, stream};

/// Fast settings keep the tests quick on two cores.
fn settings() -> EncodeSettings {
    EncodeSettings {
        crf: 23,
        preset: "veryfast".into(),
        ..EncodeSettings::default()
    }
}

/// Decodes `segment` and re-encodes its frames into `out`.
async fn reencode(segment: &Path, info: &MediaInfo, out: &Path, settings: &EncodeSettings) -> u64 {
    let (w, h) = info.display_size();
    let mut reader = FrameReader::open(segment).await.unwrap();
    let mut encoder = SegmentEncoder::create(out, w, h, info.fps, settings)
        .await
        .unwrap();
    while let Some(frame) = reader.next_frame().await.unwrap() {
        encoder.push(&frame).await.unwrap();
    }
    let frames = encoder.frames();
    assert_eq!(encoder.finish().await.unwrap(), out);
    frames
}

#[tokio::test]
async fn bikes_round_trip_with_speech_audio_and_captions() {
    let input = sample("bikes.mp4");
    let info = probe(&input).await.unwrap();
    let dir = TempDir::new("roundtrip");
    let segments = split(&input, &info, &dir.join("segments"), 2.0)
        .await
        .unwrap();
    std::fs::create_dir(dir.join("encoded")).unwrap();
    let mut encoded: Vec<PathBuf> = Vec::new();
    for seg in &segments {
        let out = dir.join(&format!("encoded/enc_{:05}.mp4", seg.index));
        assert_eq!(
            reencode(&seg.path, &info, &out, &settings()).await,
            seg.frame_count
        );
        encoded.push(out);
    }
    assert_eq!(
        file_names(&dir.join("encoded")).len(),
        segments.len(),
        "no temporary files left"
    );

    let subs = dir.join("captions.srt");
    std::fs::write(
        &subs,
        "1\n00:00:00,500 --> 00:00:02,000\nEver tried. Ever failed.\n",
    )
    .unwrap();
    let out = dir.join("final.mp4");
    assemble(
        &encoded,
        &sample("bikes-speech.mp4"),
        true,
        Some(Subtitles {
            path: &subs,
            language: "eng",
        }),
        &out,
    )
    .await
    .unwrap();

    let result = probe(&out).await.unwrap();
    assert_eq!(result.frame_count, 250);
    assert_eq!(result.fps, info.fps);
    assert!(
        (result.duration_secs - 10.0).abs() <= 0.04,
        "duration {}",
        result.duration_secs
    );
    assert_eq!((result.width, result.height), (640, 272));
    assert_eq!(result.audio_codec.as_deref(), Some("aac"));
    let json = ffprobe_json(&out);
    let subtitle = stream(&json, "subtitle").expect("subtitle stream");
    assert_eq!(subtitle["codec_name"], "mov_text");
    assert_eq!(subtitle["tags"]["language"], "eng");
    assert!(
        json["format"]["tags"]["encoder"].is_null(),
        "bitexact output has no encoder tag"
    );
    assert_eq!(
        presentation_times(&out),
        (0..250).map(|i| i * 40).collect::<Vec<_>>(),
        "one frame every 40 ms"
    );
}

/// The video's presentation times in whole milliseconds, sorted.
fn presentation_times(path: &Path) -> Vec<u64> {
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=pts_time",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .unwrap();
    let mut ms: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| (l.trim().parse::<f64>().unwrap() * 1000.0).round() as u64)
        .collect();
    ms.sort_unstable();
    ms
}

#[tokio::test]
async fn assemble_without_audio_has_none() {
    let input = sample("bikes-speech.mp4");
    let info = probe(&input).await.unwrap();
    let dir = TempDir::new("assemble-noaudio");
    let segments = split(&input, &info, dir.path(), 4.0).await.unwrap();
    let paths: Vec<PathBuf> = segments.iter().map(|s| s.path.clone()).collect();
    let out = dir.join("joined.mp4");
    assemble(&paths, &input, false, None, &out).await.unwrap();
    let result = probe(&out).await.unwrap();
    assert_eq!(result.frame_count, 250);
    assert!(!result.has_audio);

    // Asking for audio from an input without any is not an error.
    assemble(&paths, &sample("bikes.mp4"), true, None, &out)
        .await
        .unwrap();
    assert!(!probe(&out).await.unwrap().has_audio);
}

/// The same frames give the same bytes with two encoder threads, also when many encodes
/// compete for the cores. Before libx264's lookahead ran in the encoding thread
/// (`sync-lookahead=0`), about one encode in six under such contention ended its
/// segment with other B-frames, and a resumed run could differ from a fresh one.
#[tokio::test]
async fn encoding_is_deterministic_under_contention() {
    const ENCODES: usize = 24;
    const AT_ONCE: usize = 6;
    let input = sample("bikes.mp4");
    let info = probe(&input).await.unwrap();
    let dir = TempDir::new("determinism");
    let segments = split(&input, &info, &dir.join("segments"), 1.0)
        .await
        .unwrap();
    let mut reader = FrameReader::open(&segments[1].path).await.unwrap();
    let mut frames = Vec::new();
    // Small frames encode fast, which is when the lookahead thread raced the encoder.
    let (w, h) = (320, 136);
    while let Some(frame) = reader.next_frame().await.unwrap() {
        frames.push(image::imageops::resize(
            &frame,
            w,
            h,
            image::imageops::FilterType::Triangle,
        ));
    }
    let frames = std::sync::Arc::new(frames);
    let settings = EncodeSettings {
        threads: 2,
        crf: 18,
        ..settings()
    };
    let fps = info.fps;
    let mut outputs = Vec::new();
    for batch in 0..ENCODES / AT_ONCE {
        let mut tasks = Vec::new();
        for i in 0..AT_ONCE {
            let out = dir.join(&format!("{}.mp4", batch * AT_ONCE + i));
            let (frames, settings) = (frames.clone(), settings.clone());
            tasks.push(tokio::spawn(async move {
                let mut encoder = SegmentEncoder::create(&out, w, h, fps, &settings)
                    .await
                    .unwrap();
                for frame in frames.iter() {
                    encoder.push(frame).await.unwrap();
                }
                encoder.finish().await.unwrap();
                std::fs::read(&out).unwrap()
            }));
        }
        for task in tasks {
            outputs.push(task.await.unwrap());
        }
    }
    let differing = outputs.iter().filter(|b| **b != outputs[0]).count();
    assert_eq!(
        differing, 0,
        "{differing} of {ENCODES} encodes of the same frames differ"
    );
}

#[tokio::test]
async fn encoder_rejects_bad_frames_and_settings() {
    let dir = TempDir::new("encode-bad");
    let out = dir.join("bad.mp4");
    let fps = idempipe_video::media::Rational { num: 25, den: 1 };
    let mut encoder = SegmentEncoder::create(&out, 64, 48, fps, &settings())
        .await
        .unwrap();
    let err = encoder.push(&RgbImage::new(32, 32)).await.unwrap_err();
    assert!(matches!(err, MediaError::FrameSize { .. }), "{err}");
    assert!(err.to_string().contains("bad.mp4"), "{err}");
    drop(encoder);
    assert!(
        file_names(dir.path()).is_empty(),
        "a dropped encoder leaves no file"
    );

    let bad_preset = EncodeSettings {
        preset: "warp".into(),
        ..settings()
    };
    let err = SegmentEncoder::create(&out, 64, 48, fps, &bad_preset)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("preset"), "{err}");
    let err = SegmentEncoder::create(&out, 0, 48, fps, &settings())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("0x48"), "{err}");
}
