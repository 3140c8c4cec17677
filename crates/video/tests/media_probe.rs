//! `media::probe` against the sample videos and broken inputs.

#[path = "support/media.rs"]
mod support;

use idempipe_video::media::{MediaError, MediaInfo, Rational, probe};
use support::{TempDir, ffmpeg, sample};

#[tokio::test]
async fn probes_bigbuckbunny() {
    let info = probe(&sample("bigbuckbunny.mp4")).await.unwrap();
    assert_eq!((info.width, info.height), (1280, 720));
    assert_eq!(info.fps, Rational { num: 25, den: 1 });
    assert_eq!(info.fps_f64, 25.0);
    assert_eq!(info.frame_count, 132);
    assert!(
        (info.duration_secs - 5.28).abs() < 1e-6,
        "{}",
        info.duration_secs
    );
    assert_eq!(info.video_codec, "h264");
    assert_eq!(info.pix_fmt, "yuv420p");
    assert_eq!(info.rotation, 0);
    assert!(info.has_audio);
    assert_eq!(info.audio_codec.as_deref(), Some("aac"));
    assert!(info.raw["streams"].is_array());
}

#[tokio::test]
async fn probes_bikes_without_audio() {
    let info = probe(&sample("bikes.mp4")).await.unwrap();
    assert_eq!((info.width, info.height), (640, 272));
    assert_eq!(info.frame_count, 250);
    assert_eq!(info.fps, Rational { num: 25, den: 1 });
    assert!(!info.has_audio);
    assert_eq!(info.audio_codec, None);
}

#[tokio::test]
async fn probes_ntsc_rate_exactly() {
    let info = probe(&sample("carphone_pristine.mp4")).await.unwrap();
    assert_eq!(
        info.fps,
        Rational {
            num: 30000,
            den: 1001
        }
    );
    assert_eq!(info.frame_count, 120);
}

#[tokio::test]
async fn media_info_round_trips_through_json() {
    let info = probe(&sample("bikes-speech.mp4")).await.unwrap();
    let json = serde_json::to_string(&info).unwrap();
    let back: MediaInfo = serde_json::from_str(&json).unwrap();
    assert_eq!(back, info);
}

#[tokio::test]
async fn reports_rotation_and_display_size() {
    let dir = TempDir::new("probe-rot");
    let rotated = dir.join("rotated.mp4");
    let src = sample("carphone_pristine.mp4");
    ffmpeg(&[
        "-i",
        src.to_str().unwrap(),
        "-c",
        "copy",
        "-metadata:s:v:0",
        "rotate=90",
        rotated.to_str().unwrap(),
    ]);
    let info = probe(&rotated).await.unwrap();
    assert!(
        info.rotation == 90 || info.rotation == 270,
        "rotation {}",
        info.rotation
    );
    assert_eq!((info.width, info.height), (176, 144));
    assert_eq!(info.display_size(), (144, 176));
}

/// Asserts the error message names the file and returns it.
fn message_naming(err: &MediaError, path: &std::path::Path) -> String {
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "message does not name the file: {msg}"
    );
    msg
}

#[tokio::test]
async fn missing_file_is_named() {
    let path = std::env::temp_dir().join("idempipe-no-such-video.mp4");
    let err = probe(&path).await.unwrap_err();
    assert!(matches!(err, MediaError::NotFound { .. }), "{err}");
    assert!(message_naming(&err, &path).contains("not found"));
}

#[tokio::test]
async fn empty_file_is_rejected() {
    let dir = TempDir::new("probe-empty");
    let path = dir.join("empty.mp4");
    std::fs::write(&path, b"").unwrap();
    let err = probe(&path).await.unwrap_err();
    assert!(matches!(err, MediaError::Empty { .. }), "{err}");
    assert!(message_naming(&err, &path).contains("empty"));
}

#[tokio::test]
async fn text_file_is_not_a_video() {
    let dir = TempDir::new("probe-text");
    let path = dir.join("notes.mp4");
    std::fs::write(&path, "just some text, not a video\n").unwrap();
    let err = probe(&path).await.unwrap_err();
    assert!(matches!(err, MediaError::NotMedia { .. }), "{err}");
    assert!(message_naming(&err, &path).contains("not a readable video"));
}

#[tokio::test]
async fn audio_only_file_has_no_video_stream() {
    let dir = TempDir::new("probe-audio");
    let path = dir.join("audio.m4a");
    let src = sample("bigbuckbunny.mp4");
    ffmpeg(&[
        "-i",
        src.to_str().unwrap(),
        "-vn",
        "-c:a",
        "copy",
        path.to_str().unwrap(),
    ]);
    let err = probe(&path).await.unwrap_err();
    assert!(matches!(err, MediaError::NoVideoStream { .. }), "{err}");
    message_naming(&err, &path);
}

/// Writes the first 30% of `src`'s bytes to `dst`.
fn truncate_copy(src: &std::path::Path, dst: &std::path::Path) {
    let bytes = std::fs::read(src).unwrap();
    std::fs::write(dst, &bytes[..bytes.len() * 30 / 100]).unwrap();
}

#[tokio::test]
async fn truncated_file_is_rejected() {
    let dir = TempDir::new("probe-trunc");
    let path = dir.join("truncated.mp4");
    truncate_copy(&sample("bigbuckbunny.mp4"), &path);
    let err = probe(&path).await.unwrap_err();
    // The sample's index (moov) is at the end, so the cut file has none.
    assert!(matches!(err, MediaError::NotMedia { .. }), "{err}");
    assert!(message_naming(&err, &path).contains("moov atom not found"));
}

#[tokio::test]
async fn truncated_faststart_file_is_rejected() {
    let dir = TempDir::new("probe-trunc-fs");
    let faststart = dir.join("faststart.mp4");
    let src = sample("bigbuckbunny.mp4");
    ffmpeg(&[
        "-i",
        src.to_str().unwrap(),
        "-c",
        "copy",
        "-movflags",
        "+faststart",
        faststart.to_str().unwrap(),
    ]);
    let path = dir.join("truncated.mp4");
    truncate_copy(&faststart, &path);
    let err = probe(&path).await.unwrap_err();
    match &err {
        MediaError::Truncated {
            declared, readable, ..
        } => assert!(declared == &132 && readable < &66, "{err}"),
        other => panic!("expected Truncated, got {other}"),
    }
    assert!(message_naming(&err, &path).contains("truncated"));
}

#[tokio::test]
async fn truncated_matroska_is_rejected() {
    let dir = TempDir::new("probe-trunc-mkv");
    let mkv = dir.join("full.mkv");
    let src = sample("bikes.mp4");
    ffmpeg(&[
        "-i",
        src.to_str().unwrap(),
        "-c",
        "copy",
        mkv.to_str().unwrap(),
    ]);
    probe(&mkv).await.unwrap();
    let path = dir.join("truncated.mkv");
    truncate_copy(&mkv, &path);
    let err = probe(&path).await.unwrap_err();
    assert!(matches!(err, MediaError::Truncated { .. }), "{err}");
    message_naming(&err, &path);
}
