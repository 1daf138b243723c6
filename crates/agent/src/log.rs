//! The agent's log: one line per event on stderr, as text (for people and journald) or as
//! JSON lines (for log pipelines), chosen by `quorum agent --log-format text|json`.
//!
//! Both carry an RFC 3339 UTC timestamp (`Z`, milliseconds) and the level. Events carry these
//! fields where they apply: `cluster`, `operation` (backup, forget, prune, consolidate, drill,
//! defrag, capture, spool, election, observe, repository), `revision`, `duration` (seconds),
//! `error`, and the object they concern (`backup`, `member`, `segment`...). A JSON line:
//!
//! ```text
//! {"timestamp":"2026-12-04T03:42:05.123Z","level":"INFO","message":"backup 17c28e25 at revision 4 (1031 added)","cluster":"prod","operation":"backup","backup":"17c28e25","revision":4,"duration":0.036,"added_bytes":1031}
//! ```
//!
//! Only the agent's own events are written at INFO; other crates' at WARN and above. Secrets
//! never reach an event: the repository passphrase and keys are read into
//! [`repo::crypto::Secret`], which no event names, and configuration is logged by path.
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::prelude::*;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Text,
    Json,
}

/// RFC 3339 in UTC with `Z` and milliseconds.
struct Utc;

impl FormatTime for Utc {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        w.write_str(&chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    }
}

/// Send the process's events to stderr in `format`. Call once, before the agent starts; a
/// second call (a subscriber is already set) changes nothing.
pub fn init(format: Format) {
    let filter = Targets::new().with_target("agent", LevelFilter::INFO).with_default(LevelFilter::WARN);
    let base = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_timer(Utc).with_target(false).with_ansi(false);
    let _ = match format {
        Format::Text => tracing_subscriber::registry().with(base.with_filter(filter)).try_init(),
        Format::Json => {
            let json = base.json().flatten_event(true).with_current_span(false).with_span_list(false);
            tracing_subscriber::registry().with(json.with_filter(filter)).try_init()
        }
    };
}
