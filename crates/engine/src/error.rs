//! Errors of the store and the engine.

/// What can go wrong talking to the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database refused or failed a statement.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The worker's lease on the item ran out (or the item was cancelled) and the outcome
    /// was not recorded: another attempt owns the item now.
    #[error("lease lost on item {item_id}: the outcome of this attempt was not recorded")]
    LeaseLost {
        /// The item whose outcome was rejected.
        item_id: i64,
    },
    /// A row the caller named does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for, e.g. "run 12".
        what: String,
    },
    /// The database URL could not be understood.
    #[error("unsupported database URL {url:?}: use a file path / sqlite://PATH, or postgres://...")]
    BadUrl {
        /// The URL as given.
        url: String,
    },
    /// A migration already applied differs from the one in this binary, or the database is
    /// newer than this binary.
    #[error("migration {version} ({name}): {problem}")]
    Migration {
        /// The migration's version number.
        version: i64,
        /// The migration's name.
        name: String,
        /// What is wrong.
        problem: String,
    },
    /// A stored JSON column could not be parsed.
    #[error("stored JSON in {column} is invalid: {source}")]
    Json {
        /// The column.
        column: &'static str,
        /// The parse error.
        source: serde_json::Error,
    },
    /// A configuration value is invalid; the message names the field.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The run is completed, failed or cancelled: it cannot be paused, resumed or
    /// cancelled any more.
    #[error(
        "run {run_id} is {status}: a finished run cannot be paused, resumed or cancelled \
         (a failed run's items can be re-run with `idempipe retry {run_id}`)"
    )]
    RunFinished {
        /// The run.
        run_id: i64,
        /// Its status (completed, failed or cancelled).
        status: &'static str,
    },
}

/// Shorthand for results of store calls.
pub type StoreResult<T> = Result<T, StoreError>;
