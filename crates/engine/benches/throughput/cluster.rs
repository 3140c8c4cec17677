//! A private PostgreSQL cluster with default settings, so the figures do not depend on how
//! a machine's server is tuned: `initdb` in a temporary directory, a port of its own,
//! stopped (immediate) and deleted on drop.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A running private cluster.
pub(crate) struct Cluster {
    bin: PathBuf,
    dir: idempipe_testkit::TempDir,
    /// `postgres://postgres@127.0.0.1:PORT/bench`.
    pub(crate) url: String,
}

/// The newest `/usr/lib/postgresql/N/bin`, or the directory of `initdb` on the PATH.
fn pg_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(|e| Some(e.ok()?.path().join("bin"))).collect())
        .unwrap_or_default();
    versions.retain(|p| p.join("initdb").exists());
    versions.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions.pop().unwrap_or_else(|| {
        let out = Command::new("sh")
            .args(["-c", "dirname \"$(command -v initdb)\""])
            .output()
            .expect("sh");
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

/// Runs a PostgreSQL program as user `postgres` when root (initdb refuses root).
fn run_pg(program: &Path, args: &[&str]) {
    let root = is_root();
    let status = if root {
        let line = std::iter::once(program.display().to_string())
            .chain(args.iter().map(|a| format!("'{a}'")))
            .collect::<Vec<_>>()
            .join(" ");
        Command::new("su").args(["postgres", "-c", &line]).status()
    } else {
        Command::new(program).args(args).status()
    };
    let status = status.unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    assert!(status.success(), "{} {args:?} failed", program.display());
}

/// Whether this process runs as root (from `/proc`, to avoid a libc dependency).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

impl Cluster {
    /// Creates and starts a cluster with default settings; panics with the cause if it cannot.
    pub(crate) fn start() -> Self {
        let bin = pg_bin();
        let dir = idempipe_testkit::TempDir::new("bench-pg");
        let data = dir.join("data");
        let port = idempipe_testkit::free_port();
        if is_root() {
            let _ = Command::new("chown")
                .args(["-R", "postgres", &dir.path().display().to_string()])
                .status();
        }
        run_pg(
            &bin.join("initdb"),
            &[
                "-D",
                &data.display().to_string(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
            ],
        );
        run_pg(
            &bin.join("pg_ctl"),
            &[
                "-D",
                &data.display().to_string(),
                "-o",
                &format!("-p {port} -k {}", dir.path().display()),
                "-l",
                &dir.join("log").display().to_string(),
                "-w",
                "start",
            ],
        );
        run_pg(
            &bin.join("createdb"),
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "postgres",
                "bench",
            ],
        );
        Self {
            url: format!("postgres://postgres@127.0.0.1:{port}/bench"),
            bin,
            dir,
        }
    }

    /// The postmaster's pid (first line of `postmaster.pid`).
    pub(crate) fn postmaster(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("data").join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.dir.join("data").display().to_string();
        run_pg(
            &self.bin.join("pg_ctl"),
            &["-D", &data, "-m", "immediate", "stop"],
        );
    }
}
