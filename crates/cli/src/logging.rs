//! Logs on stderr, printed above the live progress display when one is shown.
//!
//! Services (`worker`, `serve`, `enhance-server`) log INFO by default: their logs are their
//! output. The other commands print their own progress and results, so they log only
//! warnings and errors unless asked: `-v` INFO, `-vv` DEBUG, `--log FILTER` (or
//! `IDEMPIPE_LOG`) any filter.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;

use indicatif::MultiProgress;

/// The progress display log lines must go above, while one is shown.
static DISPLAY: Mutex<Option<MultiProgress>> = Mutex::new(None);

/// Routes log lines above `bars` (or straight to stderr again with `None`).
pub(crate) fn set_display(bars: Option<MultiProgress>) {
    *DISPLAY.lock().unwrap_or_else(|e| e.into_inner()) = bars;
}

/// Prints `text` (whole lines) on stderr, above the progress display if one is shown.
pub(crate) fn eprint_above(text: &str) {
    let display = DISPLAY.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let write = || {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(text.as_bytes());
        let _ = err.flush();
    };
    match display {
        Some(bars) => bars.suspend(write),
        None => write(),
    }
}

/// The filter in force: `--log`/`IDEMPIPE_LOG`, else by `-v` count and kind of command.
pub(crate) fn filter(log: Option<&str>, verbose: u8, service: bool) -> String {
    match (log, verbose) {
        (Some(filter), _) => filter.to_string(),
        (None, 0) if service => "info".into(),
        (None, 0) => "warn".into(),
        (None, 1) => "info".into(),
        (None, _) => "debug".into(),
    }
}

/// Installs the subscriber.
pub(crate) fn init(log: Option<&str>, verbose: u8, service: bool) {
    let wanted = filter(log, verbose, service);
    let filter = tracing_subscriber::EnvFilter::try_new(&wanted).unwrap_or_else(|e| {
        eprintln!("idempipe: invalid --log filter {wanted:?} ({e}); using `info`");
        tracing_subscriber::EnvFilter::new("info")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LineWriter(Vec::new()))
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

/// Collects one formatted event and prints it whole when dropped.
struct LineWriter(Vec<u8>);

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            eprint_above(&String::from_utf8_lossy(&self.0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interactive_commands_log_warnings_unless_asked() {
        assert_eq!(filter(None, 0, false), "warn");
        assert_eq!(filter(None, 0, true), "info");
        assert_eq!(filter(None, 1, false), "info");
        assert_eq!(filter(None, 2, false), "debug");
        assert_eq!(
            filter(Some("idempipe_engine=debug"), 0, false),
            "idempipe_engine=debug"
        );
    }
}
