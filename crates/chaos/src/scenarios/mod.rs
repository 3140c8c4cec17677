//! The scenarios, and what they share: a fresh database and enhancement server per
//! scenario, the run's settings, and turning what was measured into a [`Row`].

mod api_storm;
mod clock_jump;
mod disk_full;
mod kill_storm;
mod partition;
mod pg_restart;
mod pg_unreachable;
mod process_kills;

use std::path::PathBuf;
use std::time::Duration;

use idempipe_engine::RunStatus;

use crate::api::Api;
use crate::env::Env;
use crate::pg::Cluster;
use crate::report::Row;
use crate::verify::Reference;
use crate::watch::Watch;

/// Lease given to every process, in seconds: short, so a killed process's items come
/// back quickly (heartbeats renew it every third of it).
pub(crate) const LEASE_SECS: f64 = 4.0;
/// Whole-call timeout of enhancement calls, in seconds.
pub(crate) const API_TIMEOUT_SECS: f64 = 2.0;
/// Handler calls at once per process.
pub(crate) const CONCURRENCY: u64 = 4;
/// Longest a run may take once its faults are over.
pub(crate) const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// The database a scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    /// A SQLite file.
    Sqlite,
    /// A database of the suite's PostgreSQL cluster.
    Postgres,
}

impl Backend {
    /// The name in the table.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    }
}

/// What every scenario shares.
#[derive(Debug)]
pub(crate) struct Suite {
    /// Paths and profile.
    pub(crate) env: Env,
    /// The PostgreSQL cluster.
    pub(crate) pg: Cluster,
    /// The input video.
    pub(crate) input: PathBuf,
    /// What a clean run of it produces.
    pub(crate) reference: Reference,
}

/// One scenario on one backend: its directory, database, server and output.
#[derive(Debug)]
pub(crate) struct Case<'a> {
    /// The suite.
    pub(crate) suite: &'a Suite,
    /// Scenario name.
    pub(crate) name: &'static str,
    /// Its backend.
    pub(crate) backend: Backend,
    /// Its scratch directory.
    pub(crate) dir: PathBuf,
    /// The database URL the harness reads through (directly, never through a fault).
    pub(crate) db: String,
    /// The PostgreSQL database name (empty on SQLite).
    pub(crate) db_name: String,
    /// The enhancement server.
    pub(crate) api: Api,
    /// Where the output goes.
    pub(crate) output: PathBuf,
    /// Where the run keeps its intermediate files.
    pub(crate) artifacts: PathBuf,
}

impl<'a> Case<'a> {
    /// A fresh database and a server with `faults` (enhance-server flags) listening on
    /// 127.0.0.1.
    pub(crate) async fn new(
        suite: &'a Suite,
        name: &'static str,
        backend: Backend,
        faults: &[&str],
    ) -> anyhow::Result<Case<'a>> {
        let port = crate::env::free_port()?;
        Self::with_api(
            suite,
            name,
            backend,
            faults,
            &format!("127.0.0.1:{port}"),
            "127.0.0.1",
        )
        .await
    }

    /// Like [`Case::new`], with the server on `listen`, reached by runs at `url_host`.
    pub(crate) async fn with_api(
        suite: &'a Suite,
        name: &'static str,
        backend: Backend,
        faults: &[&str],
        listen: &str,
        url_host: &str,
    ) -> anyhow::Result<Case<'a>> {
        let dir = suite
            .env
            .scenario_dir(&format!("{name}-{}", backend.label().to_lowercase()))?;
        let (db, db_name) = match backend {
            Backend::Sqlite => (
                dir.join("state.db").to_string_lossy().into_owned(),
                String::new(),
            ),
            Backend::Postgres => {
                let db_name = format!("chaos_{}", name.replace('-', "_"));
                suite.pg.create_db(&db_name).await?;
                (suite.pg.url("127.0.0.1", suite.pg.port, &db_name), db_name)
            }
        };
        let api = Api::start(&suite.env, listen, url_host, faults, &dir.join("api.log")).await?;
        Ok(Case {
            suite,
            name,
            backend,
            output: dir.join("out.mp4"),
            artifacts: dir.join("artifacts"),
            dir,
            db,
            db_name,
            api,
        })
    }

    /// The run's settings, as `process` and `submit` take them.
    pub(crate) fn settings(&self) -> Vec<String> {
        settings(
            &self.suite.input,
            &self.output,
            &self.artifacts,
            &self.api.url,
        )
    }

    /// `idempipe process` of the run on database `db`.
    pub(crate) fn process_args(&self, db: &str) -> Vec<String> {
        let mut args = vec!["process".to_string()];
        args.extend(self.settings());
        args.extend(tuning(db));
        args.extend(["--workers".into(), CONCURRENCY.to_string()]);
        args
    }

    /// `idempipe submit` of the run.
    pub(crate) fn submit_args(&self) -> Vec<String> {
        let mut args = vec!["submit".to_string()];
        args.extend(self.settings());
        args.extend(["--db".into(), self.db.clone()]);
        args
    }

    /// `idempipe worker` named `name` on database `db`.
    pub(crate) fn worker_args(&self, db: &str, name: &str) -> Vec<String> {
        let mut args = vec!["worker".to_string()];
        args.extend(tuning(db));
        args.extend([
            "--concurrency".into(),
            CONCURRENCY.to_string(),
            "--name".into(),
            name.into(),
        ]);
        args
    }

    /// `idempipe retry RUN`: makes the run's failed and dead items due again.
    pub(crate) async fn retry(&self, run_id: i64) -> anyhow::Result<()> {
        let bin = self.suite.env.bin.to_string_lossy();
        crate::env::run_checked(&bin, &["retry", &run_id.to_string(), "--db", &self.db])
            .await
            .map(drop)
    }

    /// Submits the run and returns a watch on it.
    pub(crate) async fn submit(&self) -> anyhow::Result<Watch> {
        let mut child = self
            .suite
            .env
            .spawn(&self.submit_args(), &self.dir.join("submit.log"))?;
        let status = child.wait().await?;
        anyhow::ensure!(
            status.success(),
            "submit failed: see {}",
            self.dir.display()
        );
        Watch::attach(&self.db, Duration::from_secs(30)).await
    }

    /// Measures the scenario's end: frames, billing, output; `status` is how the run
    /// ended (`None`: still running at the timeout).
    pub(crate) async fn finish(
        self,
        watch: Option<&Watch>,
        status: Option<RunStatus>,
        faults: String,
        recover: Option<Duration>,
        same_key_bound: u64,
    ) -> anyhow::Result<Row> {
        let frames = self.suite.reference.frame_hashes.len() as i64;
        let completed = match watch {
            Some(w) => w.completed_frames().await?,
            None => 0,
        };
        let billing = self.api.billing().await?;
        let equal = self.suite.reference.same_frames(&self.output).await;
        self.api.stop().await;
        let outcome = match status {
            Some(RunStatus::Completed) => "completed".to_string(),
            Some(other) => format!("{other:?}").to_lowercase(),
            None => "still running at the timeout".to_string(),
        };
        Ok(Row {
            scenario: self.name.to_string(),
            backend: self.backend.label(),
            frames,
            faults,
            outcome,
            lost: frames - completed,
            paid_twice: billing.paid_twice,
            same_key: billing.same_key_repeats,
            same_key_bound,
            equal,
            recover,
            problems: Vec::new(),
        }
        .judge())
    }
}

/// The settings of every run of the suite (the clean reference's too).
pub(crate) fn settings(
    input: &std::path::Path,
    output: &std::path::Path,
    artifacts: &std::path::Path,
    api: &str,
) -> Vec<String> {
    let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
    [
        path(input),
        "-o".into(),
        path(output),
        "--artifacts".into(),
        path(artifacts),
        "--api".into(),
        api.into(),
        "--api-rate".into(),
        "500".into(),
        "--captions".into(),
        "off".into(),
        "--preset".into(),
        "veryfast".into(),
        "--segment-seconds".into(),
        "1".into(),
    ]
    .into()
}

/// Writes of a worker refused for a lost lease, from its log: heartbeats that found the
/// lease gone, and outcomes counted `lease_lost` in its closing stats.
pub(crate) fn refused_writes(log: &str) -> u64 {
    let heartbeats = log.matches("lease lost or run cancelled").count() as u64;
    let outcomes = log
        .lines()
        .filter_map(|l| l.split("lease_lost=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .sum::<u64>();
    heartbeats + outcomes
}

/// Expired leases rescued by maintenance, from a worker's log ("rescued expired leases"
/// lines: retried, dead and unknown items).
pub(crate) fn rescued_leases(log: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains("rescued expired leases"))
        .flat_map(|l| {
            ["retried: ", "dead: ", "unknown: "].map(|field| {
                l.split(field)
                    .nth(1)
                    .and_then(|rest| rest.split([',', ' ', '}']).next()?.parse::<u64>().ok())
                    .unwrap_or(0)
            })
        })
        .sum()
}

/// The lease and timeout flags of `process` and `worker`, and the database.
fn tuning(db: &str) -> Vec<String> {
    [
        "--db".into(),
        db.into(),
        "--lease".into(),
        LEASE_SECS.to_string(),
        "--api-timeout".into(),
        API_TIMEOUT_SECS.to_string(),
    ]
    .into()
}

/// Every scenario in priority order: (name, backends, runner).
pub(crate) fn all() -> Vec<Scenario> {
    vec![
        Scenario::new(
            "kill-storm",
            &[Backend::Postgres, Backend::Sqlite],
            |s, b| Box::pin(kill_storm::run(s, b)),
        ),
        Scenario::new(
            "process-kills",
            &[Backend::Postgres, Backend::Sqlite],
            |s, b| Box::pin(process_kills::run(s, b)),
        ),
        Scenario::new(
            "api-storm",
            &[Backend::Postgres, Backend::Sqlite],
            |s, b| Box::pin(api_storm::run(s, b)),
        ),
        Scenario::new("pg-restart", &[Backend::Postgres], |s, b| {
            Box::pin(pg_restart::run(s, b))
        }),
        Scenario::new("pg-unreachable", &[Backend::Postgres], |s, b| {
            Box::pin(pg_unreachable::run(s, b))
        }),
        Scenario::new("clock-jump", &[Backend::Postgres], |s, b| {
            Box::pin(clock_jump::run(s, b))
        }),
        Scenario::new("partition", &[Backend::Postgres], |s, b| {
            Box::pin(partition::run(s, b))
        }),
        Scenario::new(
            "disk-full",
            &[Backend::Postgres, Backend::Sqlite],
            |s, b| Box::pin(disk_full::run(s, b)),
        ),
    ]
}

/// A future of a scenario's row.
pub(crate) type RowFuture<'a> = std::pin::Pin<Box<dyn Future<Output = anyhow::Result<Row>> + 'a>>;

/// A scenario: a name, the backends it runs on, and how.
pub(crate) struct Scenario {
    /// Its name in the table.
    pub(crate) name: &'static str,
    /// The backends it runs on.
    pub(crate) backends: &'static [Backend],
    /// Runs it on one backend.
    pub(crate) run: for<'a> fn(&'a Suite, Backend) -> RowFuture<'a>,
}

impl Scenario {
    fn new(
        name: &'static str,
        backends: &'static [Backend],
        run: for<'a> fn(&'a Suite, Backend) -> RowFuture<'a>,
    ) -> Self {
        Self {
            name,
            backends,
            run,
        }
    }
}
