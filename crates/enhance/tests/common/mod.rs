//! Shared test helpers: real frames and an in-process server on loopback.

#![allow(dead_code)]

pub(crate) mod craft;
pub(crate) mod frames;

use std::sync::Arc;

use idempipe_enhance::server::{ServerState, ServerStats, serve_with_state};
use idempipe_enhance::{ImageFormat, ServerConfig, codec};
use image::RgbImage;
use tokio::sync::oneshot;

/// A server running on an ephemeral port; stops when dropped.
pub(crate) struct TestServer {
    /// `http://127.0.0.1:PORT`
    pub(crate) base: String,
    /// Its address on 127.0.0.1.
    pub(crate) addr: std::net::SocketAddr,
    /// Its live counters.
    pub(crate) stats: Arc<ServerStats>,
    _stop: oneshot::Sender<()>,
}

/// Starts the API server with `config` on 127.0.0.1:0.
pub(crate) async fn start_server(config: ServerConfig) -> TestServer {
    start_server_at("127.0.0.1:0", config).await
}

/// Starts the API server with `config` on `bind` (e.g. `0.0.0.0:0` to be reachable on
/// every address of the machine).
pub(crate) async fn start_server_at(bind: &str, config: ServerConfig) -> TestServer {
    let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let base = format!("http://{addr}");
    let state = ServerState::new(config).unwrap();
    let stats = state.stats();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve_with_state(listener, state, async {
        let _ = stopped.await;
    }));
    TestServer {
        base,
        addr,
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
