//! Writes a side-by-side before/after PNG of one video frame.
//!
//! `cargo run --release -p idempipe-enhance --example before_after -- [VIDEO] [FRAME] [OUT.png]`
//! Defaults: the repository's media/bigbuckbunny.mp4, frame 30, before_after.png.

use std::process::Command;

use idempipe_enhance::{EnhanceParams, codec, enhance, metrics};
use image::{GenericImage, RgbImage};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let video = args.next().unwrap_or_else(|| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../media/bigbuckbunny.mp4").into()
    });
    let index: u32 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(30);
    let out_path = args.next().unwrap_or_else(|| "before_after.png".into());

    let output = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-i",
            &video,
            "-vf",
            &format!("select=eq(n\\,{index})"),
            "-frames:v",
            "1",
        ])
        .args(["-f", "image2pipe", "-vcodec", "png", "-"])
        .output()?;
    if !output.status.success() || output.stdout.is_empty() {
        return Err(format!(
            "ffmpeg could not extract frame {index} of {video}: {}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    let before = codec::decode(&output.stdout, codec::ImageFormat::Png)?;
    let after = enhance(&before, &EnhanceParams::default());

    let (w, h) = before.dimensions();
    let mut side = RgbImage::new(w * 2, h);
    side.copy_from(&before, 0, 0)?;
    side.copy_from(&after, w, 0)?;
    std::fs::write(&out_path, codec::encode(&side, codec::ImageFormat::Png)?)?;
    println!(
        "wrote {out_path} ({}x{h}): sharpness {:.2} -> {:.2}, contrast {:.2} -> {:.2}",
        w * 2,
        metrics::sharpness(&before),
        metrics::sharpness(&after),
        metrics::contrast(&before),
        metrics::contrast(&after)
    );
    Ok(())
}
