//! The captions part of a run's settings: who transcribes, with which model, in which
//! language.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::PipelineError;

/// The captions provider value that turns captions off.
pub const CAPTIONS_OFF: &str = "off";

/// The captions provider value that runs Whisper in process.
pub const CAPTIONS_LOCAL: &str = "local";

/// How a run gets its captions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaptionSettings {
    /// `off`, `local` (Whisper in process), or the base URL of a service with the
    /// OpenAI-compatible `POST /v1/audio/transcriptions`.
    pub provider: String,
    /// The local model's directory (faster-whisper format).
    pub model_dir: PathBuf,
    /// Spoken language, as an ISO 639-1 code (`en`). English-only models ignore it.
    pub language: String,
    /// The `model` field sent to a transcription service.
    pub api_model: String,
    /// Beam search width of the local model (1: greedy).
    #[serde(default = "default_beam_size")]
    pub beam_size: usize,
}

/// faster-whisper's default beam width.
fn default_beam_size() -> usize {
    5
}

/// The widest beam accepted (wider only costs time).
const MAX_BEAM_SIZE: usize = 16;

impl Default for CaptionSettings {
    fn default() -> Self {
        Self {
            provider: CAPTIONS_OFF.into(),
            model_dir: idempipe_captions::default_model_dir(),
            language: "en".into(),
            api_model: "whisper-1".into(),
            beam_size: default_beam_size(),
        }
    }
}

impl CaptionSettings {
    /// Whether the run makes captions at all.
    pub fn enabled(&self) -> bool {
        self.provider != CAPTIONS_OFF
    }

    /// Whether Whisper runs in process.
    pub fn is_local(&self) -> bool {
        self.provider == CAPTIONS_LOCAL
    }

    /// Checks the values; the error names the setting. A local model must be installed.
    pub fn validate(&self) -> Result<(), PipelineError> {
        let bad = |m: String| Err(PipelineError::Config(m));
        let lang = &self.language;
        let code = (2..=3).contains(&lang.len()) && lang.chars().all(|c| c.is_ascii_lowercase());
        if !code && lang != idempipe_captions::AUTO_LANGUAGE {
            return bad(format!(
                "--captions-language {lang:?}: must be an ISO 639-1 code such as en or de, \
                 or auto"
            ));
        }
        if !(1..=MAX_BEAM_SIZE).contains(&self.beam_size) {
            return bad(format!(
                "--captions-beam {}: must be 1 (greedy) to {MAX_BEAM_SIZE}",
                self.beam_size
            ));
        }
        match self.provider.as_str() {
            CAPTIONS_OFF => Ok(()),
            CAPTIONS_LOCAL => model_installed(&self.model_dir),
            url => idempipe_captions::HttpTranscriber::endpoint_of(url)
                .map(|_| ())
                .map_err(|e| {
                    PipelineError::Config(format!("--captions: {e} (or use off, auto or local)"))
                }),
        }
    }

    /// The subtitle track's language tag (ISO 639-2), `und` when unknown (or `auto`).
    pub fn track_language(&self) -> &'static str {
        iso_639_2(&self.language)
    }
}

/// Whether `dir` holds a model, with the fix in the error.
pub fn model_installed(dir: &Path) -> Result<(), PipelineError> {
    let bin = dir.join("model.bin");
    if bin.is_file() {
        return Ok(());
    }
    Err(PipelineError::Config(format!(
        "captions: no Whisper model at {} (run scripts/fetch-model to install Whisper tiny.en \
         there, pass --whisper-model DIR, or use --captions off)",
        bin.display()
    )))
}

/// ISO 639-1 to 639-2 for the languages Whisper knows best; `und` otherwise.
pub fn iso_639_2(code: &str) -> &'static str {
    match code {
        "en" => "eng",
        "de" => "ger",
        "fr" => "fre",
        "es" => "spa",
        "it" => "ita",
        "pt" => "por",
        "nl" => "dut",
        "ru" => "rus",
        "zh" => "chi",
        "ja" => "jpn",
        "ko" => "kor",
        "pl" => "pol",
        "tr" => "tur",
        "sv" => "swe",
        "uk" => "ukr",
        "ar" => "ara",
        "hi" => "hin",
        _ => "und",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_problem() {
        let s = |provider: &str, language: &str| CaptionSettings {
            provider: provider.into(),
            language: language.into(),
            model_dir: "/nonexistent/model".into(),
            ..CaptionSettings::default()
        };
        assert!(s("off", "en").validate().is_ok());
        let e = s("local", "en").validate().unwrap_err().to_string();
        assert!(
            e.contains("/nonexistent/model/model.bin") && e.contains("fetch-model"),
            "{e}"
        );
        let e = s("ftp://x", "en").validate().unwrap_err().to_string();
        assert!(e.contains("ftp://x"), "{e}");
        assert!(s("http://127.0.0.1:9", "en").validate().is_ok());
        let e = s("off", "English").validate().unwrap_err().to_string();
        assert!(e.contains("English"), "{e}");
        let wide = CaptionSettings {
            beam_size: 0,
            ..s("off", "en")
        };
        let e = wide.validate().unwrap_err().to_string();
        assert!(e.contains("--captions-beam 0"), "{e}");
        assert_eq!(s("off", "en").track_language(), "eng");
        assert_eq!(s("off", "xx").track_language(), "und");
        assert!(s("off", "auto").validate().is_ok());
    }
}
