//! Accuracy on real recorded speech with a known transcript: the word error rate of
//! greedy decoding and of beam search on 44 s of a read audiobook, where faster-whisper
//! (same model file) makes no error.

mod support;

use idempipe_captions::mel::mel_filters;
use idempipe_captions::{TranscribeOptions, WhisperModel, default_model_dir, transcribe};
use support::{TWO_CITIES_FILE, TWO_CITIES_TEXT, audio_of, media, wer};

fn transcript(model: &mut WhisperModel, samples: &[f32], beam_size: usize) -> String {
    let filters = mel_filters(model.config.num_mel_bins);
    let options = TranscribeOptions {
        beam_size,
        ..TranscribeOptions::default()
    };
    let t = transcribe(model, &filters, samples, &options).expect("transcribes");
    let texts: Vec<&str> = t.segments.iter().map(|s| s.text.as_str()).collect();
    texts.join(" ")
}

#[test]
fn read_speech_is_transcribed_without_error_greedy_and_with_beam_search() {
    let mut model = WhisperModel::load(&default_model_dir()).unwrap_or_else(|e| panic!("{e}"));
    let samples = audio_of(&media(TWO_CITIES_FILE));
    for beam_size in [1, 5] {
        let text = transcript(&mut model, &samples, beam_size);
        let errors = wer(TWO_CITIES_TEXT, &text);
        assert!(errors == 0.0, "beam {beam_size}: WER {errors:.3}: {text}");
    }
}

/// With the voice activity detector first (`vad_filter`, as faster-whisper), the words
/// are the same and keep their times in the original audio: the reader starts at about
/// 1.2 s, after the 0.8 s the detector leaves out (speech padded by 0.4 s).
#[test]
fn read_speech_through_the_voice_activity_detector_keeps_its_words_and_times() {
    let mut model = WhisperModel::load(&default_model_dir()).unwrap_or_else(|e| panic!("{e}"));
    let filters = mel_filters(model.config.num_mel_bins);
    let samples = audio_of(&media(TWO_CITIES_FILE));
    let options = TranscribeOptions {
        beam_size: 1,
        vad_filter: true,
        ..TranscribeOptions::default()
    };
    let t = transcribe(&mut model, &filters, &samples, &options).expect("transcribes");
    let texts: Vec<&str> = t.segments.iter().map(|s| s.text.as_str()).collect();
    let errors = wer(TWO_CITIES_TEXT, &texts.join(" "));
    assert!(errors == 0.0, "WER {errors:.3}: {t:#?}");
    let first = &t.segments[0].words[0];
    assert!(
        (1.0..1.6).contains(&first.start),
        "the first word {first:?} is not where the reader starts"
    );
    let last = t.segments.last().and_then(|s| s.words.last()).unwrap();
    assert!((40.0..42.5).contains(&last.end), "{last:?}");
}
