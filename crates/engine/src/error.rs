//! Errors of the store and the engine.

/// What can go wrong talking to the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database refused or failed a statement. The message carries the causes once
    /// (sqlx repeats them in its own chain), so the error exposes no `source()`.
    #[error("database error: {}", chain(.0))]
    Database(sqlx::Error),
    /// The SQLite writer thread failed a statement or a commit, or is gone.
    #[error("database error: {0}")]
    Sqlite(String),
    /// PostgreSQL could not be reached or refused the connection.
    #[error("cannot connect to PostgreSQL at {target}: {detail}")]
    Connect {
        /// `host:port` (or the socket) connected to.
        target: String,
        /// The root cause, e.g. "connection refused".
        detail: String,
    },
    /// A read-only or control command named a SQLite file that does not exist.
    #[error("no database at {path}")]
    NoDatabase {
        /// The path as given.
        path: String,
    },
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
    #[error(
        "unsupported database {url:?}: {reason}; {}",
        crate::store::location::ACCEPTED
    )]
    BadUrl {
        /// The URL as given.
        url: String,
        /// Why it was refused.
        reason: String,
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
    #[error("stored JSON in {column} is invalid: {error}")]
    Json {
        /// The column.
        column: &'static str,
        /// The parse error (in the message, so not a `source()`).
        error: serde_json::Error,
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

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        Self::Database(e)
    }
}

/// An error and its causes on one line, each text once: a cause whose text an outer
/// layer already printed (sqlx's `error communicating with database: {io}`) is skipped.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Shorthand for results of store calls.
pub type StoreResult<T> = Result<T, StoreError>;
