//! What the user chooses ([`Settings`]) and what a run stores ([`RunParams`]).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use idempipe_enhance::EnhanceParams;
use serde::{Deserialize, Serialize};

use super::caption_settings::CaptionSettings;
use super::error::PipelineError;
use crate::media::EncodeSettings;

/// The provider name that runs the algorithm in process.
pub const LOCAL_PROVIDER: &str = "local";

/// What to do with a frame whose enhancement failed for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnFrameFailure {
    /// The frame goes dead; the run ends failed and lists it.
    #[default]
    Fail,
    /// The original frame is used instead and the report lists it.
    KeepOriginal,
}

impl FromStr for OnFrameFailure {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fail" => Ok(Self::Fail),
            "keep-original" => Ok(Self::KeepOriginal),
            other => Err(format!(
                "unknown frame-failure policy {other:?}: use fail or keep-original"
            )),
        }
    }
}

/// The user's settings for a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// `local`, or the base URL of a service implementing the enhancement API.
    pub provider: String,
    /// Enhancement strengths.
    pub enhance: EnhanceParams,
    /// libx264 quality, 0..=51 (lower is better).
    pub crf: u8,
    /// libx264 preset.
    pub preset: String,
    /// What a frame that cannot be enhanced becomes.
    pub on_frame_failure: OnFrameFailure,
    /// Target segment length in seconds (segments are cut at keyframes, so at least a GOP).
    pub segment_secs: f64,
    /// Segments whose frames may be on disk at once (K); bounds disk use.
    pub window: u32,
    /// Calls per second allowed to the enhancement provider, across all workers.
    pub api_rate: f64,
    /// Captions (speech to text); off unless asked for.
    #[serde(default)]
    pub captions: CaptionSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            provider: LOCAL_PROVIDER.into(),
            enhance: EnhanceParams::default(),
            crf: 18,
            preset: "medium".into(),
            on_frame_failure: OnFrameFailure::Fail,
            segment_secs: 2.0,
            window: 4,
            api_rate: 1000.0,
            captions: CaptionSettings::default(),
        }
    }
}

impl Settings {
    /// Checks the values; the error names the field.
    pub fn validate(&self) -> Result<(), PipelineError> {
        let bad = |m: String| Err(PipelineError::Config(m));
        self.enhance
            .validate()
            .map_err(|e| PipelineError::Config(e.to_string()))?;
        if self.crf > 51 {
            return bad(format!("crf must be 0..=51, got {}", self.crf));
        }
        if !(self.segment_secs.is_finite() && self.segment_secs > 0.0) {
            return bad(format!(
                "segment-seconds must be > 0, got {}",
                self.segment_secs
            ));
        }
        if self.window == 0 {
            return bad("window (segments in flight) must be >= 1".into());
        }
        if !(self.api_rate.is_finite() && self.api_rate > 0.0) {
            return bad(format!("api rate must be > 0, got {}", self.api_rate));
        }
        if !self.is_local() {
            idempipe_enhance::provider::HttpProvider::new(&self.provider, Default::default())
                .map_err(|e| PipelineError::Config(e.to_string()))?;
        }
        self.captions.validate()
    }

    /// Whether frames are enhanced in process.
    pub fn is_local(&self) -> bool {
        self.provider == LOCAL_PROVIDER
    }

    /// The encoder settings (one thread per encoder: segments encode in parallel).
    pub fn encode_settings(&self) -> EncodeSettings {
        EncodeSettings {
            crf: self.crf,
            preset: self.preset.clone(),
            threads: 1,
        }
    }

    /// The settings that decide the output; pacing settings (window, rate) are left out,
    /// so changing them resumes the same run.
    fn identity_json(&self) -> serde_json::Value {
        let mut identity = serde_json::json!({
            "provider": self.provider,
            "enhance": self.enhance,
            "crf": self.crf,
            "preset": self.preset,
            "on_frame_failure": self.on_frame_failure,
            "segment_secs": self.segment_secs,
        });
        // Only when on, so runs without captions keep the identity they had before
        // captions existed.
        if self.captions.enabled() {
            identity["captions"] = serde_json::json!(self.captions);
        }
        identity
    }
}

/// Everything a run's handlers need, stored as the run's `params`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunParams {
    /// The input video (canonical absolute path).
    pub input: PathBuf,
    /// Input size in bytes when the run was created.
    pub input_size: u64,
    /// Input modification time (ms since the epoch) when the run was created.
    pub input_mtime_ms: i64,
    /// The output video (absolute path).
    pub output: PathBuf,
    /// The thumbnail JPEG (absolute path).
    pub thumbnail: PathBuf,
    /// The JSON report (absolute path).
    pub report: PathBuf,
    /// Root of the artifact directory; this run's files go to `run-<uid>/` inside it.
    pub artifacts: PathBuf,
    /// Random id of the run (128 bits, hex), unique across databases and time; names
    /// its artifact directory. Empty in runs made before it existed (`run-<id>/`).
    #[serde(default)]
    pub uid: String,
    /// The user's settings.
    pub settings: Settings,
    /// Hash of input identity and output-deciding settings; equal identity = same run.
    pub identity: String,
}

impl RunParams {
    /// Parameters for `input` (already canonical) with its size and mtime.
    pub fn new(
        input: PathBuf,
        input_size: u64,
        input_mtime_ms: i64,
        output: PathBuf,
        artifacts: PathBuf,
        settings: Settings,
    ) -> Self {
        let identity = identity(&input, input_size, input_mtime_ms, &settings);
        Self {
            thumbnail: sibling(&output, "thumb.jpg"),
            report: sibling(&output, "report.json"),
            input,
            input_size,
            input_mtime_ms,
            output,
            artifacts,
            uid: super::disk::new_uid(),
            settings,
            identity,
        }
    }
}

impl RunParams {
    /// The WebVTT captions next to the output (`out.mp4` -> `out.vtt`).
    pub fn captions_vtt(&self) -> PathBuf {
        sibling(&self.output, "vtt")
    }

    /// The SubRip captions next to the output (`out.mp4` -> `out.srt`).
    pub fn captions_srt(&self) -> PathBuf {
        sibling(&self.output, "srt")
    }
}

/// `dir/stem.EXT` next to `output` (`out.mp4` -> `out.thumb.jpg`).
pub(crate) fn sibling(output: &Path, ext: &str) -> PathBuf {
    let stem = output
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    output.with_file_name(format!("{stem}.{ext}"))
}

/// FNV-1a (64-bit) over the canonical JSON of input identity and settings: stable across
/// builds and platforms, unlike `std`'s hasher.
fn identity(input: &Path, size: u64, mtime_ms: i64, settings: &Settings) -> String {
    let text = serde_json::json!({
        "input": input, "size": size, "mtime_ms": mtime_ms, "settings": settings.identity_json(),
    })
    .to_string();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_follows_output_deciding_settings_only() {
        let p = |s: Settings| {
            RunParams::new("/a.mp4".into(), 1, 2, "/o.mp4".into(), "/x".into(), s).identity
        };
        let base = p(Settings::default());
        assert_eq!(
            base,
            p(Settings {
                window: 9,
                api_rate: 3.0,
                ..Settings::default()
            })
        );
        assert_ne!(
            base,
            p(Settings {
                crf: 20,
                ..Settings::default()
            })
        );
    }

    #[test]
    fn side_files_sit_next_to_the_output() {
        let r = RunParams::new(
            "/a".into(),
            1,
            2,
            "/v/out.mp4".into(),
            "/x".into(),
            Settings::default(),
        );
        assert_eq!(r.thumbnail, Path::new("/v/out.thumb.jpg"));
        assert_eq!(r.report, Path::new("/v/out.report.json"));
    }

    #[test]
    fn validation_names_the_field() {
        let s = Settings {
            segment_secs: 0.0,
            ..Settings::default()
        };
        assert!(s.validate().unwrap_err().to_string().contains("segment"));
        let s = Settings {
            provider: "ftp://x".into(),
            ..Settings::default()
        };
        assert!(s.validate().unwrap_err().to_string().contains("ftp://x"));
        assert!("keep-original".parse::<OnFrameFailure>().is_ok());
        assert!("nope".parse::<OnFrameFailure>().is_err());
    }
}
