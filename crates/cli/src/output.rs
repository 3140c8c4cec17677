//! Printing for people and for scripts (`--json`).

use serde::Serialize;

/// The `--json` switch.
#[derive(clap::Args, Debug, Clone, Copy)]
pub(crate) struct JsonArg {
    /// Print JSON instead of text, for scripts.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Prints `value` as pretty JSON.
pub(crate) fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub(crate) use idempipe_engine::format_utc as time;

/// Exit status when stdout's reader went away (128 + SIGPIPE, as a shell reports).
pub(crate) const EXIT_BROKEN_PIPE: i32 = 141;

/// Makes `idempipe runs | head -1` end quietly: `println!` panics when stdout's reader
/// has gone (Rust ignores SIGPIPE, so the write fails with EPIPE instead of killing the
/// process); this hook turns that one panic into a silent exit with
/// [`EXIT_BROKEN_PIPE`]. SIGPIPE itself stays ignored, so a dead ffmpeg's stdin is still
/// an error the pipeline handles, not a kill.
pub(crate) fn exit_quietly_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if is_broken_stdout(info.payload()) {
            std::process::exit(EXIT_BROKEN_PIPE);
        }
        default(info);
    }));
}

/// Whether a panic payload is std's "failed printing to stdout: Broken pipe".
fn is_broken_stdout(payload: &(dyn std::any::Any + Send)) -> bool {
    let text = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("");
    text.starts_with("failed printing to stdout")
        && text.to_ascii_lowercase().contains("broken pipe")
}

/// A duration in seconds as `1h02m`, `3m05s` or `42s`.
pub(crate) fn duration(secs: f64) -> String {
    let s = secs.round() as i64;
    match s {
        s if s >= 3600 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

/// A byte count as `0 B`, `512 B`, `1.5 KiB`, `239.0 MiB` or `2.1 GiB`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The readable part of an error JSON (one wording for the CLI and the progress display).
pub(crate) use idempipe_video::pipeline::progress::error_text;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_broken_stdout_is_a_quiet_exit() {
        let broken = std::io::Error::from_raw_os_error(32);
        let payload: Box<dyn std::any::Any + Send> =
            Box::new(format!("failed printing to stdout: {broken}"));
        assert!(is_broken_stdout(payload.as_ref()), "{broken}");
        let other: Box<dyn std::any::Any + Send> = Box::new("index out of bounds");
        assert!(!is_broken_stdout(other.as_ref()));
    }

    #[test]
    fn formats_times_and_durations() {
        assert_eq!(time(0), "1970-01-01 00:00:00");
        assert_eq!(time(1_795_833_296_000), "2026-11-28 02:34:56");
        assert_eq!(duration(42.4), "42s");
        assert_eq!(duration(185.0), "3m05s");
        assert_eq!(duration(3720.0), "1h02m");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(239 * 1024 * 1024), "239.0 MiB");
        assert_eq!(
            error_text(&serde_json::json!({"message": "x", "status": 503})),
            "HTTP 503: x"
        );
    }
}
