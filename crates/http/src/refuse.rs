//! The answer to a connection over the limits: a short `503` with `Retry-After`, written
//! without parsing the request, then the connection is closed.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// Seconds a refused client is told to wait.
const RETRY_AFTER_SECS: u32 = 1;
/// Longest time spent on a refused connection (writing the answer, reading what the
/// client already sent so closing does not reset the connection before it reads the
/// answer).
const REFUSE_TIME: Duration = Duration::from_secs(2);
/// Most bytes read and discarded from a refused connection.
const DRAIN_BYTES: usize = 64 * 1024;

/// Refused connections answered at once; beyond, a connection is closed without an
/// answer, so a flood cannot hold more descriptors than this plus the limits.
const MAX_REFUSING: usize = 128;

/// Answers connections over the limits, a bounded number at a time.
#[derive(Debug, Clone)]
pub(crate) struct Refuser {
    permits: std::sync::Arc<Semaphore>,
}

impl Refuser {
    pub(crate) fn new() -> Self {
        Self {
            permits: std::sync::Arc::new(Semaphore::new(MAX_REFUSING)),
        }
    }

    /// Answers `stream` in the background with the `503` naming `limit`, or closes it
    /// at once when too many refusals are under way.
    pub(crate) fn refuse(&self, stream: TcpStream, limit: &'static str) {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            tokio::spawn(async move {
                over_capacity(stream, limit).await;
                drop(permit);
            });
        }
    }
}

/// Writes the `503` naming `limit` and closes `stream`.
async fn over_capacity(mut stream: TcpStream, limit: &'static str) {
    let body = format!(
        "{{\"error\":\"unavailable\",\"message\":\"too many open connections ({limit}); retry shortly\"}}"
    );
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: {RETRY_AFTER_SECS}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let refuse = async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await?;
        let mut buf = [0u8; 4096];
        let mut drained = 0;
        while drained < DRAIN_BYTES {
            match stream.read(&mut buf).await? {
                0 => break,
                n => drained += n,
            }
        }
        std::io::Result::Ok(())
    };
    let _ = tokio::time::timeout(REFUSE_TIME, refuse).await;
}
