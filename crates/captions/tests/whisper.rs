//! Whisper tiny.en on real speech: the CTranslate2 loader, decoding and timestamps.

mod support;

use idempipe_captions::{LocalTranscriber, TranscribeOptions, Transcriber, default_model_dir};
use support::{audio_of, media, wer};

const BECKETT: &str = "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better.";

#[tokio::test(flavor = "multi_thread")]
async fn transcribes_the_sample_speech() {
    let model = LocalTranscriber::load(&default_model_dir(), TranscribeOptions::default()).unwrap();
    let samples = audio_of(&media("bikes-speech.mp4"));
    let started = std::time::Instant::now();
    let t = model.transcribe(samples.clone(), "k").await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    let text: Vec<&str> = t.segments.iter().map(|s| s.text.as_str()).collect();
    let text = text.join(" ");
    eprintln!(
        "{:#?}\nin {secs:.2}s for {:.1}s of audio",
        t,
        samples.len() as f64 / 16000.0
    );
    let rate = wer(BECKETT, &text);
    assert!(rate <= 0.10, "WER {rate:.2}: {text:?}");
}
