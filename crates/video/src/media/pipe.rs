//! Moving whole frames through ffmpeg's pipes on the blocking pool.
//!
//! A raw 720p frame is 2.7 MB and a pipe holds 64 KiB, so a frame crosses in about 42
//! pieces. Through tokio's reactor, each piece that finds the pipe empty (or full) costs
//! a wake-up of the task and a trip through epoll; with blocking calls on a pool thread,
//! the kernel hands the pieces over directly and the runtime sees one hop per frame.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;

/// One end of a child's pipe, in blocking mode, lent to a pool thread for each frame.
#[derive(Debug)]
pub(crate) struct Pipe(Option<File>);

impl Pipe {
    /// Wraps a pipe end (tokio's `into_owned_fd` gives it back in blocking mode).
    pub(crate) fn new(fd: OwnedFd) -> Self {
        Self(Some(File::from(fd)))
    }

    /// Reads into `buf` until it is full or the pipe ends; gives `buf` back with the
    /// number of bytes read.
    pub(crate) async fn read_full(&mut self, buf: Vec<u8>) -> (Vec<u8>, std::io::Result<usize>) {
        self.lend(buf, |file, buf| {
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
        })
        .await
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
            let lost = std::io::Error::other("the pipe was lost by an interrupted transfer");
            return (buf, Err(lost));
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
}
