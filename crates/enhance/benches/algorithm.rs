//! Single-thread timings of the enhancement algorithm and the codecs at 720p.
//!
//! Run: `cargo bench -p idempipe-enhance --bench algorithm` (release build).
//! Optional first argument: iterations for enhance (default 300).

#[path = "../tests/common/frames.rs"]
mod frames;

use std::hint::black_box;
use std::time::Instant;

use idempipe_enhance::codec::{self, ImageFormat};
use idempipe_enhance::{EnhanceParams, enhance_into};
use image::RgbImage;

/// Runs `f` `n` times after 3 warm-ups; returns sorted per-call milliseconds.
fn time(n: usize, mut f: impl FnMut()) -> Vec<f64> {
    for _ in 0..3 {
        f();
    }
    let mut ms: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    ms
}

fn row(name: &str, ms: &[f64], extra: &str) {
    let pct = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
    println!(
        "{name:<22} {:>6} {:>9.3} {:>9.3} {:>9.3} {:>9.3}  {extra}",
        ms.len(),
        pct(0.0),
        pct(0.5),
        pct(0.99),
        ms.iter().sum::<f64>() / ms.len() as f64
    );
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(300);
    let (frame, source) = frames::frame_720p();
    let (w, h) = frame.dimensions();
    println!("frame: {w}x{h} ({source}), one thread\n");
    println!(
        "{:<22} {:>6} {:>9} {:>9} {:>9} {:>9}",
        "operation", "iters", "min ms", "p50 ms", "p99 ms", "mean ms"
    );

    let params = EnhanceParams::default();
    let mut out = RgbImage::new(w, h);
    row(
        "enhance (reused out)",
        &time(n, || enhance_into(black_box(&frame), &params, &mut out)),
        "",
    );
    row(
        "enhance (new out)",
        &time(n, || {
            drop(black_box(idempipe_enhance::enhance(&frame, &params)))
        }),
        "",
    );

    let codec_n = (n / 5).max(10);
    for format in [ImageFormat::Png, ImageFormat::Jpeg] {
        let bytes = codec::encode(&frame, format).expect("encode");
        let size = format!("{} KiB", bytes.len() / 1024);
        row(
            &format!("{format} encode"),
            &time(codec_n, || drop(black_box(codec::encode(&frame, format)))),
            &size,
        );
        row(
            &format!("{format} decode"),
            &time(codec_n, || drop(black_box(codec::decode(&bytes, format)))),
            &size,
        );
    }
}
