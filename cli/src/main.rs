//! `ordo`: one binary for every role and tool of ordo.
//!
//! - [`config`]: command line and environment (`docs/reference/cli.md`,
//!   `docs/reference/configuration.md`).
//! - [`logging`], [`telemetry`], [`shutdown`]: process plumbing.
//! - [`run`]: what each subcommand does; [`events`] the audit query;
//!   [`ops`] rebuild, check and status; [`token`] `ordo token`;
//!   [`nats_config`] `ordo nats-config`.
//! - [`bench`]: the benchmarks of `ordo bench`.

mod bench;
mod config;
mod events;
mod logging;
mod nats_config;
mod ops;
mod run;
mod shutdown;
mod telemetry;
mod token;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc rather than the system allocator: under load glibc's malloc and
/// free take a large share of ordo's CPU (docs/BENCHMARKS.md has the
/// profile's figure), mostly on the short-lived buffers of requests, rows and
/// messages.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // clap prints usage errors itself and exits with status 2.
    let cli = config::Cli::parse();
    // NATS settings that cannot go together are a bad command line too.
    if let Err(e) = cli.global.nats() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    logging::init(&cli.global.log_filter, cli.global.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the context chain, no backtrace.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
