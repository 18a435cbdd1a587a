//! Structured logging through `tracing`: human-readable text by default, one
//! JSON object per line when `--log-format json` is set, filtered by the
//! `tracing` directive syntax.

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The filter directive was not valid `tracing` syntax.
#[derive(Debug, thiserror::Error)]
#[error("invalid log filter {filter:?}: {source}")]
pub struct FilterError {
    filter: String,
    #[source]
    source: tracing_subscriber::filter::ParseError,
}

/// Installs the global subscriber. Call once, first thing in `main`.
pub fn init(format: LogFormat, filter: &str) -> Result<(), FilterError> {
    let env_filter = EnvFilter::try_new(filter).map_err(|source| FilterError {
        filter: filter.to_string(),
        source,
    })?;
    let builder = tracing_subscriber::fmt().with_env_filter(env_filter);
    // A second init (tests) is harmless: keep the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_a_bad_filter() {
        assert!(init(LogFormat::Json, "info,=[").is_err());
        assert!(init(LogFormat::Json, "info,paystream=debug").is_ok());
    }
}
