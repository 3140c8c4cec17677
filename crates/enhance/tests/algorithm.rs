//! The algorithm on real video frames (extracted with the system ffmpeg).

mod common;

use common::frames::video_frame;
use idempipe_enhance::{EnhanceParams, enhance, metrics};
use image::RgbImage;

fn real_frames() -> Vec<(&'static str, RgbImage)> {
    vec![
        ("bigbuckbunny 30", video_frame("bigbuckbunny.mp4", 30)),
        ("bikes 100", video_frame("bikes.mp4", 100)),
        ("carphone 10", video_frame("carphone_pristine.mp4", 10)),
    ]
}

#[test]
fn enhancement_changes_keeps_size_and_is_deterministic() {
    let params = EnhanceParams::default();
    for (name, frame) in real_frames() {
        let once = enhance(&frame, &params);
        assert_eq!(once.dimensions(), frame.dimensions(), "{name}");
        assert_ne!(once, frame, "{name}: output equals input");
        assert_eq!(
            once.as_raw(),
            enhance(&frame, &params).as_raw(),
            "{name}: not deterministic"
        );
        let twice = enhance(&once, &params);
        assert_ne!(twice, once, "{name}: enhancing twice changed nothing");
    }
}

#[test]
fn sharpness_and_contrast_rise() {
    let params = EnhanceParams::default();
    for (name, frame) in real_frames() {
        let out = enhance(&frame, &params);
        let (s0, s1) = (metrics::sharpness(&frame), metrics::sharpness(&out));
        let (c0, c1) = (metrics::contrast(&frame), metrics::contrast(&out));
        eprintln!("{name}: sharpness {s0:.2} -> {s1:.2}, contrast {c0:.2} -> {c1:.2}");
        assert!(s1 > s0 * 1.05, "{name}: sharpness {s0} -> {s1}");
        assert!(c1 > c0 * 1.02, "{name}: contrast {c0} -> {c1}");
    }
}

#[test]
fn zero_strength_turns_effects_off() {
    let frame = video_frame("carphone_pristine.mp4", 10);
    let off = EnhanceParams {
        sharpness: 0.0,
        contrast: 0.0,
        brightness: 0.0,
    };
    // Everything off leaves only the mild denoise: a little softer, same tones.
    let denoised = enhance(&frame, &off);
    assert!(metrics::sharpness(&denoised) < metrics::sharpness(&frame));
    assert!((metrics::contrast(&denoised) - metrics::contrast(&frame)).abs() < 1.0);
    let sharp = enhance(
        &frame,
        &EnhanceParams {
            sharpness: 1.0,
            ..off
        },
    );
    let sharper = enhance(
        &frame,
        &EnhanceParams {
            sharpness: 2.0,
            ..off
        },
    );
    assert!(metrics::sharpness(&sharper) > metrics::sharpness(&sharp));
    let contrasty = enhance(
        &frame,
        &EnhanceParams {
            contrast: 1.0,
            ..off
        },
    );
    assert!(metrics::contrast(&contrasty) > metrics::contrast(&denoised) + 5.0);
}
