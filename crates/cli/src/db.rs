//! The `--db` option every command shares, and its documented default location.

use std::path::PathBuf;

use idempipe_engine::{OpenMode, SharedStore, StoreError};

/// Where state lives.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct DbArgs {
    /// Database: a SQLite file (PATH or sqlite://PATH) or a PostgreSQL URL
    /// (postgres://user@host/db). Default: $XDG_STATE_HOME/idempipe/state.db
    /// (~/.local/state/idempipe/state.db).
    #[arg(long, env = "IDEMPIPE_DB", value_name = "URL")]
    pub(crate) db: Option<String>,
}

impl DbArgs {
    /// The URL to open.
    pub(crate) fn url(&self) -> String {
        self.db
            .clone()
            .unwrap_or_else(|| default_db_path().display().to_string())
    }

    /// Opens and migrates an existing store (read-only and control commands): a missing
    /// SQLite file is an error, never created.
    pub(crate) async fn open(&self) -> anyhow::Result<SharedStore> {
        self.open_with(OpenMode::MustExist).await
    }

    /// Opens and migrates the store, creating a missing SQLite file (commands that start
    /// work: process, submit, worker).
    pub(crate) async fn open_or_create(&self) -> anyhow::Result<SharedStore> {
        self.open_with(OpenMode::CreateIfMissing).await
    }

    /// Opens with an error that names the database once and says how to fix it.
    async fn open_with(&self, mode: OpenMode) -> anyhow::Result<SharedStore> {
        let url = self.url();
        match idempipe_engine::connect_with(&url, mode).await {
            Ok(store) => Ok(store),
            Err(StoreError::NoDatabase { path }) => Err(anyhow::anyhow!(
                "no database at {path} (run `idempipe process` or `idempipe submit` first, \
                 or check --db)"
            )),
            Err(e @ (StoreError::BadUrl { .. } | StoreError::Connect { .. })) => Err(e.into()),
            Err(e) => {
                Err(anyhow::Error::new(e)
                    .context(format!("cannot open the database {}", redact(&url))))
            }
        }
    }
}

/// The default SQLite file.
pub(crate) fn default_db_path() -> PathBuf {
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."));
    state.join("idempipe").join("state.db")
}

/// A URL without its password, for messages.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("/tmp/x.db"), "/tmp/x.db");
    }
}
