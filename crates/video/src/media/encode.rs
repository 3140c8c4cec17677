//! Encoding RGB frames into an H.264 MP4 segment through a pipe.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use image::RgbImage;
use serde::{Deserialize, Serialize};
use tokio::process::Child;
use tokio::task::JoinHandle;

use super::atomic::{rename_into_place, temp_path_for};
use super::frame_file::{SpliceError, splice_into_blocking, splice_slot_into_blocking};
use super::frames::read_all;
use super::pipe::Pipe;
use super::tool::{self, FFMPEG};
use super::{MediaError, Rational};

/// libx264's presets, fastest first (the names are case-sensitive).
pub const X264_PRESETS: [&str; 10] = [
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
];

/// libx264 options that make multi-threaded output a function of the frames alone.
///
/// With more than one thread libx264 runs its frame-type decisions (lookahead) in a
/// thread of its own by default, and at the end of the stream how many frames that thread
/// has seen depends on scheduling: on a busy machine about one encode in six gave other
/// bytes for the last B-frames of a segment. `sync-lookahead=0` makes the decisions in
/// the encoding thread; the frame threads still encode in parallel, and the cost measured
/// at 720p was within noise.
const DETERMINISTIC_X264: &str = "sync-lookahead=0";

/// libx264 settings for [`SegmentEncoder`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodeSettings {
    /// Constant rate factor, 0 (lossless) to 51; 18 is visually near-transparent.
    pub crf: u8,
    /// libx264 preset, `ultrafast` to `placebo`.
    pub preset: String,
    /// Encoder threads. libx264's output depends on the thread count, so it is fixed
    /// (not "auto", which follows the machine's cores) to make output reproducible
    /// across machines. 1 by default: the pipeline encodes several segments at once.
    pub threads: u32,
}

impl Default for EncodeSettings {
    fn default() -> Self {
        Self {
            crf: 18,
            preset: "medium".into(),
            threads: 1,
        }
    }
}

impl EncodeSettings {
    fn validate(&self, path: &Path) -> Result<(), MediaError> {
        let invalid = |what: String| {
            Err(MediaError::InvalidArgument {
                path: path.to_owned(),
                what,
            })
        };
        if self.crf > 51 {
            return invalid(format!("crf {}: must be 0..=51", self.crf));
        }
        if !X264_PRESETS.contains(&self.preset.as_str()) {
            return invalid(format!(
                "preset {:?}: must be one of {}",
                self.preset,
                X264_PRESETS.join(", ")
            ));
        }
        if self.threads == 0 {
            return invalid("threads 0: must be at least 1".into());
        }
        Ok(())
    }
}

/// The pixel format of encoded segments: yuv420p, which every player decodes, when
/// both sides are even; yuv444p otherwise, since 4:2:0 chroma needs even sizes and
/// cropping or padding would change the frame.
pub fn pixel_format(width: u32, height: u32) -> &'static str {
    if width.is_multiple_of(2) && height.is_multiple_of(2) {
        "yuv420p"
    } else {
        "yuv444p"
    }
}

/// Encodes frames pushed one at a time into an MP4 (H.264, yuv420p, or yuv444p for odd
/// sizes) with `ffmpeg`.
///
/// Output is deterministic: the same frames and settings give a byte-identical file
/// (fixed thread count, bitexact flags, no metadata). It is written under a temporary
/// name and renamed by [`finish`](Self::finish); dropping an unfinished encoder kills
/// ffmpeg and removes the temporary file.
#[derive(Debug)]
pub struct SegmentEncoder {
    out_path: PathBuf,
    tmp_path: PathBuf,
    width: u32,
    height: u32,
    child: Child,
    _tracked: tool::Tracked,
    stdin: Option<Pipe>,
    stderr: Option<JoinHandle<Vec<u8>>>,
    frames: u64,
    finished: bool,
}

impl SegmentEncoder {
    /// Starts encoding `width` x `height` frames at `fps` into `out_path` (`.mp4`).
    pub async fn create(
        out_path: &Path,
        width: u32,
        height: u32,
        fps: Rational,
        settings: &EncodeSettings,
    ) -> Result<Self, MediaError> {
        settings.validate(out_path)?;
        if width == 0 || height == 0 || fps.num == 0 || fps.den == 0 {
            let what = format!("frame size {width}x{height} at {fps} fps: needs non-zero sizes");
            return Err(MediaError::InvalidArgument {
                path: out_path.to_owned(),
                what,
            });
        }
        let tmp_path = temp_path_for(out_path);
        let mut cmd = tool::command(FFMPEG, ["-v", "error", "-nostdin", "-y"]);
        cmd.args([
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-s",
            &format!("{width}x{height}"),
        ])
        .args(["-framerate", &fps.to_string(), "-i", "-", "-map", "0:v:0"])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            &settings.preset,
            "-crf",
            &settings.crf.to_string(),
        ])
        .args([
            "-threads",
            &settings.threads.to_string(),
            "-x264-params",
            DETERMINISTIC_X264,
            "-pix_fmt",
            pixel_format(width, height),
        ])
        .args([
            "-fflags",
            "+bitexact",
            "-flags:v",
            "+bitexact",
            "-map_metadata",
            "-1",
            "-f",
            "mp4",
        ])
        .arg(&tmp_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| tool::spawn_error(FFMPEG, out_path, e))?;
        let stdin = match child.stdin.take().map(|s| s.into_owned_fd()) {
            Some(Ok(fd)) => Some(Pipe::new(fd, width as usize * height as usize * 3)),
            Some(Err(source)) => {
                return Err(MediaError::Io {
                    path: out_path.to_owned(),
                    action: "send frames to ffmpeg",
                    source,
                });
            }
            None => None,
        };
        let stderr = child.stderr.take().map(|s| tokio::spawn(read_all(s)));
        Ok(Self {
            out_path: out_path.to_owned(),
            tmp_path,
            width,
            height,
            _tracked: tool::Tracked::new(&child),
            child,
            stdin,
            stderr,
            frames: 0,
            finished: false,
        })
    }

    /// Frames pushed so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Sends one frame to the encoder; it must have the size given to [`create`](Self::create).
    /// Copies the frame: a caller that owns its frames uses [`push_owned`](Self::push_owned).
    pub async fn push(&mut self, frame: &RgbImage) -> Result<(), MediaError> {
        self.push_owned(frame.clone()).await.map(drop)
    }

    /// Sends one frame to the encoder without copying it (one blocking write on the
    /// blocking pool, see [`Pipe`]) and gives it back, for its buffer to be reused.
    pub async fn push_owned(&mut self, frame: RgbImage) -> Result<RgbImage, MediaError> {
        if frame.dimensions() != (self.width, self.height) {
            return Err(MediaError::FrameSize {
                path: self.out_path.clone(),
                width: self.width,
                height: self.height,
                got_width: frame.width(),
                got_height: frame.height(),
            });
        }
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(self.closed());
        };
        let (width, height) = frame.dimensions();
        let (buf, written) = stdin.write_all(frame.into_raw()).await;
        if let Err(source) = written {
            return Err(self.send_failed(source).await);
        }
        self.frames += 1;
        // The same buffer comes back whenever the write succeeded.
        Ok(RgbImage::from_raw(width, height, buf).unwrap_or_default())
    }

    /// Sends the frames of the frame files `paths`, in order, in one task on the blocking
    /// pool; the kernel moves their pixels from the files to the pipe (see
    /// [`splice_into_blocking`]), so they never pass through this process's memory. A
    /// missing or damaged file is its error (naming it); a closed pipe, ffmpeg's.
    pub async fn push_files(&mut self, paths: Vec<PathBuf>) -> Result<(), MediaError> {
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(self.closed());
        };
        let (width, height) = (self.width, self.height);
        let sent = stdin
            .with(move |pipe| {
                let mut sent = 0;
                for path in &paths {
                    if let Err(e) = splice_into_blocking(path, pipe, width, height) {
                        return (sent, Err(e));
                    }
                    sent += 1;
                }
                (sent, Ok(()))
            })
            .await;
        self.sent(sent).await
    }

    /// Counts the frames a batch sent and reports its error: a frame file's own, or
    /// ffmpeg's when the pipe closed.
    async fn sent(
        &mut self,
        sent: std::io::Result<(u64, Result<(), SpliceError>)>,
    ) -> Result<(), MediaError> {
        let (sent, result) = match sent {
            Ok(done) => done,
            Err(lost) => (0, Err(SpliceError::Sink(lost))),
        };
        self.frames += sent;
        match result {
            Ok(()) => Ok(()),
            Err(SpliceError::File(e)) => Err(e),
            Err(SpliceError::Sink(source)) => Err(self.send_failed(source).await),
        }
    }

    /// Sends frames `first`..`first + count` of the frames file `path` (see
    /// [`splice_slot_into_blocking`]), as [`push_files`](Self::push_files) does for frame
    /// files.
    pub async fn push_slots(
        &mut self,
        path: PathBuf,
        first: u64,
        count: u64,
    ) -> Result<(), MediaError> {
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(self.closed());
        };
        let (width, height) = (self.width, self.height);
        let sent = stdin
            .with(move |pipe| {
                let file = match std::fs::File::open(&path) {
                    Ok(file) => file,
                    Err(e) => {
                        let e = MediaError::reading(&path, "read frame", e);
                        return (0, Err(SpliceError::File(e)));
                    }
                };
                for i in 0..count {
                    let sent =
                        splice_slot_into_blocking(&path, &file, first + i, pipe, width, height);
                    if let Err(e) = sent {
                        return (i, Err(e));
                    }
                }
                (count, Ok(()))
            })
            .await;
        self.sent(sent).await
    }

    /// Takes the pipe to ffmpeg out, for a blocking task that writes frames into it
    /// ([`FrameReader::transform_into`](super::FrameReader::transform_into)); the error
    /// when ffmpeg already failed.
    pub(crate) fn take_input(&mut self) -> Result<std::fs::File, MediaError> {
        self.stdin
            .as_mut()
            .and_then(Pipe::take)
            .ok_or_else(|| self.closed())
    }

    /// Puts back the pipe taken with [`take_input`](Self::take_input), `frames` frames
    /// later; `failed` is the error that stopped the writes, if any (ffmpeg's stderr then
    /// says why).
    pub(crate) async fn put_input(
        &mut self,
        file: std::fs::File,
        frames: u64,
        failed: Option<std::io::Error>,
    ) -> Result<(), MediaError> {
        self.frames += frames;
        match failed {
            None => {
                if let Some(stdin) = self.stdin.as_mut() {
                    stdin.put(file);
                }
                Ok(())
            }
            Some(source) => Err(self.send_failed(source).await),
        }
    }

    /// Closes the input, waits for ffmpeg and renames the file into place.
    pub async fn finish(mut self) -> Result<PathBuf, MediaError> {
        if self.frames == 0 {
            let what = "frame count 0: push at least one frame before finish".to_owned();
            return Err(MediaError::InvalidArgument {
                path: self.out_path.clone(),
                what,
            });
        }
        let Some(stdin) = self.stdin.take() else {
            return Err(self.closed());
        };
        // Writes are unbuffered: closing the pipe is all ffmpeg needs to see the end.
        drop(stdin);
        self.wait_success().await?;
        rename_into_place(&self.tmp_path, &self.out_path).await?;
        self.finished = true;
        Ok(self.out_path.clone())
    }

    fn closed(&self) -> MediaError {
        let what = "encoder: ffmpeg already failed, no more frames accepted".to_owned();
        MediaError::InvalidArgument {
            path: self.out_path.clone(),
            what,
        }
    }

    async fn wait_success(&mut self) -> Result<(), MediaError> {
        tool::wait_success(&mut self.child, self.stderr.take(), &self.out_path).await
    }

    /// The error of a frame that could not be sent: a broken pipe means ffmpeg exited,
    /// and its stderr (through its exit status) says why.
    async fn send_failed(&mut self, source: std::io::Error) -> MediaError {
        self.stdin = None;
        match self.wait_success().await {
            Err(exited) => exited,
            Ok(()) => MediaError::Io {
                path: self.out_path.clone(),
                action: "send frame to ffmpeg",
                source,
            },
        }
    }
}

impl Drop for SegmentEncoder {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.child.start_kill();
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
}
