//! `idempipe`: process videos durably, run workers, serve the enhancement API, and see and
//! steer runs. State lives in a SQLite file (default) or PostgreSQL (`--db`).

mod cmd;
mod db;
mod display;
mod lifecycle;
mod logging;
mod output;

use clap::{ArgAction, CommandFactory, FromArgMatches, Parser, Subcommand};

/// Bulletproof pipelines of expensive, non-idempotent calls: every unit of work is a row
/// with its status, attempts and errors; done work is never redone; failures are retried
/// alone.
#[derive(Parser, Debug)]
#[command(name = "idempipe", version, about, long_about = None)]
struct Cli {
    /// Log filter (tracing syntax), e.g. `debug` or `idempipe_engine=debug,info`; overrides
    /// -v. [default: `info` for worker, serve and enhance-server; `warn` for the others,
    /// whose progress and results are printed anyway]
    #[arg(long, global = true, env = "IDEMPIPE_LOG", value_name = "FILTER")]
    log: Option<String>,
    /// More log output: -v shows INFO logs, -vv DEBUG.
    #[arg(short, long, global = true, action = ArgAction::Count)]
    verbose: u8,
    /// Extra CA certificates (PEM) trusted for HTTPS calls to the enhancement and
    /// transcription APIs, besides the system's roots. A setting of this process (each
    /// machine has its own trust store): give it to every `process`, `submit` and `worker`.
    #[arg(long, global = true, env = "IDEMPIPE_CA_FILE", value_name = "PATH")]
    ca_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Enhance a video in this process; rerunning the same command resumes it.
    Process(cmd::process::ProcessArgs),
    /// Enqueue a run for workers and print its id.
    Submit(cmd::submit::SubmitArgs),
    /// Serve all video runs until SIGINT/SIGTERM.
    Worker(cmd::worker::WorkerArgs),
    /// List recent runs with status, progress, start and end.
    Runs(cmd::runs::RunsArgs),
    /// Per-stage counts, rate, ETA and failures grouped by kind for one run.
    Status(cmd::status::StatusArgs),
    /// Each failed, dead or unknown item of a run with its last error.
    Failures(cmd::failures::FailuresArgs),
    /// The attempt history of one item.
    Attempts(cmd::attempts::AttemptsArgs),
    /// Re-run only the failed (and dead/unknown) items of a run or stage; can also change
    /// its preset, crf or enhancement API (enhanced frames are kept).
    Retry(cmd::control::RetryArgs),
    /// Cancel a run.
    Cancel(cmd::control::CancelArgs),
    /// Pause a run or one of its stages.
    Pause(cmd::control::PauseArgs),
    /// Resume a paused run or stage.
    Resume(cmd::control::PauseArgs),
    /// Serve the live dashboard (runs, stages, frame grid, failures, actions), its JSON API
    /// and /metrics.
    Serve(cmd::serve::ServeArgs),
    /// Delete finished runs older than a given age.
    Prune(cmd::prune::PruneArgs),
    /// Serve the frame-enhancement API (docs/enhance-api.md) over HTTP.
    EnhanceServer(cmd::enhance_server::EnhanceServerArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    Completions(cmd::completions::CompletionsArgs),
}

impl Command {
    /// Whether this is a long-running service, whose INFO logs are its output.
    fn is_service(&self) -> bool {
        matches!(
            self,
            Self::Worker(_) | Self::Serve(_) | Self::EnhanceServer(_)
        )
    }
}

/// `clap`'s command, its version naming the database schema this binary migrates to.
pub(crate) fn command() -> clap::Command {
    let version = format!(
        "{} (schema {})",
        env!("CARGO_PKG_VERSION"),
        idempipe_engine::schema_version()
    );
    Cli::command().version(&*Box::leak(version.into_boxed_str()))
}

#[tokio::main]
async fn main() {
    output::exit_quietly_on_broken_pipe();
    let cli = Cli::from_arg_matches(&command().get_matches()).unwrap_or_else(|e| e.exit());
    logging::init(cli.log.as_deref(), cli.verbose, cli.command.is_service());
    if let Some(path) = &cli.ca_file
        && let Err(e) = idempipe_enhance::provider::tls::trust_ca_file(path)
    {
        eprintln!("idempipe: error: {e} (--ca-file / IDEMPIPE_CA_FILE)");
        std::process::exit(2);
    }
    let result = match cli.command {
        Command::Process(a) => cmd::process::run(a).await,
        Command::Submit(a) => cmd::submit::run(a).await,
        Command::Worker(a) => cmd::worker::run(a).await,
        Command::Runs(a) => cmd::runs::run(a).await,
        Command::Status(a) => cmd::status::run(a).await,
        Command::Failures(a) => cmd::failures::run(a).await,
        Command::Attempts(a) => cmd::attempts::run(a).await,
        Command::Retry(a) => cmd::control::retry(a).await,
        Command::Cancel(a) => cmd::control::cancel(a).await,
        Command::Pause(a) => cmd::control::pause(a, true).await,
        Command::Resume(a) => cmd::control::pause(a, false).await,
        Command::Serve(a) => cmd::serve::run(a).await,
        Command::Prune(a) => cmd::prune::run(a).await,
        Command::EnhanceServer(a) => cmd::enhance_server::run(a).await.map(|()| 0),
        Command::Completions(a) => cmd::completions::run(&a),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("idempipe: error: {e:#}");
            std::process::exit(2);
        }
    }
}
