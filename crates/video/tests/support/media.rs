//! Helpers shared by the `media_*` tests (included with `#[path]`).
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A sample video from the shared media folder.
pub fn sample(name: &str) -> PathBuf {
    idempipe_testkit::media(name)
}

pub use idempipe_testkit::TempDir;

/// Runs ffmpeg with `args` (quiet, overwrite) and asserts success.
pub fn ffmpeg(args: &[&str]) {
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-y"])
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "ffmpeg {args:?} failed");
}

/// ffprobe's `-show_streams -show_format -count_packets` JSON for `path`.
pub fn ffprobe_json(path: &Path) -> serde_json::Value {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_streams",
            "-show_format",
            "-count_packets",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "ffprobe {} failed", path.display());
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The first stream of `codec_type` in ffprobe JSON.
pub fn stream<'a>(json: &'a serde_json::Value, codec_type: &str) -> Option<&'a serde_json::Value> {
    json["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["codec_type"] == codec_type)
}

/// The names of the files in `dir`, sorted.
pub fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
