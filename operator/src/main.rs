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
use paystream_runtime::shell::Shell;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let mut shell = Shell::start(&config.ops)?;
    let metrics = Metrics::register(&mut shell.registry);
    let leading = shell.readiness.register("controller");
    let ops = shell
        .serve_ops()
        .await
        .context("starting the operations server")?;
    let stop = ops.stop.clone();
    let kube_config = kube::Config::infer()
        .await
        .context("no Kubernetes configuration (in-cluster or KUBECONFIG)")?;
    let client = paystream_operator::apiclient::counted_client(kube_config, &metrics)
        .context("building the Kubernetes client")?;
    let identity = config.identity();
    tracing::info!(addr = %ops.addr, %identity, "paystream operator starting");

    let elector = Elector::new(
        client.clone(),
        &config.lease_namespace,
        &config.lease_name,
        identity.clone(),
        std::time::Duration::from_secs(config.lease_duration_secs.max(3)),
        metrics.clone(),
    );
    if config.leader_election && !elector.acquire(&stop).await {
        ops.close().await;
        return Ok(());
    }
    leading.set(true);
    metrics.set_leader(true);
    let (children, watches) =
        paystream_operator::children::watch(&client, config.namespace.as_deref());
    let ctx = Arc::new(Context::new(
        client.clone(),
        children,
        metrics,
        Settings {
            status_interval: config.status_interval(),
            kafka_timeout: config.kafka_timeout(),
            image_tag: config.image_tag.clone(),
            max_concurrent_reconciles: config.max_concurrent_reconciles,
            max_status_refreshes_per_sec: config.max_status_refreshes_per_sec,
        },
        identity,
    ));
    let controller_stop = stop.child_token();
    let run = controller::run(
        client,
        config.namespace.as_deref(),
        ctx,
        watches,
        controller_stop.clone(),
    );
    let lost = tokio::select! {
        r = run => { r.context("the controller stopped: is the PaymentPipeline CRD installed (crds/paymentpipeline.yaml)?")?; false }
        _ = async { if config.leader_election { elector.hold(&stop).await } else { stop.cancelled().await } } => !stop.is_cancelled(),
    };
    controller_stop.cancel();
    ops.close().await;
    if lost {
        anyhow::bail!("lost leadership; exiting so a standby can lead");
    }
    tracing::info!("paystream operator stopped");
    Ok(())
}
