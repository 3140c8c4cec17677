//! Word timestamps from cross-attention, as the reference implementation finds them:
//! the decoder re-reads the transcript against the window's audio, the attention
//! weights of the alignment heads (heads known to follow the speech in time) are
//! normalised and smoothed, and dynamic time warping finds the monotonic path through
//! them; where the path moves to the next token is when that token starts.

/// Seconds per encoder position (two mel frames of 10 ms).
pub(crate) const SECS_PER_POSITION: f64 = 0.02;

/// Width of the median filter smoothing each token's attention over time.
const MEDIAN_WIDTH: usize = 7;

/// A silence at least this long between two words is a pause a boundary may move to.
const MIN_PAUSE_SECS: f64 = 0.15;

/// A silence at least this long is never inside a word.
const LONG_PAUSE_SECS: f64 = 0.3;

/// Farthest a word boundary moves to reach a pause (seconds).
const MAX_SHIFT_SECS: f64 = 0.4;

/// Longest a word may last before it is taken to have swallowed a pause (seconds).
const MAX_WORD_SECS: f64 = 0.7;

/// A spoken word and when it was said.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Word {
    /// Start, in seconds.
    pub start: f64,
    /// End, in seconds.
    pub end: f64,
    /// The word with its punctuation, without surrounding spaces.
    pub text: String,
}

/// When each row of `scores` starts, in encoder positions: `scores` holds, per head,
/// `rows` x `frames` attention logits (row-major); only the first `used` frames (the
/// audio actually in the window) are looked at.
pub(crate) fn row_starts(
    scores: &[Vec<f32>],
    rows: usize,
    frames: usize,
    used: usize,
) -> Vec<usize> {
    let used = used.clamp(1, frames);
    let mut mean = vec![0f32; rows * used];
    for head in scores {
        let mut m: Vec<f32> = (0..rows)
            .flat_map(|r| softmax(&head[r * frames..r * frames + used]))
            .collect();
        standardize_columns(&mut m, rows, used);
        for r in 0..rows {
            let smooth = median_filter(&m[r * used..(r + 1) * used], MEDIAN_WIDTH);
            for (acc, v) in mean[r * used..(r + 1) * used].iter_mut().zip(smooth) {
                *acc += v / scores.len() as f32;
            }
        }
    }
    let path = dtw(&mean.iter().map(|&v| -v).collect::<Vec<_>>(), rows, used);
    let mut starts = Vec::with_capacity(rows);
    for (i, &(row, frame)) in path.iter().enumerate() {
        if i == 0 || path[i - 1].0 != row {
            starts.push(frame);
        }
    }
    starts
}

/// Words (token bytes `pieces` grouped at leading spaces) timed by `starts`, the start position of
/// each token and, last, of the end of text. `offset` is added to every time.
pub(crate) fn timed_words(pieces: &[Vec<u8>], starts: &[usize], offset: f64) -> Vec<Word> {
    let mut words: Vec<(usize, usize, Vec<u8>)> = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        match words.last_mut() {
            Some(last) if !piece.starts_with(b" ") => {
                last.1 = i + 1;
                last.2.extend_from_slice(piece);
            }
            _ => words.push((i, i + 1, piece.clone())),
        }
    }
    let at = |i: usize| offset + starts.get(i).copied().unwrap_or(0) as f64 * SECS_PER_POSITION;
    let mut out: Vec<Word> = words
        .into_iter()
        .map(|(from, to, text)| Word {
            start: at(from),
            end: at(to),
            text: String::from_utf8_lossy(&text).trim().to_string(),
        })
        .filter(|w| !w.text.is_empty())
        .collect();
    limit_long_words(&mut out);
    out
}

/// A word much longer than usual has absorbed a pause next to it: one that opens the
/// window or follows a silence starts late, one that ends a sentence ends early.
fn limit_long_words(words: &mut [Word]) {
    let mut durations: Vec<f64> = words
        .iter()
        .map(|w| w.end - w.start)
        .filter(|&d| d > 0.0)
        .collect();
    if durations.is_empty() {
        return;
    }
    durations.sort_by(f64::total_cmp);
    let median = durations[durations.len() / 2];
    let max = MAX_WORD_SECS.min(median * 2.0);
    for i in 0..words.len() {
        if words[i].end - words[i].start <= max {
            continue;
        }
        let sentence_end = words[i].text.ends_with(['.', '!', '?', '。', '！', '？']);
        if sentence_end || i + 1 == words.len() {
            words[i].end = words[i].start + max;
        } else if i == 0 || words[i - 1].end < words[i].start {
            words[i].start = words[i].end - max;
        }
    }
}

/// Moves word boundaries onto the pauses in the sound and trims each word to the sound
/// inside it (`sound` holds one flag per `frame_secs` frame from time 0). Attention
/// times a boundary to within a few tenths of a second and puts it anywhere in the
/// pause between two words; the loudness shows where the pause is. A boundary inside
/// sound moves to the nearest pause of at least [`MIN_PAUSE_SECS`] within
/// [`MAX_SHIFT_SECS`], if the two words still have length; a word spanning a pause of
/// [`LONG_PAUSE_SECS`] ends there and the next word starts after it; a word without any
/// sound inside it is left as it is.
pub(crate) fn snap_to_sound(words: &mut [Word], sound: &[bool], frame_secs: f64) {
    let pauses = pauses(sound, (MIN_PAUSE_SECS / frame_secs).round() as usize);
    for i in 1..words.len() {
        let at = words[i].start;
        let frame = (at / frame_secs) as usize;
        if sound.get(frame) != Some(&true) {
            continue;
        }
        let nearest = pauses
            .iter()
            .map(|&(from, to)| (from as f64 * frame_secs, to as f64 * frame_secs))
            .filter(|&(from, to)| from > words[i - 1].start && to < words[i].end)
            .filter(|&(from, to)| (to - at).abs().min((from - at).abs()) <= MAX_SHIFT_SECS)
            .min_by(|a, b| {
                let d = |p: (f64, f64)| (p.1 - at).abs().min((p.0 - at).abs());
                d(*a).total_cmp(&d(*b))
            });
        if let Some((from, to)) = nearest {
            words[i - 1].end = from;
            words[i].start = to;
        }
    }
    // No word spans a long pause: sound after one inside a word belongs to the next.
    let long = (LONG_PAUSE_SECS / frame_secs).round() as usize;
    for i in 0..words.len().saturating_sub(1) {
        let (start, end) = (words[i].start, words[i].end);
        let inside = pauses
            .iter()
            .filter(|&&(from, to)| to - from >= long)
            .map(|&(from, to)| (from as f64 * frame_secs, to as f64 * frame_secs))
            .rfind(|&(from, to)| from > start && to < end);
        if let Some((from, to)) = inside {
            words[i].end = from;
            words[i + 1].start = words[i + 1].start.min(to);
        }
    }
    for w in words.iter_mut() {
        let from = ((w.start / frame_secs).floor().max(0.0) as usize).min(sound.len());
        let to = ((w.end / frame_secs).ceil().max(0.0) as usize).min(sound.len());
        let inside = &sound[from..to.max(from)];
        if let (Some(first), Some(last)) = (
            inside.iter().position(|&s| s),
            inside.iter().rposition(|&s| s),
        ) {
            w.start = w.start.max((from + first) as f64 * frame_secs);
            w.end = w
                .end
                .min((from + last + 1) as f64 * frame_secs)
                .max(w.start);
        }
    }
}

/// Runs of at least `min` silent frames, as (first frame, one past the last).
fn pauses(sound: &[bool], min: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < sound.len() {
        if sound[i] {
            i += 1;
            continue;
        }
        let from = i;
        while i < sound.len() && !sound[i] {
            i += 1;
        }
        if i - from >= min.max(1) {
            out.push((from, i));
        }
    }
    out
}

fn softmax(values: &[f32]) -> Vec<f32> {
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = values.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

/// Each column of the `rows` x `cols` matrix to zero mean and unit (sample) deviation.
fn standardize_columns(m: &mut [f32], rows: usize, cols: usize) {
    if rows < 2 {
        return;
    }
    for c in 0..cols {
        let mean = (0..rows).map(|r| m[r * cols + c]).sum::<f32>() / rows as f32;
        let var = (0..rows)
            .map(|r| (m[r * cols + c] - mean).powi(2))
            .sum::<f32>()
            / (rows - 1) as f32;
        let std = var.sqrt().max(1e-10);
        for r in 0..rows {
            m[r * cols + c] = (m[r * cols + c] - mean) / std;
        }
    }
}

/// The running median of `width` values, mirrored at the edges.
fn median_filter(values: &[f32], width: usize) -> Vec<f32> {
    let n = values.len();
    let half = width / 2;
    if n <= half {
        return values.to_vec();
    }
    let mirror = |i: isize| -> f32 {
        let n = n as isize;
        let j = if i < 0 {
            -i
        } else if i >= n {
            2 * (n - 1) - i
        } else {
            i
        };
        values[j.clamp(0, n - 1) as usize]
    };
    let mut window = vec![0f32; width];
    (0..n)
        .map(|i| {
            for (k, w) in window.iter_mut().enumerate() {
                *w = mirror(i as isize + k as isize - half as isize);
            }
            window.sort_by(f32::total_cmp);
            window[half]
        })
        .collect()
}

/// The cheapest monotonic path through the `rows` x `cols` cost matrix from the top
/// left to the bottom right, moving down, right or diagonally: (row, column) pairs.
fn dtw(cost: &[f32], rows: usize, cols: usize) -> Vec<(usize, usize)> {
    let w = cols + 1;
    let mut total = vec![f32::INFINITY; (rows + 1) * w];
    let mut step = vec![0u8; (rows + 1) * w];
    total[0] = 0.0;
    for j in 1..=cols {
        for i in 1..=rows {
            let diagonal = total[(i - 1) * w + j - 1];
            let up = total[(i - 1) * w + j];
            let left = total[i * w + j - 1];
            let (best, s) = if diagonal < up && diagonal < left {
                (diagonal, 0)
            } else if up < diagonal && up < left {
                (up, 1)
            } else {
                (left, 2)
            };
            total[i * w + j] = cost[(i - 1) * cols + j - 1] + best;
            step[i * w + j] = s;
        }
    }
    let (mut i, mut j) = (rows, cols);
    let mut path = Vec::with_capacity(rows + cols);
    while i > 0 || j > 0 {
        path.push((i.saturating_sub(1), j.saturating_sub(1)));
        let s = if i == 0 {
            2
        } else if j == 0 {
            1
        } else {
            step[i * w + j]
        };
        match s {
            0 => {
                i -= 1;
                j -= 1;
            }
            1 => i -= 1,
            _ => j -= 1,
        }
    }
    path.reverse();
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtw_follows_the_cheap_diagonal_band() {
        // Three rows, each cheap over its own third of nine columns.
        let (rows, cols) = (3, 9);
        let cost: Vec<f32> = (0..rows * cols)
            .map(|k| if (k % cols) / 3 == k / cols { 0.0 } else { 1.0 })
            .collect();
        let path = dtw(&cost, rows, cols);
        assert_eq!(path.first(), Some(&(0, 0)));
        assert_eq!(path.last(), Some(&(2, 8)));
        let starts: Vec<usize> = (0..rows)
            .map(|r| path.iter().find(|p| p.0 == r).unwrap().1)
            .collect();
        assert_eq!(starts, vec![0, 3, 6]);
    }

    #[test]
    fn median_filter_removes_spikes_and_keeps_steps() {
        let v = [0.0, 0.0, 0.0, 9.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0];
        let m = median_filter(&v, 3);
        assert_eq!(m, vec![0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]);
    }

    #[test]
    fn attention_moving_along_the_audio_gives_rising_starts() {
        // Two heads; token r attends to frames 10r..10r+10 of 40 (the last 10 unused).
        let (rows, frames, used) = (3, 40, 30);
        let head: Vec<f32> = (0..rows * frames)
            .map(|k| {
                if (k % frames) / 10 == k / frames {
                    5.0
                } else {
                    0.0
                }
            })
            .collect();
        let starts = row_starts(&[head.clone(), head], rows, frames, used);
        assert_eq!(starts.len(), rows);
        assert_eq!(starts[0], 0);
        assert!((starts[1] as i64 - 10).abs() <= 1, "{starts:?}");
        assert!((starts[2] as i64 - 20).abs() <= 1, "{starts:?}");
    }

    #[test]
    fn words_are_trimmed_to_the_sound_inside_them() {
        let word = |start: f64, end: f64| Word {
            start,
            end,
            text: "w".into(),
        };
        // Sound at 0.2-0.6 s and 1.0-1.4 s, frames of 0.1 s.
        let sound: Vec<bool> = (0..20)
            .map(|i| (2..6).contains(&i) || (10..14).contains(&i))
            .collect();
        let r = |x: f64| (x * 1000.0).round() / 1000.0;
        let snapped = |mut words: Vec<Word>| -> Vec<(f64, f64)> {
            snap_to_sound(&mut words, &sound, 0.1);
            words.iter().map(|w| (r(w.start), r(w.end))).collect()
        };
        // A boundary in the pause: each word keeps its sound; one in silence stays.
        assert_eq!(
            snapped(vec![word(0.0, 0.9), word(0.9, 1.5), word(1.6, 1.9)]),
            vec![(0.2, 0.6), (1.0, 1.4), (1.6, 1.9)]
        );
        // A boundary 0.2 s into the second word's sound moves back to the pause.
        assert_eq!(
            snapped(vec![word(0.1, 1.2), word(1.2, 1.5)]),
            vec![(0.2, 0.6), (1.0, 1.4)]
        );
        // A word spanning the whole pause gives the sound after it to the next word.
        assert_eq!(
            snapped(vec![word(0.2, 1.3), word(1.3, 1.5)]),
            vec![(0.2, 0.6), (1.0, 1.4)]
        );
        // One too far from any pause stays where attention put it.
        assert_eq!(
            snapped(vec![word(0.0, 0.3), word(0.3, 0.9)]),
            vec![(0.2, 0.3), (0.3, 0.6)]
        );
    }

    #[test]
    fn words_group_tokens_at_spaces_and_keep_punctuation() {
        let pieces: Vec<Vec<u8>> = [" Ever", " tri", "ed", ".", " No"]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
        let starts = [0, 10, 15, 18, 20, 30];
        let words = timed_words(&pieces, &starts, 1.0);
        let got: Vec<(&str, f64, f64)> = words
            .iter()
            .map(|w| (w.text.as_str(), w.start, w.end))
            .collect();
        assert_eq!(
            got,
            vec![("Ever", 1.0, 1.2), ("tried.", 1.2, 1.4), ("No", 1.4, 1.6)]
        );
    }
}
