//! What went wrong with a location, naming it.

use std::path::Path;

/// A storage operation that failed, with the location and what was being done.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The file or object does not exist.
    #[error("{location}: not found")]
    NotFound {
        /// The location asked for.
        location: String,
    },
    /// The object store did not answer (connection refused or timed out) through all
    /// the retries of one request.
    #[error("{location}: cannot {action}: {detail}")]
    Unreachable {
        /// The location.
        location: String,
        /// What was being done ("upload", "download", ...).
        action: &'static str,
        /// The cause, with its chain and the endpoint.
        detail: String,
    },
    /// Anything else: refused credentials, a full disk.
    #[error("{location}: cannot {action}: {detail}")]
    Failed {
        /// The location.
        location: String,
        /// What was being done ("upload", "download", ...).
        action: &'static str,
        /// The cause, with its chain.
        detail: String,
    },
}

impl StorageError {
    /// A failure of `action` on `location`.
    pub(crate) fn new(
        location: &Path,
        action: &'static str,
        detail: impl std::fmt::Display,
    ) -> Self {
        Self::Failed {
            location: location.display().to_string(),
            action,
            detail: detail.to_string(),
        }
    }

    /// `location` does not exist.
    pub(crate) fn not_found(location: &Path) -> Self {
        Self::NotFound {
            location: location.display().to_string(),
        }
    }

    /// Whether the location does not exist (as opposed to being unreachable).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    /// Whether the object store did not answer at all.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable { .. })
    }
}
