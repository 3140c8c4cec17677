//! A corpus of odd media, generated with ffmpeg in the test (each input a second or
//! less), through the real `idempipe process`: every valid input completes with every
//! frame at its displayed size; every invalid one exits 2 with a message naming the file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use idempipe_testkit::TempDir;
use serde_json::Value;

/// Runs ffmpeg on lavfi test sources: `inputs` then `outputs` then `out`.
fn generate(out: &Path, inputs: &[&str], outputs: &[&str]) {
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-y"])
        .args(inputs)
        .args(outputs)
        .arg(out)
        .status()
        .expect("run ffmpeg");
    assert!(status.success(), "ffmpeg could not make {}", out.display());
}

/// A lavfi test picture (`-t` seconds of it at `size` and `rate`).
fn picture(size: &str, rate: u32, secs: f64) -> Vec<String> {
    vec![
        "-f".into(),
        "lavfi".into(),
        "-i".into(),
        format!("testsrc2=size={size}:rate={rate}:duration={secs}"),
    ]
}

/// A lavfi tone of `secs` seconds.
fn tone(freq: u32, secs: f64) -> Vec<String> {
    vec![
        "-f".into(),
        "lavfi".into(),
        "-i".into(),
        format!("sine=frequency={freq}:duration={secs}"),
    ]
}

/// (decoded frames, displayed width, displayed height) of the first video stream.
fn facts(path: &Path) -> (u64, u64, u64) {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-print_format", "json", "-count_frames"])
        .args(["-select_streams", "v:0", "-show_streams"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "ffprobe {}", path.display());
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &json["streams"][0];
    let frames = s["nb_read_frames"].as_str().unwrap().parse().unwrap();
    let (w, h) = (s["width"].as_u64().unwrap(), s["height"].as_u64().unwrap());
    let rotation = s["side_data_list"]
        .as_array()
        .and_then(|l| l.iter().find_map(|d| d["rotation"].as_i64()))
        .or_else(|| s["tags"]["rotate"].as_str().and_then(|r| r.parse().ok()))
        .unwrap_or(0);
    if rotation.rem_euclid(180) == 90 {
        (frames, h, w)
    } else {
        (frames, w, h)
    }
}

/// `idempipe process INPUT -o DIR/out.mp4` with fast settings and a database in `dir`.
fn process(input: &Path, dir: &Path) -> (Output, PathBuf) {
    let output = dir.join("out.mp4");
    let out = Command::new(env!("CARGO_BIN_EXE_idempipe"))
        .env_remove("IDEMPIPE_DB")
        .env("RUST_LOG", "warn")
        .arg("process")
        .arg(input)
        .arg("-o")
        .arg(&output)
        .arg("--db")
        .arg(dir.join("state.db"))
        .arg("--artifacts")
        .arg(dir.join("artifacts"))
        .args(["--preset", "ultrafast", "--segment-seconds", "0.5"])
        .args(["--captions", "off", "--workers", "2"])
        .output()
        .unwrap();
    (out, output)
}

/// Generates `name` with ffmpeg, processes it, and checks the output has every frame of
/// the input at the size the input is displayed at.
fn completes_with_every_frame(name: &str, inputs: Vec<String>, outputs: &[&str]) {
    let dir = TempDir::new("odd-media");
    let input = dir.join(name);
    let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    generate(&input, &inputs, outputs);
    let expected = facts(&input);
    let (out, output) = process(&input, dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{name}: {stderr}");
    assert_eq!(facts(&output), expected, "{name}: (frames, width, height)");
}

/// Processes `input` and checks it exits 2 naming the file and `problem`.
fn refused(input: &Path, problem: &str) {
    let dir = TempDir::new("odd-media-bad");
    let (out, output) = process(input, dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}: {stderr}", input.display());
    assert!(
        stderr.contains(&input.display().to_string()) && stderr.contains(problem),
        "{}: {stderr}",
        input.display()
    );
    assert!(!output.exists());
}

const H264: &[&str] = &[
    "-c:v",
    "libx264",
    "-preset",
    "ultrafast",
    "-pix_fmt",
    "yuv420p",
];

#[test]
fn variable_frame_rate() {
    // Every fifth frame dropped and the rest kept at their times: gaps of 1/30 and 2/30 s.
    let mut args = H264.to_vec();
    args.extend([
        "-vf",
        "select='not(eq(mod(n\\,5)\\,2))'",
        "-fps_mode",
        "vfr",
    ]);
    completes_with_every_frame("vfr.mp4", picture("160x120", 30, 1.0), &args);
}

#[test]
fn odd_dimensions() {
    completes_with_every_frame(
        "odd.mkv",
        picture("161x121", 25, 0.5),
        &[
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv444p",
        ],
    );
}

#[test]
fn rotation_metadata() {
    let mut args = H264.to_vec();
    args.extend(["-metadata:s:v:0", "rotate=90"]);
    completes_with_every_frame("rotated.mp4", picture("160x96", 25, 0.6), &args);
}

#[test]
fn ten_bit_hevc() {
    completes_with_every_frame(
        "10bit.mkv",
        picture("160x120", 25, 0.5),
        &[
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p10le",
            "-x265-params",
            "log-level=error",
        ],
    );
}

#[test]
fn vp9_with_opus_in_webm() {
    let mut inputs = picture("160x120", 25, 0.6);
    inputs.extend(tone(440, 0.6));
    completes_with_every_frame(
        "vp9.webm",
        inputs,
        &[
            "-c:v",
            "libvpx-vp9",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-c:a",
            "libopus",
        ],
    );
}

#[test]
fn av1_in_matroska() {
    completes_with_every_frame(
        "av1.mkv",
        picture("160x128", 25, 0.5),
        &[
            "-c:v",
            "libaom-av1",
            "-cpu-used",
            "8",
            "-usage",
            "realtime",
            "-crf",
            "40",
        ],
    );
}

#[test]
fn several_audio_tracks() {
    let mut inputs = picture("160x120", 25, 0.8);
    inputs.extend(tone(440, 0.8));
    inputs.extend(tone(880, 0.8));
    let mut args = H264.to_vec();
    args.extend(["-map", "0:v", "-map", "1:a", "-map", "2:a", "-c:a", "aac"]);
    completes_with_every_frame("two-audio.mkv", inputs, &args);
}

#[test]
fn stream_starting_at_an_offset() {
    let mut inputs = vec!["-itsoffset".to_string(), "1.5".to_string()];
    inputs.extend(picture("160x120", 25, 0.6));
    inputs.extend(tone(440, 2.0));
    let mut args = H264.to_vec();
    args.extend(["-c:a", "aac"]);
    completes_with_every_frame("offset.mp4", inputs, &args);
}

#[test]
fn a_single_keyframe_in_a_long_gop() {
    let mut args = H264.to_vec();
    args.extend(["-g", "1000", "-keyint_min", "1000", "-sc_threshold", "0"]);
    completes_with_every_frame("long-gop.mp4", picture("160x120", 30, 1.0), &args);
}

#[test]
fn a_4k_input() {
    completes_with_every_frame("4k.mp4", picture("3840x2160", 30, 0.1), H264);
}

#[test]
fn names_with_spaces_and_non_ascii() {
    completes_with_every_frame("my clip ü 日本 (1).mp4", picture("160x120", 25, 0.5), H264);
}

#[test]
fn invalid_files_exit_2_naming_the_file() {
    let dir = TempDir::new("odd-media-invalid");
    let zero = dir.join("zero bytes ü.mp4");
    std::fs::write(&zero, b"").unwrap();
    refused(&zero, "file is empty");

    let whole = dir.join("whole.mp4");
    let inputs = picture("160x120", 25, 1.0);
    let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let mut args = H264.to_vec();
    args.extend(["-movflags", "+faststart"]);
    generate(&whole, &inputs, &args);
    let bytes = std::fs::read(&whole).unwrap();
    let truncated = dir.join("truncated.mp4");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    refused(&truncated, "truncated");
    let headless = dir.join("no index.mp4");
    std::fs::write(&headless, &bytes[bytes.len() / 2..]).unwrap();
    refused(&headless, "not a readable video file");

    let png = dir.join("picture.mp4");
    generate(
        &png,
        &["-f", "lavfi", "-i", "testsrc2=size=64x48"],
        &["-frames:v", "1", "-f", "image2", "-c:v", "png"],
    );
    refused(&png, "still image");

    let text = dir.join("notes.mp4");
    std::fs::write(&text, "not a video\n").unwrap();
    refused(&text, "not a readable video file");

    let audio = dir.join("only audio.m4a");
    let inputs = tone(440, 0.5);
    let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    generate(&audio, &inputs, &["-c:a", "aac"]);
    refused(&audio, "has no video stream");
}
