//! Serving an axum [`Router`](axum::Router) over HTTP/1 with limits that keep one
//! abusive client from starving the others.
//!
//! `axum::serve` sets no limit on connections and no timer, so hyper's header read
//! timeout never fires there: a client that sends its headers one byte at a time
//! (slowloris), or never sends anything, holds its connection forever. [`serve`]
//! bounds connections in total and per client address (answering `503` with
//! `Retry-After` beyond them), closes a connection whose request headers do not arrive
//! within [`ServeLimits::header_read_timeout`] (including an idle keep-alive connection
//! waiting for its next request), and caps the size of the request head
//! (`431`). Per-request time and body size are the router's business (each server
//! knows which of its routes stream).
//!
//! # Layout
//! - [`limits`]: [`ServeLimits`], defaults and validation.
//! - [`serve`](mod@serve): the accept loop, the per-address connection count and
//!   graceful shutdown.
//! - `refuse`: the short `503` written to a connection over the limits.

pub mod limits;
mod refuse;
pub mod serve;

pub use limits::{LimitsError, ServeLimits};
pub use serve::serve;
