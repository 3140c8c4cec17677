//! Waiting for a run to end while showing progress: a `\r` line on a terminal, plain
//! lines every few seconds otherwise.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use idempipe_engine::{Clock, Run, RunStatus, SharedStore, StoreError, SystemClock};

use super::stage;

/// How often the run is polled.
const POLL: Duration = Duration::from_millis(500);
/// How often a plain (non-terminal) progress line is printed.
const PLAIN_EVERY: Duration = Duration::from_secs(5);
/// Window over which the frame rate is measured.
const RATE_WINDOW_MS: i64 = 10_000;

/// Where and how progress is shown (always on stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressStyle {
    /// A redrawn line if stderr is a terminal, plain lines otherwise.
    #[default]
    Auto,
    /// A redrawn line.
    Line,
    /// A plain line every few seconds.
    Plain,
    /// Nothing.
    Quiet,
}

/// Frame counts of a run at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FrameProgress {
    /// Frames enhanced (completed items).
    pub done: i64,
    /// Frames dead.
    pub failed: i64,
    /// Frame items (0 until the input is split).
    pub total: i64,
    /// Frames per second over the last seconds.
    pub rate: f64,
    /// Estimated seconds left.
    pub eta_secs: Option<f64>,
}

/// The frame counts of `run_id` now.
pub async fn frame_progress(store: &SharedStore, run_id: i64) -> Result<FrameProgress, StoreError> {
    let mut p = FrameProgress::default();
    for c in store.item_counts(run_id).await? {
        if c.stage == stage::FRAME {
            p.total += c.count;
            match c.status.as_str() {
                "completed" => p.done += c.count,
                "dead" => p.failed += c.count,
                _ => {}
            }
        }
    }
    let t = store
        .stage_throughput(run_id, stage::FRAME, RATE_WINDOW_MS, SystemClock.now())
        .await?;
    p.rate = t.per_second;
    p.eta_secs = t.eta_seconds;
    Ok(p)
}

/// Waits until `run_id` is no longer running and returns it, printing progress.
pub async fn wait_for_run(
    store: &SharedStore,
    run_id: i64,
    style: ProgressStyle,
) -> Result<Run, StoreError> {
    let style = match style {
        ProgressStyle::Auto if std::io::stderr().is_terminal() => ProgressStyle::Line,
        ProgressStyle::Auto => ProgressStyle::Plain,
        other => other,
    };
    let mut last_print: Option<Instant> = None;
    loop {
        let run = store.run_get(run_id).await?;
        let finished = run.status != RunStatus::Running;
        let due = match style {
            ProgressStyle::Line => true,
            ProgressStyle::Plain => {
                last_print.is_none_or(|t| t.elapsed() >= PLAIN_EVERY) || finished
            }
            _ => false,
        };
        if due {
            let line = describe(run_id, &frame_progress(store, run_id).await?);
            let mut err = std::io::stderr().lock();
            let _ = if style == ProgressStyle::Line {
                write!(err, "\r\x1b[2K{line}{}", if finished { "\n" } else { "" })
            } else {
                writeln!(err, "{line}")
            };
            let _ = err.flush();
            last_print = Some(Instant::now());
        }
        if finished {
            return Ok(run);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// One progress line.
pub fn describe(run_id: i64, p: &FrameProgress) -> String {
    if p.total == 0 {
        return format!("run {run_id}: probing and splitting the input...");
    }
    let pct = 100.0 * p.done as f64 / p.total as f64;
    let eta = match p.eta_secs {
        Some(s) if p.done < p.total => format!(", ETA {}", hms(s)),
        _ => String::new(),
    };
    format!(
        "run {run_id}: frames {}/{} ({pct:.0}%), {} failed, {:.1} frames/s{eta}",
        p.done, p.total, p.failed, p.rate
    )
}

fn hms(secs: f64) -> String {
    let s = secs.round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_well() {
        let p = FrameProgress {
            done: 50,
            failed: 1,
            total: 200,
            rate: 12.34,
            eta_secs: Some(125.0),
        };
        assert_eq!(
            describe(3, &p),
            "run 3: frames 50/200 (25%), 1 failed, 12.3 frames/s, ETA 2m05s"
        );
        assert!(describe(3, &FrameProgress::default()).contains("splitting"));
    }
}
