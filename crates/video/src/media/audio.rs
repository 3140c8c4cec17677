//! The audio track as speech recognition wants it: 16 kHz mono signed 16-bit PCM.

use std::path::Path;

use super::MediaError;
use super::atomic::{create_dir, rename_into_place, temp_path_for};
use super::tool::{self, FFMPEG};

/// Sample rate of the extracted audio (Whisper's).
pub const SPEECH_SAMPLE_RATE: u32 = 16_000;

/// Decodes the first audio stream of `input`, downmixed to mono and resampled to
/// 16 kHz, into `out_path` as raw little-endian 16-bit PCM (written under a temporary
/// name, then renamed). Returns the number of samples.
pub async fn extract_speech_audio(input: &Path, out_path: &Path) -> Result<u64, MediaError> {
    if let Some(dir) = out_path.parent() {
        create_dir(dir).await?;
    }
    let tmp = temp_path_for(out_path);
    let mut cmd = tool::command(FFMPEG, ["-v", "error", "-nostdin", "-y", "-i"]);
    cmd.arg(input).args([
        "-map",
        "0:a:0",
        "-vn",
        "-ac",
        "1",
        "-ar",
        &SPEECH_SAMPLE_RATE.to_string(),
        "-f",
        "s16le",
    ]);
    cmd.arg(&tmp);
    if let Err(e) = tool::run(FFMPEG, cmd, input).await {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(e);
    }
    rename_into_place(&tmp, out_path).await?;
    let bytes = tokio::fs::metadata(out_path)
        .await
        .map_err(|e| MediaError::reading(out_path, "read the extracted audio", e))?
        .len();
    Ok(bytes / 2)
}
