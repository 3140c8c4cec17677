//! `idempipe submit INPUT -o OUTPUT --db URL`: enqueue a run (or find the one already
//! producing OUTPUT) for `idempipe worker` processes, print its id and exit.

use std::path::PathBuf;

use clap::Args;
use idempipe_video::pipeline::{self, ProcessRequest};

use crate::db::DbArgs;

use super::process::{EXIT_USAGE, SettingsArgs, open_storage, open_store, prepare};

/// Arguments of `idempipe submit`.
#[derive(Debug, Args)]
pub(crate) struct SubmitArgs {
    /// The input video: a path every worker can read, an s3:// URL, or a local file that
    /// is uploaded once when --artifacts is an s3:// URL.
    pub(crate) input: PathBuf,
    /// The output video (.mp4, .m4v, .mov or .mkv), written by whichever worker assembles
    /// it: a path every worker can write, or an s3:// URL.
    #[arg(short, long, value_name = "OUTPUT")]
    pub(crate) output: PathBuf,
    /// Replace files at OUTPUT (and its .thumb.jpg, .report.json) that this run did not
    /// write; without it they are refused.
    #[arg(short = 'y', long)]
    pub(crate) overwrite: bool,
    /// The database shared with the other workers (postgres://... for several machines).
    #[command(flatten)]
    pub(crate) db: DbArgs,
    /// Settings of the run.
    #[command(flatten)]
    pub(crate) settings: SettingsArgs,
}

/// Runs `idempipe submit`; prints the run id on stdout.
pub(crate) async fn run(args: SubmitArgs) -> anyhow::Result<i32> {
    let request = ProcessRequest {
        input: args.input.clone(),
        output: args.output.clone(),
        artifacts: args.settings.artifacts_dir(),
        settings: args.settings.to_settings(),
    };
    let (storage, _cleanup) = open_storage(None)?;
    let request = match prepare(&storage, &request).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(EXIT_USAGE);
        }
    };
    let store = open_store(&args.db).await?;
    if !args.overwrite
        && let Err(e) = pipeline::check_output_owner(&store, &storage, &request).await
    {
        eprintln!("error: {e}");
        return Ok(EXIT_USAGE);
    }
    match pipeline::start_or_resume(&store, &request).await {
        Ok(start) => {
            eprintln!("{}", start.message);
            println!("{}", start.run_id);
            Ok(0)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(EXIT_USAGE)
        }
    }
}
