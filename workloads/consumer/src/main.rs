//! `paystream-consumer`: the binary edge. Parses the configuration, starts
//! logging and the operations server, runs the pipeline until SIGTERM, and
//! exits once the applied offsets are committed.

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use paystream_consumer::config::Config;
use paystream_consumer::metrics::ConsumerMetrics;
use paystream_consumer::pipeline::{self, Checks};
use paystream_runtime::readiness::Readiness;
use paystream_runtime::{ops, shutdown, telemetry};
use prometheus_client::registry::Registry;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    telemetry::init(config.ops.log_format, &config.ops.log_filter)?;
    config.validate().map_err(anyhow::Error::msg)?;

    let mut registry = Registry::with_prefix("paystream");
    let metrics = ConsumerMetrics::register(&mut registry);
    let readiness = Readiness::new();
    let checks = Checks {
        kafka: readiness.register("kafka"),
        redis: readiness.register("redis"),
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
    tracing::info!(%addr, group = %config.group_id(), "paystream consumer starting");

    let grace = std::time::Duration::from_secs(config.ops.shutdown_grace_secs);
    let mut run = tokio::spawn(pipeline::run(config, metrics, checks, stop.clone()));
    let result = tokio::select! {
        joined = &mut run => joined.context("pipeline task")?,
        _ = stop.cancelled() => match tokio::time::timeout(grace, &mut run).await {
            Ok(joined) => joined.context("pipeline task")?,
            Err(_) => anyhow::bail!("shutdown did not finish within {grace:?}"),
        },
    };
    stop.cancel();
    let _ = ops_task.await;
    result.context("consumer pipeline")?;
    tracing::info!("paystream consumer stopped");
    Ok(())
}
