//! What the user chooses ([`Settings`]) and what a run stores ([`RunParams`]).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use idempipe_enhance::EnhanceParams;
use serde::{Deserialize, Serialize};

use super::caption_settings::CaptionSettings;
use super::error::PipelineError;
use crate::media::{EncodeSettings, X264_PRESETS};

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

/// Slowest accepted `--api-rate`: the engine's limiter never throttles below 0.1
/// calls per second, so a lower ceiling is a configuration it refuses.
pub const MIN_API_RATE: f64 = 0.1;

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
    /// Checks every value before any work; the error names the flag, the value and what
    /// is accepted.
    pub fn validate(&self) -> Result<(), PipelineError> {
        let bad = |m: String| Err(PipelineError::Config(m));
        if let Err(e) = self.enhance.validate() {
            return bad(format!(
                "--{} {}: must be a number from 0 (off) to {} (1 is standard)",
                e.name,
                e.value,
                idempipe_enhance::params::MAX_STRENGTH
            ));
        }
        self.validate_changeable()?;
        if !(self.segment_secs.is_finite() && self.segment_secs > 0.0) {
            return bad(format!(
                "--segment-seconds {}: must be a number > 0, e.g. 2",
                self.segment_secs
            ));
        }
        if self.window == 0 {
            return bad("--segments-in-flight 0: must be >= 1".into());
        }
        self.captions.validate()
    }

    /// Checks the settings that may change on an existing run (preset, crf, API, API
    /// rate); the error names the flag.
    pub fn validate_changeable(&self) -> Result<(), PipelineError> {
        let bad = |m: String| Err(PipelineError::Config(m));
        validate_preset(&self.preset)?;
        if self.crf > 51 {
            return bad(format!(
                "--crf {}: must be 0..=51 (0 lossless, 18 near-transparent, lower is better)",
                self.crf
            ));
        }
        if !(self.api_rate.is_finite() && self.api_rate >= MIN_API_RATE) {
            return bad(format!(
                "--api-rate {}: must be a number of calls per second >= {MIN_API_RATE}, e.g. 50",
                self.api_rate
            ));
        }
        if !self.is_local() {
            idempipe_enhance::provider::HttpProvider::new(&self.provider, Default::default())
                .map_err(|e| PipelineError::Config(format!("--api: {e}")))?;
        }
        Ok(())
    }

    /// Whether frames are enhanced in process.
    pub fn is_local(&self) -> bool {
        self.provider == LOCAL_PROVIDER
    }

    /// The encoder settings (one thread; each segment's encode sets its own count).
    pub fn encode_settings(&self) -> EncodeSettings {
        EncodeSettings {
            crf: self.crf,
            preset: self.preset.clone(),
            threads: 1,
        }
    }

    /// The settings that decide the enhanced frames and the segmentation. The encoder
    /// settings (preset, crf) and the API's address and rate are left out: they can
    /// change on an existing run without enhancing a frame again (see
    /// [`changes_from`](Self::changes_from)), and pacing settings (window) resume the run.
    fn identity_json(&self) -> serde_json::Value {
        let mut identity = serde_json::json!({
            "enhance": self.enhance,
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

    /// The identity of runs created before the provider, crf and preset could change
    /// (they were part of it then); such runs still resume.
    fn legacy_identity_json(&self) -> serde_json::Value {
        let mut identity = self.identity_json();
        identity["provider"] = serde_json::json!(self.provider);
        identity["crf"] = serde_json::json!(self.crf);
        identity["preset"] = serde_json::json!(self.preset);
        identity
    }

    /// The settings that may change on an existing run and differ between `old` (the
    /// run's) and `self` (the new ones), in flag order.
    pub fn changes_from(&self, old: &Settings) -> Vec<SettingChange> {
        let mut changes = Vec::new();
        let mut add = |flag: &'static str, old: String, new: String| {
            if old != new {
                changes.push(SettingChange { flag, old, new });
            }
        };
        add("api", old.provider.clone(), self.provider.clone());
        add(
            "api-rate",
            old.api_rate.to_string(),
            self.api_rate.to_string(),
        );
        add("preset", old.preset.clone(), self.preset.clone());
        add("crf", old.crf.to_string(), self.crf.to_string());
        changes
    }

    /// `self` with the changeable settings (API, API rate, preset, crf) of `new`.
    pub fn with_changeable_of(&self, new: &Settings) -> Settings {
        Settings {
            provider: new.provider.clone(),
            api_rate: new.api_rate,
            preset: new.preset.clone(),
            crf: new.crf,
            ..self.clone()
        }
    }
}

/// Checks a libx264 preset name exactly (libx264 is case-sensitive); a near miss gets a
/// hint.
pub fn validate_preset(preset: &str) -> Result<(), PipelineError> {
    if X264_PRESETS.contains(&preset) {
        return Ok(());
    }
    let lower = preset.trim().to_ascii_lowercase();
    let hint = if X264_PRESETS.contains(&lower.as_str()) {
        format!(" (did you mean {lower}?)")
    } else {
        String::new()
    };
    Err(PipelineError::Config(format!(
        "--preset {preset:?} is not a libx264 preset{hint}; use one of {}",
        X264_PRESETS.join(", ")
    )))
}

/// One setting changed on an existing run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingChange {
    /// The flag's name without dashes (`preset`, `crf`, `api`, `api-rate`).
    pub flag: &'static str,
    /// The run's value.
    pub old: String,
    /// The new value.
    pub new: String,
}

impl std::fmt::Display for SettingChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} -> {}", self.flag, self.old, self.new)
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
        let identity = identity(
            &input,
            input_size,
            input_mtime_ms,
            &settings.identity_json(),
        );
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
    /// The identity of these parameters as they are now (after a settings change).
    pub fn current_identity(&self) -> String {
        identity(
            &self.input,
            self.input_size,
            self.input_mtime_ms,
            &self.settings.identity_json(),
        )
    }

    /// Whether a run stored with `stored_identity` and `stored_settings` is the run for
    /// these parameters: the same input and frame-deciding settings. Runs created before
    /// the encoder settings and the API could change are recognised by their old
    /// identity, computed with their own values of those settings.
    pub fn same_run_as(&self, stored_identity: &str, stored_settings: &Settings) -> bool {
        if stored_identity == self.identity {
            return true;
        }
        let legacy = self.settings.with_changeable_of(stored_settings);
        let text = identity(
            &self.input,
            self.input_size,
            self.input_mtime_ms,
            &legacy.legacy_identity_json(),
        );
        stored_identity == text
    }

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
fn identity(input: &Path, size: u64, mtime_ms: i64, settings: &serde_json::Value) -> String {
    let text = serde_json::json!({
        "input": input, "size": size, "mtime_ms": mtime_ms, "settings": settings,
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
        // Encoder settings and the API can change on an existing run.
        assert_eq!(
            base,
            p(Settings {
                crf: 20,
                preset: "slow".into(),
                provider: "http://b:1".into(),
                ..Settings::default()
            })
        );
        assert_ne!(
            base,
            p(Settings {
                segment_secs: 3.0,
                ..Settings::default()
            })
        );
    }

    #[test]
    fn runs_stored_with_the_old_identity_are_recognised() {
        let stored = Settings {
            crf: 22,
            preset: "slow".into(),
            provider: "http://a:1".into(),
            ..Settings::default()
        };
        // The identity such a run was stored with (provider, crf and preset in it).
        let old = identity(Path::new("/a.mp4"), 1, 2, &stored.legacy_identity_json());
        let asked = RunParams::new(
            "/a.mp4".into(),
            1,
            2,
            "/o.mp4".into(),
            "/x".into(),
            Settings {
                provider: "http://b:1".into(),
                ..Settings::default()
            },
        );
        assert_ne!(old, asked.identity);
        assert!(asked.same_run_as(&old, &stored));
        let other_frames = Settings {
            segment_secs: 5.0,
            ..stored.clone()
        };
        assert!(!asked.same_run_as(
            &identity(
                Path::new("/a.mp4"),
                1,
                2,
                &other_frames.legacy_identity_json()
            ),
            &other_frames
        ));
    }

    #[test]
    fn changes_list_the_changeable_settings_only() {
        let old = Settings::default();
        let new = Settings {
            preset: "slow".into(),
            provider: "http://b:1".into(),
            window: 9,
            ..Settings::default()
        };
        let changes: Vec<String> = new
            .changes_from(&old)
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(
            changes,
            ["api local -> http://b:1", "preset medium -> slow"]
        );
        let merged = old.with_changeable_of(&new);
        assert_eq!(merged.preset, "slow");
        assert_eq!(merged.window, old.window);
    }

    #[test]
    fn presets_are_checked_exactly_with_a_hint() {
        assert!(validate_preset("veryslow").is_ok());
        let e = validate_preset("Medium").unwrap_err().to_string();
        assert!(
            e.contains("--preset") && e.contains("did you mean medium?"),
            "{e}"
        );
        let e = validate_preset("bogus").unwrap_err().to_string();
        assert!(
            e.contains("ultrafast") && !e.contains("did you mean"),
            "{e}"
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
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("--segment-seconds 0")
        );
        for (s, flag) in [
            (
                Settings {
                    crf: 99,
                    ..Settings::default()
                },
                "--crf 99",
            ),
            (
                Settings {
                    api_rate: 0.0,
                    ..Settings::default()
                },
                "--api-rate 0",
            ),
            (
                Settings {
                    window: 0,
                    ..Settings::default()
                },
                "--segments-in-flight 0",
            ),
            (
                Settings {
                    preset: "Medium".into(),
                    ..Settings::default()
                },
                "--preset",
            ),
        ] {
            let e = s.validate().unwrap_err().to_string();
            assert!(e.contains(flag), "{e}");
        }
        let s = Settings {
            provider: "ftp://x".into(),
            ..Settings::default()
        };
        assert!(s.validate().unwrap_err().to_string().contains("ftp://x"));
        assert!("keep-original".parse::<OnFrameFailure>().is_ok());
        assert!("nope".parse::<OnFrameFailure>().is_err());
    }
}
