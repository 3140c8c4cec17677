//! `idempipe completions SHELL`: a completion script for the shell, on stdout.

use clap::Args;
use clap_complete::Shell;

/// Arguments of `idempipe completions`.
#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    pub(crate) shell: Shell,
}

/// Prints the script; returns the exit code.
pub(crate) fn run(args: &CompletionsArgs) -> anyhow::Result<i32> {
    clap_complete::generate(
        args.shell,
        &mut crate::command(),
        "idempipe",
        &mut std::io::stdout(),
    );
    Ok(0)
}
