//! The `sluice` binary: parse the command line, run the verb, exit with its code.

use clap::Parser;
use std::process::ExitCode;

// A relay allocates and frees per message on every thread (sessions,
// content work, the store writer); glibc's allocator spent about a sixth
// of the relay benchmark's CPU in its arenas, mimalloc's thread-local
// heaps far less.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    sluice::cli::run(sluice::cli::Cli::parse())
}
