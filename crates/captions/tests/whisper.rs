//! Whisper tiny.en on real speech: the CTranslate2 loader, decoding and timestamps, the
//! seek loop across 30 s passes, windows around the detected speech, and what silence
//! and noise give.

mod support;

use idempipe_captions::{
    LocalTranscriber, TranscribeOptions, Transcriber, WindowOptions, default_model_dir,
    speech_windows,
};
use support::{
    RATE, SENTENCES, cue_text, media, misplaced_cues, pipeline_cues, sentence_coverage,
    sound_regions, speak, wer,
};

const BECKETT: &str = "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better.";

fn model() -> LocalTranscriber {
    LocalTranscriber::load(&default_model_dir(), TranscribeOptions::default())
        .expect("the Whisper model is installed (scripts/fetch-model)")
}

#[tokio::test(flavor = "multi_thread")]
async fn transcribes_the_sample_speech() {
    let model = model();
    let samples = support::audio_of(&media("bikes-speech.mp4"));
    let t = model.transcribe(samples, "k").await.unwrap();
    let text: Vec<&str> = t.segments.iter().map(|s| s.text.as_str()).collect();
    let text = text.join(" ");
    let rate = wer(BECKETT, &text);
    assert!(rate <= 0.10, "WER {rate:.2} against {BECKETT:?}: {t:#?}");
    assert_eq!(t.passes, 1, "10 s of audio is one pass: {t:#?}");
}

/// The pipeline's cues for the sample speech are where its sound is: every cue overlaps
/// sound and lies within 1 s of it, and every phrase of the recording has a cue. The
/// sound is found from the loudness of the samples, not from Whisper.
#[tokio::test(flavor = "multi_thread")]
async fn cues_of_the_sample_speech_lie_on_its_sound() {
    let model = model();
    let samples = support::audio_of(&media("bikes-speech.mp4"));
    let secs = samples.len() as f64 / RATE as f64;
    let regions = sound_regions(&samples, 25.0);
    // The detector must see the recording's phrases apart, or the check below is void.
    let sounding: f64 = regions.iter().map(|r| r.1 - r.0).sum();
    assert!(
        regions.len() >= 3 && sounding < 0.9 * secs,
        "sound regions {regions:.2?} of {secs:.2} s"
    );
    let (windows, cues) = pipeline_cues(&model, &samples).await;
    assert!(
        !windows.is_empty() && !cues.is_empty(),
        "{windows:?} {cues:#?}"
    );
    let bad = misplaced_cues(&cues, &regions, 1.0);
    assert!(
        bad.is_empty(),
        "{bad:#?}\nsound: {regions:.2?}\ncues: {cues:#?}"
    );
    for r in regions.iter().filter(|r| r.1 - r.0 >= 0.3) {
        assert!(
            cues.iter().any(|c| c.start < r.1 && c.end > r.0),
            "the sound at {:.2}-{:.2} s has no cue: {cues:#?}",
            r.0,
            r.1
        );
    }
    let text = cue_text(&cues);
    let rate = wer(BECKETT, &text);
    assert!(rate <= 0.10, "WER {rate:.2} of the cues: {text:?}");
}

/// Checks one transcription of the synthesized sentences: WER, every sentence at least a
/// third there (a sentence dropped at a boundary scores nothing), the `strict` ones
/// (first, last, next to a boundary) at least half there, and every cue within
/// `tolerance` seconds of the sentences it overlaps.
fn check_long(
    what: &str,
    cues: &[idempipe_captions::Cue],
    spans: &[(f64, f64)],
    strict: &[usize],
    tolerance: f64,
) {
    let text = cue_text(cues);
    let rate = wer(&SENTENCES.join(" "), &text);
    assert!(rate <= 0.20, "{what}: WER {rate:.3}: {text:?}");
    let coverage = sentence_coverage(SENTENCES, &text);
    for (i, &c) in coverage.iter().enumerate() {
        let need = if strict.contains(&i) { 0.5 } else { 1.0 / 3.0 };
        assert!(
            c >= need,
            "{what} (WER {rate:.3}): only {:.0}% of sentence {i} {:?} ({:.2}-{:.2} s) is in \
             the transcript (need {:.0}%; boundary sentences {strict:?}): {text:?}",
            c * 100.0,
            SENTENCES[i],
            spans[i].0,
            spans[i].1,
            need * 100.0
        );
    }
    let bad = misplaced_cues(cues, spans, tolerance);
    assert!(
        bad.is_empty(),
        "{what}: {bad:#?}\nsentences at {spans:.2?}\ncues: {cues:#?}"
    );
}

/// Over a minute of synthesized speech, transcribed as the pipeline does (windows cut at
/// pauses, each transcribed alone) and in one call (the seek loop runs three 30 s passes,
/// the first ending inside a sentence): no sentence is lost at a window cut or a pass
/// boundary, and the timestamps stay on the sentences.
#[tokio::test(flavor = "multi_thread")]
async fn long_speech_loses_no_words_at_window_and_pass_boundaries() {
    let model = model();
    // 1.5 s of silence first: the first window does not start at 0, and the eighth
    // sentence straddles 30 s by more than a second on either side.
    let speech = speak(1.5, SENTENCES);
    let secs = speech.secs();
    assert!(secs > 60.0, "only {secs:.1} s of speech");
    let spans = &speech.spans;
    // Sentences whose sound is within 1 s of time `t`.
    let near = |t: f64| -> Vec<usize> {
        (0..spans.len())
            .filter(|&i| spans[i].0 - 1.0 <= t && t <= spans[i].1 + 1.0)
            .collect()
    };
    let last = SENTENCES.len() - 1;

    let (windows, cues) = pipeline_cues(&model, &speech.samples).await;
    assert!(
        windows.len() >= 3,
        "over a minute of speech needs at least 3 windows: {windows:?}"
    );
    let mut strict = vec![0, last];
    for w in &windows[1..] {
        strict.extend(near(w.start_secs()));
    }
    check_long("windowed", &cues, spans, &strict, 1.0);

    let whole = model
        .transcribe(speech.samples.clone(), "whole")
        .await
        .unwrap();
    assert!(whole.passes >= 3, "{} s in {} passes", secs, whole.passes);
    // The first pass ends at 30 s inside a sentence: the seek loop must resume at that
    // sentence's start rather than cut it.
    let straddling: Vec<usize> = (0..spans.len())
        .filter(|&i| spans[i].0 < 29.0 && spans[i].1 > 31.0)
        .collect();
    assert_eq!(
        straddling.len(),
        1,
        "one sentence should straddle 30 s: {spans:.2?}"
    );
    let mut strict = vec![0, last];
    strict.extend(near(30.0));
    let whole_cues = idempipe_captions::cues_from(&[(0.0, whole.segments.clone())]);
    // Over the leading silence tiny.en opens the first segment at 0.00, 1.5 s before
    // the speech (the decoder allows a first timestamp up to 1 s; the model prefers
    // 0.00). Windows start 0.2 s before the sound, so the pipeline's cues are not
    // affected; the whole call is held to 2 s, which still catches a pass misplaced in
    // time.
    check_long("whole", &whole_cues, spans, &strict, 2.0);
}

/// Audio without speech gives no captions: the voice activity detector finds no speech
/// in digital silence or in steady white noise at -45 dBFS, so neither becomes a window
/// and Whisper never hears them. That matters: given 5 s of zeros directly, tiny.en
/// answers "you" (0.00-2.06 s), and the no-speech check (no-speech probability above 0.6
/// and average log-probability below -1) does not drop it. Given the noise directly,
/// the no-speech check is what keeps it out.
#[tokio::test(flavor = "multi_thread")]
async fn silence_and_noise_give_no_captions() {
    let model = model();
    let silence = vec![0.0f32; 5 * RATE];
    assert!(
        speech_windows(&silence, &WindowOptions::default())
            .unwrap()
            .is_empty()
    );
    let (_, cues) = pipeline_cues(&model, &silence).await;
    assert!(cues.is_empty(), "{cues:#?}");

    // Deterministic uniform white noise of amplitude 0.01 (RMS about -45 dBFS).
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let noise: Vec<f32> = (0..5 * RATE)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32 * 0.01
        })
        .collect();
    let t = model.transcribe(noise.clone(), "noise").await.unwrap();
    assert!(
        t.segments.is_empty() && t.passes >= 1 && t.no_speech_passes == t.passes,
        "noise transcribed as speech: {t:#?}"
    );
    let (windows, cues) = pipeline_cues(&model, &noise).await;
    assert!(
        windows.is_empty() && cues.is_empty(),
        "{windows:?} {cues:#?}"
    );
}

/// Music and animal calls without speech (the Big Buck Bunny excerpt). Given to Whisper
/// directly, no temperature gives a confident transcript, so every fallback temperature
/// is tried and what is kept is at most a stray word (tiny.en's no-speech probability
/// there is 0.56, under the reference's 0.6). The voice activity detector hears no
/// speech in it (its probability stays under 0.82, never reaching the 0.9 a segment
/// needs), so the pipeline makes no window and no cue, and neither does `transcribe`
/// with `vad_filter`.
#[tokio::test(flavor = "multi_thread")]
async fn music_without_speech_gives_no_window_and_no_cue() {
    let model = model();
    let samples = support::audio_of(&media("bigbuckbunny.mp4"));
    let t = model.transcribe(samples.clone(), "k").await.unwrap();
    assert_eq!((t.passes, t.fallbacks), (1, 5), "{t:#?}");
    let words: usize = t
        .segments
        .iter()
        .map(|s| s.text.split_whitespace().count())
        .sum();
    assert!(words <= 2, "{t:#?}");

    let (windows, cues) = pipeline_cues(&model, &samples).await;
    assert!(
        windows.is_empty() && cues.is_empty(),
        "{windows:?} {cues:#?}"
    );

    let filtered = LocalTranscriber::load(
        &default_model_dir(),
        TranscribeOptions {
            vad_filter: true,
            ..TranscribeOptions::default()
        },
    )
    .expect("the Whisper model is installed (scripts/fetch-model)");
    let t = filtered.transcribe(samples, "k").await.unwrap();
    assert!(t.segments.is_empty() && t.passes == 0, "{t:#?}");
    assert_eq!(t.language.as_deref(), Some("en"));
}
