//! Property tests of what the pipeline reads from ffprobe and from the user: ffprobe's
//! JSON (every field missing, mistyped, zero, negative, huge or garbage) and the run
//! settings (every numeric flag at any value).
//!
//! The probe parser never panics; it accepts only a usable description (sizes, frame
//! rate and frame count positive, rotation normalised) and otherwise names the file.
//! Settings validation never panics, names the flag it refuses, and whatever it

use std::path::Path;

use idempipe_engine::LimiterConfig;
use idempipe_enhance::EnhanceParams;
use idempipe_video::media::probe::parse_probe;
use idempipe_video::pipeline::Settings;
use proptest::prelude::*;
use serde_json::{Value, json};

fn number_text() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u64>().prop_map(|n| json!(n.to_string())),
        any::<f64>().prop_map(|v| json!(v.to_string())),
        (0u32..500).prop_map(|n| json!(n.to_string())),
        prop::sample::select(vec!["", "N/A", "-1", "0", "nan", "inf", "1e999", "12abc"])
            .prop_map(|s| json!(s)),
        any::<i64>().prop_map(|n| json!(n)),
        Just(Value::Null),
    ]
}

fn rate() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec![
            "30/1",
            "30000/1001",
            "25/1",
            "0/0",
            "1/0",
            "0/1",
            "-30/1",
            "4294967295/1",
            "1/4294967295",
            "30",
            "/",
            "a/b",
            "",
        ])
        .prop_map(|s| json!(s)),
        (any::<u32>(), any::<u32>()).prop_map(|(n, d)| json!(format!("{n}/{d}"))),
        any::<f64>().prop_map(|v| json!(v)),
    ]
}

fn dimension() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => (1u32..5000).prop_map(|n| json!(n)),
        1 => any::<u32>().prop_map(|n| json!(n)),
        1 => any::<i64>().prop_map(|n| json!(n)),
        1 => Just(json!("640")),
        1 => Just(Value::Null),
    ]
}

fn stream() -> impl Strategy<Value = Value> {
    let kind = prop::sample::select(vec!["video", "video", "audio", "subtitle", "data", "?"]);
    let rotation = prop_oneof![
        any::<f64>().prop_map(|v| json!([{ "rotation": v }])),
        any::<i64>().prop_map(|v| json!([{ "rotation": v }])),
        Just(json!([{ "side_data_type": "x" }])),
        Just(json!("not a list")),
    ];
    let tags = prop_oneof![
        any::<String>().prop_map(|r| json!({ "rotate": r })),
        Just(json!({ "rotate": 90 })),
        Just(json!(null)),
    ];
    (
        (kind, dimension(), dimension(), rate(), rate()),
        (number_text(), number_text(), number_text()),
        (any::<bool>(), rotation, tags, any::<bool>()),
    )
        .prop_map(
            |((kind, w, h, r, avg), (duration, frames, packets), (cover, side, tags, named))| {
                let mut s = json!({
                    "codec_type": kind, "width": w, "height": h,
                    "r_frame_rate": r, "avg_frame_rate": avg,
                    "duration": duration, "nb_frames": frames, "nb_read_packets": packets,
                    "disposition": { "attached_pic": i32::from(cover) },
                    "side_data_list": side, "tags": tags,
                });
                if named {
                    s["codec_name"] = json!("h264");
                    s["pix_fmt"] = json!("yuv420p10le");
                }
                s
            },
        )
}

fn probe_json() -> impl Strategy<Value = Vec<u8>> {
    let format = prop::option::of(
        (number_text(), any::<String>())
            .prop_map(|(d, name)| json!({ "duration": d, "format_name": name })),
    );
    let document = (prop::collection::vec(stream(), 0..4), format).prop_map(|(streams, format)| {
        let mut doc = json!({ "streams": streams });
        if let Some(format) = format {
            doc["format"] = format;
        }
        doc.to_string().into_bytes()
    });
    prop_oneof![
        6 => document,
        1 => prop::collection::vec(any::<u8>(), 0..200),
        1 => Just(b"{\"streams\": 7}".to_vec()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn probe_json_is_usable_or_the_file_is_named(json in probe_json()) {
        let path = Path::new("/videos/odd input ü.mp4");
        match parse_probe(path, &json) {
            Ok(info) => {
                prop_assert!(info.width > 0 && info.height > 0);
                prop_assert!(info.fps.num > 0 && info.fps.den > 0);
                prop_assert!(info.fps_f64.is_finite() && info.fps_f64 > 0.0);
                prop_assert!(info.frame_count > 0);
                prop_assert!(info.rotation < 360);
                prop_assert!(info.duration_secs.is_finite() && info.duration_secs >= 0.0);
                let (w, h) = info.display_size();
                prop_assert_eq!(w as u64 * h as u64, info.width as u64 * info.height as u64);
            }
            Err(e) => {
                let message = e.to_string();
                prop_assert!(message.starts_with("/videos/odd input ü.mp4: "), "{message}");
            }
        }
    }

    #[test]
    fn settings_are_refused_by_flag_or_accepted_by_the_engine(
        (sharpness, contrast, brightness) in (any::<f32>(), any::<f32>(), any::<f32>()),
        crf in any::<u8>(),
        segment_secs in prop_oneof![any::<f64>(), 0.0f64..10.0],
        window in any::<u32>(),
        api_rate in prop_oneof![any::<f64>(), 0.0f64..2000.0],
        preset in prop::sample::select(vec!["ultrafast", "medium", "placebo", "", "fastest", "MEDIUM"]),
        provider in prop::sample::select(vec![
            "local", "http://127.0.0.1:8080", "https://api.example/v1", "ftp://x", "127.0.0.1:80",
            "http://h/?q=1", "", "http://",
        ]),
    ) {
        let settings = Settings {
            provider: provider.into(),
            enhance: EnhanceParams { sharpness, contrast, brightness },
            crf,
            preset: preset.into(),
            segment_secs,
            window,
            api_rate,
            ..Settings::default()
        };
        match settings.validate() {
            Ok(()) => {
                let limiter = LimiterConfig::new(provider, api_rate).validate();
                prop_assert!(limiter.is_ok(), "--api-rate {api_rate} accepted, but {limiter:?}");
            }
            Err(e) => {
                let message = e.to_string();
                prop_assert!(message.contains("--"), "no flag named: {message}");
            }
        }
    }
}
