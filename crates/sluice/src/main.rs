//! The `sluice` binary: parse the command line, run the verb, exit with its code.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    sluice::cli::run(sluice::cli::Cli::parse())
}
