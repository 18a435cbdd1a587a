//! `paystream-consumer`: the binary edge. Parses the configuration, starts
//! logging and the operations server, runs the pipeline until SIGTERM, and
//! exits once the applied offsets are committed.

use anyhow::Context;
use clap::Parser;
use paystream_consumer::config::Config;
use paystream_consumer::metrics::ConsumerMetrics;
use paystream_consumer::pipeline::{self, Checks};
use paystream_runtime::shell::Shell;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let mut shell = Shell::start(&config.ops)?;
    config.validate().map_err(anyhow::Error::msg)?;

    let metrics = ConsumerMetrics::register(&mut shell.registry);
    let checks = Checks {
        kafka: shell.readiness.register("kafka"),
        redis: shell.readiness.register("redis"),
    };
    let ops = shell
        .serve_ops()
        .await
        .context("starting the operations server")?;
    tracing::info!(addr = %ops.addr, group = %config.group_id(), "paystream consumer starting");

    let run = tokio::spawn(pipeline::run(config, metrics, checks, ops.stop.clone()));
    let result = ops.drain(run).await;
    ops.close().await;
    result?.context("consumer pipeline")?;
    tracing::info!("paystream consumer stopped");
    Ok(())
}
