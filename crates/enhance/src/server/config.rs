//! Server configuration, with demo/test fault injection, validated when the server is built.

use std::time::Duration;

pub use idempipe_http::ServeLimits;

/// Default body limit: a 4K RGB PNG at fast compression stays well under 32 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 32 * 1024 * 1024;
/// Default pixel limit: 4K UHD (3840x2160), the largest frame the pipeline targets.
pub const DEFAULT_MAX_PIXELS: u64 = 3840 * 2160;
/// Default number of remembered idempotency keys.
pub const DEFAULT_IDEMPOTENCY_CAPACITY: usize = 1024;
/// Default byte budget for remembered results: about 100 encoded 720p PNG frames.
pub const DEFAULT_IDEMPOTENCY_MAX_BYTES: usize = 256 * 1024 * 1024;
/// Default time for a whole request (receiving the body, enhancing, encoding): a 4K
/// frame takes about a second on one core, so a minute only ends a stalled upload.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Shortest access token accepted: guessing 16 random characters is out of reach.
pub const MIN_TOKEN_LEN: usize = 16;

/// How the enhancement server behaves; build with `..Default::default()`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest accepted request body in bytes (413 above).
    pub max_body_bytes: usize,
    /// Largest accepted image in pixels, width times height (413 above).
    pub max_pixels: u64,
    /// Requests per second allowed before answering 429; 0.0 turns the limit off.
    pub rate_limit: f64,
    /// Token-bucket capacity (requests allowed at once); 0 means `ceil(rate_limit)`.
    pub rate_burst: u32,
    /// Demo/test: delay added to every admitted request before it is processed.
    pub latency: Duration,
    /// Demo/test: fraction of admitted requests answered 503, in 0.0..=1.0.
    pub failure_rate: f64,
    /// Demo/test: seed that makes the injected failures a fixed, reproducible sequence.
    pub failure_seed: u64,
    /// Demo/test: periodic bursts of 429 responses.
    pub burst_429: Option<Burst429>,
    /// Chaos tests: fraction of enhanced requests whose answer is held for `hang` first
    /// (past a client's timeout: the work is done, the answer lost), in 0.0..=1.0.
    pub hang_rate: f64,
    /// Chaos tests: how long a hanging answer is held.
    pub hang: Duration,
    /// Chaos tests: fraction of enhanced requests answered 200 with a body that is not
    /// an image, in 0.0..=1.0.
    pub garbage_rate: f64,
    /// Chaos tests: count enhancements and 200 answers per idempotency key, served at
    /// `GET /stats/keys` (memory grows with the keys seen, so off by default).
    pub key_ledger: bool,
    /// How many recent idempotency keys are remembered (0 turns the cache off).
    pub idempotency_capacity: usize,
    /// Byte budget of remembered results; the oldest are forgotten first.
    pub idempotency_max_bytes: usize,
    /// Longest time for one request, body upload included (408 after it).
    pub request_timeout: Duration,
    /// Connections in total and per client address, header size and header read time.
    pub limits: ServeLimits,
    /// Access token: when set, every route but `GET /healthz` needs
    /// `Authorization: Bearer TOKEN` (401 otherwise).
    pub token: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_pixels: DEFAULT_MAX_PIXELS,
            rate_limit: 0.0,
            rate_burst: 0,
            latency: Duration::ZERO,
            failure_rate: 0.0,
            failure_seed: 0,
            burst_429: None,
            hang_rate: 0.0,
            hang: Duration::ZERO,
            garbage_rate: 0.0,
            key_ledger: false,
            idempotency_capacity: DEFAULT_IDEMPOTENCY_CAPACITY,
            idempotency_max_bytes: DEFAULT_IDEMPOTENCY_MAX_BYTES,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            limits: ServeLimits::default(),
            token: None,
        }
    }
}

/// Demo/test: of every `every` admitted requests, the last `length` get a 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Burst429 {
    /// Period of the pattern, in requests (>= 1).
    pub every: u64,
    /// Requests per period answered 429 (<= `every`).
    pub length: u64,
    /// The `Retry-After` sent with them (whole seconds, rounded up).
    pub retry_after: Duration,
}

/// A configuration field with an invalid value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("server config: {field} {message}")]
pub struct ConfigError {
    /// The field's name.
    pub field: &'static str,
    /// What is wrong and what is accepted.
    pub message: String,
}

impl ServerConfig {
    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |field, message: &str| {
            Err(ConfigError {
                field,
                message: message.to_string(),
            })
        };
        if self.max_body_bytes == 0 {
            return err("max_body_bytes", "must be > 0");
        }
        if self.max_pixels == 0 {
            return err("max_pixels", "must be > 0");
        }
        if !self.rate_limit.is_finite() || self.rate_limit < 0.0 {
            return err("rate_limit", "must be a finite number >= 0 (0 = off)");
        }
        if !(0.0..=1.0).contains(&self.failure_rate) {
            return err("failure_rate", "must be within 0.0..=1.0");
        }
        if !(0.0..=1.0).contains(&self.hang_rate) {
            return err("hang_rate", "must be within 0.0..=1.0");
        }
        if !(0.0..=1.0).contains(&self.garbage_rate) {
            return err("garbage_rate", "must be within 0.0..=1.0");
        }
        if let Some(b) = self.burst_429
            && (b.every == 0 || b.length > b.every)
        {
            return err("burst_429", "needs every >= 1 and length <= every");
        }
        if self.request_timeout.is_zero() {
            return err("request_timeout", "must be > 0");
        }
        if let Some(token) = &self.token
            && (token.len() < MIN_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()))
        {
            return err(
                "token",
                "must be at least 16 visible ASCII characters (no spaces)",
            );
        }
        self.limits.validate().map_err(|e| ConfigError {
            field: e.field,
            message: e.message.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_field() {
        assert!(ServerConfig::default().validate().is_ok());
        let c = ServerConfig {
            failure_rate: 1.5,
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().field, "failure_rate");
        let c = ServerConfig {
            rate_limit: f64::NAN,
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().field, "rate_limit");
    }
}
