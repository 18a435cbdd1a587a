//! `paystream-operator`: the binary edge. Parses the flags, starts logging
//! and the operations server, waits to lead (Lease), runs the controller until
//! SIGTERM, and exits if leadership is lost so a standby takes over.

use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use paystream_operator::config::Config;
use paystream_operator::controller::{self, Context, Settings};
use paystream_operator::leader::Elector;
use paystream_operator::metrics::Metrics;
use paystream_runtime::readiness::Readiness;
use paystream_runtime::{ops, shutdown, telemetry};
use prometheus_client::registry::Registry;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    telemetry::init(config.ops.log_format, &config.ops.log_filter)?;
    let mut registry = Registry::with_prefix("paystream");
    let metrics = Metrics::register(&mut registry);
    let readiness = Readiness::new();
    let leading = readiness.register("controller");
    let stop = shutdown::on_signal();
    let (addr, ops_task) = ops::serve(
        config.ops.ops_addr,
        Arc::new(registry),
        readiness,
        stop.clone(),
    )
    .await
    .context("starting the operations server")?;
    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes configuration (in-cluster or KUBECONFIG)")?;
    let identity = config.identity();
    tracing::info!(%addr, %identity, "paystream operator starting");

    let elector = Elector::new(
        client.clone(),
        &config.lease_namespace,
        &config.lease_name,
        identity.clone(),
        std::time::Duration::from_secs(config.lease_duration_secs.max(3)),
        metrics.clone(),
    );
    if config.leader_election && !elector.acquire(&stop).await {
        let _ = ops_task.await;
        return Ok(());
    }
    leading.set(true);
    metrics.set_leader(true);
    let ctx = Arc::new(Context::new(
        client.clone(),
        metrics,
        Settings {
            status_interval: config.status_interval(),
            kafka_timeout: config.kafka_timeout(),
            image_tag: config.image_tag.clone(),
        },
        identity,
    ));
    let controller_stop = stop.child_token();
    let run = controller::run(
        client,
        config.namespace.as_deref(),
        ctx,
        controller_stop.clone(),
    );
    let lost = tokio::select! {
        r = run => { r.context("the controller stopped: is the PaymentPipeline CRD installed (crds/paymentpipeline.yaml)?")?; false }
        _ = async { if config.leader_election { elector.hold(&stop).await } else { stop.cancelled().await } } => !stop.is_cancelled(),
    };
    controller_stop.cancel();
    stop.cancel();
    let _ = ops_task.await;
    if lost {
        anyhow::bail!("lost leadership; exiting so a standby can lead");
    }
    tracing::info!("paystream operator stopped");
    Ok(())
}
