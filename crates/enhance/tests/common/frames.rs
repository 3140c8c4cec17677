//! Real video frames for tests, examples and benches, extracted with the system ffmpeg.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use image::RgbImage;

/// Where the project's sample videos live: the repository's `media/`.
pub(crate) const MEDIA_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../media");

/// Frame `index` of `media/{video}` as RGB, or `None` if ffmpeg or the file is missing.
pub(crate) fn try_video_frame(video: &str, index: u32) -> Option<RgbImage> {
    let path = Path::new(MEDIA_DIR).join(video);
    if !path.exists() {
        return None;
    }
    let output = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&path)
        .args(["-vf", &format!("select=eq(n\\,{index})"), "-frames:v", "1"])
        .args(["-f", "image2pipe", "-vcodec", "png", "-"])
        .output()
        .ok()?;
    if !output.status.success() || output.stdout.is_empty() {
        return None;
    }
    Some(
        image::load_from_memory_with_format(&output.stdout, image::ImageFormat::Png)
            .ok()?
            .into_rgb8(),
    )
}

/// Like [`try_video_frame`], panicking with the reason when ffmpeg or the file is missing.
pub(crate) fn video_frame(video: &str, index: u32) -> RgbImage {
    try_video_frame(video, index).unwrap_or_else(|| {
        panic!(
            "could not extract frame {index} of {MEDIA_DIR}/{video}: is /usr/bin/ffmpeg installed?"
        )
    })
}

/// A deterministic textured frame (gradients, edges, fine noise) for when ffmpeg is absent.
pub(crate) fn synthetic_frame(width: u32, height: u32) -> RgbImage {
    let mut state: u32 = 0x1234_5678;
    RgbImage::from_fn(width, height, |x, y| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let noise = (state & 15) as u8;
        let stripes = if (x / 16 + y / 24) % 2 == 0 { 60 } else { 0 };
        let r = ((x * 200 / width.max(1)) as u8)
            .saturating_add(stripes)
            .saturating_add(noise);
        let g = ((y * 200 / height.max(1)) as u8).saturating_add(noise);
        let b = (((x + y) % 256) as u8 / 2).saturating_add(stripes);
        image::Rgb([r, g, b])
    })
}

/// A 1280x720 frame: a real one when ffmpeg is available, else synthetic. The second
/// value says which.
pub(crate) fn frame_720p() -> (RgbImage, &'static str) {
    match try_video_frame("bigbuckbunny.mp4", 30) {
        Some(f) if f.dimensions() == (1280, 720) => (f, "bigbuckbunny.mp4 frame 30"),
        _ => (synthetic_frame(1280, 720), "synthetic"),
    }
}
