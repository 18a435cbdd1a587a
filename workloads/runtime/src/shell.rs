//! The start and the end every paystream binary shares. [`Shell::start`]
//! turns on logging from the [`OpsArgs`], and makes the metrics registry, the
//! readiness set and the shutdown token (SIGTERM or Ctrl-C) the binary
//! registers its own metrics and checks in. [`Shell::serve_ops`] then starts
//! the operations server. At the end, [`Ops::drain`] gives the main task the
//! shutdown grace period to finish what is in flight, and [`Ops::close`]
//! stops the operations server. What a binary does in between is its own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::task::{JoinError, JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::readiness::Readiness;
use crate::telemetry::FilterError;
use crate::{OpsArgs, ops, shutdown, telemetry};

/// A binary before its operations server runs.
pub struct Shell {
    /// Metrics, every name prefixed `paystream_`.
    pub registry: Registry,
    /// The checks `/readyz` reports.
    pub readiness: Readiness,
    /// Cancelled by SIGTERM or Ctrl-C.
    pub stop: CancellationToken,
    addr: SocketAddr,
    grace: Duration,
}

/// The running operations server and the shutdown settings.
pub struct Ops {
    /// Where the operations server listens.
    pub addr: SocketAddr,
    /// The registry it serves (a binary may serve it elsewhere too).
    pub registry: Arc<Registry>,
    /// Cancelled by SIGTERM or Ctrl-C.
    pub stop: CancellationToken,
    grace: Duration,
    task: JoinHandle<()>,
}

/// The main task did not end well.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// It was still running when the grace period ran out.
    #[error("shutdown did not finish within {0:?}")]
    Grace(Duration),
    /// It panicked or was cancelled.
    #[error("the main task failed: {0}")]
    Task(#[from] JoinError),
}

impl Shell {
    /// Starts logging and makes the registry, readiness and shutdown token.
    pub fn start(ops: &OpsArgs) -> Result<Self, FilterError> {
        telemetry::init(ops.log_format, &ops.log_filter)?;
        Ok(Self {
            registry: Registry::with_prefix("paystream"),
            readiness: Readiness::new(),
            stop: shutdown::on_signal(),
            addr: ops.ops_addr,
            grace: Duration::from_secs(ops.shutdown_grace_secs),
        })
    }

    /// Starts the operations server over what was registered.
    pub async fn serve_ops(self) -> Result<Ops, ops::OpsError> {
        let registry = Arc::new(self.registry);
        let (addr, task) = ops::serve(
            self.addr,
            registry.clone(),
            self.readiness,
            self.stop.clone(),
        )
        .await?;
        Ok(Ops {
            addr,
            registry,
            stop: self.stop,
            grace: self.grace,
            task,
        })
    }
}

impl Ops {
    /// Waits for `work` to end by itself, or, once shutdown is asked for,
    /// for at most the grace period.
    pub async fn drain<T>(&self, mut work: JoinHandle<T>) -> Result<T, DrainError> {
        tokio::select! {
            joined = &mut work => Ok(joined?),
            _ = self.stop.cancelled() => match tokio::time::timeout(self.grace, &mut work).await {
                Ok(joined) => Ok(joined?),
                Err(_) => {
                    work.abort();
                    Err(DrainError::Grace(self.grace))
                }
            },
        }
    }

    /// Stops the operations server and waits for it.
    pub async fn close(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(grace: Duration) -> Ops {
        Ops {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            registry: Arc::new(Registry::default()),
            stop: CancellationToken::new(),
            grace,
            task: tokio::spawn(async {}),
        }
    }

    #[tokio::test]
    async fn work_that_ends_by_itself_is_returned() {
        let o = ops(Duration::from_secs(1));
        assert_eq!(o.drain(tokio::spawn(async { 7 })).await.ok(), Some(7));
        o.close().await;
    }

    #[tokio::test]
    async fn work_gets_the_grace_period_after_stop() {
        let o = ops(Duration::from_secs(5));
        let stop = o.stop.clone();
        let work = tokio::spawn(async move {
            stop.cancelled().await;
            "drained"
        });
        o.stop.cancel();
        assert_eq!(o.drain(work).await.ok(), Some("drained"));
    }

    #[tokio::test]
    async fn work_past_the_grace_period_is_an_error() {
        let o = ops(Duration::from_millis(20));
        let work = tokio::spawn(std::future::pending::<()>());
        o.stop.cancel();
        assert!(matches!(o.drain(work).await, Err(DrainError::Grace(_))));
    }
}
