//! The `PaymentPipeline` custom resource (`paystream.io/v1alpha1`): its spec,
//! its status, the CEL rules the apiserver enforces at admission and the
//! printer columns of `kubectl get paymentpipelines`. Every field carries a doc
//! comment, which becomes its `kubectl explain` description. The schema keeps
//! to plain structs and unit enums (no data-carrying or tagged enums), so it is
//! structural; `crdgen` prints it and a test keeps `crds/` in step.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of the resource.
pub const GROUP: &str = "paystream.io";
/// Finalizer that removes what the operator owns before the resource goes.
pub const FINALIZER: &str = "paystream.io/cleanup";

/// A PaymentPipeline: one CDC pipeline from a MariaDB/MySQL database through
/// Kafka into a Redis read model, with its producer, consumer and API.
// Each `printcolumn(...)` repeats `type_`; clippy reads them as one attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[kube(
    group = "paystream.io",
    version = "v1alpha1",
    kind = "PaymentPipeline",
    plural = "paymentpipelines",
    singular = "paymentpipeline",
    shortname = "ppl",
    category = "paystream",
    namespaced,
    status = "PaymentPipelineStatus",
    derive = "PartialEq",
    doc = "A PaymentPipeline runs one change-data-capture pipeline: MariaDB/MySQL binlog to Kafka change topics to a Redis read model, with the payment API in front.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether every part of the pipeline is reconciled and available"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending, Running, Degraded, Paused or Deleting"
    ),
    printcolumn(
        name = "Partitions",
        type_ = "integer",
        json_path = ".status.partitions",
        description = "Partitions of the change topics in Kafka"
    ),
    printcolumn(
        name = "Binlog",
        type_ = "string",
        json_path = ".status.binlog.summary",
        description = "Binlog position the change topics are complete up to (GTID, else file:position)"
    ),
    printcolumn(
        name = "Lag",
        type_ = "integer",
        json_path = ".status.consumerLag",
        description = "Records in the change topics the consumer group has not committed yet"
    ),
    printcolumn(
        name = "Producer",
        type_ = "string",
        json_path = ".status.replicas.producer",
        description = "Ready/desired producer replicas"
    ),
    printcolumn(
        name = "Consumer",
        type_ = "string",
        json_path = ".status.replicas.consumer",
        description = "Ready/desired consumer replicas"
    ),
    printcolumn(
        name = "API",
        type_ = "string",
        json_path = ".status.replicas.api",
        description = "Ready/desired API replicas"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("!has(self.api.autoscaling) || !has(self.api.autoscaling.targetLagPerReplica)").message("api.autoscaling: the API scales on CPU only; use targetCpuUtilization"))]
#[x_kube(validation = Rule::new("has(self.api) && (has(self.api.jwtSecretRef) != has(self.api.jwtPublicKeyRef))").message("set exactly one of api.jwtSecretRef (HS256 secret) or api.jwtPublicKeyRef (RS256 public key): the API verifies bearer tokens with it"))]
#[x_kube(validation = Rule::new("has(self.api) && has(self.api.databaseCredentialsSecretRef)").message("api.databaseCredentialsSecretRef is required: the API writes purchases and payments as an application (DML) user, not the CDC user"))]
#[serde(rename_all = "camelCase")]
pub struct PaymentPipelineSpec {
    /// Pause reconciliation: the operator changes nothing (no Deployments,
    /// no topics) while true, but keeps reporting the status.
    #[serde(default)]
    pub paused: bool,
    /// The source database the producer reads the binlog of.
    pub source: SourceSpec,
    /// The Kafka cluster holding the change topics.
    pub kafka: KafkaSpec,
    /// The Redis read model the consumer writes and the API reads.
    pub redis: RedisSpec,
    /// The producer workload (always one replica, Recreate strategy).
    #[serde(default)]
    pub producer: ProducerSpec,
    /// The consumer workload.
    #[serde(default)]
    pub consumer: ScalableWorkloadSpec,
    /// The payment API workload and its credentials.
    #[serde(default)]
    pub api: ApiSpec,
    /// Where the workloads' pods may run.
    #[serde(default)]
    pub placement: PlacementSpec,
}

/// Node selection shared by every workload's pods.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PlacementSpec {
    /// Node labels the pods require.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the pods tolerate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
}

/// Where the source database is and how to log in.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SourceSpec {
    /// Host name or address of the MariaDB/MySQL server.
    #[x_kube(validation = Rule::new("self != ''").message("source.host must not be empty"))]
    pub host: String,
    /// TCP port of the server.
    #[serde(default = "default_mysql_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Database (schema) holding the captured tables.
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9_$]+$')").message("source.database must be a plain schema name"))]
    #[schemars(length(min = 1, max = 64))]
    pub database: String,
    /// Tables to capture, by name within `database`. Each gets a change
    /// topic `<topicPrefix>.<database>.<table>`.
    #[x_kube(validation = Rule::new("size(self) >= 1").message("source.tables must name at least one table"))]
    #[x_kube(validation = Rule::new("self.all(t, t.matches('^[A-Za-z0-9_$]+$'))").message("source.tables must be plain table names"))]
    #[schemars(length(max = 256), inner(length(min = 1, max = 64)))]
    pub tables: Vec<String>,
    /// TLS to the database.
    #[serde(default)]
    pub tls: SourceTls,
    /// Secret with the replication user's credentials (REPLICATION SLAVE,
    /// BINLOG MONITOR and SELECT on the tables). Required.
    pub credentials_secret_ref: CredentialsSecretRef,
    /// Server id the producer announces as a replica; unique among the
    /// source's replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub server_id: Option<i64>,
}

fn default_mysql_port() -> i32 {
    3306
}

/// TLS settings of the database connection.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.mode == 'Disabled' || has(self.caSecretRef)").message("source.tls.caSecretRef is required when TLS is enabled"))]
pub struct SourceTls {
    /// `Disabled`, `VerifyCa` (check the chain) or `VerifyIdentity` (chain
    /// and host name).
    #[serde(default)]
    pub mode: TlsMode,
    /// Secret key holding the CA certificate (PEM) that signed the server's
    /// certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
}

/// How the database connection is secured.
#[derive(JsonSchema, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// No TLS.
    #[default]
    Disabled,
    /// TLS, verifying the certificate chain only.
    VerifyCa,
    /// TLS, verifying the chain and the host name.
    VerifyIdentity,
}

/// A Secret in the pipeline's namespace holding a user name and a password.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSecretRef {
    /// Name of the Secret.
    #[x_kube(validation = Rule::new("self != ''").message("a Secret name is required"))]
    pub name: String,
    /// Key of the user name in the Secret.
    #[serde(default = "default_username_key")]
    pub username_key: String,
    /// Key of the password in the Secret.
    #[serde(default = "default_password_key")]
    pub password_key: String,
}

fn default_username_key() -> String {
    "username".into()
}

fn default_password_key() -> String {
    "password".into()
}

/// One key of a Secret in the pipeline's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[x_kube(validation = Rule::new("self != ''").message("a Secret name is required"))]
    pub name: String,
    /// Key within the Secret.
    pub key: String,
}

/// The Kafka cluster and the change topics' layout.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.credentialsSecretRef) || self.securityProtocol.startsWith('SaslP') || self.securityProtocol.startsWith('SaslS')").message("kafka.credentialsSecretRef needs securityProtocol SaslPlaintext or SaslSsl"))]
pub struct KafkaSpec {
    /// Bootstrap servers, comma-separated `host:port`.
    #[x_kube(validation = Rule::new("self != ''").message("kafka.bootstrapServers must not be empty"))]
    pub bootstrap_servers: String,
    /// Prefix of every topic of this pipeline; also the producer's source
    /// name and checkpoint key. Immutable: changing it would orphan the topics.
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9._-]+$')").message("kafka.topicPrefix must use only [A-Za-z0-9._-]"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("kafka.topicPrefix is immutable"))]
    #[schemars(length(min = 1, max = 120))]
    pub topic_prefix: String,
    /// Partitions of each change topic. Can be increased, never decreased.
    /// Caps the consumer's replicas.
    #[x_kube(validation = Rule::new("self >= 1").message("kafka.partitions must be at least 1"))]
    pub partitions: i32,
    /// Replication factor of new topics.
    #[serde(default = "default_replication_factor")]
    #[x_kube(validation = Rule::new("self >= 1").message("kafka.replicationFactor must be at least 1"))]
    pub replication_factor: i32,
    /// Extra topic configuration of the change topics, e.g. `retention.ms`.
    /// `cleanup.policy` is always `compact,delete`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub topic_config: BTreeMap<String, String>,
    /// Security protocol to the brokers.
    #[serde(default)]
    pub security_protocol: KafkaSecurityProtocol,
    /// SASL mechanism, when SASL is used: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl_mechanism: Option<String>,
    /// Secret with the SASL user name and password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<CredentialsSecretRef>,
    /// Delete the pipeline's topics when the PaymentPipeline is deleted.
    /// Off by default: the change topics are meant to be reused.
    #[serde(default)]
    pub delete_topics_on_delete: bool,
}

fn default_replication_factor() -> i32 {
    1
}

/// Security protocol to the Kafka brokers.
#[derive(JsonSchema, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KafkaSecurityProtocol {
    /// No TLS, no authentication.
    #[default]
    Plaintext,
    /// TLS.
    Ssl,
    /// SASL without TLS.
    SaslPlaintext,
    /// SASL over TLS.
    SaslSsl,
}

impl KafkaSecurityProtocol {
    /// The librdkafka spelling.
    pub fn as_librdkafka(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }
}

/// The Redis read model.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.mode != 'Sentinel' || has(self.sentinelMaster)").message("redis.sentinelMaster is required in Sentinel mode"))]
#[x_kube(validation = Rule::new("self.mode != 'Standalone' || size(self.endpoints) == 1").message("redis.endpoints must hold exactly one address in Standalone mode"))]
#[x_kube(validation = Rule::new("!has(self.caSecretRef) || self.tls").message("redis.caSecretRef needs redis.tls: true"))]
pub struct RedisSpec {
    /// `Standalone`, `Sentinel` or `Cluster`.
    #[serde(default)]
    pub mode: RedisMode,
    /// `host:port` addresses: the server, the Sentinels or cluster seeds.
    #[x_kube(validation = Rule::new("size(self) >= 1").message("redis.endpoints must hold at least one address"))]
    pub endpoints: Vec<String>,
    /// Name of the monitored master (Sentinel mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentinel_master: Option<String>,
    /// Use TLS to Redis.
    #[serde(default)]
    pub tls: bool,
    /// Secret key holding the CA certificate (PEM) that signed the Redis
    /// servers' certificates; the system roots when absent. Needs `tls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
    /// Secret with the Redis user name (optional key) and password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<CredentialsSecretRef>,
}

/// How Redis is deployed.
#[derive(JsonSchema, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RedisMode {
    /// One server.
    #[default]
    Standalone,
    /// A master found through Sentinels.
    Sentinel,
    /// Redis Cluster.
    Cluster,
}

impl RedisMode {
    /// The spelling the workloads' `PAYSTREAM_REDIS_MODE` takes.
    pub fn as_env(self) -> &'static str {
        match self {
            Self::Standalone => "standalone",
            Self::Sentinel => "sentinel",
            Self::Cluster => "cluster",
        }
    }
}

/// The producer: always one replica, replaced with the Recreate strategy so
/// two never read the binlog at once.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ProducerSpec {
    /// Container image; defaults to the operator's matching release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// CPU and memory requests and limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// A workload that runs fixed replicas or autoscales.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.replicas) && has(self.autoscaling))").message("set either replicas or autoscaling, not both"))]
pub struct ScalableWorkloadSpec {
    /// Container image; defaults to the operator's matching release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// CPU and memory requests and limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Fixed number of replicas (default 1). The consumer's is capped at the
    /// partitions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,
    /// Autoscaling instead of fixed replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
}

/// The payment API: a scalable workload that also needs the token
/// verification key and an application (DML) database user.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.replicas) && has(self.autoscaling))").message("set either replicas or autoscaling, not both"))]
pub struct ApiSpec {
    /// Container image; defaults to the operator's matching release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// CPU and memory requests and limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Fixed number of replicas (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,
    /// Autoscaling on CPU instead of fixed replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
    /// Secret key holding the HS256 secret (at least 32 bytes) the API
    /// verifies bearer tokens with (`PAYSTREAM_JWT_SECRET`). This or
    /// `jwtPublicKeyRef` is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_secret_ref: Option<SecretKeyRef>,
    /// Secret key holding the RS256 public key (PEM) the API verifies
    /// bearer tokens with, for tokens signed by an identity provider; mounted
    /// as a file (`PAYSTREAM_JWT_PUBLIC_KEY_FILE`). Instead of
    /// `jwtSecretRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_public_key_ref: Option<SecretKeyRef>,
    /// Secret with the application database user (SELECT, INSERT, UPDATE,
    /// DELETE on the database) the API reads and writes with; never the
    /// replication user. Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_credentials_secret_ref: Option<CredentialsSecretRef>,
}

impl ApiSpec {
    /// The scaling part, shaped like the other scalable workloads.
    pub fn scaling(&self) -> ScalableWorkloadSpec {
        ScalableWorkloadSpec {
            image: self.image.clone(),
            resources: self.resources.clone(),
            replicas: self.replicas,
            autoscaling: self.autoscaling.clone(),
        }
    }
}

/// Autoscaling bounds and target. Exactly one target is set.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("autoscaling.minReplicas must not exceed maxReplicas"))]
#[x_kube(validation = Rule::new("has(self.targetCpuUtilization) != has(self.targetLagPerReplica)").message("autoscaling needs exactly one of targetCpuUtilization or targetLagPerReplica"))]
#[x_kube(validation = Rule::new("!has(self.scaleDownStabilizationSeconds) || has(self.targetCpuUtilization)").message("autoscaling.scaleDownStabilizationSeconds tunes the HorizontalPodAutoscaler: set it with targetCpuUtilization"))]
pub struct AutoscalingSpec {
    /// Fewest replicas.
    #[serde(default = "default_min_replicas")]
    #[x_kube(validation = Rule::new("self >= 1").message("autoscaling.minReplicas must be at least 1"))]
    pub min_replicas: i32,
    /// Most replicas. The consumer's is capped at the partitions.
    #[x_kube(validation = Rule::new("self >= 1").message("autoscaling.maxReplicas must be at least 1"))]
    pub max_replicas: i32,
    /// Target average CPU utilization in percent of the request; scaled by
    /// a HorizontalPodAutoscaler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub target_cpu_utilization: Option<i32>,
    /// Consumer only: target consumer lag (records) per replica; the
    /// operator sets replicas = ceil(lag / target), within the bounds and
    /// never above the partitions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub target_lag_per_replica: Option<i64>,
    /// With targetCpuUtilization: how many seconds the HorizontalPodAutoscaler
    /// looks back before it scales down (its highest recommendation in that
    /// window wins), i.e. `behavior.scaleDown.stabilizationWindowSeconds`.
    /// Unset: the HPA's default, 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub scale_down_stabilization_seconds: Option<i32>,
}

fn default_min_replicas() -> i32 {
    1
}

/// What the operator observed, written through the status subresource.
#[derive(JsonSchema, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPipelineStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pending, Running, Degraded, Paused or Deleting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Ready, Progressing, Degraded and Paused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Partitions of the change topics in Kafka (the smallest, if they differ).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<i32>,
    /// The producer's committed binlog position, from its checkpoint in Kafka.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binlog: Option<BinlogStatus>,
    /// Total records of the change topics not yet committed by the consumer
    /// group (high watermark minus committed offset, per partition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_lag: Option<i64>,
    /// Ready/desired replicas per workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<ReplicasStatus>,
}

/// A binlog position.
#[derive(JsonSchema, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BinlogStatus {
    /// GTID position (empty when the server has none).
    pub gtid: String,
    /// Binlog file.
    pub file: String,
    /// Offset within `file`.
    pub position: i64,
    /// Commit time of the last captured transaction (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event_time: Option<String>,
    /// GTID if any, else `file:position`; the printer column.
    pub summary: String,
}

/// Ready/desired replicas of each workload, as `ready/desired`.
#[derive(JsonSchema, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ReplicasStatus {
    /// Producer.
    pub producer: String,
    /// Consumer.
    pub consumer: String,
    /// API.
    pub api: String,
}

/// The CRD as YAML, as `crdgen` prints it and `crds/` holds it.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;
    serde_yaml::to_string(&PaymentPipeline::crd())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_in_crd_is_current() {
        let generated = crd_yaml().unwrap();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/paymentpipeline.yaml");
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            generated == checked_in,
            "crds/paymentpipeline.yaml is stale: run `cargo run -p paystream-operator --bin crdgen > crds/paymentpipeline.yaml`"
        );
    }

    #[test]
    fn crd_has_rules_columns_and_status() {
        let yaml = crd_yaml().unwrap();
        for needle in [
            "kafka.partitions must be at least 1",
            "autoscaling.minReplicas must not exceed maxReplicas",
            "a Secret name is required",
            "kafka.topicPrefix is immutable",
            "set exactly one of api.jwtSecretRef",
            "redis.caSecretRef needs redis.tls",
            "api.databaseCredentialsSecretRef is required",
            "autoscaling.scaleDownStabilizationSeconds tunes the HorizontalPodAutoscaler",
            "jsonPath: .status.binlog.summary",
            "shortNames:",
            "status: {}",
            "x-kubernetes-validations",
        ] {
            assert!(yaml.contains(needle), "CRD lacks {needle:?}");
        }
        assert!(
            !yaml.contains("oneOf"),
            "non-structural oneOf in the schema"
        );
    }

    #[test]
    fn every_property_has_a_description() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(PaymentPipeline::crd()).unwrap();
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let mut missing = Vec::new();
        walk(schema, "spec", &mut missing);
        assert!(
            missing.is_empty(),
            "fields without description: {missing:?}"
        );
    }

    fn walk(node: &serde_json::Value, path: &str, missing: &mut Vec<String>) {
        if let Some(props) = node.get("properties").and_then(|p| p.as_object()) {
            for (name, child) in props {
                let here = format!("{path}.{name}");
                // k8s-openapi's ResourceRequirements describes itself.
                if child.get("description").is_none() {
                    missing.push(here.clone());
                }
                if !here.ends_with(".resources") {
                    walk(child, &here, missing);
                }
            }
        }
        if let Some(items) = node.get("items") {
            walk(items, path, missing);
        }
    }
}
