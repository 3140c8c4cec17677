//! Provider outcomes that say what the caller should do next.

use std::time::Duration;

/// Why a provider call failed, classified by whether trying again can help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// Transient: rate limited, server error, timeout, connection failure, garbled answer.
    #[error("retryable provider error{}: {message}", status_suffix(*status))]
    Retryable {
        /// When the service asked to be called again (from `Retry-After`), if it did.
        retry_after: Option<Duration>,
        /// The HTTP status, if a response arrived.
        status: Option<u16>,
        /// What went wrong, naming the service.
        message: String,
    },
    /// Permanent: the same request cannot succeed (bad image, too large, bad params).
    #[error("permanent provider error{}: {message}", status_suffix(*status))]
    Permanent {
        /// The HTTP status, if a response arrived.
        status: Option<u16>,
        /// What went wrong, with the service's own message when it sent one.
        message: String,
    },
}

fn status_suffix(status: Option<u16>) -> String {
    status.map(|s| format!(" (HTTP {s})")).unwrap_or_default()
}

impl ProviderError {
    /// A retryable error without status or Retry-After.
    pub fn retryable(message: impl Into<String>) -> Self {
        ProviderError::Retryable {
            retry_after: None,
            status: None,
            message: message.into(),
        }
    }

    /// A permanent error without status.
    pub fn permanent(message: impl Into<String>) -> Self {
        ProviderError::Permanent {
            status: None,
            message: message.into(),
        }
    }

    /// Whether trying again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ProviderError::Retryable { .. })
    }

    /// How long the service asked the caller to wait, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::Retryable { retry_after, .. } => *retry_after,
            ProviderError::Permanent { .. } => None,
        }
    }

    /// The HTTP status of the failed call, if a response arrived.
    pub fn status(&self) -> Option<u16> {
        match self {
            ProviderError::Retryable { status, .. } | ProviderError::Permanent { status, .. } => {
                *status
            }
        }
    }

    /// The message alone, without classification.
    pub fn message(&self) -> &str {
        match self {
            ProviderError::Retryable { message, .. } | ProviderError::Permanent { message, .. } => {
                message
            }
        }
    }
}

/// An [`crate::provider::HttpProvider`] that cannot be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderConfigError {
    /// The base URL is malformed or unusable.
    #[error("API base URL {url:?} is invalid: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The HTTP client could not be built (the causes are in the message).
    #[error("could not build the HTTP client: {}", super::http_common::error_chain(.0))]
    Client(reqwest::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors_and_display() {
        let e = ProviderError::Retryable {
            retry_after: Some(Duration::from_secs(2)),
            status: Some(429),
            message: "slow down".into(),
        };
        assert!(e.is_retryable());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
        assert_eq!(
            e.to_string(),
            "retryable provider error (HTTP 429): slow down"
        );
        let p = ProviderError::permanent("bad");
        assert!(!p.is_retryable());
        assert_eq!(
            (p.retry_after(), p.status(), p.message()),
            (None, None, "bad")
        );
    }
}
