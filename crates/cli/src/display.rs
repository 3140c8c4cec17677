//! The live progress of a run on stderr: on a terminal, one redrawn display (a frames bar
//! with retrying, dead, rate and ETA; the other stages; why frames wait); otherwise plain
//! lines every few seconds. Logs go above it (see [`crate::logging`]).

use std::io::IsTerminal;
use std::time::Duration;

use idempipe_engine::SharedStore;
use idempipe_video::pipeline::progress::{
    PLAIN_EVERY, describe, describe_stages, hms, plain_lines,
};
use idempipe_video::pipeline::{RunProgress, run_progress};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::watch;

use crate::logging;

/// How often the run is read for the terminal display.
const REFRESH: Duration = Duration::from_millis(500);

/// Shows `run_id`'s progress until `stop` turns true; returns the last progress read.
pub(crate) async fn show(
    store: SharedStore,
    run_id: i64,
    mut stop: watch::Receiver<bool>,
) -> Option<RunProgress> {
    let mut bars = std::io::stderr().is_terminal().then(Bars::new);
    let mut last = None;
    loop {
        match run_progress(&store, run_id).await {
            Ok(p) => {
                match &mut bars {
                    Some(bars) => bars.update(&p),
                    None => {
                        logging::eprint_above(&format!("{}\n", plain_lines(&p).join("\n")));
                    }
                }
                last = Some(p);
            }
            Err(e) => tracing::debug!(error = %e, "progress not readable now"),
        }
        let every = if bars.is_some() { REFRESH } else { PLAIN_EVERY };
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    if let Some(bars) = bars {
        bars.clear();
    }
    last
}

/// The terminal display: a frames bar, a stages line, a waiting line.
struct Bars {
    multi: MultiProgress,
    frames: ProgressBar,
    stages: ProgressBar,
    waiting: ProgressBar,
    error: ProgressBar,
    counting: bool,
    shown: [bool; 3],
}

impl Bars {
    fn new() -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8));
        let line = ProgressStyle::with_template("{wide_msg}").expect("template");
        let frames =
            multi
                .add(ProgressBar::new(0).with_style(
                    ProgressStyle::with_template("{spinner} {msg}").expect("template"),
                ));
        // Shown only while they have something to say (see `Bars::line`).
        let stages = ProgressBar::hidden().with_style(line);
        let waiting = ProgressBar::hidden()
            .with_style(ProgressStyle::with_template("{wide_msg:.yellow}").expect("template"));
        let error = ProgressBar::hidden()
            .with_style(ProgressStyle::with_template("{wide_msg:.red}").expect("template"));
        frames.enable_steady_tick(Duration::from_millis(120));
        logging::set_display(Some(multi.clone()));
        Self {
            multi,
            frames,
            stages,
            waiting,
            error,
            counting: false,
            shown: [false; 3],
        }
    }

    /// Sets line `i` (0 stages, 1 waiting, 2 last error) to `text`, showing it only when
    /// not empty.
    fn line(&mut self, i: usize, text: String) {
        let bars = [&self.frames, &self.stages, &self.waiting, &self.error];
        let bar = bars[i + 1];
        match (text.is_empty(), self.shown[i]) {
            (false, false) => {
                // After the nearest line above that is shown.
                let above = (0..i).rev().find(|j| self.shown[*j]).map_or(0, |j| j + 1);
                let bar = self.multi.insert_after(bars[above], bar.clone());
                bar.set_message(text);
                self.shown[i] = true;
            }
            (false, true) => bar.set_message(text),
            (true, true) => {
                self.multi.remove(bar);
                self.shown[i] = false;
            }
            (true, false) => {}
        }
    }

    fn update(&mut self, p: &RunProgress) {
        let f = &p.frames;
        if f.total == 0 {
            self.frames.set_message(describe(p));
            return;
        }
        if !self.counting {
            self.frames.set_style(
                ProgressStyle::with_template(
                    "{prefix:.bold} [{bar:30.cyan/blue}] {pos}/{len} frames ({percent}%) {msg}",
                )
                .expect("template")
                .progress_chars("=> "),
            );
            self.frames.set_prefix(format!("run {}", p.run_id));
            self.counting = true;
        }
        self.frames.set_length(f.total as u64);
        self.frames.set_position(f.done as u64);
        let mut msg = format!("· {:.1} frames/s", f.rate);
        if let Some(eta) = f.eta_secs.filter(|_| f.rate > 0.0 && f.done < f.total) {
            msg.push_str(&format!(" · ETA {}", hms(eta)));
        }
        if f.failed > 0 {
            msg.push_str(&format!(" · {} retrying", f.failed));
        }
        if f.dead > 0 {
            msg.push_str(&format!(" · {} dead", f.dead));
        }
        self.frames.set_message(msg);
        let stages = describe_stages(p);
        self.line(
            0,
            if stages.is_empty() {
                String::new()
            } else {
                format!("  stages: {stages}")
            },
        );
        let waiting = p.waiting.as_ref();
        self.line(
            1,
            waiting
                .map(|w| format!("  waiting: {w}"))
                .unwrap_or_default(),
        );
        self.line(
            2,
            match (waiting, &p.last_error) {
                (Some(_), Some(e)) => format!("  last error: {e}"),
                _ => String::new(),
            },
        );
    }

    fn clear(self) {
        logging::set_display(None);
        for bar in [&self.frames, &self.stages, &self.waiting, &self.error] {
            bar.finish_and_clear();
        }
        let _ = self.multi.clear();
    }
}
