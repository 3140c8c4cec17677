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
/// with a single keyframe yields a single segment. Segments are MP4 rather than
/// Matroska because MP4 keeps the rotation display matrix (ffmpeg 5.1's Matroska
/// muxer drops it) and exact timestamps. ffmpeg writes into a hidden temporary
/// directory; segments are renamed into `out_dir` only after ffmpeg succeeded and
/// their frame counts add up to `info.frame_count`.
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

async fn split_into(
    input: &Path,
    info: &MediaInfo,
    out_dir: &Path,
    tmp_dir: &Path,
    target_segment_secs: f64,
) -> Result<Vec<Segment>, MediaError> {
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
        ])
        .args(["-segment_time", &format!("{target_segment_secs:.6}")])
        .args(["-segment_list_type", "csv", "-segment_list"])
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
    let mut segments = Vec::new();
    let mut first_frame = 0;
    for (index, line) in csv.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let name = parse_list_line(line).ok_or_else(|| MediaError::BadProbe {
            path: list.clone(),
            detail: format!("bad line {line:?}"),
        })?;
        let frame_count = count_frames(&tmp_dir.join(name)).await?;
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

/// The file name in a segment-list line: `seg_00000.mp4,0.000000,1.280000`.
///
/// The listed times are not used: with B-frames they are shifted by the decoder
/// delay (1.28 s for a keyframe at 1.2 s), while frame index / fps is exact.
fn parse_list_line(line: &str) -> Option<&str> {
    let name = line.split(',').next()?.trim();
    (!name.is_empty() && !name.contains('/')).then_some(name)
}

/// Counts the video packets of `path` (one packet per frame for the codecs we copy).
pub(crate) async fn count_frames(path: &Path) -> Result<u64, MediaError> {
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
