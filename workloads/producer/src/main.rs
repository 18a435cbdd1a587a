//! `paystream-producer`: the binary edge. Parses the configuration, starts
//! logging and the operations server, runs the pipeline until SIGTERM, and
//! exits once the open Kafka transaction is committed.

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use paystream_producer::config::Config;
use paystream_producer::metrics::ProducerMetrics;
use paystream_producer::pipeline::{self, Checks};
use paystream_runtime::readiness::Readiness;
use paystream_runtime::{ops, shutdown, telemetry};
use prometheus_client::registry::Registry;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    telemetry::init(config.ops.log_format, &config.ops.log_filter)?;
    config.validate().map_err(anyhow::Error::msg)?;

    let mut registry = Registry::with_prefix("paystream");
    let metrics = ProducerMetrics::register(&mut registry);
    let readiness = Readiness::new();
    let checks = Checks {
        mysql: readiness.register("mysql"),
        kafka: readiness.register("kafka"),
        running: readiness.register("pipeline"),
    };
    let stop = shutdown::on_signal();
    let (addr, ops_task) = ops::serve(
        config.ops.ops_addr,
        Arc::new(registry),
        readiness,
        stop.clone(),
    )
    .await
    .context("starting the operations server")?;
    tracing::info!(%addr, source = %config.topic_prefix, "paystream producer starting");

    let grace = std::time::Duration::from_secs(config.ops.shutdown_grace_secs);
    let run = tokio::spawn(pipeline::run(config, metrics, checks, stop.clone()));
    stop.cancelled().await;
    let halted = match tokio::time::timeout(grace, run).await {
        Ok(joined) => joined.context("pipeline task")?,
        Err(_) => anyhow::bail!("shutdown did not finish within {grace:?}"),
    };
    let _ = ops_task.await;
    if let Some(why) = halted {
        tracing::error!(error = %why, "stopped while halted");
    }
    tracing::info!("paystream producer stopped");
    Ok(())
}
