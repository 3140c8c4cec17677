//! The in-process provider: the same algorithm as the server, on the blocking pool.

use async_trait::async_trait;
use image::RgbImage;

use super::{Provider, ProviderError};
use crate::params::EnhanceParams;

/// Enhances frames in this process.
#[derive(Debug, Clone, Default)]
pub struct LocalProvider;

impl LocalProvider {
    /// A local provider.
    pub fn new() -> Self {
        Self
    }
}

#[async_trait]
impl Provider for LocalProvider {
    async fn enhance(
        &self,
        frame: RgbImage,
        params: &EnhanceParams,
        _key: &str,
    ) -> Result<RgbImage, ProviderError> {
        params
            .validate()
            .map_err(|e| ProviderError::permanent(e.to_string()))?;
        let params = *params;
        tokio::task::spawn_blocking(move || crate::algorithm::enhance(&frame, &params))
            .await
            // Only a panic in the algorithm gets here: a bug that a retry would repeat.
            .map_err(|e| ProviderError::permanent(format!("local enhancement task failed: {e}")))
    }

    fn name(&self) -> &str {
        "local"
    }
}
