//! Checking outputs: decoded frame hashes (ffmpeg's framemd5) and exact bytes.

use std::path::Path;

use anyhow::Context;

use crate::env::run_checked;

/// What a clean, fault-free run produced: the yardstick of every scenario.
#[derive(Debug, Clone)]
pub(crate) struct Reference {
    /// The decoded video frames' MD5s, in order.
    pub(crate) frame_hashes: Vec<String>,
    /// The output file's bytes.
    pub(crate) bytes: Vec<u8>,
}

impl Reference {
    /// Reads the clean run's output at `path`.
    pub(crate) async fn of(path: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            frame_hashes: frame_hashes(path).await?,
            bytes: std::fs::read(path)
                .with_context(|| format!("cannot read {}", path.display()))?,
        })
    }

    /// Whether the video at `path` decodes to the same frames.
    pub(crate) async fn same_frames(&self, path: &Path) -> bool {
        frame_hashes(path)
            .await
            .is_ok_and(|hashes| hashes == self.frame_hashes)
    }

    /// Whether the file at `path` has the same bytes.
    pub(crate) fn same_bytes(&self, path: &Path) -> bool {
        std::fs::read(path).is_ok_and(|b| b == self.bytes)
    }
}

/// The MD5 of every decoded video frame (ffmpeg -f framemd5), in order.
pub(crate) async fn frame_hashes(path: &Path) -> anyhow::Result<Vec<String>> {
    let path = path.to_str().context("output path is not UTF-8")?;
    let out = run_checked(
        "ffmpeg",
        &[
            "-v", "error", "-i", path, "-map", "0:v", "-f", "framemd5", "-",
        ],
    )
    .await?;
    Ok(out
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit(',').next().map(|h| h.trim().to_string()))
        .collect())
}
