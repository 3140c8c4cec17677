//! What every handler shares: the store, the access token, the artifact roots, the
//! metrics handle and the live-update interval.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use idempipe_engine::SharedStore;
use idempipe_http::ServeLimits;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;

use crate::error::WebError;

/// How often live updates look for changes: often enough to feel live, rare enough
/// that a dashboard left open costs the database a few queries a second.
pub const DEFAULT_TICK: Duration = Duration::from_secs(1);

/// Longest time a request may take to produce its response head (a live stream or a
/// video download then streams for as long as it needs): every page and API call
/// answers in milliseconds, so this only ends one stuck on a wedged database.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Shortest accepted access token: long enough that guessing it over HTTP is hopeless.
pub const MIN_TOKEN_LEN: usize = 16;

/// The dashboard's shared state. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    store: SharedStore,
    token: Option<String>,
    artifact_roots: Vec<PathBuf>,
    metrics: Option<PrometheusHandle>,
    tick: Duration,
    limits: ServeLimits,
    request_timeout: Duration,
    /// Set when the server shuts down, so that live streams end.
    closing: watch::Sender<bool>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("store", &self.inner.store.backend())
            .field("token", &self.inner.token.as_ref().map(|_| "***"))
            .field("artifact_roots", &self.inner.artifact_roots)
            .field("tick", &self.inner.tick)
            .finish()
    }
}

/// Builds an [`AppState`]; the token is validated by [`AppStateBuilder::build`].
#[derive(Debug)]
pub struct AppStateBuilder {
    store: SharedStore,
    token: Option<String>,
    artifact_roots: Vec<PathBuf>,
    metrics: Option<PrometheusHandle>,
    tick: Duration,
    limits: ServeLimits,
    request_timeout: Duration,
}

impl AppState {
    /// A builder over `store`: no token, no artifact roots (each run's own directories),
    /// no process metrics, updates every [`DEFAULT_TICK`].
    pub fn builder(store: SharedStore) -> AppStateBuilder {
        AppStateBuilder {
            store,
            token: None,
            artifact_roots: Vec::new(),
            metrics: None,
            tick: DEFAULT_TICK,
            limits: ServeLimits::default(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// The store.
    pub fn store(&self) -> &SharedStore {
        &self.inner.store
    }

    /// The access token, if one is required.
    pub fn token(&self) -> Option<&str> {
        self.inner.token.as_deref()
    }

    /// Directories files may be served from; empty means each run's own artifact and
    /// output directories.
    pub fn artifact_roots(&self) -> &[PathBuf] {
        &self.inner.artifact_roots
    }

    /// The process's metrics recorder, if installed.
    pub fn metrics(&self) -> Option<&PrometheusHandle> {
        self.inner.metrics.as_ref()
    }

    /// Interval of live updates.
    pub fn tick(&self) -> Duration {
        self.inner.tick
    }

    /// Connection limits the server runs with.
    pub fn limits(&self) -> ServeLimits {
        self.inner.limits
    }

    /// Longest time for a request's response head.
    pub fn request_timeout(&self) -> Duration {
        self.inner.request_timeout
    }

    /// Ends every live stream (the server is shutting down).
    pub fn close(&self) {
        self.inner.closing.send_replace(true);
    }

    /// Becomes true when [`AppState::close`] is called.
    pub(crate) fn closing(&self) -> watch::Receiver<bool> {
        self.inner.closing.subscribe()
    }
}

impl AppStateBuilder {
    /// Requires `token` on every request (None: no token).
    pub fn token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// Serves files only from inside these directories.
    pub fn artifact_roots(mut self, roots: Vec<PathBuf>) -> Self {
        self.artifact_roots = roots;
        self
    }

    /// Adds the process's own metrics to `/metrics`.
    pub fn metrics(mut self, handle: PrometheusHandle) -> Self {
        self.metrics = Some(handle);
        self
    }

    /// Sets the live-update interval (tests shorten it).
    pub fn tick(mut self, tick: Duration) -> Self {
        self.tick = tick;
        self
    }

    /// Sets the connection limits (see [`ServeLimits`]).
    pub fn limits(mut self, limits: ServeLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets the longest time for a request's response head (default
    /// [`DEFAULT_REQUEST_TIMEOUT`]).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Checks the token and limits, and builds the state.
    pub fn build(self) -> Result<AppState, WebError> {
        if let Some(t) = &self.token {
            if t.len() < MIN_TOKEN_LEN {
                return Err(WebError::BadToken(format!(
                    "must be at least {MIN_TOKEN_LEN} characters (try `openssl rand -hex 16`)"
                )));
            }
            if !t.bytes().all(|b| b.is_ascii_graphic()) || t.contains([';', ',', '"', '\\']) {
                return Err(WebError::BadToken(
                    "must be printable ASCII without spaces, quotes, commas, semicolons or backslashes"
                        .into(),
                ));
            }
        }
        self.limits
            .validate()
            .map_err(|e| WebError::BadLimits(e.to_string()))?;
        if self.request_timeout.is_zero() {
            return Err(WebError::BadLimits("request_timeout must be > 0".into()));
        }
        Ok(AppState {
            inner: Arc::new(Inner {
                store: self.store,
                token: self.token,
                artifact_roots: self.artifact_roots,
                metrics: self.metrics,
                tick: self.tick,
                limits: self.limits,
                request_timeout: self.request_timeout,
                closing: watch::channel(false).0,
            }),
        })
    }
}
