//! `paystream-bench`: benchmarks against the real local stack. A benchmark,
//! not a test: it measures and reports, it does not pass or fail.
//!
//! `cdc` measures the producer against Debezium, with `mariadb-binlog` as the
//! ceiling: rows per second draining a backlog, the commit-to-visible-in-Kafka
//! latency at a fixed rate, and peak memory.
//!
//! `freshness` measures commit-to-visible-through-the-API latency of the
//! whole pipeline (producer, consumer, API) at sustained write rates.
//!
//! `chaos` is the exception that judges: a bounded run of faults (kills,
//! restarts, stalls, data loss) under load, measuring each recovery and
//! verifying MySQL against Redis, the API and the change topics at the end;
//! it exits non-zero on any lost, stale or duplicate row.
//!
//! `operator` measures the operator with 100 and 1,000 PaymentPipelines on
//! the local control plane: time to Ready, RSS, CPU, idle API requests.
//!
//! `rebuild` measures how fast the consumer rebuilds the read model after
//! Redis lost its data, against a bare read of the same topics.

mod cdc;
mod chaos;
mod freshness;
mod mysql;
mod operator;
mod rebuild;
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
    /// CDC: paystream vs Debezium vs mariadb-binlog: drain rate, latency at a fixed rate, peak RSS.
    Cdc(cdc::Args),
    /// Commit-to-visible-through-the-API latency at sustained write rates.
    Freshness(freshness::Args),
    /// Chaos run: faults under load, recovery times, and a final MySQL/Redis/API/Kafka check.
    Chaos(chaos::Args),
    /// Operator at scale: time to Ready, RSS, CPU, idle API requests.
    Operator(operator::Args),
    /// Read-model rebuild after Redis lost its data: records/s against a bare Kafka read.
    Rebuild(rebuild::Args),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().what {
        What::Cdc(args) => cdc::run(args).await,
        What::Freshness(args) => freshness::run(args).await,
        What::Chaos(args) => chaos::run(args).await,
        What::Operator(args) => operator::run(args).await,
        What::Rebuild(args) => rebuild::run(args).await,
    }
}
