//! One row per scenario, its verdict, and the table.

use std::time::Duration;

/// What one scenario measured.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    /// Scenario name.
    pub(crate) scenario: String,
    /// `PostgreSQL` or `SQLite`.
    pub(crate) backend: &'static str,
    /// Frames of the video.
    pub(crate) frames: i64,
    /// The faults injected, counted.
    pub(crate) faults: String,
    /// How the run ended.
    pub(crate) outcome: String,
    /// Frames not enhanced at the end.
    pub(crate) lost: i64,
    /// Frames enhanced under two or more idempotency keys (counted by the API).
    pub(crate) paid_twice: u64,
    /// Requests admitted beyond the first per key (counted by the API).
    pub(crate) same_key: u64,
    /// The most same-key repeats the scenario's faults explain.
    pub(crate) same_key_bound: u64,
    /// Whether the output decodes to the clean run's frames.
    pub(crate) equal: bool,
    /// From the end of the last fault to frames moving again.
    pub(crate) recover: Option<Duration>,
    /// Why the scenario failed; empty when it passed.
    pub(crate) problems: Vec<String>,
}

impl Row {
    /// Fills `problems` from the measurements: the suite's pass criteria.
    pub(crate) fn judge(mut self) -> Self {
        if self.outcome != "completed" {
            self.problems.push(format!("run {}", self.outcome));
        }
        if self.lost != 0 {
            self.problems.push(format!("{} frame(s) lost", self.lost));
        }
        if self.paid_twice != 0 {
            self.problems
                .push(format!("{} frame(s) paid under two keys", self.paid_twice));
        }
        if self.same_key > self.same_key_bound {
            self.problems.push(format!(
                "{} same-key repeats, more than the {} the faults explain",
                self.same_key, self.same_key_bound
            ));
        }
        if !self.equal {
            self.problems
                .push("output differs from the clean run's".into());
        }
        self
    }

    /// Whether every criterion held.
    pub(crate) fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The header of the table (Markdown, so it pastes into docs/reliability.md).
pub(crate) fn header() -> String {
    "| scenario | db | frames | faults injected | outcome | lost | paid twice (2 keys) | same-key repeats | output = clean | recover | result |\n\
     | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
        .to_string()
}

/// One row of the table.
pub(crate) fn line(row: &Row) -> String {
    let recover = row
        .recover
        .map_or("-".to_string(), |d| format!("{:.1} s", d.as_secs_f64()));
    let result = if row.passed() {
        "pass".to_string()
    } else {
        format!("FAIL: {}", row.problems.join("; "))
    };
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {} (<= {}) | {} | {} | {} |",
        row.scenario,
        row.backend,
        row.frames,
        row.faults,
        row.outcome,
        row.lost,
        row.paid_twice,
        row.same_key,
        row.same_key_bound,
        if row.equal { "yes" } else { "no" },
        recover,
        result
    )
}
