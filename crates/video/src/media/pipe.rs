//! Moving whole frames through ffmpeg's pipes on the blocking pool.
//!
//! A raw 720p frame is 2.7 MB and a pipe holds 64 KiB by default, so a frame would cross
//! in about 42 pieces. Through tokio's reactor, each piece that finds the pipe empty (or
//! full) costs a wake-up of the task and a trip through epoll; with blocking calls on a
//! pool thread, the kernel hands the pieces over directly and the runtime sees one hop
//! per frame. Each pipe is also grown towards a frame's size ([`PIPE_MAX`] at most), so
//! that ffmpeg and this process wake each other a few times per frame instead of dozens:
//! reading 720p frames from an ffmpeg decoder measured 1.4 ms of CPU per frame through a
//! 1 MiB pipe against 2.0-3.7 ms through a 64 KiB one (mostly fewer context switches).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;

/// The largest pipe asked for: Linux's default limit for unprivileged processes
/// (`/proc/sys/fs/pipe-max-size`).
const PIPE_MAX: usize = 1 << 20;

/// One end of a child's pipe, in blocking mode, lent to a pool thread for each frame.
#[derive(Debug)]
pub(crate) struct Pipe(Option<File>);

impl Pipe {
    /// Wraps a pipe end (tokio's `into_owned_fd` gives it back in blocking mode) that
    /// carries `frame_bytes` at a time, growing its buffer towards that size.
    pub(crate) fn new(fd: OwnedFd, frame_bytes: usize) -> Self {
        grow(&fd, frame_bytes);
        Self(Some(File::from(fd)))
    }

    /// Reads into `buf` until it is full or the pipe ends; gives `buf` back with the
    /// number of bytes read.
    pub(crate) async fn read_full(&mut self, buf: Vec<u8>) -> (Vec<u8>, std::io::Result<usize>) {
        self.lend(buf, |file, buf| read_full_blocking(file, buf))
            .await
    }

    /// Takes the file out (for a blocking task that uses this pipe with another one); put
    /// it back with [`put`](Self::put). `None` if an interrupted transfer lost it.
    pub(crate) fn take(&mut self) -> Option<File> {
        self.0.take()
    }

    /// Puts back a file taken with [`take`](Self::take).
    pub(crate) fn put(&mut self, file: File) {
        self.0 = Some(file);
    }

    /// Writes all of `buf`; gives it back.
    pub(crate) async fn write_all(&mut self, buf: Vec<u8>) -> (Vec<u8>, std::io::Result<()>) {
        self.lend(buf, |file, buf| file.write_all(buf)).await
    }

    /// Runs `op` on the file and `buf` on the blocking pool. If a previous call was
    /// dropped half-way (its task cancelled), the file went with it: an error.
    async fn lend<R: Send + 'static>(
        &mut self,
        mut buf: Vec<u8>,
        op: fn(&mut File, &mut Vec<u8>) -> std::io::Result<R>,
    ) -> (Vec<u8>, std::io::Result<R>) {
        let Some(mut file) = self.0.take() else {
            return (buf, Err(lost()));
        };
        let done = tokio::task::spawn_blocking(move || {
            let result = op(&mut file, &mut buf);
            (file, buf, result)
        })
        .await;
        match done {
            Ok((file, buf, result)) => {
                self.0 = Some(file);
                (buf, result)
            }
            Err(e) => (Vec::new(), Err(std::io::Error::other(e))),
        }
    }

    /// Runs `op` on the pipe's file in one task on the blocking pool: many frames' worth
    /// of blocking calls for one hop. An error only when the file is lost (a task that
    /// panicked or an earlier transfer that was interrupted).
    pub(crate) async fn with<R: Send + 'static>(
        &mut self,
        op: impl FnOnce(&mut File) -> R + Send + 'static,
    ) -> std::io::Result<R> {
        let Some(mut file) = self.0.take() else {
            return Err(lost());
        };
        let (file, result) = tokio::task::spawn_blocking(move || {
            let result = op(&mut file);
            (file, result)
        })
        .await
        .map_err(std::io::Error::other)?;
        self.0 = Some(file);
        Ok(result)
    }
}

/// Moves up to `len` bytes from `from` to `to`, one of them a pipe, inside the kernel
/// (`splice`: no copy through this process), reading and writing at the given offsets
/// of the ends that are files (`None` for a pipe). Returns the bytes moved: fewer than
/// `len` only when `from` ended.
#[cfg(target_os = "linux")]
pub(crate) fn splice_all(
    from: &File,
    mut from_offset: Option<u64>,
    to: &File,
    mut to_offset: Option<u64>,
    len: u64,
) -> std::io::Result<u64> {
    use rustix::pipe::{SpliceFlags, splice};
    let mut moved = 0;
    while moved < len {
        let want = usize::try_from(len - moved)
            .unwrap_or(usize::MAX)
            .min(1 << 30);
        match splice(
            from,
            from_offset.as_mut(),
            to,
            to_offset.as_mut(),
            want,
            SpliceFlags::MOVE,
        ) {
            Ok(0) => break,
            Ok(n) => moved += n as u64,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(moved)
}

/// [`splice_all`] where there is no `splice`: through a buffer.
#[cfg(not(target_os = "linux"))]
pub(crate) fn splice_all(
    mut from: &File,
    from_offset: Option<u64>,
    mut to: &File,
    to_offset: Option<u64>,
    len: u64,
) -> std::io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    if let Some(offset) = from_offset {
        from.seek(SeekFrom::Start(offset))?;
    }
    if let Some(offset) = to_offset {
        to.seek(SeekFrom::Start(offset))?;
    }
    std::io::copy(&mut from.take(len), &mut to)
}

/// Reads from `file` into `buf` until it is full or the file ends; returns the bytes read.
pub(crate) fn read_full_blocking(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The error of a transfer on a pipe that an interrupted one took away.
fn lost() -> std::io::Error {
    std::io::Error::other("the pipe was lost by an interrupted transfer")
}

/// Asks the kernel for a pipe buffer of `bytes` (at most [`PIPE_MAX`]). Only a speed-up:
/// a refusal (a lowered limit, the user's pipe quota spent) leaves the pipe as it was.
#[cfg(target_os = "linux")]
fn grow(fd: &OwnedFd, bytes: usize) {
    if let Err(e) = rustix::pipe::fcntl_setpipe_size(fd, bytes.min(PIPE_MAX)) {
        tracing::debug!(error = %e, bytes, "could not grow a pipe to ffmpeg");
    }
}

#[cfg(not(target_os = "linux"))]
fn grow(_fd: &OwnedFd, _bytes: usize) {}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The buffer size of a new pipe's write end wrapped for frames of `frame_bytes`.
    fn grown(frame_bytes: usize) -> usize {
        let (_read, write) = std::io::pipe().expect("a pipe");
        let pipe = Pipe::new(OwnedFd::from(write), frame_bytes);
        rustix::pipe::fcntl_getpipe_size(pipe.0.as_ref().expect("open")).expect("its size")
    }

    #[test]
    fn pipes_grow_towards_a_frame_up_to_the_limit() {
        let limit: usize = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(PIPE_MAX);
        let small = 320 * 240 * 3;
        assert!(grown(small) >= small.min(limit), "{}", grown(small));
        assert_eq!(grown(1280 * 720 * 3), PIPE_MAX.min(limit));
    }
}
