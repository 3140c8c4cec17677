//! Caption cues and the two file formats they are written in: WebVTT and SubRip (SRT).

use serde::{Deserialize, Serialize};

use crate::align::Word;
use crate::transcribe::Segment;

/// Longest caption line, in characters (the common broadcast guideline).
const LINE_CHARS: usize = 42;

/// Most lines a cue has on screen.
const MAX_LINES: usize = 2;

/// Longest a cue stays on screen, in seconds.
const MAX_CUE_SECS: f64 = 7.0;

/// Shortest time a cue stays on screen (five sixths of a second, 20 frames at 24 fps),
/// when the next cue leaves room.
const MIN_CUE_SECS: f64 = 5.0 / 6.0;

/// A pause between words at least this long ends a cue.
const PAUSE_SECS: f64 = 1.0;

/// One caption on screen: a time span and its text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cue {
    /// When it appears, in seconds from the start of the video.
    pub start: f64,
    /// When it disappears.
    pub end: f64,
    /// The words, on one or more lines.
    pub text: String,
}

/// Cues from window transcripts (each window's start and its segments, timed from that
/// start). Cues are built from timed words: a cue ends at the end of a sentence, at a
/// pause, or before it would exceed two lines of 42 characters or 7 s, then preferably
/// after a clause (a comma, semicolon, colon or dash). Each cue starts with its first
/// word and ends with its last; a cue shorter than 5/6 s is lengthened into the
/// following silence; cues never overlap. Segments without word times have their
/// words spread over the segment in proportion to their length.
pub fn cues_from(windows: &[(f64, Vec<Segment>)]) -> Vec<Cue> {
    let mut words: Vec<Word> = windows
        .iter()
        .flat_map(|(offset, segments)| segments.iter().flat_map(move |s| shifted_words(s, *offset)))
        .filter(|w| !w.text.is_empty())
        .collect();
    words.sort_by(|a, b| a.start.total_cmp(&b.start));
    let mut groups: Vec<Vec<Word>> = Vec::new();
    let mut current: Vec<Word> = Vec::new();
    for word in words {
        if let Some(last) = current.last()
            && (word.start - last.end >= PAUSE_SECS || ends_sentence(&last.text))
        {
            groups.push(std::mem::take(&mut current));
        }
        while !current.is_empty() && !fits(&current, &word) {
            // Cut after the last clause in the cue, if any, else before this word.
            let cut = (1..current.len())
                .rev()
                .find(|&k| ends_clause(&current[k - 1].text))
                .unwrap_or(current.len());
            let rest = current.split_off(cut);
            groups.push(std::mem::replace(&mut current, rest));
        }
        current.push(word);
    }
    if !current.is_empty() {
        groups.push(current);
    }
    let mut cues: Vec<Cue> = groups
        .iter()
        .map(|g| Cue {
            start: g[0].start,
            end: g[g.len() - 1].end.max(g[0].start),
            text: wrap(&join(g)),
        })
        .collect();
    for i in 0..cues.len() {
        let next_start = cues.get(i + 1).map_or(f64::INFINITY, |n| n.start);
        let cue = &mut cues[i];
        cue.end = cue
            .end
            .max(cue.start + MIN_CUE_SECS)
            .min(cue.start + MAX_CUE_SECS)
            .min(next_start);
    }
    cues.retain(|c| c.end > c.start);
    cues
}

/// The words of `s`, shifted by `offset`: its timed words, or its text's words spread
/// over its span in proportion to their length.
fn shifted_words(s: &Segment, offset: f64) -> Vec<Word> {
    if !s.words.is_empty() {
        return s
            .words
            .iter()
            .map(|w| Word {
                start: offset + w.start,
                end: offset + w.end,
                text: w.text.trim().to_string(),
            })
            .collect();
    }
    let texts: Vec<&str> = s.text.split_whitespace().collect();
    let total: usize = texts.iter().map(|t| t.chars().count() + 1).sum();
    let per_char = (s.end - s.start).max(0.0) / total.max(1) as f64;
    let mut at = offset + s.start;
    texts
        .into_iter()
        .map(|t| {
            let start = at;
            at += (t.chars().count() + 1) as f64 * per_char;
            Word {
                start,
                end: at,
                text: t.to_string(),
            }
        })
        .collect()
}

/// Whether `next` can join the cue `words` without exceeding two lines or 7 s.
fn fits(words: &[Word], next: &Word) -> bool {
    let mut text = join(words);
    text.push(' ');
    text.push_str(&next.text);
    next.end - words[0].start <= MAX_CUE_SECS && wrap(&text).lines().count() <= MAX_LINES
}

fn join(words: &[Word]) -> String {
    let texts: Vec<&str> = words.iter().map(|w| w.text.as_str()).collect();
    texts.join(" ")
}

fn ends_sentence(word: &str) -> bool {
    word.trim_end_matches(['"', '\'', ')', '»', '”'])
        .ends_with(['.', '!', '?', '…', '。', '！', '？'])
}

fn ends_clause(word: &str) -> bool {
    word.ends_with([',', ';', ':', '-', '–', '—', '、', '，'])
}

/// Breaks `text` into lines of at most [`LINE_CHARS`] characters at spaces.
fn wrap(text: &str) -> String {
    let mut lines: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        match lines.last_mut() {
            Some(line) if line.chars().count() + 1 + word.chars().count() <= LINE_CHARS => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_string()),
        }
    }
    lines.join("\n")
}

fn timestamp(secs: f64, decimal: char) -> String {
    let ms = (secs.max(0.0) * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}{decimal}{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// The cues as a WebVTT file. Text is escaped (`&`, `<`, `>`), and a `-->` inside text
/// (which would end the cue) is defused.
pub fn to_vtt(cues: &[Cue]) -> String {
    let mut out = String::from("WEBVTT\n");
    for cue in cues {
        let text = cue
            .text
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        out.push_str(&format!(
            "\n{} --> {}\n{text}\n",
            timestamp(cue.start, '.'),
            timestamp(cue.end, '.')
        ));
    }
    out
}

/// The cues as a SubRip (SRT) file, numbered from 1.
pub fn to_srt(cues: &[Cue]) -> String {
    let mut out = String::new();
    for (i, cue) in cues.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!(
            "{}\n{} --> {}\n{}\n",
            i + 1,
            timestamp(cue.start, ','),
            timestamp(cue.end, ','),
            cue.text.replace("-->", "->")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A segment of `text`, one word every `step` seconds from `start`, each lasting
    /// 80% of its step.
    fn timed(start: f64, step: f64, text: &str) -> Segment {
        let words: Vec<Word> = text
            .split_whitespace()
            .enumerate()
            .map(|(i, t)| Word {
                start: start + i as f64 * step,
                end: start + (i as f64 + 0.8) * step,
                text: t.into(),
            })
            .collect();
        Segment {
            start,
            end: words.last().map_or(start, |w| w.end),
            text: text.into(),
            words,
        }
    }

    fn summary(cues: &[Cue]) -> Vec<(f64, f64, String)> {
        let r = |x: f64| (x * 1000.0).round() / 1000.0;
        cues.iter()
            .map(|c| (r(c.start), r(c.end), c.text.clone()))
            .collect()
    }

    #[test]
    fn cues_follow_sentences_and_pauses_and_start_and_end_with_their_words() {
        let cues = cues_from(&[
            (30.0, vec![timed(0.5, 0.4, "Much later.")]),
            (
                0.0,
                vec![
                    timed(1.0, 0.5, "Ever tried. Ever failed."),
                    timed(5.0, 0.5, "No matter"),
                ],
            ),
        ]);
        assert_eq!(
            summary(&cues),
            vec![
                (1.0, 1.9, "Ever tried.".into()),
                (2.0, 2.9, "Ever failed.".into()),
                (5.0, 5.9, "No matter".into()),
                (30.5, 31.333, "Much later.".into()),
            ]
        );
    }

    #[test]
    fn long_speech_is_cut_into_two_line_cues_of_at_most_seven_seconds_at_clauses() {
        let text = "it was the age of wisdom, it was the age of foolishness, it was the \
                    epoch of belief, it was the epoch of incredulity, it was the season of \
                    Light, it was the season of Darkness";
        let slow = cues_from(&[(0.0, vec![timed(0.0, 0.6, text)])]);
        let fast = cues_from(&[(0.0, vec![timed(0.0, 0.2, text)])]);
        for cues in [&slow, &fast] {
            assert!(cues.len() >= 3, "{cues:?}");
            for c in cues.iter() {
                let lines: Vec<&str> = c.text.lines().collect();
                assert!(lines.len() <= 2 && lines.iter().all(|l| l.chars().count() <= 42));
                assert!(c.end - c.start <= 7.0 + 1e-9, "{c:?}");
            }
            for pair in cues.windows(2) {
                assert!(pair[0].end <= pair[1].start, "{pair:?}");
            }
            let joined: Vec<String> = cues.iter().map(|c| c.text.replace('\n', " ")).collect();
            assert_eq!(
                joined.join(" "),
                text.split_whitespace().collect::<Vec<_>>().join(" ")
            );
        }
        // Fast speech fills two lines; every cue but the last ends at a clause.
        for c in &fast[..fast.len() - 1] {
            assert!(c.text.ends_with(','), "{c:?}");
        }
        // Slow speech reaches 7 s before two lines are full: shorter cues, also at clauses.
        assert!(slow.len() > fast.len(), "{slow:?} {fast:?}");
        for c in &slow[..slow.len() - 1] {
            assert!(c.text.ends_with(','), "{c:?}");
        }
    }

    #[test]
    fn short_cues_stay_five_sixths_of_a_second_unless_the_next_starts_sooner() {
        let cues = cues_from(&[(
            0.0,
            vec![
                timed(0.0, 0.2, "Yes."),
                timed(0.5, 0.2, "No."),
                timed(3.0, 0.2, "Maybe."),
            ],
        )]);
        assert_eq!(
            summary(&cues),
            vec![
                (0.0, 0.5, "Yes.".into()),
                (0.5, 1.333, "No.".into()),
                (3.0, 3.833, "Maybe.".into()),
            ]
        );
    }

    #[test]
    fn segments_without_word_times_spread_their_words_over_their_span() {
        let seg = Segment {
            start: 2.0,
            end: 12.0,
            text: "one two three four five six seven eight nine ten eleven twelve thirteen \
                   fourteen fifteen sixteen"
                .into(),
            words: Vec::new(),
        };
        let cues = cues_from(&[(10.0, vec![seg])]);
        assert!(cues.len() >= 2, "{cues:?}");
        assert_eq!(cues[0].start, 12.0);
        assert!((cues.last().unwrap().end - 22.0).abs() < 1e-9);
        assert!(cues.iter().all(|c| c.end - c.start <= 7.0));
    }

    #[test]
    fn long_text_wraps_at_spaces() {
        let text = "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better.";
        let wrapped = wrap(text);
        assert!(
            wrapped.lines().all(|l| l.chars().count() <= LINE_CHARS),
            "{wrapped}"
        );
        assert_eq!(wrapped.replace('\n', " "), text);
    }

    #[test]
    fn formats() {
        let cues = vec![
            Cue {
                start: 0.0,
                end: 1.5,
                text: "a <b> & c".into(),
            },
            Cue {
                start: 3661.007,
                end: 3662.0,
                text: "x --> y".into(),
            },
        ];
        assert_eq!(
            to_vtt(&cues),
            "WEBVTT\n\n00:00:00.000 --> 00:00:01.500\na &lt;b&gt; &amp; c\n\n01:01:01.007 --> 01:01:02.000\nx --&gt; y\n"
        );
        assert_eq!(
            to_srt(&cues),
            "1\n00:00:00,000 --> 00:00:01,500\na <b> & c\n\n2\n01:01:01,007 --> 01:01:02,000\nx -> y\n"
        );
    }
}
