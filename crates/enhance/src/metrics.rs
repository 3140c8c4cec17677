//! Image-quality metrics on luma: how sharp and how contrasty a frame is.
//!
//! The video pipeline uses them to pick thumbnails; tests use them to check that
//! enhancement sharpens and adds contrast.

use image::RgbImage;

/// Luma (BT.601 weights, 8-bit fixed point) of every pixel, row-major.
pub fn luma(frame: &RgbImage) -> Vec<u8> {
    frame
        .as_raw()
        .chunks_exact(3)
        .map(|p| ((77 * p[0] as u32 + 150 * p[1] as u32 + 29 * p[2] as u32 + 128) >> 8) as u8)
        .collect()
}

/// Mean absolute 4-neighbour Laplacian of luma over interior pixels: higher is
/// sharper. 0.0 for frames smaller than 3x3.
pub fn sharpness(frame: &RgbImage) -> f64 {
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    if w < 3 || h < 3 {
        return 0.0;
    }
    let y = luma(frame);
    let mut total: u64 = 0;
    for r in 1..h - 1 {
        let (up, mid, down) = (
            &y[(r - 1) * w..r * w],
            &y[r * w..(r + 1) * w],
            &y[(r + 1) * w..(r + 2) * w],
        );
        let row: u32 = (1..w - 1)
            .map(|c| {
                let lap = 4 * mid[c] as i32
                    - mid[c - 1] as i32
                    - mid[c + 1] as i32
                    - up[c] as i32
                    - down[c] as i32;
                lap.unsigned_abs()
            })
            .sum();
        total += row as u64;
    }
    total as f64 / ((w - 2) * (h - 2)) as f64
}

/// Standard deviation of luma: higher means more contrast. 0.0 for an empty frame.
pub fn contrast(frame: &RgbImage) -> f64 {
    let y = luma(frame);
    if y.is_empty() {
        return 0.0;
    }
    let (mut sum, mut sq) = (0u64, 0u64);
    for &v in &y {
        sum += v as u64;
        sq += v as u64 * v as u64;
    }
    let n = y.len() as f64;
    let mean = sum as f64 / n;
    (sq as f64 / n - mean * mean).max(0.0).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_frame_has_zero_metrics() {
        let flat = RgbImage::from_pixel(10, 10, image::Rgb([50, 60, 70]));
        assert_eq!(sharpness(&flat), 0.0);
        assert_eq!(contrast(&flat), 0.0);
    }

    #[test]
    fn checkerboard_is_sharp_and_contrasty() {
        let img = RgbImage::from_fn(10, 10, |x, y| {
            let v = if (x + y) % 2 == 0 { 255 } else { 0 };
            image::Rgb([v, v, v])
        });
        assert!(sharpness(&img) > 1000.0);
        assert!((contrast(&img) - 127.5).abs() < 1.0);
    }
}
