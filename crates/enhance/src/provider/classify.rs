//! Turning an HTTP error response into a [`ProviderError`], per the API contract.

use std::time::Duration;

use super::ProviderError;
use crate::server::ErrorBody;

/// Longest excerpt of an error body (or of the message in it) quoted in a message.
const BODY_EXCERPT: usize = 200;

/// Longest `Retry-After` honoured: a larger value (a misconfigured or hostile server
/// asking for days) would stall every worker of the run, since the limiter pauses them
/// all until then. The engine's own backoff takes over after it.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Classifies a non-200 answer: 408, 429 and 5xx except 501 are retryable (with
/// `Retry-After` when sent), every other status is permanent.
pub fn classify_status(
    url: &str,
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
) -> ProviderError {
    let detail = error_detail(body);
    let message = format!("{url} answered {status}: {detail}");
    let retryable = matches!(status, 408 | 429) || (500..=599).contains(&status) && status != 501;
    if retryable {
        ProviderError::Retryable {
            retry_after,
            status: Some(status),
            message,
        }
    } else {
        ProviderError::Permanent {
            status: Some(status),
            message,
        }
    }
}

/// The `message` of a contract error body (or of an OpenAI-style
/// `{"error": {"message": ...}}`), else a printable excerpt of the body.
fn error_detail(body: &[u8]) -> String {
    if let Ok(err) = serde_json::from_slice::<ErrorBody>(body) {
        return format!("{} ({})", excerpt(&err.message), excerpt(&err.error));
    }
    let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    if let Some(message) = json["error"]["message"].as_str() {
        return excerpt(message);
    }
    let text = String::from_utf8_lossy(body);
    if text.trim().is_empty() {
        return "empty body".into();
    }
    excerpt(&text)
}

/// At most [`BODY_EXCERPT`] characters of `text`, trimmed, with control characters
/// (which could forge log lines) replaced, marked `...` when cut.
fn excerpt(text: &str) -> String {
    let text = text.trim();
    let mut out: String = text
        .chars()
        .take(BODY_EXCERPT)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().nth(BODY_EXCERPT).is_some() {
        out.push_str("...");
    }
    out
}

/// `Retry-After` in delay-seconds form, at most [`MAX_RETRY_AFTER`]. The HTTP-date
/// form is ignored (treated as absent): the contract specifies seconds, and the
/// caller's backoff still applies.
pub fn parse_retry_after(value: Option<&str>) -> Option<Duration> {
    let secs = value?.trim().parse::<u64>().ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_classes() {
        let body = br#"{"error":"bad_image","message":"not a png"}"#;
        let e = classify_status("http://x/v1/enhance", 400, None, body);
        assert!(!e.is_retryable());
        assert!(e.message().contains("not a png") && e.message().contains("http://x/v1/enhance"));
        assert!(!classify_status("u", 413, None, b"").is_retryable());
        assert!(!classify_status("u", 404, None, b"").is_retryable());
        assert!(!classify_status("u", 501, None, b"").is_retryable());
        let e = classify_status("u", 429, Some(Duration::from_secs(3)), b"");
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
        for s in [500, 502, 503, 504, 408] {
            assert!(classify_status("u", s, None, b"oops").is_retryable(), "{s}");
        }
    }

    #[test]
    fn retry_after_seconds_only() {
        assert_eq!(parse_retry_after(Some(" 7 ")), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            None
        );
        assert_eq!(parse_retry_after(None), None);
        assert_eq!(
            parse_retry_after(Some("18446744073709551615")),
            Some(MAX_RETRY_AFTER)
        );
    }

    #[test]
    fn openai_style_error_bodies_give_their_message() {
        let body = format!(
            r#"{{"error":{{"message":"file too short","type":"invalid_request_error","pad":"{}"}}}}"#,
            "x".repeat(500)
        );
        assert_eq!(error_detail(body.as_bytes()), "file too short");
    }

    #[test]
    fn long_bodies_are_cut() {
        let long = "x".repeat(1000);
        assert!(error_detail(long.as_bytes()).len() < 210);
        let body = format!(r#"{{"error":"x","message":"{}"}}"#, "m".repeat(100_000));
        assert!(error_detail(body.as_bytes()).len() < 220);
        assert_eq!(error_detail(b"line\nforged"), "line forged");
    }
}
