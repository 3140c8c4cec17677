//! Keyframe-aligned segments by stream copy.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::atomic::{create_dir, rename_into_place};
use super::tool::{self, FFMPEG, FFPROBE};
use super::{MediaError, MediaInfo};

/// One piece of the input video, cut at a keyframe, video only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// Position in the video, from 0.
    pub index: u32,
    /// The segment file (`seg_00000.mp4`, ...).
    pub path: PathBuf,
    /// Index of the segment's first frame in the whole video.
    pub first_frame: u64,
    /// Number of frames in the segment.
    pub frame_count: u64,
    /// Start time in the input, in seconds (first frame / fps).
    pub start_secs: f64,
    /// Duration in seconds (frame count / fps).
    pub duration_secs: f64,
}

/// Splits `input` into segments of about `target_segment_secs` each in `out_dir`,
/// by stream copy (no re-encode), video only.
///
/// Cuts can only fall on keyframes, so segments are at least one GOP long: a source
/// with a single keyframe yields a single segment. A new segment starts at the first
/// keyframe at least `target_segment_secs` x (segments so far) into the video, as
/// ffmpeg's `-segment_time` does. One ffprobe pass lists the keyframes, ffmpeg cuts at
/// exactly those frames (`-segment_frames`), so each segment's frame count is known
/// without probing it. Segments are MP4 rather than Matroska because MP4 keeps the
/// rotation display matrix (ffmpeg 5.1's Matroska muxer drops it) and exact
/// timestamps. ffmpeg writes into a hidden temporary directory; segments are renamed
/// into `out_dir` only after ffmpeg succeeded and their frame counts add up to
/// `info.frame_count`.
pub async fn split(
    input: &Path,
    info: &MediaInfo,
    out_dir: &Path,
    target_segment_secs: f64,
) -> Result<Vec<Segment>, MediaError> {
    if !(target_segment_secs.is_finite() && target_segment_secs > 0.0) {
        let what = format!(
            "target_segment_secs {target_segment_secs}: must be a positive number of seconds"
        );
        return Err(MediaError::InvalidArgument {
            path: input.to_owned(),
            what,
        });
    }
    create_dir(out_dir).await?;
    let tmp_dir = super::atomic::temp_path_for(&out_dir.join("split"));
    create_dir(&tmp_dir).await?;
    let result = split_into(input, info, out_dir, &tmp_dir, target_segment_secs).await;
    let _ = tokio::fs::remove_dir_all(&tmp_dir).await;
    result
}

/// The longest `-segment_frames` list passed to ffmpeg (Linux caps one argument at
/// 128 KiB); a video with more cuts is split by time and its segments counted.
const MAX_CUT_LIST_BYTES: usize = 64 * 1024;

async fn split_into(
    input: &Path,
    info: &MediaInfo,
    out_dir: &Path,
    tmp_dir: &Path,
    target_segment_secs: f64,
) -> Result<Vec<Segment>, MediaError> {
    let (keyframes, packets) = video_keyframes(input).await?;
    let cuts = cut_frames(&keyframes, info.fps.as_f64() * target_segment_secs);
    let cut_list = cuts
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let by_frames = cut_list.len() <= MAX_CUT_LIST_BYTES;
    let list = tmp_dir.join("segments.csv");
    let mut cmd = tool::command(FFMPEG, ["-v", "error", "-nostdin", "-i"]);
    cmd.arg(input)
        .args([
            "-map",
            "0:v:0",
            "-an",
            "-sn",
            "-dn",
            "-c",
            "copy",
            "-fflags",
            "+bitexact",
        ])
        .args([
            "-f",
            "segment",
            "-segment_format",
            "mp4",
            "-reset_timestamps",
            "1",
        ]);
    if !by_frames {
        cmd.args(["-segment_time", &format!("{target_segment_secs:.6}")]);
    } else if !cuts.is_empty() {
        cmd.args(["-segment_frames", &cut_list]);
    }
    cmd.args(["-segment_list_type", "csv", "-segment_list"])
        .arg(&list)
        .arg(tmp_dir.join("seg_%05d.mp4"));
    tool::run(FFMPEG, cmd, input).await?;

    let csv = tokio::fs::read_to_string(&list)
        .await
        .map_err(|source| MediaError::Io {
            path: list.clone(),
            action: "read segment list",
            source,
        })?;
    let mut names = Vec::new();
    for line in csv.lines().filter(|l| !l.trim().is_empty()) {
        let name = parse_list_line(line).ok_or_else(|| MediaError::BadProbe {
            path: list.clone(),
            detail: format!("bad line {line:?}"),
        })?;
        names.push(name);
    }
    // Each segment runs from its cut to the next, when ffmpeg cut where it was told
    // (else, or when cut by time, its packets are counted).
    let bounds: Vec<u64> = std::iter::once(0)
        .chain(cuts.iter().copied())
        .chain([packets])
        .collect();
    let known = by_frames && names.len() == cuts.len() + 1;
    if by_frames && !known {
        tracing::warn!(path = %input.display(), segments = names.len(), cuts = cuts.len(),
            "ffmpeg did not cut at the listed keyframes; counting each segment's frames");
    }
    let mut segments = Vec::new();
    let mut first_frame = 0;
    for (index, name) in names.into_iter().enumerate() {
        let frame_count = if known {
            bounds[index + 1] - bounds[index]
        } else {
            count_frames(&tmp_dir.join(name)).await?
        };
        segments.push(Segment {
            index: index as u32,
            path: out_dir.join(name),
            first_frame,
            frame_count,
            start_secs: first_frame as f64 / info.fps.as_f64(),
            duration_secs: frame_count as f64 / info.fps.as_f64(),
        });
        first_frame += frame_count;
    }
    if first_frame != info.frame_count {
        return Err(MediaError::SplitMismatch {
            path: input.to_owned(),
            expected: info.frame_count,
            segmented: first_frame,
        });
    }
    for seg in &segments {
        let name = seg.path.file_name().unwrap_or_default();
        rename_into_place(&tmp_dir.join(name), &seg.path).await?;
    }
    Ok(segments)
}

/// The frames (packet indices of the first video stream, in decode order) at which new
/// segments start: the first keyframe at least `frames_per_segment` x (segments so far)
/// frames in, as ffmpeg's `-segment_time` cuts. Frame 0 is never listed.
fn cut_frames(keyframes: &[u64], frames_per_segment: f64) -> Vec<u64> {
    let mut cuts = Vec::new();
    for &frame in keyframes.iter().filter(|&&f| f > 0) {
        // A hair of tolerance: 60 frames at 30 fps are 2 s even if the product rounds.
        if frame as f64 + 1e-6 >= frames_per_segment * (cuts.len() + 1) as f64 {
            cuts.push(frame);
        }
    }
    cuts
}

/// The keyframes of the first video stream of `path` (packet indices, in decode order)
/// and its packet count, from one ffprobe pass over the packets (no decoding).
async fn video_keyframes(path: &Path) -> Result<(Vec<u64>, u64), MediaError> {
    let args = ["-v", "error", "-select_streams", "v:0"];
    let mut cmd = tool::command(FFPROBE, args);
    cmd.args(["-show_entries", "packet=flags", "-of", "csv=p=0"])
        .arg(path);
    let output = tool::run(FFPROBE, cmd, path).await?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut keyframes = Vec::new();
    let mut packets = 0;
    for flags in text.lines().filter(|l| !l.trim().is_empty()) {
        if flags.starts_with('K') {
            keyframes.push(packets);
        }
        packets += 1;
    }
    Ok((keyframes, packets))
}

/// The file name in a segment-list line: `seg_00000.mp4,0.000000,1.280000`.
///
/// The listed times are not used: with B-frames they are shifted by the decoder
/// delay (1.28 s for a keyframe at 1.2 s), while frame index / fps is exact.
fn parse_list_line(line: &str) -> Option<&str> {
    let name = line.split(',').next()?.trim();
    (!name.is_empty() && !name.contains('/')).then_some(name)
}

/// Counts the video packets of `path` (one packet per frame for the codecs we copy).
async fn count_frames(path: &Path) -> Result<u64, MediaError> {
    let args = ["-v", "error", "-select_streams", "v:0", "-count_packets"];
    let mut cmd = tool::command(FFPROBE, args);
    // JSON, not CSV: CSV rows grow extra fields when the stream has side data (rotation).
    cmd.args(["-show_entries", "stream=nb_read_packets", "-of", "json"])
        .arg(path);
    let output = tool::run(FFPROBE, cmd, path).await?;
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
    let count = &json["streams"][0]["nb_read_packets"];
    count
        .as_str()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| MediaError::BadProbe {
            path: path.to_owned(),
            detail: format!("packet count {count} is not a number"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_fall_on_the_first_keyframe_past_each_segment_length() {
        // bikes.mp4: keyframes at frames 0, 30, 76, 137, 187 and 242 (25 fps).
        let keyframes = [0, 30, 76, 137, 187, 242];
        assert_eq!(cut_frames(&keyframes, 25.0), [30, 76, 137, 187, 242]);
        // 2 s segments: 30 is short of 50 frames; then 76 >= 50, 137 >= 100, 187 >= 150.
        assert_eq!(cut_frames(&keyframes, 50.0), [76, 137, 187, 242]);
        // A GOP longer than a segment: every keyframe cuts, as ffmpeg's muxer does.
        assert_eq!(cut_frames(&[0, 250, 500, 750], 60.0), [250, 500, 750]);
        assert_eq!(
            cut_frames(&[0, 60, 120], 60.0),
            [60, 120],
            "exactly on the length"
        );
        assert!(
            cut_frames(&[0], 60.0).is_empty(),
            "one keyframe, one segment"
        );
        assert!(cut_frames(&[], 60.0).is_empty());
    }
}
