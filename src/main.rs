//! The `enrichd` binary: parse the command line, run the command, map failure to an exit code.

use std::process::ExitCode;

use clap::Parser;
use enrichd::cli::{self, Cli};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("enrichd: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}
