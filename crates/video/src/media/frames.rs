//! Decoding a video into RGB frames, one at a time, through a pipe.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use image::RgbImage;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Child;
use tokio::task::JoinHandle;

use super::MediaError;
use super::encode::SegmentEncoder;
use super::frame_file::{open_in_place, splice_from_blocking, splice_into_slot_blocking};
use super::pipe::{Pipe, read_full_blocking};
use super::probe::probe_display_size;
use super::tool::{self, FFMPEG};

/// Streams the frames of a video as [`RgbImage`]s, decoded by an `ffmpeg` child.
///
/// Memory stays at one frame plus the pipe buffer. Each frame is read by one blocking
/// call on the blocking pool ([`Pipe`]). The child is killed if the reader is dropped
/// early.
#[derive(Debug)]
pub struct FrameReader {
    path: PathBuf,
    width: u32,
    height: u32,
    child: Child,
    _tracked: tool::Tracked,
    stdout: Pipe,
    stderr: Option<JoinHandle<Vec<u8>>>,
    frames_read: u64,
    done: bool,
}

impl FrameReader {
    /// Opens `path`, asking ffprobe for the frame size (rotation applied).
    pub async fn open(path: &Path) -> Result<Self, MediaError> {
        let (width, height) = probe_display_size(path).await?;
        Self::open_with_size(path, width, height).await
    }

    /// Opens `path` whose decoded frames are `width` x `height` (e.g. from
    /// [`MediaInfo::display_size`](super::MediaInfo::display_size)).
    pub async fn open_with_size(path: &Path, width: u32, height: u32) -> Result<Self, MediaError> {
        Self::spawn(path, width, height, None).await
    }

    /// Opens `path` and skips its first `first` frames inside ffmpeg (they are decoded
    /// but never converted or sent), so the first frame read is frame `first`.
    pub async fn open_from(path: &Path, first: u64) -> Result<Self, MediaError> {
        let (width, height) = probe_display_size(path).await?;
        Self::open_from_with_size(path, width, height, first).await
    }

    /// [`open_from`](Self::open_from) for a video whose decoded frames are known to be
    /// `width` x `height` (no ffprobe run).
    pub async fn open_from_with_size(
        path: &Path,
        width: u32,
        height: u32,
        first: u64,
    ) -> Result<Self, MediaError> {
        let select = format!("select=gte(n\\,{first})");
        Self::spawn(path, width, height, Some(select)).await
    }

    async fn spawn(
        path: &Path,
        width: u32,
        height: u32,
        filter: Option<String>,
    ) -> Result<Self, MediaError> {
        // passthrough: every decoded frame exactly once; the default for rawvideo
        // output is constant-rate, which may duplicate or drop frames.
        let mut cmd = tool::command(FFMPEG, ["-v", "error", "-nostdin", "-i"]);
        cmd.arg(path).args(["-map", "0:v:0"]);
        if let Some(filter) = filter {
            cmd.args(["-vf", &filter]);
        }
        cmd.args([
            "-fps_mode",
            "passthrough",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| tool::spawn_error(FFMPEG, path, e))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let stdout = stdout.into_owned_fd().map_err(|source| MediaError::Io {
            path: path.to_owned(),
            action: "read decoded frames",
            source,
        })?;
        let stdout = Pipe::new(stdout, width as usize * height as usize * 3);
        let stderr = child.stderr.take().map(|s| tokio::spawn(read_all(s)));
        Ok(Self {
            path: path.to_owned(),
            width,
            height,
            _tracked: tool::Tracked::new(&child),
            child,
            stdout,
            stderr,
            frames_read: 0,
            done: false,
        })
    }

    /// Frame width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Frame height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Frames returned so far.
    pub fn frames_read(&self) -> u64 {
        self.frames_read
    }

    /// The next frame, or `None` once ffmpeg finished successfully.
    pub async fn next_frame(&mut self) -> Result<Option<RgbImage>, MediaError> {
        let mut frame = RgbImage::new(self.width, self.height);
        Ok(self.next_frame_into(&mut frame).await?.then_some(frame))
    }

    /// Reads the next frame into `frame` (resized to the stream's size if it differs),
    /// reusing its buffer; `false` once ffmpeg finished successfully. Streams of many
    /// frames use this to avoid allocating (and page-faulting) a new buffer per frame.
    pub async fn next_frame_into(&mut self, frame: &mut RgbImage) -> Result<bool, MediaError> {
        if self.done {
            return Ok(false);
        }
        if frame.dimensions() != (self.width, self.height) {
            *frame = RgbImage::new(self.width, self.height);
        }
        let frame_bytes = self.width as usize * self.height as usize * 3;
        let (buf, filled) = self
            .stdout
            .read_full(std::mem::take(frame).into_raw())
            .await;
        // The same buffer comes back (empty only if the pool thread died, then `filled`
        // is an error).
        *frame = RgbImage::from_raw(self.width, self.height, buf).unwrap_or_default();
        let filled = filled.map_err(|source| self.read_error(source))?;
        if filled == frame_bytes {
            self.frames_read += 1;
            return Ok(true);
        }
        self.ended(filled as u64).await?;
        Ok(false)
    }

    /// Moves the next frames into the frame files `paths` (one frame each, in order) in
    /// one task on the blocking pool, the pixels going from the pipe to the files
    /// without a copy through this process (see
    /// [`splice_from_blocking`](super::frame_file)); returns how many were written,
    /// fewer than `paths` once ffmpeg finished successfully.
    pub async fn frames_into_files(&mut self, paths: Vec<PathBuf>) -> Result<u64, MediaError> {
        if self.done || paths.is_empty() {
            return Ok(0);
        }
        let (width, height) = (self.width, self.height);
        let frame_bytes = u64::from(width) * u64::from(height) * 3;
        let moved = self
            .stdout
            .with(move |pipe| {
                let mut written = 0;
                for path in &paths {
                    let moved = splice_from_blocking(pipe, path, width, height)?;
                    if moved != frame_bytes {
                        // Past the last frame: no file (it holds at most a header).
                        let _ = std::fs::remove_file(path);
                        return Ok((written, Some(moved)));
                    }
                    written += 1;
                }
                Ok((written, None))
            })
            .await
            .map_err(|source| self.read_error(source))?;
        let (written, short) = moved?;
        self.frames_read += written;
        let Some(moved) = short else {
            return Ok(written);
        };
        self.ended(moved).await?;
        Ok(written)
    }

    /// Moves the next `count` frames into slots `first_slot`.. of the frames file `file`
    /// (see [`splice_into_slot_blocking`](super::frame_file)) in one task on the blocking
    /// pool; returns how many were written, fewer once ffmpeg finished successfully.
    pub async fn frames_into_slots(
        &mut self,
        file: PathBuf,
        first_slot: u64,
        count: u64,
    ) -> Result<u64, MediaError> {
        if self.done || count == 0 {
            return Ok(0);
        }
        let (width, height) = (self.width, self.height);
        let frame_bytes = u64::from(width) * u64::from(height) * 3;
        let target = file.clone();
        let moved = self
            .stdout
            .with(move |pipe| {
                let out = open_in_place(&target)?;
                for i in 0..count {
                    let moved =
                        splice_into_slot_blocking(pipe, &out, first_slot + i, width, height)?;
                    if moved != frame_bytes {
                        return Ok((i, Some(moved)));
                    }
                }
                Ok::<_, std::io::Error>((count, None))
            })
            .await
            .and_then(|moved| moved)
            .map_err(|source| MediaError::Io {
                path: file.clone(),
                action: "write decoded frames",
                source,
            })?;
        let (written, short) = moved;
        self.frames_read += written;
        let Some(moved) = short else {
            return Ok(written);
        };
        self.ended(moved).await?;
        Ok(written)
    }

    /// Sends up to `count` frames through `transform` into `encoder` in one task on the
    /// blocking pool: each frame is read into one buffer, transformed into another and
    /// written to the encoder's pipe, with no hop, channel or allocation per frame.
    /// Returns the frames sent (fewer once ffmpeg finished successfully) and `transform`
    /// with whatever it learned.
    pub async fn transform_into<T: FrameTransform>(
        &mut self,
        encoder: &mut SegmentEncoder,
        count: u64,
        mut transform: T,
    ) -> Result<(u64, T), MediaError> {
        if self.done || count == 0 {
            return Ok((0, transform));
        }
        let mut sink = encoder.take_input()?;
        let (width, height) = (self.width, self.height);
        let done = self
            .stdout
            .with(move |source| {
                let mut decoded = RgbImage::new(width, height);
                let mut out = RgbImage::new(width, height);
                let frame_bytes = decoded.as_raw().len();
                let mut sent = 0;
                let end = loop {
                    if sent == count {
                        break Ok(None);
                    }
                    match read_full_blocking(source, &mut decoded) {
                        Ok(n) if n == frame_bytes => {}
                        Ok(n) => break Ok(Some(n)),
                        Err(e) => break Err(Ok(e)),
                    }
                    transform.apply(&decoded, &mut out);
                    if let Err(e) = sink.write_all(out.as_raw()) {
                        break Err(Err(e));
                    }
                    transform.sent(&mut out);
                    sent += 1;
                };
                (sink, transform, sent, end)
            })
            .await
            .map_err(|source| self.read_error(source))?;
        let (sink, transform, sent, end) = done;
        self.frames_read += sent;
        let (failed, end) = match end {
            Err(Err(write)) => (Some(write), Ok(None)),
            other => (None, other),
        };
        encoder.put_input(sink, sent, failed).await?;
        let filled = match end {
            Ok(None) => return Ok((sent, transform)),
            Ok(Some(filled)) => filled,
            Err(Ok(source)) | Err(Err(source)) => return Err(self.read_error(source)),
        };
        self.ended(filled as u64).await?;
        Ok((sent, transform))
    }

    /// The decoder's output ended, cleanly between frames (`partial` 0) or `partial` bytes
    /// into a frame: waits for ffmpeg's exit and names a frame size that does not match.
    async fn ended(&mut self, partial: u64) -> Result<(), MediaError> {
        self.done = true;
        self.wait_success().await?;
        if partial != 0 {
            let frame_bytes = u64::from(self.width) * u64::from(self.height) * 3;
            return Err(MediaError::BadFrameFile {
                path: self.path.clone(),
                detail: format!(
                    "decoder output ended inside frame {} ({partial} of {frame_bytes} bytes): frames are not {}x{}",
                    self.frames_read, self.width, self.height
                ),
            });
        }
        Ok(())
    }

    async fn wait_success(&mut self) -> Result<(), MediaError> {
        tool::wait_success(&mut self.child, self.stderr.take(), &self.path).await
    }

    /// An error reading the decoder's output.
    fn read_error(&self, source: std::io::Error) -> MediaError {
        MediaError::Io {
            path: self.path.clone(),
            action: "read decoded frames",
            source,
        }
    }
}

/// What [`FrameReader::transform_into`] does to each frame on its way to the encoder.
pub trait FrameTransform: Send + 'static {
    /// Writes the transformed `frame` into `out`, which has its size.
    fn apply(&mut self, frame: &RgbImage, out: &mut RgbImage);

    /// Called once `out` (what [`apply`](Self::apply) wrote) reached the encoder: the
    /// transform may keep it by swapping in another buffer of any size (the next `apply`
    /// gets that one).
    fn sent(&mut self, _out: &mut RgbImage) {}
}

/// Collects a child's stderr; with `-v error` it stays small.
pub(crate) async fn read_all<R: AsyncRead + Unpin>(mut reader: R) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = reader.read_to_end(&mut out).await;
    out
}
