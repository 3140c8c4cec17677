//! `FrameReader` on whole files, frame files and thumbnails.

#[path = "support/media.rs"]
mod support;

use std::time::Instant;

use idempipe_video::media::{
    FrameReader, MediaError, read_frame_file, write_frame_file, write_thumbnail,
};
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ImageEncoder, RgbImage};
use support::{TempDir, sample};

async fn first_frame(name: &str) -> RgbImage {
    let mut reader = FrameReader::open(&sample(name)).await.unwrap();
    reader.next_frame().await.unwrap().unwrap()
}

#[tokio::test]
async fn reads_every_frame_of_a_file() {
    let mut reader = FrameReader::open(&sample("bigbuckbunny.mp4"))
        .await
        .unwrap();
    assert_eq!((reader.width(), reader.height()), (1280, 720));
    while let Some(frame) = reader.next_frame().await.unwrap() {
        assert_eq!(frame.dimensions(), (1280, 720));
    }
    assert_eq!(reader.frames_read(), 132);
}

/// `open_from` skips frames inside ffmpeg: its first frame is the whole stream's frame N,
/// and it then reads to the end (the thumbnail stage picks one frame this way).
#[tokio::test]
async fn open_from_starts_at_the_given_frame() {
    let path = sample("carphone_pristine.mp4");
    let mut whole = FrameReader::open(&path).await.unwrap();
    let mut frames = Vec::new();
    while let Some(frame) = whole.next_frame().await.unwrap() {
        frames.push(frame);
    }
    let mut from = FrameReader::open_from(&path, 37).await.unwrap();
    let first = from.next_frame().await.unwrap().unwrap();
    assert!(first == frames[37], "frame 37");
    assert!(first != frames[36] && first != frames[38]);
    while from.next_frame().await.unwrap().is_some() {}
    assert_eq!(from.frames_read() as usize, frames.len() - 37);
}

#[tokio::test]
async fn a_wrong_frame_size_is_an_error() {
    let mut reader = FrameReader::open_with_size(&sample("bikes.mp4"), 641, 272)
        .await
        .unwrap();
    let err = loop {
        match reader.next_frame().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("expected an error for a wrong frame size"),
            Err(e) => break e,
        }
    };
    assert!(err.to_string().contains("bikes.mp4"), "{err}");
}

#[tokio::test]
async fn a_missing_input_fails_with_its_name() {
    let err = FrameReader::open(&sample("no-such.mp4")).await.unwrap_err();
    assert!(err.to_string().contains("no-such.mp4"), "{err}");
}

#[tokio::test]
async fn frame_files_round_trip_and_reject_damage() {
    let frame = first_frame("bikes.mp4").await;
    let dir = TempDir::new("frame-file");
    let path = dir.join("f000001.rgb");
    write_frame_file(&path, &frame).await.unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 8 + 640 * 272 * 3);
    assert_eq!(read_frame_file(&path).await.unwrap(), frame);
    assert_eq!(
        support::file_names(dir.path()),
        ["f000001.rgb"],
        "no temporary file left"
    );

    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
    let err = read_frame_file(&path).await.unwrap_err();
    assert!(matches!(err, MediaError::BadFrameFile { .. }), "{err}");
    assert!(err.to_string().contains("f000001.rgb"), "{err}");
}

/// Compares the raw frame format with fast PNG at 720p; prints the timings
/// (`cargo test -p idempipe-video --test media_frames -- --nocapture`).
#[tokio::test]
async fn raw_frame_files_beat_png_at_720p() {
    let frame = first_frame("bigbuckbunny.mp4").await;
    let dir = TempDir::new("frame-bench");
    const N: u32 = 10;

    let start = Instant::now();
    for i in 0..N {
        write_frame_file(&dir.join(&format!("{i}.rgb")), &frame)
            .await
            .unwrap();
    }
    let raw_write = start.elapsed() / N;
    let start = Instant::now();
    for i in 0..N {
        read_frame_file(&dir.join(&format!("{i}.rgb")))
            .await
            .unwrap();
    }
    let raw_read = start.elapsed() / N;

    let start = Instant::now();
    let mut png_len = 0;
    for i in 0..N {
        let mut png = Vec::new();
        PngEncoder::new_with_quality(&mut png, CompressionType::Fast, FilterType::Adaptive)
            .write_image(frame.as_raw(), 1280, 720, image::ExtendedColorType::Rgb8)
            .unwrap();
        png_len = png.len();
        std::fs::write(dir.join(&format!("{i}.png")), png).unwrap();
    }
    let png_write = start.elapsed() / N;
    let start = Instant::now();
    for i in 0..N {
        let decoded = image::open(dir.join(&format!("{i}.png")))
            .unwrap()
            .to_rgb8();
        assert_eq!(decoded.dimensions(), (1280, 720));
    }
    let png_read = start.elapsed() / N;

    eprintln!(
        "720p frame: raw write {raw_write:?} read {raw_read:?} ({} bytes); \
         png(fast) write {png_write:?} read {png_read:?} ({png_len} bytes)",
        8 + 1280 * 720 * 3
    );
    assert!(raw_write + raw_read < png_write + png_read);
}

#[tokio::test]
async fn thumbnails_are_at_most_640_wide() {
    let dir = TempDir::new("thumb");
    let big = first_frame("bigbuckbunny.mp4").await;
    let path = dir.join("thumb.jpg");
    write_thumbnail(&path, &big).await.unwrap();
    let thumb = image::open(&path).unwrap();
    assert_eq!((thumb.width(), thumb.height()), (640, 360));

    let small = first_frame("carphone_pristine.mp4").await;
    write_thumbnail(&path, &small).await.unwrap();
    let thumb = image::open(&path).unwrap();
    assert_eq!(
        (thumb.width(), thumb.height()),
        (176, 144),
        "small frames are not enlarged"
    );
}
