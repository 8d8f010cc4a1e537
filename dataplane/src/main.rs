//! The `dataplane` binary; everything lives in the library (`dataplane::*`).

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = dataplane::cli::Cli::parse();
    dataplane::logging::init(cli.log_format);
    match dataplane::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("dataplane: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
