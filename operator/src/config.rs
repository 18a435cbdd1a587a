//! The operator's configuration: command-line flags with environment
//! fallbacks. `paystream-operator --help` is the reference.

use std::time::Duration;

use clap::Parser;
use paystream_runtime::OpsArgs;

/// paystream operator: reconciles PaymentPipeline resources.
#[derive(Debug, Clone, Parser)]
#[command(name = "paystream-operator", version, about, long_about = None)]
pub struct Config {
    /// Watch only this namespace (default: every namespace).
    #[arg(long, env = "PAYSTREAM_WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// How often the status (binlog position, lag) is refreshed, seconds.
    #[arg(long, env = "PAYSTREAM_STATUS_INTERVAL_SECS", default_value_t = 15)]
    pub status_interval_secs: u64,
    /// Timeout of each Kafka request, seconds.
    #[arg(long, env = "PAYSTREAM_KAFKA_TIMEOUT_SECS", default_value_t = 10)]
    pub kafka_timeout_secs: u64,
    /// Most reconciles running at once. Each holds Kafka clients and sends
    /// apiserver requests: unbounded, a thousand pipelines meant 2,000
    /// threads and 1 GiB; at 16, about 100 threads and 100 MiB.
    #[arg(
        long,
        env = "PAYSTREAM_MAX_CONCURRENT_RECONCILES",
        default_value_t = 16
    )]
    pub max_concurrent_reconciles: u16,
    /// Most status refreshes a second, over all pipelines: with more
    /// pipelines than this covers in one status interval, the interval
    /// stretches (0: no bound).
    #[arg(
        long,
        env = "PAYSTREAM_MAX_STATUS_REFRESHES_PER_SEC",
        default_value_t = 25.0
    )]
    pub max_status_refreshes_per_sec: f64,
    /// Image tag of the workloads' default images.
    #[arg(long, env = "PAYSTREAM_IMAGE_TAG", default_value = env!("CARGO_PKG_VERSION"))]
    pub image_tag: String,
    /// Take part in leader election on a Lease (needed with 2+ replicas).
    #[arg(long, env = "PAYSTREAM_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Namespace of the leader Lease.
    #[arg(long, env = "PAYSTREAM_LEASE_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(
        long,
        env = "PAYSTREAM_LEASE_NAME",
        default_value = "paystream-operator"
    )]
    pub lease_name: String,
    /// This instance's identity in the Lease (default: host name and pid).
    #[arg(long, env = "PAYSTREAM_POD_NAME")]
    pub identity: Option<String>,
    /// Lease duration, seconds: a leader silent this long is replaced.
    #[arg(long, env = "PAYSTREAM_LEASE_DURATION_SECS", default_value_t = 15)]
    pub lease_duration_secs: u64,
    /// Operations server and logging.
    #[command(flatten)]
    pub ops: OpsArgs,
}

impl Config {
    /// Status refresh period.
    pub fn status_interval(&self) -> Duration {
        Duration::from_secs(self.status_interval_secs.max(1))
    }

    /// Kafka request timeout.
    pub fn kafka_timeout(&self) -> Duration {
        Duration::from_secs(self.kafka_timeout_secs.max(1))
    }

    /// The Lease identity in force.
    pub fn identity(&self) -> String {
        self.identity.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "operator".into());
            format!("{host}-{}", std::process::id())
        })
    }
}
