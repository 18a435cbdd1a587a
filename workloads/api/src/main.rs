//! `paystream-api`: the binary edge. Parses the configuration, starts logging,
//! the operations server and the health loop, serves the API until SIGTERM,
//! and exits once in-flight requests have drained. A fatal error (a refused
//! configuration, say) is printed to stderr as one line, `Error: <error>:
//! <cause>…`, after every task has stopped, so it is the last thing the
//! container writes: Kubernetes shows it as the termination message.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use paystream_api::app::{self, App, Limits};
use paystream_api::auth::{Verifier, VerifierConfig};
use paystream_api::cache::Cache;
use paystream_api::config::Config;
use paystream_api::metrics::ApiMetrics;
use paystream_api::near::{self, NearCache};
use paystream_api::reads::Reads;
use paystream_api::store::Store;
use paystream_runtime::shell::Shell;

fn main() -> ExitCode {
    let result = tokio::runtime::Runtime::new()
        .context("starting the async runtime")
        .and_then(|runtime| {
            let result = runtime.block_on(run());
            // Stops what is still running before the error is printed.
            runtime.shutdown_timeout(Duration::from_secs(5));
            result
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}`: the error and its causes on one line.
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let config = Config::parse();
    let mut shell = Shell::start(&config.ops)?;
    config.validate().map_err(anyhow::Error::msg)?;

    let public_key_pem = match &config.jwt_public_key_file {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?),
        None => None,
    };
    let verifier = Verifier::new(&VerifierConfig {
        algorithm: config.jwt_algorithm,
        secret: config.jwt_secret.clone(),
        public_key_pem,
        issuer: config.jwt_issuer.clone(),
        audience: config.jwt_audience.clone(),
        leeway_secs: config.jwt_leeway_secs,
        admin_scope: config.admin_scope.clone(),
    })?;

    let metrics = ApiMetrics::register(&mut shell.registry);
    let ready = shell.readiness.register("reads");
    let ops = shell
        .serve_ops()
        .await
        .context("starting the operations server")?;
    let stop = ops.stop.clone();

    let redis = config.redis();
    let cache = Arc::new(Cache::new(&redis, metrics.clone()).context("redis configuration")?);
    let store = Arc::new(Store::new(&config.store(), metrics.clone()));
    let near = (config.near_cache_capacity > 0).then(|| {
        Arc::new(NearCache::new(
            config.near_cache_capacity,
            Duration::from_secs(config.near_cache_ttl_secs.max(1)),
            metrics.clone(),
        ))
    });
    if let Some(n) = &near {
        let prefixes = vec![
            format!("{}:purchase:", config.key_prefix()),
            format!("{}:package:", config.key_prefix()),
        ];
        tokio::spawn(near::run_invalidation(
            n.clone(),
            redis.clone(),
            prefixes,
            stop.clone(),
        ));
    }
    let app = Arc::new(App {
        verifier,
        reads: Reads::new(cache, store.clone(), near, metrics.clone()),
        store,
        metrics,
        registry: ops.registry.clone(),
        limits: Limits {
            page_size: config.page_size,
            max_page_size: config.max_page_size,
            max_quantity: config.max_quantity,
            max_body_bytes: config.max_body_bytes,
            request_timeout: Duration::from_millis(config.request_timeout_ms),
        },
        openapi: Default::default(),
        bench_body: Bytes::from(bench_body(config.bench_body_bytes)),
        mysql_up: AtomicBool::new(false),
    });

    let health = tokio::spawn(app::health_loop(
        app.clone(),
        ready,
        Duration::from_millis(config.health_interval_ms.max(50)),
        stop.clone(),
    ));
    let listener = app::bind(config.listen_addr, config.listen_backlog)
        .with_context(|| format!("binding {}", config.listen_addr))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, ops_addr = %ops.addr, near_cache = config.near_cache_capacity > 0, "paystream api listening");
    let router = app::router(app, config.bench_routes);
    let server = tokio::spawn(app::serve(listener, router, stop.clone()));

    let served = ops.drain(server).await;
    ops.close().await;
    let _ = health.await;
    served
        .context("in-flight requests did not drain")?
        .context("serving")?;
    tracing::info!("paystream api stopped");
    Ok(())
}

/// A JSON body of exactly `n` bytes (at least `{"p":""}`).
fn bench_body(n: usize) -> Vec<u8> {
    let pad = n.saturating_sub(8);
    let mut v = Vec::with_capacity(n.max(8));
    v.extend_from_slice(b"{\"p\":\"");
    v.extend(std::iter::repeat_n(b'x', pad));
    v.extend_from_slice(b"\"}");
    v
}
