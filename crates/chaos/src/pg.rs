//! A PostgreSQL cluster of the suite's own (initdb in the scratch directory), so that
//! scenarios can stop it hard and start it again.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::env::run_checked;

/// The subnet of the partition scenario's veth pair, trusted by the cluster.
pub(crate) const PARTITION_SUBNET: &str = "10.231.0.0/24";

/// A running (or stopped) cluster.
#[derive(Debug)]
pub(crate) struct Cluster {
    bin: PathBuf,
    data: PathBuf,
    log: PathBuf,
    /// Its TCP port (on every address).
    pub(crate) port: u16,
}

impl Cluster {
    /// Creates a cluster under `dir` and starts it on `port`, listening on all addresses
    /// (loopback and the partition scenario's veth), trusting local connections.
    pub(crate) async fn start_new(dir: &Path, port: u16) -> anyhow::Result<Self> {
        let bin = pg_bin_dir()?;
        std::fs::create_dir_all(dir)?;
        let cluster = Self {
            bin,
            data: dir.join("data"),
            log: dir.join("postgres.log"),
            port,
        };
        as_postgres(&["chown", "-R", "postgres", &dir.to_string_lossy()], true).await?;
        cluster
            .pg(
                "initdb",
                &[
                    "-D",
                    &cluster.data.to_string_lossy(),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                ],
            )
            .await?;
        let hba = cluster.data.join("pg_hba.conf");
        let mut text = std::fs::read_to_string(&hba)?;
        text.push_str(&format!("host all all {PARTITION_SUBNET} trust\n"));
        std::fs::write(&hba, text)?;
        cluster.start().await?;
        Ok(cluster)
    }

    /// Starts the stopped cluster and waits until it accepts connections.
    pub(crate) async fn start(&self) -> anyhow::Result<()> {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=* -c max_connections=300",
            self.port,
            self.data.parent().unwrap_or(&self.data).display()
        );
        self.pg(
            "pg_ctl",
            &[
                "-D",
                &self.data.to_string_lossy(),
                "-o",
                &opts,
                "-l",
                &self.log.to_string_lossy(),
                "-w",
                "start",
            ],
        )
        .await
        .map(drop)
    }

    /// Stops the cluster at once, like a crash: no checkpoint, clients cut off.
    pub(crate) async fn stop_immediate(&self) -> anyhow::Result<()> {
        self.pg(
            "pg_ctl",
            &[
                "-D",
                &self.data.to_string_lossy(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        )
        .await
        .map(drop)
    }

    /// Creates database `name` and returns its URL on `host`.
    pub(crate) async fn create_db(&self, name: &str) -> anyhow::Result<()> {
        let port = self.port.to_string();
        self.pg(
            "createdb",
            &["-h", "127.0.0.1", "-p", &port, "-U", "postgres", name],
        )
        .await
        .map(drop)
    }

    /// The URL of database `name` through `host:port`.
    pub(crate) fn url(&self, host: &str, port: u16, name: &str) -> String {
        format!("postgres://postgres@{host}:{port}/{name}")
    }

    async fn pg(&self, tool: &str, args: &[&str]) -> anyhow::Result<String> {
        let program = self.bin.join(tool);
        let mut all = vec![program.to_str().context("PostgreSQL path is not UTF-8")?];
        all.extend_from_slice(args);
        as_postgres(&all, false).await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let program = self.bin.join("pg_ctl");
        let data = self.data.to_string_lossy().into_owned();
        let program = program.to_string_lossy().into_owned();
        let args = [program.as_str(), "-D", &data, "-m", "immediate", "stop"];
        let _ = if is_root() {
            std::process::Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .args(args)
                .output()
        } else {
            std::process::Command::new(args[0])
                .args(&args[1..])
                .output()
        };
    }
}

/// The newest PostgreSQL server binaries installed (Debian layout).
fn pg_bin_dir() -> anyhow::Result<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("no PostgreSQL under /usr/lib/postgresql (scripts/setup installs it)")?
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .collect();
    dirs.sort();
    dirs.pop()
        .map(|(_, dir)| dir)
        .context("no PostgreSQL version under /usr/lib/postgresql")
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Runs a command as the `postgres` user when we are root (PostgreSQL refuses root);
/// `root_only` commands run as they are.
async fn as_postgres(args: &[&str], root_only: bool) -> anyhow::Result<String> {
    if !is_root() {
        if root_only {
            return Ok(String::new());
        }
        return run_checked(args[0], &args[1..]).await;
    }
    if root_only {
        return run_checked(args[0], &args[1..]).await;
    }
    let mut all = vec!["-u", "postgres", "--"];
    all.extend_from_slice(args);
    run_checked("runuser", &all).await
}
