//! `media::split` and decoding its segments with `FrameReader`.

#[path = "support/media.rs"]
mod support;

use idempipe_video::media::{FrameReader, MediaError, Segment, probe, split};
use support::{TempDir, ffprobe_json, file_names, sample, stream};

fn assert_contiguous(segments: &[Segment], frame_count: u64) {
    let mut next = 0;
    for (i, seg) in segments.iter().enumerate() {
        assert_eq!(seg.index as usize, i);
        assert_eq!(seg.first_frame, next, "segment {i}");
        assert!(seg.frame_count > 0, "segment {i} is empty");
        assert!((seg.duration_secs - seg.frame_count as f64 / 25.0).abs() < 1e-9);
        next += seg.frame_count;
    }
    assert_eq!(next, frame_count);
}

#[tokio::test]
async fn bigbuckbunny_has_one_keyframe_so_one_segment() {
    let input = sample("bigbuckbunny.mp4");
    let info = probe(&input).await.unwrap();
    let dir = TempDir::new("split-bbb");
    let segments = split(&input, &info, dir.path(), 1.0).await.unwrap();
    // The clip's only keyframe is frame 0: stream copy cannot cut it shorter.
    assert_eq!(segments.len(), 1);
    assert_contiguous(&segments, 132);
    assert_eq!(file_names(dir.path()), ["seg_00000.mp4"]);

    let json = ffprobe_json(&segments[0].path);
    let video = stream(&json, "video").unwrap();
    assert_eq!(video["codec_name"], "h264");
    assert!(stream(&json, "audio").is_none(), "segments are video only");
}

#[tokio::test]
async fn bikes_splits_at_its_keyframes_by_stream_copy() {
    let input = sample("bikes.mp4");
    let info = probe(&input).await.unwrap();
    let dir = TempDir::new("split-bikes");
    let segments = split(&input, &info, dir.path(), 1.0).await.unwrap();
    // Keyframes at 0, 1.2, 3.04, 5.48, 7.48 and 9.68 s.
    let starts: Vec<u64> = segments
        .iter()
        .map(|s| (s.start_secs * 100.0).round() as u64)
        .collect();
    assert_eq!(starts, [0, 120, 304, 548, 748, 968]);
    assert_contiguous(&segments, 250);
    assert_eq!(
        file_names(dir.path()).len(),
        segments.len(),
        "no temporary files left behind"
    );

    // No re-encode: same codec and profile, and the bytes add up to about the original.
    let mut total_bytes = 0;
    for seg in &segments {
        let json = ffprobe_json(&seg.path);
        let video = stream(&json, "video").unwrap();
        assert_eq!(
            (video["codec_name"].as_str(), video["profile"].as_str()),
            (Some("h264"), Some("High"))
        );
        assert_eq!(
            video["nb_read_packets"].as_str(),
            Some(seg.frame_count.to_string().as_str())
        );
        total_bytes += std::fs::metadata(&seg.path).unwrap().len();
    }
    let original = std::fs::metadata(&input).unwrap().len();
    let ratio = total_bytes as f64 / original as f64;
    assert!(
        (0.97..1.05).contains(&ratio),
        "segments {total_bytes} bytes vs original {original}"
    );
}

#[tokio::test]
async fn frame_reader_yields_each_segments_frames() {
    let input = sample("bikes.mp4");
    let info = probe(&input).await.unwrap();
    let dir = TempDir::new("split-frames");
    let segments = split(&input, &info, dir.path(), 2.0).await.unwrap();
    for seg in &segments {
        let mut reader = FrameReader::open(&seg.path).await.unwrap();
        let mut n = 0;
        while let Some(frame) = reader.next_frame().await.unwrap() {
            assert_eq!(frame.dimensions(), (640, 272));
            n += 1;
        }
        assert_eq!(n, seg.frame_count, "segment {}", seg.index);
        assert!(reader.next_frame().await.unwrap().is_none());
    }
}

/// Hashes of every decoded frame of `path`, in order.
async fn frame_hashes(path: &std::path::Path) -> Vec<u64> {
    use std::hash::{Hash, Hasher};
    let mut reader = FrameReader::open(path).await.unwrap();
    let mut hashes = Vec::new();
    while let Some(frame) = reader.next_frame().await.unwrap() {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        frame.as_raw().hash(&mut h);
        hashes.push(h.finish());
    }
    hashes
}

#[tokio::test]
async fn segments_decode_to_exactly_the_inputs_frames() {
    let input = sample("bikes.mp4");
    let info = probe(&input).await.unwrap();
    let dir = TempDir::new("split-exact");
    let segments = split(&input, &info, dir.path(), 1.0).await.unwrap();
    let mut joined = Vec::new();
    for seg in &segments {
        joined.extend(frame_hashes(&seg.path).await);
    }
    assert_eq!(joined, frame_hashes(&input).await);
}

#[tokio::test]
async fn rejects_a_non_positive_segment_length() {
    let input = sample("bikes.mp4");
    let info = probe(&input).await.unwrap();
    let dir = TempDir::new("split-bad");
    let err = split(&input, &info, dir.path(), 0.0).await.unwrap_err();
    assert!(matches!(err, MediaError::InvalidArgument { .. }), "{err}");
    assert!(err.to_string().contains("target_segment_secs"), "{err}");
}

#[tokio::test]
async fn segments_keep_rotation_so_frames_come_out_upright() {
    let dir = TempDir::new("split-rotated");
    let rotated = dir.join("rotated.mp4");
    let src = sample("carphone_pristine.mp4");
    support::ffmpeg(&[
        "-i",
        src.to_str().unwrap(),
        "-c",
        "copy",
        "-metadata:s:v:0",
        "rotate=90",
        rotated.to_str().unwrap(),
    ]);
    let info = probe(&rotated).await.unwrap();
    let segments = split(&rotated, &info, &dir.join("segments"), 1.0)
        .await
        .unwrap();
    let mut frames = 0;
    for seg in &segments {
        let mut reader = FrameReader::open(&seg.path).await.unwrap();
        while let Some(frame) = reader.next_frame().await.unwrap() {
            assert_eq!(frame.dimensions(), info.display_size());
            frames += 1;
        }
    }
    assert_eq!(info.display_size(), (144, 176));
    assert_eq!(frames, 120);
}
