//! Frame enhancement for idempipe: the algorithm, the HTTP API server that implements
//! the enhancement contract (`docs/enhance-api.md`), and the providers the pipeline
//! calls it through.
//!
//! # Layout
//! - [`params`]: [`EnhanceParams`] and their validation.
//! - [`algorithm`]: the deterministic, non-idempotent enhancement of an RGB frame.
//! - [`metrics`]: sharpness and contrast measures on luma.
//! - [`codec`]: PNG/JPEG encode and decode.
//! - [`buffers`]: frame-sized buffers kept for reuse.
//! - [`idempotency`]: `Idempotency-Key` validation shared by server and client.
//! - [`server`]: the axum server (`POST /v1/enhance`, `GET /healthz`, `GET /stats`).
//! - [`provider`]: the [`Provider`] trait with local and HTTP implementations.

pub mod algorithm;
pub mod buffers;
pub mod codec;
pub mod idempotency;
pub mod metrics;
pub mod params;
pub mod provider;
pub mod server;
mod stored_png;

pub use algorithm::{enhance, enhance_into};
pub use codec::ImageFormat;
pub use params::{EnhanceParams, ParamsError};

pub use provider::{HttpProvider, HttpProviderConfig, LocalProvider, Provider, ProviderError};
pub use server::{ServerConfig, ServerStats, router, serve};
