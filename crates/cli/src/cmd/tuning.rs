//! Lease and API timeout of the handlers a process runs (`process` and `worker`).

use std::time::Duration;

use idempipe_video::pipeline::PipelineOptions;

/// Options that tune how this process runs handlers; they are not settings of a run.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct TuningArgs {
    /// Seconds an item's lease lasts without a heartbeat: how long the items of a killed
    /// or cut-off process wait before another takes them [default: 20 for frames, 30 for
    /// the other stages]
    #[arg(long, value_name = "S", value_parser = positive_seconds)]
    pub(crate) lease: Option<Duration>,
    /// Seconds an enhancement API call may take before it counts as failed (and is
    /// retried with the same idempotency key).
    #[arg(long, value_name = "S", default_value = "30", value_parser = positive_seconds)]
    pub(crate) api_timeout: Duration,
}

impl TuningArgs {
    /// The stage options these flags describe, on top of `base`.
    pub(crate) fn apply(&self, base: PipelineOptions) -> PipelineOptions {
        let (frame_lease, lease) = match self.lease {
            Some(lease) => (lease, lease),
            None => (base.frame_lease, base.lease),
        };
        PipelineOptions {
            frame_lease,
            lease,
            api_timeout: self.api_timeout,
            ..base
        }
    }
}

/// Parses a positive number of seconds (fractions allowed).
fn positive_seconds(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(Duration::from_secs_f64(v)),
        Ok(_) => Err("must be a number of seconds > 0".into()),
        Err(e) => Err(format!("{e}; expected a number of seconds > 0")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_must_be_positive() {
        assert_eq!(positive_seconds("1.5"), Ok(Duration::from_millis(1500)));
        assert!(positive_seconds("0").unwrap_err().contains("> 0"));
        assert!(positive_seconds("-1").is_err());
        assert!(positive_seconds("soon").is_err());
    }
}
