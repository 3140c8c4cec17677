//! Where a run stands: frame counts, per-stage counts, and, when nothing moves, why
//! (the endpoint's limiter is paused or its circuit open, and the last error). Also
//! waiting for a run to end while printing plain progress lines.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use idempipe_engine::store::ItemFilter;
use idempipe_engine::{
    Clock, ItemStatus, LimiterState, Run, RunStatus, SharedStore, StoreError, SystemClock,
    format_utc,
};

use super::register::{ENHANCE_LIMITER, enhance_limiter};
use super::settings::RunParams;
use super::stage;

/// How often the run is polled.
const POLL: Duration = Duration::from_millis(500);
/// How often a plain (non-terminal) progress line is printed.
pub const PLAIN_EVERY: Duration = Duration::from_secs(5);
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

/// Frame counts of a run at one moment, consistent with `idempipe status`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FrameProgress {
    /// Frames enhanced (completed items).
    pub done: i64,
    /// Frames whose last attempt failed, waiting for their next attempt.
    pub failed: i64,
    /// Frames dead (out of attempts, or a permanent error).
    pub dead: i64,
    /// Frame items (0 until the input is split).
    pub total: i64,
    /// Frames per second over the last seconds.
    pub rate: f64,
    /// Estimated seconds left.
    pub eta_secs: Option<f64>,
}

/// One stage's item counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StageProgress {
    /// Stage name.
    pub stage: &'static str,
    /// Items of the stage so far.
    pub total: i64,
    /// Completed.
    pub done: i64,
    /// Running now.
    pub running: i64,
    /// Failed, waiting for their next attempt.
    pub failed: i64,
    /// Dead or of unknown outcome.
    pub dead: i64,
}

/// Everything a progress display shows about a run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunProgress {
    /// The run.
    pub run_id: i64,
    /// Its status.
    pub status: RunStatus,
    /// Frame counts and rate.
    pub frames: FrameProgress,
    /// Every stage that has items, in pipeline order.
    pub stages: Vec<StageProgress>,
    /// Why frames are not moving, when the enhancement endpoint holds them back or they
    /// keep failing; `None` while they flow.
    pub waiting: Option<String>,
    /// The last error of a failed frame, when frames wait.
    pub last_error: Option<String>,
}

/// The frame counts of `run_id` now.
pub async fn frame_progress(store: &SharedStore, run_id: i64) -> Result<FrameProgress, StoreError> {
    let counts = store.item_counts(run_id).await?;
    frames_of(store, run_id, &counts).await
}

async fn frames_of(
    store: &SharedStore,
    run_id: i64,
    counts: &[idempipe_engine::StageCount],
) -> Result<FrameProgress, StoreError> {
    let mut p = FrameProgress::default();
    if !counts.iter().any(|c| c.stage == stage::FRAME) {
        return in_stream_frames(store, run_id, counts).await;
    }
    for c in counts.iter().filter(|c| c.stage == stage::FRAME) {
        p.total += c.count;
        match c.status.as_str() {
            "completed" => p.done += c.count,
            "failed" => p.failed += c.count,
            "dead" | "unknown" => p.dead += c.count,
            _ => {}
        }
    }
    let t = store
        .stage_throughput(run_id, stage::FRAME, RATE_WINDOW_MS, SystemClock.now())
        .await?;
    p.rate = t.per_second;
    p.eta_secs = t.eta_seconds;
    Ok(p)
}

/// Frame counts of a run whose frames are enhanced inside the encoder's stream (the
/// local provider; also any run before its split): every frame of a segment is done when
/// the segment's `encode` item is, and the rate follows the segments.
async fn in_stream_frames(
    store: &SharedStore,
    run_id: i64,
    counts: &[idempipe_engine::StageCount],
) -> Result<FrameProgress, StoreError> {
    let mut p = FrameProgress::default();
    if !counts.iter().any(|c| c.stage == stage::ENCODE) {
        return Ok(p);
    }
    let encodes = super::report::list(store, run_id, Some(stage::ENCODE), Vec::new()).await?;
    for item in &encodes {
        let frames = item.payload["frame_count"].as_i64().unwrap_or(0);
        p.total += frames;
        match item.status {
            ItemStatus::Completed => p.done += frames,
            ItemStatus::Failed => p.failed += frames,
            ItemStatus::Dead | ItemStatus::Unknown => p.dead += frames,
            _ => {}
        }
    }
    let t = store
        .stage_throughput(run_id, stage::ENCODE, RATE_WINDOW_MS, SystemClock.now())
        .await?;
    p.rate = t.per_second * p.total as f64 / encodes.len().max(1) as f64;
    p.eta_secs = t.eta_seconds;
    Ok(p)
}

/// Where `run_id` stands now.
pub async fn run_progress(store: &SharedStore, run_id: i64) -> Result<RunProgress, StoreError> {
    let run = store.run_get(run_id).await?;
    let counts = store.item_counts(run_id).await?;
    let frames = frames_of(store, run_id, &counts).await?;
    let stages = stage::ALL
        .iter()
        .filter_map(|name| {
            let mut s = StageProgress {
                stage: name,
                ..StageProgress::default()
            };
            for c in counts.iter().filter(|c| c.stage == *name) {
                s.total += c.count;
                match c.status.as_str() {
                    "completed" => s.done += c.count,
                    "running" => s.running += c.count,
                    "failed" => s.failed += c.count,
                    "dead" | "unknown" => s.dead += c.count,
                    _ => {}
                }
            }
            (s.total > 0).then_some(s)
        })
        .collect();
    let (waiting, last_error) =
        if run.status == RunStatus::Running && frames.done + frames.dead < frames.total {
            waiting_reason(store, &run, &frames).await?
        } else {
            (None, None)
        };
    Ok(RunProgress {
        run_id,
        status: run.status,
        frames,
        stages,
        waiting,
        last_error,
    })
}

/// Why the run's frames wait, from its endpoint's limiter, and its frames' last error.
async fn waiting_reason(
    store: &SharedStore,
    run: &Run,
    frames: &FrameProgress,
) -> Result<(Option<String>, Option<String>), StoreError> {
    let now = SystemClock.now();
    let limiter = match serde_json::from_value::<RunParams>(run.params.clone()) {
        Ok(params) => match store
            .limiter_get(&enhance_limiter(&params.settings.provider))
            .await
        {
            Ok(l) => Some(l),
            Err(StoreError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        },
        Err(_) => None,
    };
    let held = limiter.as_ref().and_then(|l| limiter_says(l, now));
    let stuck = frames.rate == 0.0 && frames.failed > 0;
    if held.is_none() && !stuck {
        return Ok((None, None));
    }
    let last_error = store
        .item_list(&ItemFilter {
            run_id: run.id,
            stage: Some(stage::FRAME.into()),
            statuses: vec![ItemStatus::Failed, ItemStatus::Dead],
            limit: 1,
            after_id: 0,
        })
        .await?
        .into_iter()
        .find_map(|i| i.last_error)
        .map(|e| error_text(&e));
    let why = held.unwrap_or_else(|| format!("{} frame(s) failed, retrying", frames.failed));
    Ok((Some(why), last_error))
}

/// What a limiter holds back now, in words: a 429 pause, an open or half-open circuit, or
/// a rate lowered by 429s.
pub fn limiter_says(l: &LimiterState, now: i64) -> Option<String> {
    let endpoint = l
        .config
        .name
        .strip_prefix(ENHANCE_LIMITER)
        .and_then(|rest| rest.strip_prefix(':'))
        .unwrap_or(&l.config.name);
    let until = |t: i64| format!("until {} UTC (in {})", clock(t), secs(t - now));
    if l.paused_until > now {
        return Some(format!(
            "paused by a 429 from {endpoint} {}",
            until(l.paused_until)
        ));
    }
    if l.circuit_open_until > now {
        let probes = match l.open_streak {
            n if n > 1 => format!(", {} failed probe(s)", n - 1),
            _ => String::new(),
        };
        return Some(format!(
            "circuit open for {endpoint} {} after {} failures{probes}",
            until(l.circuit_open_until),
            l.config.failure_threshold
        ));
    }
    if l.open_streak > 0 {
        return Some(format!(
            "circuit half-open for {endpoint}: one probe call is testing it"
        ));
    }
    if l.current_rate + 1e-9 < l.config.rate {
        return Some(format!(
            "rate-limited to {:.1} calls/s by {endpoint} (ceiling {:.1}/s) after {} 429(s)",
            l.current_rate, l.config.rate, l.throttles
        ));
    }
    None
}

/// `HH:MM:SS` of a time (UTC).
fn clock(ms: i64) -> String {
    let full = format_utc(ms);
    full.get(11..).unwrap_or(&full).to_string()
}

/// A short duration of milliseconds: `42s`, `3m05s`.
fn secs(ms: i64) -> String {
    hms((ms.max(0) as f64 / 1000.0).ceil())
}

/// The readable part of an error JSON: `HTTP 503: message`, else the JSON itself.
pub fn error_text(error: &serde_json::Value) -> String {
    match error.get("message").and_then(|m| m.as_str()) {
        Some(m) => {
            let status = error
                .get("status")
                .and_then(|s| s.as_u64())
                .map(|s| format!("HTTP {s}: "));
            format!("{}{m}", status.unwrap_or_default())
        }
        None => error.to_string(),
    }
}

/// Waits until `run_id` is no longer running and returns it, printing progress.
pub async fn wait_for_run(
    store: &SharedStore,
    run_id: i64,
    style: ProgressStyle,
) -> Result<Run, StoreError> {
    let style = resolve(style);
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
            draw(store, run_id, style, finished).await?;
            last_print = Some(Instant::now());
        }
        if finished {
            return Ok(run);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Prints the last progress of `run_id`, which has finished, as [`wait_for_run`] does
/// when it sees the end itself.
pub(crate) async fn draw_finished(
    store: &SharedStore,
    run_id: i64,
    style: ProgressStyle,
) -> Result<(), StoreError> {
    let style = resolve(style);
    if matches!(style, ProgressStyle::Line | ProgressStyle::Plain) {
        draw(store, run_id, style, true).await?;
    }
    Ok(())
}

/// `Auto` made concrete: a live line on a terminal, plain lines otherwise.
fn resolve(style: ProgressStyle) -> ProgressStyle {
    match style {
        ProgressStyle::Auto if std::io::stderr().is_terminal() => ProgressStyle::Line,
        ProgressStyle::Auto => ProgressStyle::Plain,
        other => other,
    }
}

/// Prints the progress of `run_id` in `style` (`Line` or `Plain`).
async fn draw(
    store: &SharedStore,
    run_id: i64,
    style: ProgressStyle,
    finished: bool,
) -> Result<(), StoreError> {
    let p = run_progress(store, run_id).await?;
    let mut err = std::io::stderr().lock();
    let _ = if style == ProgressStyle::Line {
        write!(
            err,
            "\r\x1b[2K{}{}",
            describe(&p),
            if finished { "\n" } else { "" }
        )
    } else {
        writeln!(err, "{}", plain_lines(&p).join("\n"))
    };
    let _ = err.flush();
    Ok(())
}

/// One progress line: frames done of total, retrying, dead, rate, ETA.
pub fn describe(p: &RunProgress) -> String {
    let run_id = p.run_id;
    let f = &p.frames;
    if f.total == 0 {
        return format!("run {run_id}: probing and splitting the input...");
    }
    let pct = 100.0 * f.done as f64 / f.total as f64;
    let eta = match f.eta_secs {
        Some(s) if f.done < f.total && f.rate > 0.0 => format!(", ETA {}", hms(s)),
        _ => String::new(),
    };
    format!(
        "run {run_id}: frames {}/{} ({pct:.0}%), {} retrying, {} dead, {:.1} frames/s{eta}",
        f.done, f.total, f.failed, f.dead, f.rate
    )
}

/// The stages other than `frame` that have work left or failures, as `extract 3/10`.
pub fn describe_stages(p: &RunProgress) -> String {
    p.stages
        .iter()
        .filter(|s| s.stage != stage::FRAME && s.total > 1)
        .map(|s| {
            let mut text = format!("{} {}/{}", s.stage, s.done, s.total);
            if s.failed > 0 {
                text.push_str(&format!(" ({} retrying)", s.failed));
            }
            if s.dead > 0 {
                text.push_str(&format!(" ({} dead)", s.dead));
            }
            text
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The plain (non-terminal) lines of one progress report: the counts, the other stages,
/// and why frames wait, if they do.
pub fn plain_lines(p: &RunProgress) -> Vec<String> {
    let mut lines = vec![describe(p)];
    let stages = describe_stages(p);
    if !stages.is_empty() && p.frames.total > 0 {
        lines.push(format!("run {}: {stages}", p.run_id));
    }
    if let Some(w) = &p.waiting {
        let error = p
            .last_error
            .as_ref()
            .map(|e| format!("; last error: {e}"))
            .unwrap_or_default();
        lines.push(format!("run {}: waiting: {w}{error}", p.run_id));
    }
    lines
}

/// Seconds as `1h02m`, `3m05s` or `42s`.
pub fn hms(secs: f64) -> String {
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
    use idempipe_engine::{LimiterConfig, LimiterFeedback};

    fn progress(frames: FrameProgress) -> RunProgress {
        RunProgress {
            run_id: 3,
            status: RunStatus::Running,
            frames,
            stages: vec![
                StageProgress {
                    stage: stage::EXTRACT,
                    total: 10,
                    done: 4,
                    ..StageProgress::default()
                },
                StageProgress {
                    stage: stage::ENCODE,
                    total: 10,
                    done: 2,
                    dead: 1,
                    ..StageProgress::default()
                },
            ],
            waiting: None,
            last_error: None,
        }
    }

    #[test]
    fn lines_read_well() {
        let p = progress(FrameProgress {
            done: 50,
            failed: 2,
            dead: 1,
            total: 200,
            rate: 12.34,
            eta_secs: Some(125.0),
        });
        assert_eq!(
            describe(&p),
            "run 3: frames 50/200 (25%), 2 retrying, 1 dead, 12.3 frames/s, ETA 2m05s"
        );
        assert_eq!(describe_stages(&p), "extract 4/10, encode 2/10 (1 dead)");
        let mut empty = progress(FrameProgress::default());
        empty.stages.clear();
        assert!(describe(&empty).contains("splitting"));
        assert_eq!(plain_lines(&empty).len(), 1);
    }

    #[test]
    fn limiter_state_in_words() {
        let config = LimiterConfig::new("enhance-api:http://api:80", 50.0)
            .circuit(5, Duration::from_secs(2));
        let mut l = LimiterState::fresh(config, 0);
        assert_eq!(limiter_says(&l, 0), None);
        for holder in 1..=5 {
            l.apply(LimiterFeedback::Failure, holder, 1_000);
        }
        let open = limiter_says(&l, 1_000).unwrap();
        assert_eq!(
            open,
            "circuit open for http://api:80 until 00:00:03 UTC (in 2s) after 5 failures"
        );
        assert!(limiter_says(&l, 3_000).unwrap().contains("half-open"));
        l.apply(LimiterFeedback::Success, 9, 3_000);
        l.apply(LimiterFeedback::Throttled { until: 9_000 }, 9, 4_000);
        assert!(
            limiter_says(&l, 4_000)
                .unwrap()
                .starts_with("paused by a 429")
        );
        assert!(
            limiter_says(&l, 9_000)
                .unwrap()
                .starts_with("rate-limited to 25.0")
        );
    }
}
