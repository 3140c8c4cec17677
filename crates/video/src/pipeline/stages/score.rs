//! The thumbnail score of one enhanced frame, on luma sampled on a coarse grid.
//!
//! A thumbnail needs a frame that is well exposed and in focus, not an exact metric:
//! luma is read every `step` pixels across and down (`step` makes the grid at most
//! [`GRID_WIDTH`] samples wide), so scoring a 1080p frame reads about 60,000 pixels
//! instead of two million and costs a small fraction of a millisecond.

use image::RgbImage;
use serde_json::{Value, json};

/// Samples per row of the grid (frames up to this wide are scored at every pixel).
const GRID_WIDTH: u32 = 320;

/// Sharpness, contrast and their product for `frame`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Score {
    /// Mean absolute 4-neighbour Laplacian of the sampled luma.
    pub(crate) sharpness: f64,
    /// Standard deviation of the sampled luma.
    pub(crate) contrast: f64,
}

impl Score {
    /// Scores `frame` (see the module documentation).
    pub(crate) fn of(frame: &RgbImage) -> Self {
        let (w, h) = frame.dimensions();
        let step = w.div_ceil(GRID_WIDTH).max(1) as usize;
        let (gw, gh) = (w as usize / step, h as usize / step);
        if gw == 0 || gh == 0 {
            return Self {
                sharpness: 0.0,
                contrast: 0.0,
            };
        }
        let raw = frame.as_raw();
        let stride = w as usize * 3;
        let mut luma = Vec::with_capacity(gw * gh);
        // Whole pixels and whole grid cells: no index arithmetic or bounds check per
        // sample (at 240p every pixel is sampled, and this loop was most of the score).
        for row in raw.chunks_exact(stride).step_by(step).take(gh) {
            let row = &row[..gw * step * 3];
            if step == 1 {
                luma.extend(row.chunks_exact(3).map(|p| luma_of(p[0], p[1], p[2])));
            } else {
                luma.extend(
                    row.chunks_exact(step * 3)
                        .map(|cell| luma_of(cell[0], cell[1], cell[2])),
                );
            }
        }
        Self {
            sharpness: sharpness(&luma, gw, gh),
            contrast: contrast(&luma),
        }
    }

    /// The thumbnail score: contrast x sharpness.
    pub(crate) fn score(&self) -> f64 {
        self.sharpness * self.contrast
    }

    /// As a frame item's result fields.
    pub(crate) fn to_json(self) -> Value {
        json!({ "sharpness": self.sharpness, "contrast": self.contrast, "score": self.score() })
    }
}

fn sharpness(y: &[i32], w: usize, h: usize) -> f64 {
    if w < 3 || h < 3 {
        return 0.0;
    }
    let rows: Vec<&[i32]> = y.chunks_exact(w).take(h).collect();
    let mut total: u64 = 0;
    for three in rows.windows(3) {
        let (up, mid, down) = (&three[0][1..w - 1], three[1], &three[2][1..w - 1]);
        for ((m, u), d) in mid.windows(3).zip(up).zip(down) {
            let lap = 4 * m[1] - m[0] - m[2] - u - d;
            total += u64::from(lap.unsigned_abs());
        }
    }
    total as f64 / ((w - 2) * (h - 2)) as f64
}

/// Integer BT.601 luma of one pixel.
fn luma_of(r: u8, g: u8, b: u8) -> i32 {
    ((77 * u32::from(r) + 150 * u32::from(g) + 29 * u32::from(b) + 128) >> 8) as i32
}

fn contrast(y: &[i32]) -> f64 {
    let n = y.len() as f64;
    let (sum, sq) = y.iter().fold((0i64, 0i64), |(s, q), &v| {
        (s + i64::from(v), q + i64::from(v) * i64::from(v))
    });
    let mean = sum as f64 / n;
    (sq as f64 / n - mean * mean).max(0.0).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_frames_score_zero_and_detail_scores_higher() {
        let flat = RgbImage::from_pixel(1280, 720, image::Rgb([90, 90, 90]));
        assert_eq!(Score::of(&flat).score(), 0.0);
        let checker = RgbImage::from_fn(1280, 720, |x, y| {
            let v = if (x / 4 + y / 4) % 2 == 0 { 230 } else { 20 };
            image::Rgb([v, v, v])
        });
        let s = Score::of(&checker);
        assert!(s.sharpness > 100.0 && s.contrast > 100.0, "{s:?}");
    }

    #[test]
    fn small_frames_are_scored_at_every_pixel() {
        let img = RgbImage::from_fn(176, 144, |x, y| {
            image::Rgb([(x * 3) as u8, (y * 5) as u8, 7])
        });
        let s = Score::of(&img);
        let full = idempipe_enhance::metrics::contrast(&img);
        assert!((s.contrast - full).abs() < 1e-9, "{} vs {full}", s.contrast);
        assert_eq!(Score::of(&RgbImage::new(0, 0)).score(), 0.0);
    }

    /// The score as first written (an index per sample), to pin the faster loops to the
    /// same values: scores stored by earlier versions stay comparable on resume.
    fn reference(frame: &RgbImage) -> (f64, f64) {
        let (w, h) = frame.dimensions();
        let step = w.div_ceil(GRID_WIDTH).max(1) as usize;
        let (gw, gh) = (w as usize / step, h as usize / step);
        let (raw, stride) = (frame.as_raw(), w as usize * 3);
        let mut y = Vec::new();
        for gy in 0..gh {
            for gx in 0..gw {
                let p = &raw[gy * step * stride + gx * step * 3..];
                y.push(luma_of(p[0], p[1], p[2]));
            }
        }
        let mut total: u64 = 0;
        for r in 1..gh - 1 {
            for c in 1..gw - 1 {
                let at = |r: usize, c: usize| y[r * gw + c];
                let lap = 4 * at(r, c) - at(r, c - 1) - at(r, c + 1) - at(r - 1, c) - at(r + 1, c);
                total += u64::from(lap.unsigned_abs());
            }
        }
        let sharpness = total as f64 / ((gw - 2) * (gh - 2)) as f64;
        (sharpness, contrast(&y))
    }

    #[test]
    fn scores_match_the_per_sample_reference_at_every_grid_step() {
        for (w, h) in [(320, 240), (321, 17), (1280, 720), (1917, 1080), (700, 12)] {
            let img = RgbImage::from_fn(w, h, |x, y| {
                let v = x
                    .wrapping_mul(2654435761)
                    .wrapping_add(y.wrapping_mul(40503));
                image::Rgb([(v >> 3) as u8, (v >> 11) as u8, (v >> 19) as u8])
            });
            let s = Score::of(&img);
            let (sharpness, contrast) = reference(&img);
            assert_eq!((s.sharpness, s.contrast), (sharpness, contrast), "{w}x{h}");
            assert!(s.sharpness > 0.0, "{w}x{h}: {s:?}");
        }
    }
}
