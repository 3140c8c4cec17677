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
        for gy in 0..gh {
            let row = &raw[gy * step * stride..];
            luma.extend((0..gw).map(|gx| {
                let p = &row[gx * step * 3..gx * step * 3 + 3];
                ((77 * p[0] as u32 + 150 * p[1] as u32 + 29 * p[2] as u32 + 128) >> 8) as i32
            }));
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
    let mut total: u64 = 0;
    for r in 1..h - 1 {
        let (up, mid, down) = (&y[(r - 1) * w..], &y[r * w..], &y[(r + 1) * w..]);
        for c in 1..w - 1 {
            let lap = 4 * mid[c] - mid[c - 1] - mid[c + 1] - up[c] - down[c];
            total += u64::from(lap.unsigned_abs());
        }
    }
    total as f64 / ((w - 2) * (h - 2)) as f64
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
}
