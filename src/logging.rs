//! Log set-up, once at start: lines on stderr as text (a terminal) or one
//! JSON object per line (a log pipeline), filtered by `RUST_LOG` (default
//! `info`). The access log (`--access-log`, target [`ACCESS_TARGET`]) is
//! written by `http` and stays on whatever `RUST_LOG` says: asking for it is
//! explicit.
//!
//! Invariant: logging never blocks the thread that logs. Lines are formatted
//! where they happen and handed to one writer thread through a queue of at
//! most [`BUFFERED_LINES`]; when stderr does not keep up (a full pipe, a slow
//! journald) new lines are dropped and counted ([`dropped_lines`], exported
//! as `avatar_edge_log_lines_dropped_total`) instead of stalling requests.

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// The target of the access log's events: one event per request.
pub const ACCESS_TARGET: &str = "avatar_edge::access";

/// The format in force: the configured one, else text on a terminal and
/// JSON otherwise.
pub fn format(config: &LogConfig, stderr_is_terminal: bool) -> LogFormat {
    config.format.unwrap_or(if stderr_is_terminal {
        LogFormat::Text
    } else {
        LogFormat::Json
    })
}

/// Lines queued for the writer thread before new ones are dropped: at a few
/// hundred bytes a line, a few MiB while stderr is stalled.
pub const BUFFERED_LINES: usize = 16_384;

static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Log lines dropped since start because stderr did not keep up.
pub fn dropped_lines() -> u64 {
    DROPPED.get().map_or(0, |c| c.dropped_lines() as u64)
}

/// Install the global subscriber (call once, before anything logs). Keep
/// the guard until the process ends: dropping it flushes the queued lines.
#[must_use = "dropping the guard stops the log writer"]
pub fn init(config: &LogConfig, access_log: bool) -> WorkerGuard {
    let terminal = std::io::stderr().is_terminal();
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    if access_log {
        filter = filter.add_directive(
            format!("{ACCESS_TARGET}=info")
                .parse()
                .expect("a valid directive"),
        );
    }
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(BUFFERED_LINES)
        .thread_name("avatar-edge-log")
        .finish(std::io::stderr());
    let _ = DROPPED.set(writer.error_counter());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format(config, terminal) {
        LogFormat::Text => builder.with_ansi(terminal).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
    guard
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_text_on_a_terminal_and_json_otherwise() {
        // (configured, terminal) → format
        let cases = [
            (None, true, LogFormat::Text),
            (None, false, LogFormat::Json),
            (Some(LogFormat::Text), false, LogFormat::Text),
            (Some(LogFormat::Json), true, LogFormat::Json),
        ];
        for (format_setting, terminal, want) in cases {
            let c = LogConfig {
                format: format_setting,
            };
            assert_eq!(format(&c, terminal), want, "{format_setting:?} {terminal}");
        }
    }
}
