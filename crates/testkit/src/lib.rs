//! Test fixtures shared by the crates' tests (a dev-dependency only): a temporary
//! directory removed on drop, and a fresh database per test on SQLite or PostgreSQL.
//!
//! PostgreSQL tests use `$IDEMPIPE_TEST_PG` (default
//! `postgres://postgres@127.0.0.1:5432/test`), make a schema of their own and drop it
//! afterwards. They fail loudly when PostgreSQL is unreachable: they are never skipped.
//!
//! [`media`] finds the sample videos (`$IDEMPIPE_MEDIA`, else the repository's `media/`);
//! [`speech`] measures transcripts (word error rate) for the captions tests; [`tls`]
//! makes a throwaway CA and server certificate and a TLS-terminating proxy. [`s3`]
//! runs a real S3-compatible server process; [`netns`] makes hosts out of network
//! namespaces (root only) for tests of workers on separate machines; [`raw_http`]
//! speaks HTTP/1 by hand over TCP for the abuse tests; [`scripted`] is a server that
//! answers whatever a test sets, for fuzzing clients.

pub mod netns;
pub mod raw_http;
pub mod s3;
pub mod scripted;
pub mod speech;
pub mod tls;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use idempipe_engine::{SharedStore, connect};

/// The sample media folder: `$IDEMPIPE_MEDIA`, else the repository's own `media/`.
pub fn media_dir() -> PathBuf {
    std::env::var_os("IDEMPIPE_MEDIA")
        .filter(|d| !d.is_empty())
        .map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../media"),
            PathBuf::from,
        )
}

/// A sample video of the media folder ([`media_dir`]).
pub fn media(name: &str) -> PathBuf {
    media_dir().join(name)
}

/// A localhost TCP port free a moment ago and closed now: for a server a test starts, or
/// for "nobody listens here".
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral localhost port")
        .port()
}

/// A fresh directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

/// A name no other fixture of any process uses: label, pid, time and a counter.
fn unique(label: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() % 1_000_000_000_000)
        .unwrap_or(0);
    format!(
        "{label}_{}_{nanos}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl TempDir {
    /// Creates `idempipe-<label>_<pid>_<nanos>_<n>` under the system temp dir.
    pub fn new(label: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("idempipe-{}", unique(label)));
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        Self(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A path inside the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The PostgreSQL server the tests use.
pub fn pg_admin_url() -> String {
    std::env::var("IDEMPIPE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// A database for one test (a SQLite file, or a PostgreSQL schema) and a directory for
/// its files; all removed on drop.
#[derive(Debug)]
pub struct TestDb {
    /// The URL to open it with.
    pub url: String,
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// A directory of the test's own.
    pub dir: TempDir,
    schema: Option<String>,
}

impl TestDb {
    /// A new SQLite file.
    pub fn sqlite() -> Self {
        let dir = TempDir::new("db");
        Self {
            url: dir.join("state.db").display().to_string(),
            backend: "sqlite",
            dir,
            schema: None,
        }
    }

    /// A new schema in the test PostgreSQL database; panics when PostgreSQL is unreachable.
    pub async fn postgres() -> Self {
        let admin = pg_admin_url();
        let schema = format!("t_{}", unique("pg"));
        let pool = sqlx::PgPool::connect(&admin).await.unwrap_or_else(|e| {
            panic!("PostgreSQL at {admin} is required for these tests (set IDEMPIPE_TEST_PG): {e}")
        });
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&pool)
            .await
            .expect("create the test schema");
        pool.close().await;
        let sep = if admin.contains('?') { '&' } else { '?' };
        Self {
            url: format!("{admin}{sep}options=-c%20search_path%3D{schema}"),
            backend: "postgres",
            dir: TempDir::new("pg"),
            schema: Some(schema),
        }
    }

    /// Opens (and migrates) a store on this database.
    pub async fn store(&self) -> SharedStore {
        connect(&self.url).await.expect("open the test store")
    }
}

impl Drop for TestDb {
    /// Drops the PostgreSQL schema, from a thread of its own (drop cannot await).
    fn drop(&mut self) {
        let Some(schema) = self.schema.take() else {
            return;
        };
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(pool) = sqlx::PgPool::connect(&pg_admin_url()).await {
                    let sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&pool).await;
                    pool.close().await;
                }
            });
        })
        .join();
    }
}
