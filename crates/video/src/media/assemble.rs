//! Joining encoded segments and muxing the original audio and captions.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::MediaError;
use super::atomic::{rename_into_place, temp_path_for, write_atomic};
use super::tool::{self, FFMPEG};

/// A subtitle file to mux (any format ffmpeg reads, e.g. `.srt`) and its language as an
/// ISO 639-2 code (`eng`), which players show in their track menu.
#[derive(Debug, Clone, Copy)]
pub struct Subtitles<'a> {
    /// The subtitle file.
    pub path: &'a Path,
    /// ISO 639-2 language code.
    pub language: &'a str,
}

/// Joins `segments` (in order) into `out_path` (`.mp4`) by stream copy, taking the
/// first audio stream of `original_input` when `audio` is true (copied; skipped if the
/// input has none) and, when given, `subtitles` as a mov_text track with their
/// language tag.
///
/// Uses the concat demuxer; `+faststart` puts the index first for streaming; bitexact
/// flags and no copied metadata keep the output reproducible. Written under a
/// temporary name, then renamed.
pub async fn assemble(
    segments: &[PathBuf],
    original_input: &Path,
    audio: bool,
    subtitles: Option<Subtitles<'_>>,
    out_path: &Path,
) -> Result<(), MediaError> {
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
    let result = run_ffmpeg(
        &list_path,
        original_input,
        audio,
        subtitles,
        &tmp_path,
        out_path,
    )
    .await;
    let _ = tokio::fs::remove_file(&list_path).await;
    match result {
        Ok(()) => rename_into_place(&tmp_path, out_path).await,
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp_path).await;
            Err(e)
        }
    }
}

async fn run_ffmpeg(
    list_path: &Path,
    original_input: &Path,
    audio: bool,
    subtitles: Option<Subtitles<'_>>,
    tmp_path: &Path,
    out_path: &Path,
) -> Result<(), MediaError> {
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
            "mov_text",
            "-metadata:s:s:0",
            &format!("language={language}"),
        ]);
    }
    cmd.args([
        "-map_metadata",
        "-1",
        "-fflags",
        "+bitexact",
        "-movflags",
        "+faststart",
        "-f",
        "mp4",
    ])
    .arg(tmp_path);
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
