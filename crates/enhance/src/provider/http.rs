//! The HTTP provider: calls a service implementing the enhancement API contract.
//!
//! A 200 whose body is not a decodable image, or is an image of another size, is
//! classified Retryable: the contract forbids it, so it points at a flaky proxy or a
//! misbehaving backend that a later call may not reproduce. The engine's attempt limit
//! still bounds how often that is tried.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use image::RgbImage;
use reqwest::header::CONTENT_TYPE;
use reqwest::{Client, Url};

use super::http_common::{client, endpoint, garbled, ok_body, transport_error};
use super::{Provider, ProviderConfigError, ProviderError};
use crate::codec::{self, ImageFormat, PngCompression};
use crate::idempotency::validate_key;
use crate::params::EnhanceParams;

/// How an [`HttpProvider`] talks to the service.
#[derive(Debug, Clone)]
pub struct HttpProviderConfig {
    /// Whole-request timeout (connect, upload, processing, download).
    pub timeout: Duration,
    /// Timeout for establishing a TCP connection.
    pub connect_timeout: Duration,
    /// Format frames are sent in: PNG keeps results deterministic, JPEG is smaller.
    pub format: ImageFormat,
    /// How PNG frames are compressed: stored by default (the least CPU per frame; the
    /// enhancement server then answers stored too), `Fast` for a slow link.
    pub png: PngCompression,
    /// Access token sent as `Authorization: Bearer TOKEN` (for a server started with
    /// one; see [`api_token_from_env`]).
    pub token: Option<String>,
}

/// Environment variable holding the enhancement API's access token.
pub const API_TOKEN_ENV: &str = "IDEMPIPE_API_TOKEN";

/// The access token in `$IDEMPIPE_API_TOKEN`, if set and not empty.
pub fn api_token_from_env() -> Option<String> {
    std::env::var(API_TOKEN_ENV).ok().filter(|t| !t.is_empty())
}

impl Default for HttpProviderConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            format: ImageFormat::Png,
            png: PngCompression::Stored,
            token: None,
        }
    }
}

/// Calls `POST {base}/v1/enhance` over a pooled HTTP/1 client.
#[derive(Debug, Clone)]
pub struct HttpProvider {
    client: Client,
    endpoint: Url,
    name: String,
    config: HttpProviderConfig,
}

impl HttpProvider {
    /// Validates `base_url` (`http[s]://host[:port][/path]`, no query or fragment) and
    /// builds the client.
    pub fn new(base_url: &str, config: HttpProviderConfig) -> Result<Self, ProviderConfigError> {
        let (endpoint, name) = endpoint(base_url, "v1/enhance")?;
        let client = client(config.timeout, config.connect_timeout)?;
        Ok(Self {
            client,
            endpoint,
            name,
            config,
        })
    }

    /// The full URL requests go to.
    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    fn url_with_params(&self, params: &EnhanceParams) -> Url {
        let mut url = self.endpoint.clone();
        {
            let mut query = url.query_pairs_mut();
            for (name, value) in params.fields() {
                query.append_pair(name, &value.to_string());
            }
        }
        url
    }

    async fn call(
        &self,
        frame: RgbImage,
        params: &EnhanceParams,
        key: &str,
    ) -> Result<RgbImage, ProviderError> {
        params
            .validate()
            .map_err(|e| ProviderError::permanent(e.to_string()))?;
        validate_key(key.as_bytes()).map_err(|e| ProviderError::permanent(e.to_string()))?;
        let (format, png) = (self.config.format, self.config.png);
        let (width, height) = frame.dimensions();
        let body = blocking(move || codec::encode_with(&frame, format, png))
            .await?
            .map_err(|e| ProviderError::permanent(format!("could not encode the frame: {e}")))?;

        let url = self.endpoint.as_str();
        let mut request = self
            .client
            .post(self.url_with_params(params))
            .header(CONTENT_TYPE, format.content_type())
            .header("Idempotency-Key", key)
            .body(body);
        if let Some(token) = &self.config.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| self.transport_error(&e))?;
        let (headers, bytes) = ok_body(
            response,
            url,
            self.config.timeout,
            max_answer_bytes(width, height),
        )
        .await?;
        let answered_format = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(ImageFormat::from_content_type)
            .unwrap_or(format);
        let garbled = |what: String| garbled(url, &what);
        // The answer must be the frame's size: refuse a larger one from its header,
        // before allocating its pixels (a small PNG can declare gigapixels).
        let max_pixels = u64::from(width) * u64::from(height);
        let image = blocking(move || codec::decode_limited(&bytes, answered_format, max_pixels))
            .await?
            .map_err(|e| garbled(format!("a body that is not an image: {e}")))?;
        if image.dimensions() != (width, height) {
            let (w, h) = image.dimensions();
            return Err(garbled(format!(
                "a {w}x{h} image for a {width}x{height} frame"
            )));
        }
        Ok(image)
    }

    fn transport_error(&self, e: &reqwest::Error) -> ProviderError {
        transport_error(self.endpoint.as_str(), self.config.timeout, e)
    }
}

#[async_trait]
impl Provider for HttpProvider {
    async fn enhance(
        &self,
        frame: RgbImage,
        params: &EnhanceParams,
        key: &str,
    ) -> Result<RgbImage, ProviderError> {
        let started = Instant::now();
        let result = self.call(frame, params, key).await;
        let secs = started.elapsed().as_secs_f64();
        let ms = secs * 1000.0;
        let status = match &result {
            Ok(_) => "200".to_string(),
            Err(e) => e
                .status()
                .map_or_else(|| "error".to_string(), |s| s.to_string()),
        };
        metrics::histogram!("idempipe_enhance_api_duration_seconds").record(secs);
        metrics::counter!("idempipe_enhance_api_requests_total", "status" => status).increment(1);
        match &result {
            Ok(_) => tracing::debug!(provider = %self.name, key, ms, "frame enhanced"),
            Err(e) => {
                tracing::debug!(provider = %self.name, key, ms, status = e.status(), error = %e, "enhance call failed")
            }
        }
        result
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// The most bytes read of an answer for a `width`x`height` frame: twice its raw RGB
/// size plus 1 MiB, well above any PNG or JPEG of it (incompressible PNG adds well under
/// 1% to the raw size).
fn max_answer_bytes(width: u32, height: u32) -> usize {
    let raw = u64::from(width) * u64::from(height) * 3;
    usize::try_from(raw * 2 + (1 << 20)).unwrap_or(usize::MAX)
}

/// Runs CPU-bound codec work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ProviderError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ProviderError::permanent(format!("codec task failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let p = HttpProvider::new("http://127.0.0.1:8080", HttpProviderConfig::default()).unwrap();
        assert_eq!(p.endpoint().as_str(), "http://127.0.0.1:8080/v1/enhance");
        assert_eq!(p.name(), "http(127.0.0.1:8080)");
        let p = HttpProvider::new("http://h/api", HttpProviderConfig::default()).unwrap();
        assert_eq!(p.endpoint().as_str(), "http://h/api/v1/enhance");
        let p =
            HttpProvider::new("https://api.example.com", HttpProviderConfig::default()).unwrap();
        assert_eq!(p.endpoint().as_str(), "https://api.example.com/v1/enhance");
        assert_eq!(p.name(), "https(api.example.com)");
        for bad in ["127.0.0.1:8080", "not a url", "ftp://h/", "http://h/?a=1"] {
            let err = HttpProvider::new(bad, HttpProviderConfig::default()).unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn params_in_query() {
        let p = HttpProvider::new("http://h:1", HttpProviderConfig::default()).unwrap();
        let params = EnhanceParams {
            sharpness: 1.5,
            contrast: 0.0,
            brightness: 1.0,
        };
        assert_eq!(
            p.url_with_params(&params).query(),
            Some("sharpness=1.5&contrast=0&brightness=1")
        );
    }
}
