//! The SQLite hot-path writer: one OS thread that owns a write connection and runs whole
//! transactions, not single statements, per hop.
//!
//! Callers send a unit of work (a closure over the connection) and await its answer. The
//! thread takes everything queued at that moment (claims, outcomes, lease renewals, marks),
//! runs it in one `BEGIN IMMEDIATE ... COMMIT`, each unit under its own savepoint, and
//! answers each caller once the commit is done. So a claim costs one thread round trip
//! instead of four, and what arrives together commits together: the slower a commit, the
//! more the next one carries.
//!
//! A unit that fails (or panics) is rolled back to its savepoint and answered with its
//! error; the others in the transaction still commit. A failed commit answers every unit
//! of the transaction with the error: nothing of it was written. If the thread is gone,
//! callers get an error instead of waiting forever.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::error::{StoreError, StoreResult};

/// Units per transaction at most, so one commit stays short.
const MAX_UNITS: usize = 256;

/// A unit of work: runs inside the open transaction, and later hears whether it committed.
trait Unit: Send {
    /// Runs the unit's statements.
    fn run(&mut self, conn: &Connection) -> Result<(), String>;
    /// Answers the caller: `Ok` once the transaction committed, or why it did not.
    fn answer(self: Box<Self>, committed: Result<(), String>);
}

/// A closure and the channel its result goes back on.
struct Call<T, F> {
    work: Option<F>,
    result: Option<T>,
    reply: oneshot::Sender<Result<T, String>>,
}

impl<T, F> Unit for Call<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> rusqlite::Result<T> + Send,
{
    fn run(&mut self, conn: &Connection) -> Result<(), String> {
        let work = self.work.take().expect("a unit runs once");
        self.result = Some(work(conn).map_err(|e| e.to_string())?);
        Ok(())
    }

    fn answer(self: Box<Self>, committed: Result<(), String>) {
        let Call { result, reply, .. } = *self;
        let answer = committed.and_then(|()| result.ok_or_else(|| "no result".to_string()));
        // The caller may have given up (its task was aborted): nobody to tell.
        let _ = reply.send(answer);
    }
}

/// Handle to the writer thread; the thread stops when the last handle is dropped.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    tx: mpsc::Sender<Box<dyn Unit>>,
}

impl Writer {
    /// Opens a write connection to the file at `path` and starts its thread.
    pub(crate) fn start(path: &str) -> StoreResult<Self> {
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(writer_error)?;
        // WAL is a property of the file (set by the sqlx connections); synchronous and
        // foreign keys are per connection, as on those.
        conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")
            .map_err(writer_error)?;
        conn.busy_handler(Some(busy_wait)).map_err(writer_error)?;
        // Plans that do not depend on bound values: the bundled SQLite (SQLITE_ENABLE_STAT4)
        // otherwise compiles a cached statement again whenever a binding it planned on
        // changes, which was half of this thread's time at concurrency 1.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )
        .map_err(writer_error)?;
        conn.set_prepared_statement_cache_capacity(64);
        let (tx, rx) = mpsc::channel::<Box<dyn Unit>>();
        std::thread::Builder::new()
            .name("idempipe-sqlite-writer".into())
            .spawn(move || serve(conn, rx))
            .map_err(|e| StoreError::Config(format!("cannot start the SQLite writer: {e}")))?;
        Ok(Self { tx })
    }

    /// Runs `work` in the writer's next transaction; returns its result once committed.
    pub(crate) async fn call<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let unit = Box::new(Call {
            work: Some(work),
            result: None,
            reply,
        });
        self.tx
            .send(unit)
            .map_err(|_| writer_gone("the SQLite writer thread is gone"))?;
        match answer.await {
            Ok(result) => result.map_err(StoreError::Sqlite),
            Err(_) => Err(writer_gone(
                "the SQLite writer thread stopped before answering",
            )),
        }
    }
}

fn writer_error(e: rusqlite::Error) -> StoreError {
    StoreError::Sqlite(e.to_string())
}

fn writer_gone(why: &str) -> StoreError {
    StoreError::Sqlite(why.to_string())
}

/// Step of [`busy_wait`].
const BUSY_STEP: Duration = Duration::from_micros(200);

/// Waits for another connection's write lock (another process, or this process's sqlx
/// writer) in short steps, up to [`super::BUSY_TIMEOUT`]: SQLite's default handler sleeps
/// up to 100 ms at a time, far longer than a write transaction holds the lock.
fn busy_wait(tries: i32) -> bool {
    let limit = super::BUSY_TIMEOUT.as_micros() / BUSY_STEP.as_micros();
    if tries as u128 >= limit {
        return false;
    }
    std::thread::sleep(BUSY_STEP);
    true
}

/// The thread: one transaction per batch of queued units, until every handle is dropped.
fn serve(conn: Connection, rx: mpsc::Receiver<Box<dyn Unit>>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_UNITS {
            match rx.try_recv() {
                Ok(unit) => batch.push(unit),
                Err(_) => break,
            }
        }
        run_batch(&conn, batch);
    }
    tracing::debug!("SQLite writer stopped");
}

/// Runs one batch in one transaction and answers every unit.
fn run_batch(conn: &Connection, batch: Vec<Box<dyn Unit>>) {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let why = format!("cannot begin a write transaction: {e}");
        batch.into_iter().for_each(|u| u.answer(Err(why.clone())));
        return;
    }
    // A lone unit needs no savepoint: if it fails, the whole transaction rolls back.
    let alone = batch.len() == 1;
    let mut done = Vec::with_capacity(batch.len());
    let mut units = batch.into_iter();
    while let Some(mut unit) = units.next() {
        if !alone && let Err(e) = conn.execute_batch("SAVEPOINT unit") {
            unit.answer(Err(e.to_string()));
            continue;
        }
        let ran = std::panic::catch_unwind(AssertUnwindSafe(|| unit.run(conn)))
            .unwrap_or_else(|panic| Err(panic_message(&panic)));
        match ran {
            Ok(()) => {
                if !alone {
                    let _ = conn.execute_batch("RELEASE unit");
                }
                done.push(unit);
            }
            Err(why) => {
                tracing::warn!(error = %why, "SQLite writer: unit failed, rolled back");
                let undo = if alone {
                    "ROLLBACK"
                } else {
                    "ROLLBACK TO unit; RELEASE unit"
                };
                let _ = conn.execute_batch(undo);
                unit.answer(Err(why));
                if !alone && conn.is_autocommit() {
                    // SQLite rolled the whole transaction back (a full disk, an I/O
                    // error): the units before it are undone too, and the rest must not
                    // run outside a transaction.
                    let why = "the transaction was rolled back by an error of another call";
                    done.into_iter()
                        .chain(units)
                        .for_each(|u| u.answer(Err(why.into())));
                    return;
                }
            }
        }
    }
    if conn.is_autocommit() {
        // The lone unit failed and was rolled back: nothing to commit.
        return;
    }
    let committed = conn.execute_batch("COMMIT").map_err(|e| {
        let _ = conn.execute_batch("ROLLBACK");
        format!("commit failed: {e}")
    });
    done.into_iter().for_each(|u| u.answer(committed.clone()));
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown".into());
    format!("panicked: {text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer() -> (idempipe_testkit::TempDir, Writer) {
        let dir = idempipe_testkit::TempDir::new("writer");
        let path = dir.join("w.db").display().to_string();
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (v INTEGER NOT NULL);")
            .unwrap();
        drop(conn);
        let writer = Writer::start(&path).unwrap();
        (dir, writer)
    }

    async fn rows(w: &Writer) -> Vec<i64> {
        w.call(|c| {
            let mut s = c.prepare("SELECT v FROM t ORDER BY v")?;
            s.query_map([], |r| r.get(0))?.collect()
        })
        .await
        .unwrap()
    }

    /// Units queued together share a transaction, yet one that fails or panics is rolled
    /// back alone and answered with its error; the others commit and the thread goes on.
    #[tokio::test]
    async fn a_failing_or_panicking_unit_does_not_sink_its_transaction() {
        let (_dir, w) = writer();
        let insert = |v: i64| w.call(move |c| c.execute("INSERT INTO t (v) VALUES (?1)", [v]));
        // The first unit holds the thread until the four others are queued behind it, so
        // those four run as one transaction.
        let (go, wait) = mpsc::channel::<()>();
        let (_, a, b, p, d, ()) = tokio::join!(
            w.call(move |_| {
                wait.recv().ok();
                Ok(())
            }),
            insert(1),
            // NOT NULL: fails without writing.
            w.call(|c| c.execute("INSERT INTO t (v) VALUES (NULL)", [])),
            // Writes a row, then panics: the row must be undone.
            w.call(|c| -> rusqlite::Result<()> {
                c.execute("INSERT INTO t (v) VALUES (3)", [])?;
                panic!("boom")
            }),
            insert(4),
            async move { go.send(()).unwrap() },
        );
        assert_eq!(a.unwrap(), 1);
        assert!(b.is_err(), "a constraint violation is the unit's error");
        let p = p.unwrap_err().to_string();
        assert!(p.contains("boom"), "{p}");
        assert_eq!(d.unwrap(), 1);
        assert_eq!(
            rows(&w).await,
            vec![1, 4],
            "only the failed units are undone"
        );
    }

    /// A lone unit that fails leaves nothing behind, and the next transaction starts clean.
    #[tokio::test]
    async fn a_lone_failing_unit_rolls_back_its_transaction() {
        let (_dir, w) = writer();
        let failed = w
            .call(|c| {
                c.execute("INSERT INTO t (v) VALUES (1)", [])?;
                c.execute("INSERT INTO t (v) VALUES (NULL)", [])
            })
            .await;
        assert!(failed.is_err());
        assert_eq!(rows(&w).await, Vec::<i64>::new());
        w.call(|c| c.execute("INSERT INTO t (v) VALUES (2)", []))
            .await
            .unwrap();
        assert_eq!(rows(&w).await, vec![2]);
    }

    /// When the thread is gone, calls fail at once instead of waiting forever.
    #[tokio::test]
    async fn calls_fail_when_the_thread_is_gone() {
        let (tx, rx) = mpsc::channel::<Box<dyn Unit>>();
        drop(rx);
        let w = Writer { tx };
        let e = w.call(|_| Ok(())).await.unwrap_err().to_string();
        assert!(e.contains("gone"), "{e}");
    }
}
