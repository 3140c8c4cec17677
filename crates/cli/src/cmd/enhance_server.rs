//! `idempipe enhance-server`: serve the frame enhancement API (docs/enhance-api.md).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use idempipe_enhance::ServerConfig;
use idempipe_enhance::server::{
    Burst429, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_PIXELS, DEFAULT_REQUEST_TIMEOUT, ServeLimits,
};

/// Options of `enhance-server`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct EnhanceServerArgs {
    /// Address to listen on. Non-loopback addresses need --token (or --allow-remote).
    #[arg(
        long,
        env = "IDEMPIPE_ENHANCE_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub(crate) listen: SocketAddr,

    /// Access token every request but GET /healthz must carry (`Authorization: Bearer
    /// TOKEN`); clients read it from the same variable. At least 16 characters.
    #[arg(long, env = "IDEMPIPE_API_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,

    /// Allow listening on a non-loopback address without --token (anyone who can reach
    /// it can use it).
    #[arg(long)]
    pub(crate) allow_remote: bool,

    /// Open connections at once; more are answered 503 with Retry-After.
    #[arg(long, default_value_t = ServeLimits::default().max_connections)]
    pub(crate) max_connections: usize,

    /// Longest time for one request, body upload included, in seconds (408 after it).
    #[arg(long, default_value_t = DEFAULT_REQUEST_TIMEOUT.as_secs())]
    pub(crate) request_timeout_secs: u64,

    /// Largest accepted request body in bytes; larger requests get 413.
    #[arg(long, default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub(crate) max_body_bytes: usize,

    /// Largest accepted image in pixels (width x height); larger images get 413.
    #[arg(long, default_value_t = DEFAULT_MAX_PIXELS)]
    pub(crate) max_pixels: u64,

    /// Requests per second before answering 429 with Retry-After; 0 turns the limit off.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) rate_limit: f64,

    /// Demo: milliseconds of delay added to every admitted request.
    #[arg(long, default_value_t = 0)]
    pub(crate) latency_ms: u64,

    /// Demo: fraction (0.0 to 1.0) of admitted requests answered 503, a reproducible pattern.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) failure_rate: f64,

    /// Demo: seed of the injected-failure pattern.
    #[arg(long, default_value_t = 0)]
    pub(crate) failure_seed: u64,

    /// Demo: answer 429 to the last --burst-429-length of every N requests; 0 turns bursts off.
    #[arg(long, default_value_t = 0)]
    pub(crate) burst_429_every: u64,

    /// Demo: how many requests of each --burst-429-every period get 429.
    #[arg(long, default_value_t = 1)]
    pub(crate) burst_429_length: u64,

    /// Demo: Retry-After seconds sent with burst 429s.
    #[arg(long, default_value_t = 1)]
    pub(crate) burst_429_retry_after: u64,

    /// Chaos tests: fraction (0.0 to 1.0) of enhanced requests whose answer is held for
    /// --hang-ms first (past the client's timeout: the work is done, the answer lost).
    #[arg(long, default_value_t = 0.0)]
    pub(crate) hang_rate: f64,

    /// Chaos tests: milliseconds a held answer waits.
    #[arg(long, default_value_t = 60_000)]
    pub(crate) hang_ms: u64,

    /// Chaos tests: fraction (0.0 to 1.0) of enhanced requests answered 200 with a body
    /// that is not an image.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) garbage_rate: f64,

    /// Chaos tests: count enhancements and 200 answers per idempotency key, served at
    /// GET /stats/keys (memory grows with the keys seen).
    #[arg(long)]
    pub(crate) key_ledger: bool,
}

impl EnhanceServerArgs {
    /// The server configuration these options describe.
    fn config(&self) -> ServerConfig {
        let burst_429 = (self.burst_429_every > 0).then(|| Burst429 {
            every: self.burst_429_every,
            length: self.burst_429_length,
            retry_after: Duration::from_secs(self.burst_429_retry_after),
        });
        ServerConfig {
            max_body_bytes: self.max_body_bytes,
            max_pixels: self.max_pixels,
            rate_limit: self.rate_limit,
            latency: Duration::from_millis(self.latency_ms),
            failure_rate: self.failure_rate,
            failure_seed: self.failure_seed,
            burst_429,
            hang_rate: self.hang_rate,
            hang: Duration::from_millis(self.hang_ms),
            garbage_rate: self.garbage_rate,
            key_ledger: self.key_ledger,
            request_timeout: Duration::from_secs(self.request_timeout_secs),
            limits: ServeLimits {
                max_connections: self.max_connections,
                ..ServeLimits::default()
            },
            token: self.token.clone(),
            ..ServerConfig::default()
        }
    }
}

/// Serves the enhancement API until Ctrl-C or SIGTERM, then drains in-flight requests.
pub(crate) async fn run(args: EnhanceServerArgs) -> anyhow::Result<()> {
    if !args.listen.ip().is_loopback() && args.token.is_none() && !args.allow_remote {
        bail!(
            "refusing to listen on {} (not loopback) without an access token: set --token \
             (or IDEMPIPE_API_TOKEN), or pass --allow-remote to serve anyone who can reach it",
            args.listen
        );
    }
    let config = args.config();
    config
        .validate()
        .context("invalid enhance-server options")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("could not listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "enhancement API listening: POST http://{addr}/v1/enhance, GET /healthz, GET /stats");
    idempipe_enhance::serve(listener, config, shutdown_signal())
        .await
        .context("enhancement server failed")
}

/// Completes on Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}
