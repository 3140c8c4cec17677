//! The multilingual model (Whisper base, `scripts/fetch-model --model base`): the
//! language is detected from the speech when asked for `auto`, and speech in German,
//! French and Spanish is transcribed in its own language.

mod support;

use std::path::PathBuf;

use idempipe_captions::mel::mel_filters;
use idempipe_captions::{AUTO_LANGUAGE, TranscribeOptions, WhisperModel, transcribe};
use support::{spoken, wer};

/// Where `scripts/fetch-model --model base` puts the model.
fn base_model_dir() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"));
    cache.join("idempipe/models/whisper-base")
}

/// Most word errors allowed. Whisper base hears espeak-ng's synthetic French and German
/// poorly (faster-whisper with the same model makes as many errors: "du parfum à la
/// bourgeoisie"); speech transcribed in a wrong language, or translated, scores near 1.
const MAX_WER: f64 = 0.6;

/// espeak-ng voice, expected language code, and the text spoken.
const SPEECH: &[(&str, &str, &str)] = &[
    (
        "de",
        "de",
        "Heute morgen habe ich frisches Brot beim Bäcker gekauft. Danach bin ich mit dem Fahrrad zur Arbeit gefahren.",
    ),
    (
        "fr",
        "fr",
        "Ce matin, j'ai acheté du pain frais à la boulangerie. Ensuite, je suis allé au travail à vélo.",
    ),
    (
        "es",
        "es",
        "Esta mañana compré pan fresco en la panadería. Después fui al trabajo en bicicleta.",
    ),
    (
        "en-us",
        "en",
        "This morning I bought fresh bread at the bakery. Then I rode my bicycle to work.",
    ),
];

#[test]
fn the_language_is_detected_and_each_is_transcribed_in_its_own() {
    let dir = base_model_dir();
    let mut model = WhisperModel::load(&dir)
        .unwrap_or_else(|e| panic!("{e} (scripts/fetch-model --model base installs Whisper base)"));
    assert!(!model.is_english_only(), "Whisper base is multilingual");
    let filters = mel_filters(model.config.num_mel_bins);
    let options = TranscribeOptions {
        language: AUTO_LANGUAGE.into(),
        ..TranscribeOptions::default()
    };
    let mut failures = Vec::new();
    for &(voice, code, text) in SPEECH {
        let mut samples = vec![0.0; 8000];
        samples.extend(spoken(voice, text));
        samples.extend(vec![0.0; 8000]);
        let t = transcribe(&mut model, &filters, &samples, &options).expect("transcribes");
        let heard: Vec<&str> = t.segments.iter().map(|s| s.text.as_str()).collect();
        let heard = heard.join(" ");
        let rate = wer(text, &heard);
        if t.language.as_deref() != Some(code) || rate > MAX_WER {
            failures.push(format!(
                "{voice}: language {:?}, WER {rate:.2}: {heard:?}",
                t.language
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
