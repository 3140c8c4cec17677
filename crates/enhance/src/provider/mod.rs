//! Providers: where the pipeline sends a frame to be enhanced.
//!
//! [`LocalProvider`] runs the algorithm in process; [`HttpProvider`] calls any service
//! that implements the enhancement API contract. Both classify failures as
//! [`ProviderError::Retryable`] or [`ProviderError::Permanent`] so the engine knows
//! whether to try again.

pub mod classify;
mod error;
mod http;
pub mod http_common;
mod local;
pub mod tls;

use async_trait::async_trait;
use image::RgbImage;

use crate::params::EnhanceParams;

pub use error::{ProviderConfigError, ProviderError};
pub use http::{
    API_TOKEN_ENV, Answer, HttpProvider, HttpProviderConfig, Request, api_token_from_env,
};
pub use local::LocalProvider;

/// Something that enhances one frame per call.
#[async_trait]
pub trait Provider: Send + Sync {
    /// Enhances `frame`. `idempotency_key` names this unit of work; a remote service
    /// may use it to answer a repeated call without charging again.
    async fn enhance(
        &self,
        frame: RgbImage,
        params: &EnhanceParams,
        idempotency_key: &str,
    ) -> Result<RgbImage, ProviderError>;

    /// A short name for logs, e.g. `local` or `http(127.0.0.1:8080)`.
    fn name(&self) -> &str;
}
