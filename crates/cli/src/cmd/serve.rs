//! `idempipe serve`: the dashboard, its JSON API and `/metrics`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use idempipe_web::{AppState, check_bind, install_metrics_recorder};

use crate::db::{DbArgs, redact};

/// Serve the live dashboard (runs, stages, frame grid, failures, actions), its JSON API
/// under /api and Prometheus metrics on /metrics.
#[derive(clap::Args, Debug)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Address to listen on. Any address other than loopback needs --token.
    #[arg(long, default_value = "127.0.0.1:8090", value_name = "ADDR")]
    listen: SocketAddr,
    /// Access token required on every request (`Authorization: Bearer TOKEN`, or open
    /// the dashboard once with ?token=TOKEN). At least 16 characters.
    #[arg(long, env = "IDEMPIPE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Directory files (frames, thumbnails, outputs) may be served from; repeat for
    /// several. Default: each run's own artifact directory and output directory.
    #[arg(long = "artifacts", value_name = "DIR")]
    artifacts: Vec<PathBuf>,
}

/// Serves until Ctrl-C.
pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<i32> {
    // Refuse before opening anything, so the message is the first thing the user sees.
    check_bind(args.listen, args.token.as_deref())?;
    let metrics = install_metrics_recorder();
    let store = args.db.open().await?;
    let state = AppState::builder(store)
        .token(args.token.clone())
        .artifact_roots(args.artifacts.clone())
        .metrics(metrics)
        .build()?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    eprintln!(
        "idempipe: dashboard on http://{addr}/{} (database {})",
        if args.token.is_some() {
            "?token=..."
        } else {
            ""
        },
        redact(&args.db.url())
    );
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("interrupted; stopping the dashboard");
    };
    idempipe_web::serve(listener, state, shutdown).await?;
    Ok(0)
}
