//! The service shell every paystream binary shares.
//!
//! A deployable is a pure core wrapped in the same thin shell: structured
//! logs ([`telemetry`]), an operations HTTP server with `/metrics`, `/healthz`
//! and `/readyz` ([`ops`]), readiness reported by each dependency
//! ([`readiness`]), one way to reach any Redis deployment
//! ([`redis_client`]), and a shutdown token that SIGTERM or Ctrl-C cancels so
//! in-flight work can drain ([`shutdown`]). The common command-line flags live
//! in [`OpsArgs`], flattened into every binary's own `clap` parser.

pub mod kafka;
pub mod ops;
pub mod readiness;
pub mod redis_client;
pub mod shell;
pub mod shutdown;
pub mod telemetry;

use std::net::SocketAddr;

/// Flags every paystream binary accepts, each with an environment fallback.
#[derive(Debug, Clone, clap::Args)]
pub struct OpsArgs {
    /// Address of the operations server (`/metrics`, `/healthz`, `/readyz`).
    #[arg(long, env = "PAYSTREAM_OPS_ADDR", default_value = "0.0.0.0:9090")]
    pub ops_addr: SocketAddr,
    /// Log format: `text` for people, `json` for log pipelines.
    #[arg(long, env = "PAYSTREAM_LOG_FORMAT", value_enum, default_value_t = telemetry::LogFormat::Text)]
    pub log_format: telemetry::LogFormat,
    /// Log filter in `tracing` syntax, e.g. `info,paystream_producer=debug`.
    #[arg(long, env = "PAYSTREAM_LOG", default_value = "info")]
    pub log_filter: String,
    /// How long shutdown may take to drain in-flight work before giving up.
    #[arg(long, env = "PAYSTREAM_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,
}
