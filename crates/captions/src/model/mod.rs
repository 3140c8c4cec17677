//! The Whisper model: loading CTranslate2 (faster-whisper) weights onto candle.
//!
//! A model directory holds `model.bin` (CTranslate2 binary version 6), `config.json`
//! (token suppression lists) and `vocabulary.txt` (one byte-level BPE token per line).
//! It has no mel filters: [`crate::mel`] computes them.

pub mod ct2;
pub mod decoder;
mod dense;
pub mod encoder;
mod gelu;
mod inplace;
mod matrix;
mod norm;
mod simd;
pub(crate) mod softmax;
mod vocab;
mod weights;

use std::path::{Path, PathBuf};

use candle_transformers::models::whisper::Config;
use serde::Deserialize;

pub use decoder::{DecoderCache, TextDecoder};
pub use encoder::AudioEncoder;
pub use vocab::{SpecialTokens, Vocabulary};

/// Environment variable naming the model directory (overrides the default location).
pub const MODEL_DIR_ENV: &str = "IDEMPIPE_WHISPER_MODEL";

/// Name of the default model's directory under the cache directory.
pub const DEFAULT_MODEL_NAME: &str = "whisper-tiny.en";

/// A model that cannot be loaded, with the file and the problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A file of the model directory does not exist.
    #[error(
        "{} not found: the Whisper model is not installed there (run scripts/fetch-model, \
         or point --whisper-model / {MODEL_DIR_ENV} at a faster-whisper model directory)",
        path.display()
    )]
    Missing {
        /// The missing file.
        path: PathBuf,
    },
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file ends before a structure it announced.
    #[error(
        "truncated at byte {offset} while reading the {what}: the file is incomplete (download it again)"
    )]
    Truncated {
        /// Where the structure that could not be read completely starts.
        offset: u64,
        /// What was being read.
        what: String,
    },
    /// The content is not what a Whisper model holds.
    #[error("{0}")]
    Format(String),
    /// A problem found in one file of the model.
    #[error("{}: {source}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// The problem.
        source: Box<ModelError>,
    },
    /// candle refused a tensor operation while building the model.
    #[error("building the model failed: {0}")]
    Tensor(#[from] candle_core::Error),
}

/// The directory the model is looked for in when none is given: `$IDEMPIPE_WHISPER_MODEL`,
/// else `$XDG_CACHE_HOME/idempipe/models/whisper-tiny.en`, else
/// `~/.cache/idempipe/models/whisper-tiny.en`.
pub fn default_model_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(MODEL_DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache
        .join("idempipe")
        .join("models")
        .join(DEFAULT_MODEL_NAME)
}

/// The parts of `config.json` decoding uses.
#[derive(Debug, Clone, Default, Deserialize)]
struct ModelConfig {
    /// Tokens never sampled (non-speech symbols, most special tokens).
    #[serde(default)]
    suppress_ids: Vec<u32>,
    /// Tokens not sampled first (a blank, end of text).
    #[serde(default)]
    suppress_ids_begin: Vec<u32>,
    /// Cross-attention heads (layer, head) that follow the speech in time.
    #[serde(default)]
    alignment_heads: Vec<(usize, usize)>,
    /// Token ids of the languages (multilingual models).
    #[serde(default)]
    lang_ids: Vec<u32>,
}

/// A loaded Whisper model: network, vocabulary and decoding configuration. Cheap to
/// clone (tensors are shared); each clone has its own attention cache.
#[derive(Debug, Clone)]
pub struct WhisperModel {
    /// The audio encoder.
    pub encoder: AudioEncoder,
    /// The text decoder with its key/value cache.
    pub decoder: TextDecoder,
    /// Cross-attention heads (layer, head) whose weights align tokens with audio
    /// frames (from `config.json`, else the upper half of the layers).
    pub alignment_heads: Vec<(usize, usize)>,
    /// Its dimensions.
    pub config: Config,
    /// Token texts and special tokens.
    pub vocab: Vocabulary,
    /// Tokens suppressed at the first sampled position.
    pub suppress_begin: Vec<u32>,
    /// The languages a multilingual model knows: token id and code (`de`); empty for
    /// English-only models.
    pub languages: Vec<(u32, String)>,
}

impl WhisperModel {
    /// Loads the model in `dir`. Every error names the file at fault.
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let in_file = |path: &Path| {
            let path = path.to_path_buf();
            move |e: ModelError| match e {
                e @ (ModelError::Missing { .. } | ModelError::Io { .. }) => e,
                e => ModelError::InFile {
                    path: path.clone(),
                    source: Box::new(e),
                },
            }
        };
        let config_path = dir.join("config.json");
        let config: ModelConfig = serde_json::from_slice(&read(&config_path)?).map_err(|e| {
            in_file(&config_path)(ModelError::Format(format!("not a model config: {e}")))
        })?;
        let vocab_path = dir.join("vocabulary.txt");
        let vocab = Vocabulary::parse(&String::from_utf8_lossy(&read(&vocab_path)?))
            .map_err(in_file(&vocab_path))?;
        let model_path = dir.join("model.bin");
        let bytes = read(&model_path)?;
        let (encoder, decoder, whisper_config) = (|| {
            let file = ct2::Ct2File::parse(&bytes)?;
            drop(bytes);
            let cfg = weights::config(&file, config.suppress_ids.clone())?;
            let encoder =
                AudioEncoder::load(&file, cfg.encoder_layers, cfg.encoder_attention_heads)?;
            let decoder =
                TextDecoder::load(&file, cfg.decoder_layers, cfg.decoder_attention_heads)?;
            drop(file);
            if cfg.vocab_size != vocab.len() {
                return Err(ModelError::Format(format!(
                    "the model has {} token embeddings but vocabulary.txt lists {} tokens",
                    cfg.vocab_size,
                    vocab.len()
                )));
            }
            Ok((encoder, decoder, cfg))
        })()
        .map_err(in_file(&model_path))?;
        let (layers, heads) = (
            whisper_config.decoder_layers,
            whisper_config.decoder_attention_heads,
        );
        let mut alignment_heads: Vec<(usize, usize)> = config
            .alignment_heads
            .into_iter()
            .filter(|&(l, h)| l < layers && h < heads)
            .collect();
        if alignment_heads.is_empty() {
            // Without a list, every head of the upper half of the layers (as the
            // reference does).
            alignment_heads = (layers / 2..layers)
                .flat_map(|l| (0..heads).map(move |h| (l, h)))
                .collect();
        }
        let languages = config
            .lang_ids
            .iter()
            .filter_map(|&id| {
                let token = vocab.token(id)?;
                let code = token.strip_prefix("<|")?.strip_suffix("|>")?;
                Some((id, code.to_string()))
            })
            .collect();
        Ok(Self {
            encoder,
            decoder,
            alignment_heads,
            languages,
            config: whisper_config,
            vocab,
            suppress_begin: config.suppress_ids_begin,
        })
    }

    /// Whether the model transcribes English only (`.en` models have no language or
    /// task tokens in their start sequence).
    pub fn is_english_only(&self) -> bool {
        // Multilingual vocabularies have one more token (`<|nospeech|>` era) or more.
        self.config.vocab_size < 51865 || self.languages.is_empty()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, ModelError> {
    std::fs::read(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => ModelError::Missing {
            path: path.to_path_buf(),
        },
        _ => ModelError::Io {
            path: path.to_path_buf(),
            source,
        },
    })
}
