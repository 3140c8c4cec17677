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

/// Frames moved by the kernel from the decoder into frame files and into the slots of a
/// segment's file are the decoded frames, byte for byte; the decoder's end shows as fewer
/// frames written; an encoder fed from those files and slots writes the same bytes as one
/// fed the frames from memory; and a slot file cut short is an error naming it.
#[tokio::test]
async fn frames_spliced_into_files_and_slots_are_the_decoded_frames() {
    use idempipe_video::media::{EncodeSettings, SegmentEncoder, probe};
    let path = sample("carphone_pristine.mp4");
    let mut whole = FrameReader::open(&path).await.unwrap();
    let mut frames = Vec::new();
    while let Some(frame) = whole.next_frame().await.unwrap() {
        frames.push(frame);
    }
    let (w, h) = frames[0].dimensions();
    let dir = TempDir::new("slots");
    let files: Vec<_> = (0..10).map(|i| dir.join(&format!("f/{i}.rgb"))).collect();
    let slots = dir.join("s/frames.rgb");
    let mut reader = FrameReader::open(&path).await.unwrap();
    assert_eq!(reader.frames_into_files(files.clone()).await.unwrap(), 10);
    let rest = frames.len() as u64 - 10;
    let written = reader
        .frames_into_slots(slots.clone(), 0, rest + 5)
        .await
        .unwrap();
    assert_eq!(written, rest, "the decoder ended");
    for (i, file) in files.iter().enumerate() {
        assert!(
            read_frame_file(file).await.unwrap() == frames[i],
            "file {i}"
        );
    }
    let bytes = std::fs::read(&slots).unwrap();
    let slot_len = 8 + (w * h * 3) as usize;
    assert_eq!(bytes.len(), slot_len * rest as usize);
    for (i, slot) in bytes.chunks(slot_len).enumerate() {
        assert_eq!(&slot[..4], &w.to_le_bytes());
        assert!(slot[8..] == *frames[10 + i].as_raw(), "slot {i}");
    }

    let info = probe(&path).await.unwrap();
    let settings = EncodeSettings {
        preset: "ultrafast".into(),
        ..EncodeSettings::default()
    };
    let mut from_memory =
        SegmentEncoder::create(&dir.join("memory.mp4"), w, h, info.fps, &settings)
            .await
            .unwrap();
    for frame in &frames {
        from_memory.push(frame).await.unwrap();
    }
    from_memory.finish().await.unwrap();
    let mut from_disk = SegmentEncoder::create(&dir.join("disk.mp4"), w, h, info.fps, &settings)
        .await
        .unwrap();
    from_disk.push_files(files.clone()).await.unwrap();
    from_disk.push_slots(slots.clone(), 0, rest).await.unwrap();
    from_disk.finish().await.unwrap();
    assert!(
        std::fs::read(dir.join("memory.mp4")).unwrap()
            == std::fs::read(dir.join("disk.mp4")).unwrap(),
        "the same frames encode to the same bytes"
    );

    std::fs::write(&slots, &bytes[..slot_len * 2 + 100]).unwrap();
    let mut short = SegmentEncoder::create(&dir.join("short.mp4"), w, h, info.fps, &settings)
        .await
        .unwrap();
    let err = short.push_slots(slots.clone(), 0, 3).await.unwrap_err();
    assert!(matches!(err, MediaError::BadFrameFile { .. }), "{err}");
    assert!(err.to_string().contains("frames.rgb"), "{err}");
}
