//! `paystream-producer`: the binary edge. Parses the configuration, starts
//! logging and the operations server, runs the pipeline until SIGTERM, and
//! exits once the open Kafka transaction is committed.

use anyhow::Context;
use clap::Parser;
use paystream_producer::config::Config;
use paystream_producer::metrics::ProducerMetrics;
use paystream_producer::pipeline::{self, Checks};
use paystream_runtime::shell::Shell;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let mut shell = Shell::start(&config.ops)?;
    config.validate().map_err(anyhow::Error::msg)?;

    let metrics = ProducerMetrics::register(&mut shell.registry);
    let checks = Checks {
        mysql: shell.readiness.register("mysql"),
        kafka: shell.readiness.register("kafka"),
        running: shell.readiness.register("pipeline"),
    };
    let ops = shell
        .serve_ops()
        .await
        .context("starting the operations server")?;
    tracing::info!(addr = %ops.addr, source = %config.topic_prefix, "paystream producer starting");

    // The pipeline only returns once shutdown is asked for (a halted
    // producer stays up, not ready, until then).
    let run = tokio::spawn(pipeline::run(config, metrics, checks, ops.stop.clone()));
    let halted = ops.drain(run).await;
    ops.close().await;
    if let Some(why) = halted? {
        tracing::error!(error = %why, "stopped while halted");
    }
    tracing::info!("paystream producer stopped");
    Ok(())
}
