//! Test helpers: audio from real media files, and word error rate.

#![allow(dead_code, unreachable_pub, unused_imports)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use idempipe_captions::{Cue, Transcriber, Window, WindowOptions, cues_from, speech_windows};

/// Samples per second of the audio the captions crate works on.
pub const RATE: usize = 16_000;

/// Plain, distinct English sentences, about 3.5 s each when spoken at 150 words per
/// minute: eighteen of them make more than 60 s of speech.
pub const SENTENCES: &[&str] = &[
    "The morning train was late again because of the heavy snow.",
    "My grandmother keeps a small garden full of tomatoes and beans.",
    "Please remember to lock the front door before you leave the house.",
    "The children played football in the park until it was dark.",
    "We bought fresh bread and cheese at the market on Saturday.",
    "The library will be closed for repairs during the whole summer.",
    "A strong wind blew the leaves across the empty street.",
    "She wrote a long letter to her brother who lives abroad.",
    "The new bridge over the river was finished last year.",
    "Our teacher asked us to read three chapters by Friday.",
    "The cat slept on the warm windowsill all afternoon.",
    "He fixed the old bicycle with a wrench and some oil.",
    "The museum has a famous painting of a ship at sea.",
    "They walked along the beach and collected smooth stones.",
    "The restaurant on the corner serves excellent soup.",
    "After dinner we watched a movie about a brave pilot.",
    "The farmer drove his tractor slowly up the hill.",
    "Thank you for listening to these simple sentences.",
];

/// Real recorded speech with a known transcript: `media/two-cities.opus`, 44 s of the
/// opening of *A Tale of Two Cities* read aloud (from the moonshine-voice package).
pub const TWO_CITIES_FILE: &str = "two-cities.opus";

/// What `TWO_CITIES_FILE` says: Dickens's text (public domain), 119 words.
pub const TWO_CITIES_TEXT: &str = "It was the best of times, it was the worst of times, it was the \
    age of wisdom, it was the age of foolishness, it was the epoch of belief, it was the epoch \
    of incredulity, it was the season of Light, it was the season of Darkness, it was the \
    spring of hope, it was the winter of despair, we had everything before us, we had nothing \
    before us, we were all going direct to Heaven, we were all going direct the other way - in \
    short, the period was so far like the present period, that some of its noisiest \
    authorities insisted on its being received, for good or for evil, in the superlative \
    degree of comparison only.";

/// The shared sample media directory (`IDEMPIPE_MEDIA` overrides).
pub fn media(name: &str) -> PathBuf {
    idempipe_testkit::media(name)
}

/// 16 kHz mono samples of a media file's audio, decoded by ffmpeg.
pub fn audio_of(path: &Path) -> Vec<f32> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-vn", "-ac", "1", "-ar", "16000", "-f", "s16le", "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    idempipe_captions::audio::pcm_to_samples(&out.stdout)
}

/// Synthesized speech and where each sentence is.
pub struct Speech {
    /// 16 kHz mono samples.
    pub samples: Vec<f32>,
    /// Start and end, in seconds, of each sentence's sound.
    pub spans: Vec<(f64, f64)>,
}

impl Speech {
    /// Length in seconds.
    pub fn secs(&self) -> f64 {
        self.samples.len() as f64 / RATE as f64
    }
}

/// `lead_secs` of digital silence, then `sentences` spoken by espeak-ng at 150 words per
/// minute, each cut to its sound (frames louder than -50 dBFS), with digital silence of
/// 0.2, 0.4 or 0.6 s (in turn) after each.
pub fn speak(lead_secs: f64, sentences: &[&str]) -> Speech {
    static N: AtomicU32 = AtomicU32::new(0);
    let path = std::env::temp_dir().join(format!(
        "idempipe-captions-espeak-{}-{}.wav",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let mut samples = vec![0.0; (lead_secs * RATE as f64) as usize];
    let mut spans = Vec::new();
    for (i, sentence) in sentences.iter().enumerate() {
        let out = Command::new("espeak-ng")
            .args(["-s", "150", "-w"])
            .arg(&path)
            .arg(sentence)
            .output()
            .expect("espeak-ng runs");
        assert!(
            out.status.success(),
            "espeak-ng: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let clip = audio_of(&path);
        let loud: Vec<usize> = clip
            .chunks(RATE / 100)
            .enumerate()
            .filter(|(_, f)| level_db(f) > -50.0)
            .map(|(k, _)| k)
            .collect();
        let (first, last) = (loud[0], *loud.last().expect("espeak-ng spoke"));
        let clip = &clip[first * RATE / 100..((last + 1) * RATE / 100).min(clip.len())];
        let start = samples.len() as f64 / RATE as f64;
        samples.extend_from_slice(clip);
        spans.push((start, samples.len() as f64 / RATE as f64));
        samples.resize(samples.len() + RATE / 5 * (1 + i % 3), 0.0);
    }
    let _ = std::fs::remove_file(&path);
    Speech { samples, spans }
}

/// A recording built from separately spoken words, and where each word is.
pub struct SpokenWords {
    /// 16 kHz mono samples.
    pub samples: Vec<f32>,
    /// Each word with the start and end of its sound, in seconds.
    pub words: Vec<(String, f64, f64)>,
}

/// `phrases` of words, each word spoken alone by espeak-ng (at `voice`) and cut to its
/// sound, `word_gap` seconds of silence between the words of a phrase and `phrase_gap`
/// between phrases, after `lead_secs` of silence.
pub fn speak_words(
    voice: &str,
    lead_secs: f64,
    phrases: &[&[&str]],
    word_gap: f64,
    phrase_gap: f64,
) -> SpokenWords {
    let mut samples = vec![0.0; (lead_secs * RATE as f64) as usize];
    let mut words = Vec::new();
    for (p, phrase) in phrases.iter().enumerate() {
        if p > 0 {
            samples.resize(samples.len() + (phrase_gap * RATE as f64) as usize, 0.0);
        }
        for (w, word) in phrase.iter().enumerate() {
            if w > 0 {
                samples.resize(samples.len() + (word_gap * RATE as f64) as usize, 0.0);
            }
            let start = samples.len() as f64 / RATE as f64;
            samples.extend(spoken(voice, word));
            words.push((word.to_string(), start, samples.len() as f64 / RATE as f64));
        }
    }
    samples.resize(samples.len() + RATE, 0.0);
    SpokenWords { samples, words }
}

/// `text` spoken by espeak-ng with `voice` at 150 words per minute, cut to its sound
/// (10 ms frames louder than -50 dBFS).
pub fn spoken(voice: &str, text: &str) -> Vec<f32> {
    static N: AtomicU32 = AtomicU32::new(0);
    let path = std::env::temp_dir().join(format!(
        "idempipe-captions-word-{}-{}.wav",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let out = Command::new("espeak-ng")
        .args(["-v", voice, "-s", "150", "-w"])
        .arg(&path)
        .arg(text)
        .output()
        .expect("espeak-ng runs");
    assert!(
        out.status.success(),
        "espeak-ng: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let clip = audio_of(&path);
    let _ = std::fs::remove_file(&path);
    let loud: Vec<usize> = clip
        .chunks(RATE / 100)
        .enumerate()
        .filter(|(_, f)| level_db(f) > -50.0)
        .map(|(k, _)| k)
        .collect();
    let (first, last) = (loud[0], *loud.last().expect("espeak-ng spoke"));
    clip[first * RATE / 100..((last + 1) * RATE / 100).min(clip.len())].to_vec()
}

/// Loudness of `frame` in dBFS.
pub fn level_db(frame: &[f32]) -> f64 {
    let power = frame
        .iter()
        .map(|&s| f64::from(s) * f64::from(s))
        .sum::<f64>()
        / frame.len().max(1) as f64;
    10.0 * (power + 1e-12).log10()
}

/// Where a recording has sound, found from its loudness alone: 20 ms frames within
/// `below_peak_db` of the loudest frame, joined across gaps shorter than 0.3 s, runs
/// shorter than 0.1 s dropped. Start and end in seconds.
pub fn sound_regions(samples: &[f32], below_peak_db: f64) -> Vec<(f64, f64)> {
    let frame = RATE / 50;
    let levels: Vec<f64> = samples.chunks(frame).map(level_db).collect();
    let peak = levels.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut regions: Vec<(f64, f64)> = Vec::new();
    for (k, &l) in levels.iter().enumerate() {
        if l <= peak - below_peak_db {
            continue;
        }
        let (start, end) = (k as f64 * 0.02, (k + 1) as f64 * 0.02);
        match regions.last_mut() {
            Some(last) if start - last.1 < 0.3 => last.1 = end,
            _ => regions.push((start, end)),
        }
    }
    regions.retain(|r| r.1 - r.0 >= 0.1);
    regions
}

/// Cues that do not lie on sound: each cue must overlap at least one of `regions`, start
/// no earlier than `tolerance` before the first region it overlaps and end no later than
/// `tolerance` after the last. One line per offending cue.
pub fn misplaced_cues(cues: &[Cue], regions: &[(f64, f64)], tolerance: f64) -> Vec<String> {
    cues.iter()
        .filter_map(|c| {
            let over: Vec<&(f64, f64)> = regions
                .iter()
                .filter(|r| r.0 < c.end && r.1 > c.start)
                .collect();
            let text = c.text.replace('\n', " ");
            let (Some(first), Some(last)) = (over.first(), over.last()) else {
                return Some(format!(
                    "{:.2}-{:.2} {text:?} overlaps no sound",
                    c.start, c.end
                ));
            };
            (c.start < first.0 - tolerance || c.end > last.1 + tolerance).then(|| {
                format!(
                    "{:.2}-{:.2} {text:?} is more than {tolerance} s outside the sound {:.2}-{:.2}",
                    c.start, c.end, first.0, last.1
                )
            })
        })
        .collect()
}

/// What the pipeline does with a stretch of audio: windows around the speech found, each
/// transcribed alone, the segments shifted by their window's start into cues.
pub async fn pipeline_cues(
    transcriber: &dyn Transcriber,
    samples: &[f32],
) -> (Vec<Window>, Vec<Cue>) {
    let windows = speech_windows(samples, &WindowOptions::default()).expect("the VAD runs");
    let mut transcripts = Vec::new();
    for (i, w) in windows.iter().enumerate() {
        let t = transcriber
            .transcribe(samples[w.start..w.end].to_vec(), &format!("window-{i}"))
            .await
            .unwrap_or_else(|e| panic!("window {i} {w:?}: {e}"));
        transcripts.push((w.start_secs(), t.segments));
    }
    (windows, cues_from(&transcripts))
}

/// The text of `cues` on one line.
pub fn cue_text(cues: &[Cue]) -> String {
    let texts: Vec<String> = cues.iter().map(|c| c.text.replace('\n', " ")).collect();
    texts.join(" ")
}

/// For each word of `reference`, whether it is matched in a longest in-order alignment
/// with `hypothesis` (a longest common subsequence of words).
pub fn matched_words(reference: &[String], hypothesis: &[String]) -> Vec<bool> {
    let (n, m) = (reference.len(), hypothesis.len());
    // lcs[i][j]: longest common subsequence of reference[i..] and hypothesis[j..].
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if reference[i] == hypothesis[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut matched = vec![false; n];
    let (mut i, mut j) = (0, 0);
    while i < n && j < m {
        if reference[i] == hypothesis[j] {
            matched[i] = true;
            i += 1;
            j += 1;
        } else if lcs[i + 1][j] >= lcs[i][j + 1] {
            i += 1;
        } else {
            j += 1;
        }
    }
    matched
}

/// For each of `sentences`, the share of its words found, in order, in `hypothesis`
/// (aligned against all the sentences together, so a word is credited once).
pub fn sentence_coverage(sentences: &[&str], hypothesis: &str) -> Vec<f64> {
    let per: Vec<Vec<String>> = sentences.iter().map(|s| words(s)).collect();
    let all: Vec<String> = per.concat();
    let matched = matched_words(&all, &words(hypothesis));
    let mut at = 0;
    per.iter()
        .map(|s| {
            let hits = matched[at..at + s.len()].iter().filter(|&&m| m).count();
            at += s.len();
            hits as f64 / s.len().max(1) as f64
        })
        .collect()
}

pub use idempipe_testkit::speech::{wer, words};

#[test]
fn coverage_credits_words_in_order_once() {
    let sentences = ["one two three four", "five six seven eight", "nine ten"];
    assert_eq!(
        sentence_coverage(
            &sentences,
            "one two three four five six seven eight nine ten"
        ),
        vec![1.0, 1.0, 1.0]
    );
    // A dropped sentence scores nothing, even where its neighbours are perfect.
    assert_eq!(
        sentence_coverage(&sentences, "one two three four nine ten"),
        vec![1.0, 0.0, 1.0]
    );
    // Words out of order are credited once.
    assert_eq!(sentence_coverage(&["a b", "c d"], "d c"), vec![0.0, 0.5]);
}

#[test]
fn regions_follow_loudness() {
    // 0.5 s silence, 1 s tone, 0.2 s silence (bridged), 0.5 s tone, 1 s silence,
    // 0.05 s click (dropped), 0.5 s silence.
    let tone = |secs: f64| -> Vec<f32> {
        (0..(secs * RATE as f64) as usize)
            .map(|i| 0.3 * (i as f32 * 0.2).sin())
            .collect()
    };
    let silence = |secs: f64| vec![0.0f32; (secs * RATE as f64) as usize];
    let samples = [
        silence(0.5),
        tone(1.0),
        silence(0.2),
        tone(0.5),
        silence(1.0),
        tone(0.04),
        silence(0.5),
    ]
    .concat();
    let r = sound_regions(&samples, 30.0);
    assert_eq!(r.len(), 1, "{r:?}");
    assert!(
        (r[0].0 - 0.5).abs() < 0.021 && (r[0].1 - 2.2).abs() < 0.021,
        "{r:?}"
    );
    let cue = |start: f64, end: f64| Cue {
        start,
        end,
        text: "x".into(),
    };
    assert!(misplaced_cues(&[cue(0.0, 3.0)], &r, 1.0).is_empty());
    assert_eq!(
        misplaced_cues(&[cue(2.5, 3.0), cue(0.5, 3.5)], &r, 1.0).len(),
        2
    );
}
