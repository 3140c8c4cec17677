//! Joining encoded segments and muxing the original audio and captions.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::MediaError;
use super::atomic::{rename_into_place, temp_path_for, write_atomic};
use super::tool::{self, FFMPEG};

/// The output containers, chosen by the output's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    /// MPEG-4 (`.mp4`, `.m4v`); subtitles as mov_text.
    Mp4,
    /// QuickTime (`.mov`); subtitles as mov_text.
    Mov,
    /// Matroska (`.mkv`); subtitles as SubRip.
    Matroska,
}

impl Container {
    /// The extensions that name a container, for messages.
    pub const SUPPORTED: &'static str = ".mp4, .m4v, .mov, .mkv";

    /// The container `path`'s extension names (case-insensitive), else an error naming
    /// the supported extensions.
    pub fn for_path(path: &Path) -> Result<Self, MediaError> {
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        match ext.as_deref() {
            Some("mp4" | "m4v") => Ok(Self::Mp4),
            Some("mov") => Ok(Self::Mov),
            Some("mkv") => Ok(Self::Matroska),
            _ => Err(MediaError::UnsupportedContainer {
                path: path.to_owned(),
                supported: Self::SUPPORTED,
            }),
        }
    }

    /// ffmpeg's muxer name.
    fn muxer(self) -> &'static str {
        match self {
            Self::Mp4 => "mp4",
            Self::Mov => "mov",
            Self::Matroska => "matroska",
        }
    }

    /// ffmpeg's codec for a text subtitle track in this container.
    fn subtitle_codec(self) -> &'static str {
        match self {
            Self::Mp4 | Self::Mov => "mov_text",
            Self::Matroska => "srt",
        }
    }
}

/// What the assembled output must be: the input's frame count, decoded size, video
/// duration and whether it has audio. [`assemble_verified`] checks the output against it.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    /// Video frames.
    pub frames: u64,
    /// Decoded width and height (rotation applied).
    pub size: (u32, u32),
    /// Video duration in seconds.
    pub duration_secs: f64,
    /// One frame's duration in seconds (the duration tolerance, plus a small epsilon).
    pub frame_secs: f64,
    /// Whether the input has an audio stream (then the output must have one too).
    pub audio: bool,
}

/// Extra duration tolerance on top of one frame, for container timestamp rounding.
const DURATION_EPSILON_SECS: f64 = 0.05;

impl Expected {
    /// What an output made from `info` must be.
    pub fn of(info: &super::MediaInfo) -> Self {
        Self {
            frames: info.frame_count,
            size: info.display_size(),
            duration_secs: info.duration_secs,
            frame_secs: 1.0 / info.fps.as_f64(),
            audio: info.has_audio,
        }
    }

    /// Probes `path` and compares; the error names what differs and both values.
    pub async fn check(&self, path: &Path, report_as: &Path) -> Result<(), MediaError> {
        let out = super::probe(path).await?;
        let mismatch = |what, expected: String, actual: String| MediaError::OutputMismatch {
            path: report_as.to_owned(),
            what,
            expected,
            actual,
        };
        if out.frame_count != self.frames {
            let (e, a) = (self.frames.to_string(), out.frame_count.to_string());
            return Err(mismatch("frame count", e, a));
        }
        let size = out.display_size();
        if size != self.size {
            let e = format!("{}x{}", self.size.0, self.size.1);
            return Err(mismatch("size", e, format!("{}x{}", size.0, size.1)));
        }
        if (out.duration_secs - self.duration_secs).abs() > self.frame_secs + DURATION_EPSILON_SECS
        {
            let e = format!("{:.3} s", self.duration_secs);
            return Err(mismatch(
                "duration",
                e,
                format!("{:.3} s", out.duration_secs),
            ));
        }
        if out.has_audio != self.audio {
            let n = |a: bool| u8::from(a).to_string();
            return Err(mismatch("audio streams", n(self.audio), n(out.has_audio)));
        }
        Ok(())
    }
}

/// A subtitle file to mux (any format ffmpeg reads, e.g. `.srt`) and its language as an
/// ISO 639-2 code (`eng`), which players show in their track menu.
#[derive(Debug, Clone, Copy)]
pub struct Subtitles<'a> {
    /// The subtitle file.
    pub path: &'a Path,
    /// ISO 639-2 language code.
    pub language: &'a str,
}

/// Joins `segments` (in order) into `out_path` by stream copy, in the container its
/// extension names ([`Container`]), taking the first audio stream of `original_input`
/// when `audio` is true (copied; skipped if the input has none) and, when given,
/// `subtitles` as a text track with their language tag.
///
/// Uses the concat demuxer; `+faststart` puts the MP4/MOV index first for streaming;
/// bitexact flags and no copied metadata keep the output reproducible. Written under a
/// temporary name, then renamed.
pub async fn assemble(
    segments: &[PathBuf],
    original_input: &Path,
    audio: bool,
    subtitles: Option<Subtitles<'_>>,
    out_path: &Path,
) -> Result<(), MediaError> {
    assemble_inner(segments, original_input, audio, subtitles, out_path, None).await
}

/// [`assemble`], then probes the result and moves it into place only if it matches
/// `expected` ([`MediaError::OutputMismatch`] otherwise, naming both values).
pub async fn assemble_verified(
    segments: &[PathBuf],
    original_input: &Path,
    subtitles: Option<Subtitles<'_>>,
    out_path: &Path,
    expected: &Expected,
) -> Result<(), MediaError> {
    let audio = expected.audio;
    let expected = Some(expected);
    assemble_inner(
        segments,
        original_input,
        audio,
        subtitles,
        out_path,
        expected,
    )
    .await
}

async fn assemble_inner(
    segments: &[PathBuf],
    original_input: &Path,
    audio: bool,
    subtitles: Option<Subtitles<'_>>,
    out_path: &Path,
    expected: Option<&Expected>,
) -> Result<(), MediaError> {
    let container = Container::for_path(out_path)?;
    if segments.is_empty() {
        let what = "segments: the list is empty".to_owned();
        return Err(MediaError::InvalidArgument {
            path: out_path.to_owned(),
            what,
        });
    }
    let list_path = temp_path_for(&out_path.with_extension("ffconcat"));
    write_atomic(&list_path, concat_list(segments)?.as_bytes()).await?;
    let tmp_path = temp_path_for(out_path);
    let inputs = Inputs {
        list_path: &list_path,
        original_input,
        audio,
        subtitles,
    };
    let mut result = run_ffmpeg(&inputs, container, &tmp_path, out_path).await;
    let _ = tokio::fs::remove_file(&list_path).await;
    if let (Ok(()), Some(expected)) = (&result, expected) {
        result = expected.check(&tmp_path, out_path).await;
    }
    match result {
        Ok(()) => rename_into_place(&tmp_path, out_path).await,
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp_path).await;
            Err(e)
        }
    }
}

/// What goes into the output.
struct Inputs<'a> {
    list_path: &'a Path,
    original_input: &'a Path,
    audio: bool,
    subtitles: Option<Subtitles<'a>>,
}

async fn run_ffmpeg(
    inputs: &Inputs<'_>,
    container: Container,
    tmp_path: &Path,
    out_path: &Path,
) -> Result<(), MediaError> {
    let Inputs {
        list_path,
        original_input,
        audio,
        subtitles,
    } = *inputs;
    let mut cmd = tool::command(FFMPEG, ["-v", "error", "-nostdin", "-y"]);
    cmd.args(["-f", "concat", "-safe", "0", "-i"])
        .arg(list_path);
    let mut next_input = 1;
    let audio_input = audio.then(|| {
        cmd.arg("-i").arg(original_input);
        next_input += 1;
        next_input - 1
    });
    let subs_input = subtitles.map(|subs| {
        cmd.arg("-i").arg(subs.path);
        next_input += 1;
        (next_input - 1, subs.language)
    });
    cmd.args(["-map", "0:v:0", "-c:v", "copy"]);
    if let Some(i) = audio_input {
        // The trailing `?` makes the audio optional: inputs without audio still work.
        cmd.args(["-map", &format!("{i}:a:0?"), "-c:a", "copy"]);
    }
    if let Some((i, language)) = subs_input {
        cmd.args([
            "-map",
            &format!("{i}:s:0"),
            "-c:s",
            container.subtitle_codec(),
            "-metadata:s:s:0",
            &format!("language={language}"),
        ]);
    }
    cmd.args(["-map_metadata", "-1", "-fflags", "+bitexact"]);
    if container != Container::Matroska {
        cmd.args(["-movflags", "+faststart"]);
    }
    cmd.args(["-f", container.muxer()]).arg(tmp_path);
    tool::run(FFMPEG, cmd, out_path).await.map(drop)
}

/// An ffconcat list of absolute paths, quoted for the concat demuxer.
fn concat_list(segments: &[PathBuf]) -> Result<String, MediaError> {
    let mut list = String::from("ffconcat version 1.0\n");
    for seg in segments {
        let abs = std::path::absolute(seg).map_err(|source| MediaError::Io {
            path: seg.clone(),
            action: "resolve path",
            source,
        })?;
        let quoted = abs.to_string_lossy().replace('\'', r"'\''");
        writeln!(list, "file '{quoted}'").expect("writing to a String cannot fail");
    }
    Ok(list)
}
