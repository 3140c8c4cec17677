//! The model loader on the real tiny.en files: the dimensions it derives, the encoder
//! position encodings it may ignore, and clear errors for damaged or missing files.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use candle_core::{DType, Device, Tensor};
use idempipe_captions::model::ct2::{Ct2File, Dtype};
use idempipe_captions::{ModelError, WhisperModel, default_model_dir};

/// A fresh directory holding the real model's `config.json` and `vocabulary.txt`,
/// removed on drop.
struct ModelDir(PathBuf);

impl ModelDir {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "idempipe-captions-model-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["config.json", "vocabulary.txt"] {
            std::fs::copy(default_model_dir().join(name), dir.join(name)).unwrap();
        }
        Self(dir)
    }

    fn model_bin(&self) -> PathBuf {
        self.0.join("model.bin")
    }

    /// The loader's error for this directory, as displayed.
    fn error(&self) -> String {
        match WhisperModel::load(&self.0) {
            Ok(_) => panic!("{} loaded", self.0.display()),
            Err(e) => e.to_string(),
        }
    }
}

impl Drop for ModelDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn real_model_bin() -> Vec<u8> {
    std::fs::read(default_model_dir().join("model.bin"))
        .expect("the Whisper model is installed (scripts/fetch-model)")
}

/// The offset in a "truncated at byte N" message.
fn truncated_offset(message: &str) -> u64 {
    let rest = message
        .split("truncated at byte ")
        .nth(1)
        .unwrap_or_else(|| panic!("no offset in {message:?}"));
    rest.split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no offset in {message:?}"))
}

fn assert_names(message: &str, path: &Path) {
    assert!(
        message.contains(&path.display().to_string()),
        "the error does not name {}: {message}",
        path.display()
    );
}

#[test]
fn truncated_model_files_are_reported_with_the_offset() {
    let bytes = real_model_bin();
    for keep in [1 << 20, bytes.len() / 2, bytes.len() - 1] {
        let dir = ModelDir::new();
        std::fs::write(dir.model_bin(), &bytes[..keep]).unwrap();
        let message = dir.error();
        assert_names(&message, &dir.model_bin());
        assert!(
            message.contains("truncated at byte") && message.contains("incomplete"),
            "{keep} bytes: {message}"
        );
        // The offset is where the structure that ran out began: inside the file.
        let offset = truncated_offset(&message);
        assert!(offset <= keep as u64, "{keep} bytes: {message}");
    }
}

#[test]
fn files_that_are_not_ctranslate2_models_are_refused() {
    // A PNG signature and header: its first four bytes read as a huge version number.
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";
    let text = b"version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 75537502\n";
    for (what, bytes) in [("png", &png[..]), ("lfs pointer", &text[..])] {
        let dir = ModelDir::new();
        std::fs::write(dir.model_bin(), bytes).unwrap();
        let message = dir.error();
        assert_names(&message, &dir.model_bin());
        assert!(
            message.contains("binary version") && message.contains("not supported"),
            "{what}: {message}"
        );
    }
    // An empty file ends before the version.
    let dir = ModelDir::new();
    std::fs::write(dir.model_bin(), b"").unwrap();
    let message = dir.error();
    assert_names(&message, &dir.model_bin());
    assert!(
        message.contains("truncated at byte 0") && message.contains("binary version"),
        "{message}"
    );
}

#[test]
fn missing_files_are_named() {
    let dir = ModelDir::new();
    let message = dir.error();
    assert_names(&message, &dir.model_bin());
    assert!(
        message.contains("not found") && message.contains("scripts/fetch-model"),
        "{message}"
    );
    std::fs::remove_file(dir.0.join("vocabulary.txt")).unwrap();
    let message = dir.error();
    assert_names(&message, &dir.0.join("vocabulary.txt"));
    assert!(message.contains("not found"), "{message}");
    // A damaged config is named too.
    std::fs::write(dir.0.join("config.json"), b"{\"suppress_ids\": \"no\"}").unwrap();
    let message = dir.error();
    assert_names(&message, &dir.0.join("config.json"));
    assert!(message.contains("not a model config"), "{message}");
}

#[test]
fn the_real_model_loads_with_tiny_en_dimensions() {
    let model = WhisperModel::load(&default_model_dir()).unwrap();
    let c = &model.config;
    let got = (
        c.num_mel_bins,
        c.d_model,
        c.encoder_layers,
        c.decoder_layers,
        c.encoder_attention_heads,
        c.decoder_attention_heads,
        c.vocab_size,
        c.max_target_positions,
        c.max_source_positions,
    );
    assert_eq!(got, (80, 384, 4, 4, 6, 6, 51864, 448, 1500), "{c:?}");
    assert!(model.is_english_only());
    assert_eq!(model.vocab.len(), 51864);
    let sp = model.vocab.special;
    assert_eq!(
        (sp.eot, sp.sot, sp.sot_prev, sp.timestamp_begin),
        (50256, 50257, 50360, 50363),
        "{sp:?}"
    );
    assert!(
        !c.suppress_tokens.is_empty(),
        "config.json's suppress_ids are used"
    );
}

/// The encoder computes its position encodings in f32 instead of loading the file's
/// float16 table; the table must be the same sinusoids (computed here as the encoder
/// does) or ignoring it would change the model.
#[test]
fn stored_encoder_position_encodings_are_the_sinusoids_candle_computes() {
    let file = Ct2File::parse(&real_model_bin()).unwrap();
    assert_eq!(file.spec, "WhisperSpec");
    let v = file.get("encoder/position_encodings/encodings").unwrap();
    assert_eq!((v.shape.clone(), v.dtype), (vec![1500, 384], Dtype::F16));
    let stored: Vec<Vec<f32>> =
        Tensor::from_raw_buffer(&v.bytes, DType::F16, &v.shape, &Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F32))
            .and_then(|t| t.to_vec2())
            .unwrap();
    let (length, channels) = (1500, 384);
    let increment = 10000f32.ln() / (channels / 2 - 1) as f32;
    let inv: Vec<f32> = (0..channels / 2)
        .map(|i| (i as f32 * -increment).exp())
        .collect();
    let mut worst = (0.0f32, 0, 0);
    for (t, row) in stored.iter().enumerate().take(length) {
        for (j, &s) in row.iter().enumerate() {
            let scaled = t as f32 * inv[j % (channels / 2)];
            let expected = if j < channels / 2 {
                scaled.sin()
            } else {
                scaled.cos()
            };
            let diff = (s - expected).abs();
            if diff > worst.0 {
                worst = (diff, t, j);
            }
        }
    }
    assert!(
        worst.0 < 1e-3,
        "position {} channel {} differs by {}",
        worst.1,
        worst.2,
        worst.0
    );
    // Not a table of zeros or a constant that would match by accident.
    assert!((stored[1][0] - 1f32.sin()).abs() < 1e-3 && (stored[0][200] - 1.0).abs() < 1e-3);
}

#[test]
fn loader_errors_are_typed() {
    let dir = ModelDir::new();
    std::fs::write(dir.model_bin(), &real_model_bin()[..4096]).unwrap();
    match WhisperModel::load(&dir.0) {
        Err(ModelError::InFile { path, source }) => {
            assert_eq!(path, dir.model_bin());
            assert!(
                matches!(*source, ModelError::Truncated { .. }),
                "{source:?}"
            );
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    let empty = ModelDir::new();
    std::fs::remove_file(empty.0.join("config.json")).unwrap();
    assert!(matches!(
        WhisperModel::load(&empty.0),
        Err(ModelError::Missing { path }) if path == empty.0.join("config.json")
    ));
}
