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
use crate::buffers::FRAMES;
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

    /// The request for `frame`: the parameters checked and the frame encoded as
    /// configured. CPU work with no I/O, for the caller to run on a thread of its
    /// choosing (with its own reading of the frame: one hop to the blocking pool for
    /// both); then [`send`](Self::send) it.
    pub fn request(
        &self,
        frame: &RgbImage,
        params: &EnhanceParams,
    ) -> Result<Request, ProviderError> {
        params
            .validate()
            .map_err(|e| ProviderError::permanent(e.to_string()))?;
        let body = codec::encode_with(frame, self.config.format, self.config.png)
            .map_err(|e| ProviderError::permanent(format!("could not encode the frame: {e}")))?;
        Ok(Request {
            body,
            size: frame.dimensions(),
            params: *params,
        })
    }

    /// Sends `request` under the idempotency key `key` and returns the answer, to be
    /// decoded with [`Answer::image`] (CPU work with no I/O, like
    /// [`request`](Self::request)).
    pub async fn send(&self, request: Request, key: &str) -> Result<Answer, ProviderError> {
        let started = Instant::now();
        let result = self.post(request, key).await;
        let secs = started.elapsed().as_secs_f64();
        let status = match &result {
            Ok(_) => "200".to_string(),
            Err(e) => e
                .status()
                .map_or_else(|| "error".to_string(), |s| s.to_string()),
        };
        metrics::histogram!("idempipe_enhance_api_duration_seconds").record(secs);
        metrics::counter!("idempipe_enhance_api_requests_total", "status" => status).increment(1);
        let ms = secs * 1000.0;
        match &result {
            Ok(_) => tracing::debug!(provider = %self.name, key, ms, "frame enhanced"),
            Err(e) => {
                tracing::debug!(provider = %self.name, key, ms, status = e.status(), error = %e, "enhance call failed")
            }
        }
        result
    }

    async fn post(&self, request: Request, key: &str) -> Result<Answer, ProviderError> {
        validate_key(key.as_bytes()).map_err(|e| ProviderError::permanent(e.to_string()))?;
        let format = self.config.format;
        let (width, height) = request.size;
        let url = self.endpoint.as_str();
        let mut http = self
            .client
            .post(self.url_with_params(&request.params))
            .header(CONTENT_TYPE, format.content_type())
            .header("Idempotency-Key", key)
            .body(request.body);
        if let Some(token) = &self.config.token {
            http = http.bearer_auth(token);
        }
        let response = http.send().await.map_err(|e| self.transport_error(&e))?;
        let (headers, bytes) = ok_body(
            response,
            url,
            self.config.timeout,
            max_answer_bytes(width, height),
        )
        .await?;
        let format = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(ImageFormat::from_content_type)
            .unwrap_or(format);
        Ok(Answer {
            bytes,
            format,
            size: request.size,
            url: url.to_owned(),
        })
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
        let this = self.clone();
        let params = *params;
        let request = blocking(move || this.request(&frame, &params)).await??;
        let answer = self.send(request, key).await?;
        blocking(move || answer.image()).await?
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// A frame encoded for the API ([`HttpProvider::request`]).
#[derive(Debug)]
pub struct Request {
    body: Vec<u8>,
    size: (u32, u32),
    params: EnhanceParams,
}

/// The API's answer to a [`Request`], not decoded yet.
#[derive(Debug)]
pub struct Answer {
    bytes: axum::body::Bytes,
    format: ImageFormat,
    size: (u32, u32),
    url: String,
}

impl Answer {
    /// The enhanced frame. An answer that is not an image, or not one of the frame's
    /// size (refused from its header, before its pixels are allocated: a small PNG can
    /// declare gigapixels), is a retryable failure: the contract forbids it.
    ///
    /// A stored PNG is decoded into a buffer of [`FRAMES`]: give it back
    /// ([`BufferPool::give`](crate::buffers::BufferPool::give)) when done with the frame.
    pub fn image(self) -> Result<RgbImage, ProviderError> {
        let (width, height) = self.size;
        let garbled = |what: String| garbled(&self.url, &what);
        let max_pixels = u64::from(width) * u64::from(height);
        let image = codec::decode_limited_into(&self.bytes, self.format, max_pixels, FRAMES.take())
            .map_err(|e| garbled(format!("a body that is not an image: {e}")))?;
        if image.dimensions() != (width, height) {
            let (w, h) = image.dimensions();
            return Err(garbled(format!(
                "a {w}x{h} image for a {width}x{height} frame"
            )));
        }
        Ok(image)
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
