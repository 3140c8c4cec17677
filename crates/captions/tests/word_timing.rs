//! Subtitle-grade cues from word timestamps, on speech whose word onsets are known:
//! words spoken one by one with known silences between them, phrases apart by longer
//! pauses. Every cue must start within 0.2 s of its first word's sound and end within
//! 0.2 s of its last word's, and follow the layout rules (two lines of 42 characters,
//! 7 s, no overlap).

mod support;

use idempipe_captions::{Cue, LocalTranscriber, TranscribeOptions, default_model_dir};
use support::{pipeline_cues, speak_words, words};

/// Most a cue boundary may be from its word's sound, in seconds.
const TOLERANCE: f64 = 0.2;

const PHRASES: &[&[&str]] = &[
    &["Our", "garden", "was", "quiet", "this", "morning."],
    &["Many", "yellow", "boats", "sailed", "away."],
    &["Please", "bring", "your", "green", "umbrella", "tomorrow."],
    &["My", "friend", "painted", "his", "fence", "white."],
];

/// The reference word a cue's first (or last) word is, among those with its text: the
/// one closest in time to `at`.
fn nearest(words_at: &[(String, f64, f64)], text: &str, at: f64, end: bool) -> Option<f64> {
    words_at
        .iter()
        .filter(|(w, ..)| words(w) == words(text))
        .map(|&(_, s, e)| if end { e } else { s })
        .min_by(|a, b| (a - at).abs().total_cmp(&(b - at).abs()))
}

fn check_layout(cues: &[Cue]) {
    for c in cues {
        let lines: Vec<&str> = c.text.lines().collect();
        assert!(
            lines.len() <= 2 && lines.iter().all(|l| l.chars().count() <= 42),
            "{c:?}"
        );
        assert!(c.end - c.start <= 7.0 + 1e-9, "{c:?}");
    }
    for pair in cues.windows(2) {
        assert!(pair[0].end <= pair[1].start, "overlap: {pair:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_cue_starts_and_ends_within_a_fifth_of_a_second_of_its_words() {
    let model = LocalTranscriber::load(&default_model_dir(), TranscribeOptions::default())
        .expect("the Whisper model is installed (scripts/fetch-model)");
    let speech = speak_words("en-us", 1.3, PHRASES, 0.25, 1.5);
    let (_, cues) = pipeline_cues(&model, &speech.samples).await;
    check_layout(&cues);
    let mut bad = Vec::new();
    for c in &cues {
        let text: Vec<&str> = c.text.split_whitespace().collect();
        let (first, last) = (text[0], text[text.len() - 1]);
        match (
            nearest(&speech.words, first, c.start, false),
            nearest(&speech.words, last, c.end, true),
        ) {
            (Some(s), Some(e)) => {
                if (c.start - s).abs() > TOLERANCE || (c.end - e).abs() > TOLERANCE {
                    bad.push(format!(
                        "{:.2}-{:.2} {:?}: words at {s:.2}-{e:.2}",
                        c.start, c.end, c.text
                    ));
                }
            }
            _ => bad.push(format!("{:?}: a word not spoken", c.text)),
        }
    }
    let heard: usize = cues.iter().map(|c| c.text.split_whitespace().count()).sum();
    let spoken = speech.words.len();
    assert!(
        bad.is_empty() && heard * 10 >= spoken * 9,
        "{bad:#?}\n{heard} of {spoken} words heard\ncues: {cues:#?}\nwords: {:.2?}",
        speech.words
    );
    // Each phrase ends with a sentence, so a cue never spans two phrases.
    assert!(cues.len() >= PHRASES.len(), "{cues:#?}");
}
