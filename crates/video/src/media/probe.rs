//! ffprobe metadata and input validation.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::MediaError;
use super::tool::{self, FFPROBE};

/// A frame rate as an exact fraction, e.g. 30000/1001.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rational {
    /// Numerator.
    pub num: u32,
    /// Denominator (never 0 in a probed value).
    pub den: u32,
}

impl Rational {
    /// The value as a float.
    pub fn as_f64(self) -> f64 {
        f64::from(self.num) / f64::from(self.den)
    }

    /// Parses ffprobe's `"num/den"`; `None` for malformed or zero values (`"0/0"`).
    fn parse(text: &str) -> Option<Self> {
        let (num, den) = text.split_once('/')?;
        let r = Self {
            num: num.trim().parse().ok()?,
            den: den.trim().parse().ok()?,
        };
        (r.num > 0 && r.den > 0).then_some(r)
    }
}

impl fmt::Display for Rational {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.num, self.den)
    }
}

/// What the pipeline needs to know about an input video (stored as the run's JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaInfo {
    /// The probed file.
    pub path: PathBuf,
    /// ffprobe's container name, e.g. `mov,mp4,m4a,3gp,3g2,mj2`.
    pub format_name: String,
    /// Duration of the video stream in seconds (the container's if the stream has none).
    pub duration_secs: f64,
    /// Duration of the whole container in seconds (may exceed the video, e.g. longer audio).
    pub container_duration_secs: Option<f64>,
    /// Exact frame rate.
    pub fps: Rational,
    /// The frame rate as a float, for display.
    pub fps_f64: f64,
    /// Number of video frames (declared by the container, else counted packets).
    pub frame_count: u64,
    /// Coded width in pixels (before rotation).
    pub width: u32,
    /// Coded height in pixels (before rotation).
    pub height: u32,
    /// Video codec, e.g. `h264`.
    pub video_codec: String,
    /// Pixel format, e.g. `yuv420p`.
    pub pix_fmt: String,
    /// Rotation in degrees, normalised to 0..360 (display matrix, else the `rotate` tag).
    pub rotation: u32,
    /// Whether the file has an audio stream.
    pub has_audio: bool,
    /// Codec of the first audio stream, e.g. `aac`.
    pub audio_codec: Option<String>,
    /// ffprobe's full JSON answer.
    pub raw: serde_json::Value,
}

impl MediaInfo {
    /// Width and height of decoded frames: ffmpeg applies the rotation when decoding,
    /// so 90 and 270 degrees swap them.
    pub fn display_size(&self) -> (u32, u32) {
        display_size(self.width, self.height, self.rotation)
    }
}

/// Probes `path` with ffprobe and validates it as a pipeline input.
///
/// Errors name the file and the problem: missing, empty, not a media file, no video
/// stream, or truncated (fewer readable frames than declared). Packets are counted
/// (a demux pass, no decoding), which is cheap next to everything else the pipeline does.
pub async fn probe(path: &Path) -> Result<MediaInfo, MediaError> {
    let output = ffprobe_json(path, &["-show_format", "-show_streams", "-count_packets"]).await?;
    if !output.stderr.is_empty() {
        tracing::warn!(path = %path.display(), stderr = %tool::tidy_stderr(&output.stderr), "ffprobe reported problems");
    }
    parse_probe(path, &output.stdout)
}

/// The [`MediaInfo`] of `path` from ffprobe's `-show_format -show_streams
/// -count_packets` JSON answer, validated as a pipeline input.
pub fn parse_probe(path: &Path, json: &[u8]) -> Result<MediaInfo, MediaError> {
    let raw: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| bad_probe(path, format!("invalid JSON: {e}")))?;
    let parsed: ProbeOutput = serde_json::from_value(raw.clone())
        .map_err(|e| bad_probe(path, format!("unexpected JSON: {e}")))?;
    build_info(path, parsed, raw)
}

/// The size of decoded frames of `path` (rotation applied), from a quick ffprobe.
pub async fn probe_display_size(path: &Path) -> Result<(u32, u32), MediaError> {
    let output = ffprobe_json(path, &["-show_streams", "-select_streams", "V:0"]).await?;
    let parsed: ProbeOutput = serde_json::from_slice(&output.stdout)
        .map_err(|e| bad_probe(path, format!("unexpected JSON: {e}")))?;
    let video = parsed
        .streams
        .iter()
        .find(|s| s.is_video())
        .ok_or_else(|| no_video(path))?;
    let (width, height) = video.size(path)?;
    Ok(display_size(width, height, video.rotation()))
}

/// Checks the file, then runs `ffprobe -v error -print_format json ARGS PATH`.
async fn ffprobe_json(path: &Path, args: &[&str]) -> Result<std::process::Output, MediaError> {
    check_file(path).await?;
    let fixed = ["-v", "error", "-print_format", "json"];
    let cmd = tool::command(
        FFPROBE,
        fixed
            .iter()
            .chain(args)
            .map(AsRef::as_ref)
            .chain([path.as_os_str()]),
    );
    tool::run(FFPROBE, cmd, path)
        .await
        .map_err(|e| not_media(e, path))
}

/// Fails early, with a clear message, on files ffprobe would only call "invalid data".
async fn check_file(path: &Path) -> Result<(), MediaError> {
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(|source| MediaError::reading(path, "read metadata", source))?;
    if meta.is_dir() {
        return Err(MediaError::NotMedia {
            path: path.to_owned(),
            detail: "is a directory".into(),
        });
    }
    if meta.len() == 0 {
        return Err(MediaError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(())
}

fn build_info(
    path: &Path,
    parsed: ProbeOutput,
    raw: serde_json::Value,
) -> Result<MediaInfo, MediaError> {
    let format_name = parsed
        .format
        .as_ref()
        .and_then(|f| f.format_name.as_deref());
    if let Some(image) = format_name.filter(|f| f.ends_with("_pipe") || *f == "image2") {
        // ffprobe reads a picture as a one-frame stream; it is not a video to enhance.
        return Err(MediaError::NotMedia {
            path: path.to_owned(),
            detail: format!("a still image ({image}), not a video"),
        });
    }
    let video = parsed
        .streams
        .iter()
        .find(|s| s.is_video())
        .ok_or_else(|| no_video(path))?;
    let audio = parsed
        .streams
        .iter()
        .find(|s| s.codec_type.as_deref() == Some("audio"));
    let (width, height) = video.size(path)?;
    let fps = choose_fps(video)
        .ok_or_else(|| bad_probe(path, "video stream has no frame rate".into()))?;
    let container_duration_secs = parsed.format.as_ref().and_then(|f| parse_f64(&f.duration));
    let readable = parse_u64(&video.nb_read_packets);
    let declared = parse_u64(&video.nb_frames);
    let stream_duration = parse_f64(&video.duration).or(container_duration_secs);
    check_complete(path, declared, readable, stream_duration, fps)?;
    let frame_count = declared
        .or(readable)
        .filter(|&n| n > 0)
        .ok_or_else(|| bad_probe(path, "video stream has no frames".into()))?;
    Ok(MediaInfo {
        path: path.to_owned(),
        format_name: parsed
            .format
            .and_then(|f| f.format_name)
            .unwrap_or_default(),
        duration_secs: stream_duration.unwrap_or(frame_count as f64 / fps.as_f64()),
        container_duration_secs,
        fps,
        fps_f64: fps.as_f64(),
        frame_count,
        width,
        height,
        video_codec: video.codec_name.clone().unwrap_or_default(),
        pix_fmt: video.pix_fmt.clone().unwrap_or_default(),
        rotation: video.rotation(),
        has_audio: audio.is_some(),
        audio_codec: audio.and_then(|a| a.codec_name.clone()),
        raw,
    })
}

/// Truncated files still probe when their index is at the front (mp4 with faststart):
/// then fewer packets can be read than the index declares. Containers without a
/// frame count (Matroska) are checked against duration x fps, loosely, because the
/// average rate of variable-rate video is only an estimate.
fn check_complete(
    path: &Path,
    declared: Option<u64>,
    readable: Option<u64>,
    duration: Option<f64>,
    fps: Rational,
) -> Result<(), MediaError> {
    let Some(readable) = readable else {
        return Ok(());
    };
    let truncated = |declared| {
        Err(MediaError::Truncated {
            path: path.to_owned(),
            declared,
            readable,
        })
    };
    match (declared, duration) {
        (Some(declared), _) if readable < declared => truncated(declared),
        (None, Some(secs)) => {
            let expected = (secs * fps.as_f64()).round() as u64;
            if readable < expected / 2 {
                truncated(expected)
            } else {
                Ok(())
            }
        }
        _ => Ok(()),
    }
}

/// Prefers `r_frame_rate` (exact, e.g. 30000/1001) unless it disagrees with the
/// average rate by more than 1% (then the stream is variable-rate and the average
/// is the better summary).
fn choose_fps(video: &StreamJson) -> Option<Rational> {
    let r = video.r_frame_rate.as_deref().and_then(Rational::parse);
    let avg = video.avg_frame_rate.as_deref().and_then(Rational::parse);
    match (r, avg) {
        (Some(r), Some(avg)) if (r.as_f64() - avg.as_f64()).abs() > 0.01 * avg.as_f64() => {
            Some(avg)
        }
        (r, avg) => r.or(avg),
    }
}

fn display_size(width: u32, height: u32, rotation: u32) -> (u32, u32) {
    if rotation % 180 == 90 {
        (height, width)
    } else {
        (width, height)
    }
}

/// ffprobe reports a failure to open as "Invalid data found..."; say what that means.
fn not_media(err: MediaError, path: &Path) -> MediaError {
    match err {
        MediaError::ToolFailed { stderr, .. } => MediaError::NotMedia {
            path: path.to_owned(),
            detail: stderr,
        },
        other => other,
    }
}

fn no_video(path: &Path) -> MediaError {
    MediaError::NoVideoStream {
        path: path.to_owned(),
    }
}

fn bad_probe(path: &Path, detail: String) -> MediaError {
    MediaError::BadProbe {
        path: path.to_owned(),
        detail,
    }
}

fn parse_u64(text: &Option<String>) -> Option<u64> {
    text.as_deref()?.parse().ok()
}

fn parse_f64(text: &Option<String>) -> Option<f64> {
    text.as_deref()?
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v >= 0.0)
}

/// The parts of ffprobe's JSON this module reads (numbers arrive as strings).
#[derive(Debug, Deserialize)]
struct ProbeOutput {
    #[serde(default)]
    streams: Vec<StreamJson>,
    format: Option<FormatJson>,
}

#[derive(Debug, Deserialize)]
struct FormatJson {
    format_name: Option<String>,
    duration: Option<String>,
}

#[derive(Debug, Deserialize)]
struct StreamJson {
    codec_type: Option<String>,
    codec_name: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    pix_fmt: Option<String>,
    r_frame_rate: Option<String>,
    avg_frame_rate: Option<String>,
    duration: Option<String>,
    nb_frames: Option<String>,
    nb_read_packets: Option<String>,
    #[serde(default)]
    disposition: serde_json::Value,
    #[serde(default)]
    tags: serde_json::Value,
    #[serde(default)]
    side_data_list: Vec<serde_json::Value>,
}

impl StreamJson {
    /// A video stream that is real video, not cover art attached to an audio file.
    fn is_video(&self) -> bool {
        self.codec_type.as_deref() == Some("video")
            && self.disposition["attached_pic"].as_i64() != Some(1)
    }

    fn size(&self, path: &Path) -> Result<(u32, u32), MediaError> {
        match (self.width, self.height) {
            (Some(w), Some(h)) if w > 0 && h > 0 => Ok((w, h)),
            _ => Err(bad_probe(path, "video stream has no width/height".into())),
        }
    }

    fn rotation(&self) -> u32 {
        let from_matrix = self
            .side_data_list
            .iter()
            .find_map(|d| d["rotation"].as_f64());
        let from_tag = || {
            self.tags["rotate"]
                .as_str()
                .and_then(|r| r.parse::<f64>().ok())
        };
        let degrees = from_matrix.or_else(from_tag).unwrap_or(0.0).round() as i64;
        degrees.rem_euclid(360) as u32
    }
}
