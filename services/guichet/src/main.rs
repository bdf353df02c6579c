//! `guichet`: the intake gateway's one binary.
//!
//! `guichet run` runs some or all services; the other subcommands are the
//! operators' tools. Errors are printed as one line naming the cause and
//! the fix, with a non-zero exit.

mod cli;

/// glibc's malloc costs about a sixth of the CPU of a request on the
/// intake paths (many small allocations across tasks and threads);
/// mimalloc cuts that: see docs/performance.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::dispatch(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
