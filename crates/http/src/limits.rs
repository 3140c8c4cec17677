//! The connection-level limits of [`crate::serve`], with their defaults.

use std::time::Duration;

/// Default connection cap: far above what the pipeline's workers open (one pooled
/// connection per concurrent call), and under the common soft limit of 1024 open files,
/// leaving descriptors for the database, frame files and ffmpeg pipes.
pub const DEFAULT_MAX_CONNECTIONS: usize = 768;
/// Default cap per client address: a quarter of the total, so one address (one
/// misbehaving machine) cannot take every connection.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 192;
/// Default time allowed for a request's headers, counted from when the server starts
/// waiting for them (so also the idle time allowed between keep-alive requests).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default size of the buffer the request line and headers must fit in; hyper answers
/// `431` beyond it. Real requests of these APIs use well under 4 KiB.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// Smallest header buffer hyper accepts.
const MIN_HEADER_BYTES: usize = 8192;

/// Connection-level limits; build with `..Default::default()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// Open connections at once; more are answered `503` and closed.
    pub max_connections: usize,
    /// Open connections at once from one client IP address.
    pub max_connections_per_ip: usize,
    /// Time allowed for a request line and headers to arrive; the connection is closed
    /// after it (a keep-alive connection idle that long too).
    pub header_read_timeout: Duration,
    /// Largest request line plus headers, in bytes (`431` above; at least 8192).
    pub max_header_bytes: usize,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
        }
    }
}

/// A limit with an unusable value, naming it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("server limits: {field} {message}")]
pub struct LimitsError {
    /// The field's name.
    pub field: &'static str,
    /// What is accepted.
    pub message: &'static str,
}

impl ServeLimits {
    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<(), LimitsError> {
        let err = |field, message| Err(LimitsError { field, message });
        if self.max_connections == 0 {
            return err("max_connections", "must be >= 1");
        }
        if self.max_connections_per_ip == 0 {
            return err("max_connections_per_ip", "must be >= 1");
        }
        if self.header_read_timeout.is_zero() {
            return err("header_read_timeout", "must be > 0");
        }
        if self.max_header_bytes < MIN_HEADER_BYTES {
            return err("max_header_bytes", "must be >= 8192");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_field() {
        assert!(ServeLimits::default().validate().is_ok());
        let bad = ServeLimits {
            max_header_bytes: 100,
            ..Default::default()
        };
        assert_eq!(bad.validate().unwrap_err().field, "max_header_bytes");
        let bad = ServeLimits {
            max_connections_per_ip: 0,
            ..Default::default()
        };
        assert_eq!(bad.validate().unwrap_err().field, "max_connections_per_ip");
    }
}
