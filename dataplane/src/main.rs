//! The `dataplane` binary; everything lives in the library (`dataplane::*`).

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match dataplane::cli::Cli::from_args(std::env::args_os()) {
        Ok(cli) => cli,
        Err(error) => {
            eprintln!("dataplane: error: --config {error}");
            return ExitCode::from(2);
        }
    };
    dataplane::logging::init(cli.log_format);
    match dataplane::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("dataplane: error: {}", describe(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, skipping a cause whose text the message already
/// contains (many messages name their cause inline).
fn describe(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}
