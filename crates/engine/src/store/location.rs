//! Which database a `--db` value names, decided before anything is opened or created,
//! so that a typo never becomes a new SQLite file named after it.
//!
//! PostgreSQL: `postgres://...` or `postgresql://...`. SQLite: `sqlite://PATH`, a path
//! ending in `.db`, `.sqlite` or `.sqlite3`, or any existing SQLite file. Anything else
//! (an unknown `scheme://`, `postgres:/x`, `notes.txt`) is refused with what is accepted.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::StoreError;

/// What every refusal says is accepted.
pub(crate) const ACCEPTED: &str = "use postgres://USER@HOST[:PORT]/DB (or postgresql://), \
     sqlite://PATH, or a SQLite file path ending in .db, .sqlite or .sqlite3";
/// File name endings that make a path that does not exist yet a SQLite database.
const SQLITE_EXTENSIONS: [&str; 3] = ["db", "sqlite", "sqlite3"];
/// The first 16 bytes of every SQLite database file.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// A database named by a URL or path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location {
    /// A PostgreSQL connection URL, as given.
    Postgres(String),
    /// A SQLite file.
    Sqlite(PathBuf),
}

/// Decides which database `url` names, reading at most the first 16 bytes of an existing
/// file. Creates nothing.
pub(crate) fn locate(url: &str) -> Result<Location, StoreError> {
    let refuse = |reason: String| StoreError::BadUrl {
        url: url.to_string(),
        reason,
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Location::Postgres(url.to_string()));
    }
    let (path, explicit) = match url.strip_prefix("sqlite://") {
        Some(path) => (Path::new(path), true),
        None => (Path::new(url), false),
    };
    if let Some((scheme, _)) = url.split_once("://")
        && !explicit
    {
        return Err(refuse(format!("unknown scheme {scheme:?}")));
    }
    if path.as_os_str().is_empty() {
        return Err(refuse("it names no file".into()));
    }
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Err(refuse("it is a directory".into())),
        Ok(meta) if meta.len() == 0 && (explicit || has_sqlite_extension(path)) => {
            // SQLite treats an empty file as an empty database.
            Ok(Location::Sqlite(path.to_path_buf()))
        }
        Ok(_) => {
            if is_sqlite_file(path) {
                Ok(Location::Sqlite(path.to_path_buf()))
            } else {
                Err(refuse(
                    "the file exists but is not a SQLite database".into(),
                ))
            }
        }
        Err(_) if explicit || has_sqlite_extension(path) => {
            Ok(Location::Sqlite(path.to_path_buf()))
        }
        Err(_) if looks_like_url(url) => Err(refuse("it looks like a mistyped URL".into())),
        Err(_) => Err(refuse(
            "no such file, and the name does not end in .db, .sqlite or .sqlite3".into(),
        )),
    }
}

fn has_sqlite_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| SQLITE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// `scheme:` at the start, as in `postgres:/x` or `postgresql:x` (not `C:\...`).
fn looks_like_url(url: &str) -> bool {
    url.split_once(':').is_some_and(|(scheme, _)| {
        scheme.len() > 1
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    })
}

fn is_sqlite_file(path: &Path) -> bool {
    let mut header = [0u8; 16];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut header))
        .is_ok_and(|()| &header == SQLITE_HEADER)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(url: &str) -> String {
        match locate(url) {
            Err(e) => e.to_string(),
            Ok(l) => panic!("{url:?} was accepted as {l:?}"),
        }
    }

    #[test]
    fn postgres_urls_and_sqlite_paths_are_accepted() {
        for url in ["postgres://u@h/db", "postgresql://h/db?sslmode=require"] {
            assert_eq!(locate(url).unwrap(), Location::Postgres(url.into()));
        }
        for path in ["x/state.db", "a.sqlite", "b.SQLITE3"] {
            assert_eq!(locate(path).unwrap(), Location::Sqlite(path.into()));
        }
        assert_eq!(
            locate("sqlite://some/file").unwrap(),
            Location::Sqlite("some/file".into())
        );
    }

    #[test]
    fn typos_are_refused_saying_what_is_accepted() {
        for url in [
            "postgres:/bad",
            "postgresql:bad",
            "postgress://u@h/db",
            "mysql://x",
            "notes.txt",
            "",
        ] {
            let message = refused(url);
            assert!(message.contains(ACCEPTED), "{url:?}: {message}");
        }
        assert!(refused("mysql://x").contains("unknown scheme \"mysql\""));
        assert!(refused("postgres:/bad").contains("mistyped URL"));
    }

    #[test]
    fn existing_files_are_sqlite_only_when_their_header_says_so() {
        let dir = std::env::temp_dir().join(format!("idempipe-locate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text = dir.join("notes.txt");
        std::fs::write(&text, "hello, this is not a database").unwrap();
        let text = text.display().to_string();
        assert!(refused(&text).contains("not a SQLite database"));
        let db = dir.join("state");
        let mut bytes = SQLITE_HEADER.to_vec();
        bytes.extend([0u8; 84]);
        std::fs::write(&db, bytes).unwrap();
        assert_eq!(
            locate(&db.display().to_string()).unwrap(),
            Location::Sqlite(db)
        );
        assert!(refused(&dir.display().to_string()).contains("directory"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
