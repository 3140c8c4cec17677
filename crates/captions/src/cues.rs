//! Caption cues and the two file formats they are written in: WebVTT and SubRip (SRT).

use serde::{Deserialize, Serialize};

use crate::transcribe::Segment;

/// Longest caption line, in characters (the common broadcast guideline).
const LINE_CHARS: usize = 42;

/// Shortest time a cue stays on screen, in seconds.
const MIN_CUE_SECS: f64 = 0.3;

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

/// Cues from window transcripts: segments shifted by their window's start, sorted, with
/// overlaps trimmed, a minimum duration, and text wrapped at 42 characters per line.
pub fn cues_from(windows: &[(f64, Vec<Segment>)]) -> Vec<Cue> {
    let mut cues: Vec<Cue> = windows
        .iter()
        .flat_map(|(offset, segments)| {
            segments.iter().map(move |s| Cue {
                start: offset + s.start,
                end: offset + s.end,
                text: s.text.trim().to_string(),
            })
        })
        .filter(|c| !c.text.is_empty())
        .collect();
    cues.sort_by(|a, b| a.start.total_cmp(&b.start));
    for i in 0..cues.len() {
        let next_start = cues.get(i + 1).map(|n| n.start);
        let cue = &mut cues[i];
        cue.end = cue.end.max(cue.start + MIN_CUE_SECS);
        if let Some(next) = next_start {
            cue.end = cue.end.min(next).max(cue.start);
        }
        cue.text = wrap(&cue.text);
    }
    cues.retain(|c| c.end > c.start);
    cues
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

    fn seg(start: f64, end: f64, text: &str) -> Segment {
        Segment {
            start,
            end,
            text: text.into(),
        }
    }

    #[test]
    fn windows_are_shifted_sorted_and_overlaps_trimmed() {
        let cues = cues_from(&[
            (30.0, vec![seg(0.5, 2.0, "second")]),
            (
                0.0,
                vec![
                    seg(1.0, 31.0, " first "),
                    seg(4.0, 4.0, "blink"),
                    seg(5.0, 6.0, " "),
                ],
            ),
        ]);
        let got: Vec<(f64, f64, &str)> = cues
            .iter()
            .map(|c| (c.start, c.end, c.text.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (1.0, 4.0, "first"),
                (4.0, 4.3, "blink"),
                (30.5, 32.0, "second")
            ]
        );
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
