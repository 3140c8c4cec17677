//! Speech segments from per-chunk speech probabilities: Silero's rules as faster-whisper
//! applies them (`get_speech_timestamps`), with hysteresis, a minimum silence before a
//! segment ends, a longest segment, and padding.

use super::network::CHUNK;

/// How speech probabilities become segments. The defaults are faster-whisper's (its
/// batched pipeline's: segments of at least 250 ms and at most one 30 s window), plus
/// `min_peak`, which faster-whisper does not have.
#[derive(Debug, Clone, PartialEq)]
pub struct VadOptions {
    /// A chunk at or above this probability is speech.
    pub threshold: f32,
    /// Once in speech, a chunk below this is silence (between the two, speech goes on).
    pub neg_threshold: f32,
    /// Segments shorter than this are dropped (ms).
    pub min_speech_ms: u32,
    /// Longest segment, padding included (s); a longer one is cut at its last silence
    /// of at least 98 ms, else just before the limit.
    pub max_speech_secs: f64,
    /// Silence that ends a segment (ms); shorter pauses stay inside it.
    pub min_silence_ms: u32,
    /// Audio kept before and after each segment (ms).
    pub speech_pad_ms: u32,
    /// A segment none of whose chunks reaches this probability is dropped. Speech,
    /// even a single word, peaks above 0.9; the animal calls and music of the Big Buck
    /// Bunny excerpt stay between 0.5 and 0.82 for three seconds (faster-whisper keeps
    /// them, and tiny.en then hears "Mm-hmm."). 0 keeps every segment.
    pub min_peak: f32,
}

impl Default for VadOptions {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            neg_threshold: 0.35,
            min_speech_ms: 250,
            max_speech_secs: 30.0,
            min_silence_ms: 2000,
            speech_pad_ms: 400,
            min_peak: 0.9,
        }
    }
}

/// Speech segments, as (start, end) samples of audio `len` samples long whose chunks
/// have speech probabilities `probs` (chunk k covers samples 512k..512(k+1)).
pub fn speech_segments(probs: &[f32], len: usize, options: &VadOptions) -> Vec<(usize, usize)> {
    const RATE: f64 = 16_000.0;
    let ms = |m: u32| (RATE * f64::from(m) / 1000.0) as usize;
    let min_speech = ms(options.min_speech_ms);
    let pad = ms(options.speech_pad_ms);
    let max_speech = (RATE * options.max_speech_secs) - CHUNK as f64 - 2.0 * pad as f64;
    let min_silence = ms(options.min_silence_ms);
    let min_silence_at_max = ms(98);

    let mut speeches: Vec<(usize, usize)> = Vec::new();
    let mut triggered = false;
    let mut start = 0;
    // Where a silence began (0: none), and the last silence and the speech after it,
    // kept for cutting a segment that grows too long.
    let (mut temp_end, mut prev_end, mut next_start) = (0, 0, 0);
    for (i, &p) in probs.iter().enumerate() {
        let at = CHUNK * i;
        if p >= options.threshold && temp_end != 0 {
            temp_end = 0;
            if next_start < prev_end {
                next_start = at;
            }
        }
        if p >= options.threshold && !triggered {
            triggered = true;
            start = at;
            continue;
        }
        if triggered && (at - start) as f64 > max_speech {
            if prev_end != 0 {
                speeches.push((start, prev_end));
                // Silence since prev_end and no speech yet: the segment is over.
                if next_start < prev_end {
                    triggered = false;
                } else {
                    start = next_start;
                }
            } else {
                speeches.push((start, at));
                triggered = false;
                (prev_end, next_start, temp_end) = (0, 0, 0);
                continue;
            }
            (prev_end, next_start, temp_end) = (0, 0, 0);
        }
        if p < options.neg_threshold && triggered {
            if temp_end == 0 {
                temp_end = at;
            }
            if at - temp_end > min_silence_at_max {
                prev_end = temp_end;
            }
            if at - temp_end < min_silence {
                continue;
            }
            if temp_end - start > min_speech {
                speeches.push((start, temp_end));
            }
            triggered = false;
            (prev_end, next_start, temp_end) = (0, 0, 0);
        }
    }
    if triggered && len.saturating_sub(start) > min_speech {
        speeches.push((start, len));
    }
    speeches.retain(|&(a, b)| {
        let chunks = &probs[(a / CHUNK).min(probs.len())..b.div_ceil(CHUNK).min(probs.len())];
        chunks.iter().any(|&p| p >= options.min_peak)
    });
    // Padding; two segments closer than twice the padding share the gap.
    let count = speeches.len();
    for i in 0..count {
        if i == 0 {
            speeches[0].0 = speeches[0].0.saturating_sub(pad);
        }
        if i + 1 < count {
            let gap = speeches[i + 1].0.saturating_sub(speeches[i].1);
            if gap < 2 * pad {
                speeches[i].1 += gap / 2;
                speeches[i + 1].0 = speeches[i + 1].0.saturating_sub(gap / 2);
            } else {
                speeches[i].1 = (speeches[i].1 + pad).min(len);
                speeches[i + 1].0 = speeches[i + 1].0.saturating_sub(pad);
            }
        } else {
            speeches[i].1 = (speeches[i].1 + pad).min(len);
        }
    }
    speeches
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Probabilities from a pattern of 32 ms chunks: (probability, chunks).
    fn probs(pattern: &[(f32, usize)]) -> (Vec<f32>, usize) {
        let p: Vec<f32> = pattern
            .iter()
            .flat_map(|&(v, n)| std::iter::repeat_n(v, n))
            .collect();
        let len = p.len() * CHUNK;
        (p, len)
    }

    #[test]
    fn silence_and_blips_give_no_segment() {
        let (p, len) = probs(&[(0.1, 300)]);
        assert!(speech_segments(&p, len, &VadOptions::default()).is_empty());
        // 5 chunks = 160 ms of speech, under the 250 ms minimum.
        let (p, len) = probs(&[(0.1, 100), (0.9, 5), (0.1, 200)]);
        assert!(speech_segments(&p, len, &VadOptions::default()).is_empty());
    }

    #[test]
    fn a_segment_without_a_confident_chunk_is_dropped() {
        let (p, len) = probs(&[(0.1, 100), (0.8, 100), (0.1, 100), (0.95, 10), (0.1, 100)]);
        let s = speech_segments(&p, len, &VadOptions::default());
        assert_eq!(s, vec![(300 * CHUNK - 6400, 310 * CHUNK + 6400)]);
        let all = VadOptions {
            min_peak: 0.0,
            ..VadOptions::default()
        };
        assert_eq!(speech_segments(&p, len, &all).len(), 2);
    }

    #[test]
    fn a_segment_is_padded_and_short_pauses_stay_inside() {
        // Speech 100..200, a 1 s pause (31 chunks), speech 231..300, then silence.
        let (p, len) = probs(&[(0.1, 100), (0.9, 100), (0.2, 31), (0.9, 69), (0.1, 200)]);
        let s = speech_segments(&p, len, &VadOptions::default());
        assert_eq!(s, vec![(100 * CHUNK - 6400, 300 * CHUNK + 6400)]);
    }

    #[test]
    fn a_long_pause_separates_segments_and_between_thresholds_speech_goes_on() {
        // 0.4 is under the threshold but above the negative one: still speech.
        let (p, len) = probs(&[(0.9, 50), (0.4, 50), (0.1, 100), (0.9, 50)]);
        let s = speech_segments(&p, len, &VadOptions::default());
        assert_eq!(s, vec![(0, 100 * CHUNK + 6400), (200 * CHUNK - 6400, len)]);
    }

    #[test]
    fn long_speech_is_cut_under_the_limit() {
        // 100 s of speech with a 0.2 s pause every 10 s.
        let mut pattern = Vec::new();
        for _ in 0..10 {
            pattern.push((0.9, 306));
            pattern.push((0.1, 7));
        }
        let (p, len) = probs(&pattern);
        let s = speech_segments(&p, len, &VadOptions::default());
        assert!(s.len() >= 4, "{s:?}");
        for &(a, b) in &s {
            assert!(b - a <= 30 * 16_000, "{s:?}");
        }
        for pair in s.windows(2) {
            assert!(pair[0].1 <= pair[1].0, "segments overlap: {s:?}");
        }
    }
}
