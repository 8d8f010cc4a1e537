//! Structured logs with `tracing`: human text on stderr by default, JSON
//! lines with `--log-format json`; level from `RUST_LOG` (default `info`).

use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::EnvFilter;

/// Log line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `--log-format json` is in force: what the data plane says for people
/// goes out as JSON log events too ([`say`]).
static JSON: AtomicBool = AtomicBool::new(false);

/// A line for the operator (the "running" line, the summary at exit): on
/// standard output as it is, or with `--log-format json` as one JSON log
/// event on standard error, so that the output holds only JSON lines.
pub fn say(text: &str) {
    if JSON.load(Ordering::Relaxed) {
        tracing::info!("{text}");
    } else {
        println!("{text}");
    }
}

/// The same for what goes to standard error (what was loaded).
pub fn say_err(text: &str) {
    if JSON.load(Ordering::Relaxed) {
        tracing::info!("{text}");
    } else {
        eprintln!("{text}");
    }
}

/// Installs the global subscriber. Call once, first thing.
pub fn init(format: LogFormat) {
    JSON.store(format == LogFormat::Json, Ordering::Relaxed);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for people: a log file or journal gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
