//! Shared test helpers: real frames and an in-process server on loopback.

#![allow(dead_code)]

pub(crate) mod frames;

use std::sync::Arc;

use idempipe_enhance::server::{ServerState, ServerStats, serve_with_state};
use idempipe_enhance::{ImageFormat, ServerConfig, codec};
use image::RgbImage;
use tokio::sync::oneshot;

/// A server running on 127.0.0.1 with an ephemeral port; stops when dropped.
pub(crate) struct TestServer {
    /// `http://127.0.0.1:PORT`
    pub(crate) base: String,
    /// Its live counters.
    pub(crate) stats: Arc<ServerStats>,
    _stop: oneshot::Sender<()>,
}

/// Starts the API server with `config` on 127.0.0.1:0.
pub(crate) async fn start_server(config: ServerConfig) -> TestServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = ServerState::new(config).unwrap();
    let stats = state.stats();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve_with_state(listener, state, async {
        let _ = stopped.await;
    }));
    TestServer {
        base,
        stats,
        _stop: stop,
    }
}

/// A small real frame (carphone, 176x144), synthetic if ffmpeg is missing.
pub(crate) fn small_frame() -> RgbImage {
    frames::try_video_frame("carphone_pristine.mp4", 10)
        .unwrap_or_else(|| frames::synthetic_frame(176, 144))
}

/// `frame` encoded as `format`.
pub(crate) fn encoded(frame: &RgbImage, format: ImageFormat) -> Vec<u8> {
    codec::encode(frame, format).unwrap()
}
