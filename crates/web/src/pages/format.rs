//! Times and durations as people read them (UTC; the page shows no time zone guesswork).

pub(crate) use idempipe_engine::format_utc as time;

/// Seconds as `42s`, `3m05s`, `1h02m`.
pub(crate) fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as i64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(time(0), "1970-01-01 00:00:00");
        assert_eq!(time(1_795_833_296_000), "2026-11-28 02:34:56");
        assert_eq!(duration(185.0), "3m05s");
        assert_eq!(duration(3720.0), "1h02m");
    }
}
