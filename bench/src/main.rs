//! `paystream-bench`: benchmarks against the real local stack. A benchmark,
//! not a test: it measures and reports, it does not pass or fail.
//!
//! `cdc` measures the producer: rows per second draining a backlog, the
//! commit-to-visible-in-Kafka latency at a fixed rate, and peak memory.

mod cdc;
mod report;

use clap::{Parser, Subcommand};

/// paystream benchmarks.
#[derive(Parser)]
#[command(name = "paystream-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// CDC producer: backlog drain rate, latency at a fixed rate, peak RSS.
    Cdc(cdc::Args),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().what {
        What::Cdc(args) => cdc::run(args).await,
    }
}
