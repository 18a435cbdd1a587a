//! The pipeline's ConfigMap: every non-secret setting the workloads read, as
//! environment variables, and the hash of it that rolls the pods when it
//! changes.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::validate::Validated;
use super::{BuildError, env, names, typed};
use crate::crd::{RedisMode, TlsMode};

/// Where the database CA is mounted in the pods.
pub const MYSQL_CA_PATH: &str = "/etc/paystream/mysql-ca/ca.pem";
/// Where the Redis CA is mounted in the pods.
pub const REDIS_CA_PATH: &str = "/etc/paystream/redis-ca/ca.pem";
/// Where the API's RS256 public key is mounted.
pub const JWT_PUBLIC_KEY_PATH: &str = "/etc/paystream/jwt/public.pem";

/// The settings as `ENV_NAME -> value`. Pure.
pub fn data(p: &Validated) -> BTreeMap<String, String> {
    let s = &p.spec;
    let tables: Vec<String> = s
        .source
        .tables
        .iter()
        .map(|t| format!("{}.{t}", s.source.database))
        .collect();
    let tls = match s.source.tls.mode {
        TlsMode::Disabled => "disabled",
        TlsMode::VerifyCa => "verify-ca",
        TlsMode::VerifyIdentity => "verify-identity",
    };
    let mut d = BTreeMap::from([
        (env::MYSQL_HOST, s.source.host.clone()),
        (env::MYSQL_PORT, s.source.port.to_string()),
        (env::MYSQL_TLS, tls.to_string()),
        (env::SOURCE_DATABASE, s.source.database.clone()),
        (env::MYSQL_DATABASE, s.source.database.clone()),
        (env::INCLUDE_TABLES, tables.join(",")),
        (env::TOPIC_PREFIX, s.kafka.topic_prefix.clone()),
        (env::PARTITIONS, s.kafka.partitions.to_string()),
        (
            env::REPLICATION_FACTOR,
            s.kafka.replication_factor.to_string(),
        ),
        (env::KAFKA_BOOTSTRAP, s.kafka.bootstrap_servers.clone()),
        (
            env::KAFKA_SECURITY_PROTOCOL,
            s.kafka.security_protocol.as_librdkafka().to_string(),
        ),
        (env::REDIS_MODE, s.redis.mode.as_env().to_string()),
        (env::REDIS_NODES, s.redis.endpoints.join(",")),
        (env::REDIS_TLS, s.redis.tls.to_string()),
        (
            env::CONSUMER_GROUP,
            env::consumer_group(&s.kafka.topic_prefix),
        ),
        (env::OPS_ADDR, format!("0.0.0.0:{}", names::OPS_PORT)),
        (env::API_ADDR, format!("0.0.0.0:{}", names::API_PORT)),
        (env::LOG_FORMAT, "json".to_string()),
    ]);
    if let Some(id) = s.source.server_id {
        d.insert(env::SERVER_ID, id.to_string());
    }
    if s.source.tls.ca_secret_ref.is_some() {
        d.insert(env::MYSQL_TLS_CA, MYSQL_CA_PATH.to_string());
    }
    if let Some(m) = &s.kafka.sasl_mechanism {
        d.insert(env::KAFKA_SASL_MECHANISM, m.clone());
    }
    if s.redis.mode == RedisMode::Standalone
        && let Some(endpoint) = s.redis.endpoints.first()
    {
        d.insert(env::REDIS_URL, env::redis_url(endpoint, s.redis.tls));
    }
    if s.redis.ca_secret_ref.is_some() {
        d.insert(env::REDIS_TLS_CA, REDIS_CA_PATH.to_string());
    }
    if let Some(m) = &s.redis.sentinel_master {
        d.insert(env::REDIS_SENTINEL_MASTER, m.clone());
    }
    d.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// The ConfigMap object. Pure.
pub fn build(p: &Validated, owner: &OwnerReference) -> Result<ConfigMap, BuildError> {
    typed(
        "ConfigMap",
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": names::config_map_name(&p.name),
                "namespace": p.namespace,
                "labels": names::common_labels(&p.name),
                "ownerReferences": [owner],
            },
            "data": data(p),
        }),
    )
}

/// SHA-256 of the ConfigMap's data (sorted keys), hex, first 16 characters.
pub fn config_hash(cm: &ConfigMap) -> String {
    let mut h = Sha256::new();
    for (k, v) in cm.data.iter().flatten() {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::validate::{tests::sample, validate};

    fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "paystream.io/v1alpha1".into(),
            kind: "PaymentPipeline".into(),
            name: "demo".into(),
            uid: "u-1".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    #[test]
    fn speaks_the_apis_env_names() {
        let d = data(&validate(&sample()).unwrap());
        assert_eq!(d[env::MYSQL_DATABASE], "payments");
        assert_eq!(d[env::REDIS_URL], "redis://r:6379/0");
        assert_eq!(d[env::API_ADDR], "0.0.0.0:8080");
        let mut p = sample();
        p.spec.redis.tls = true;
        assert_eq!(
            data(&validate(&p).unwrap())[env::REDIS_URL],
            "rediss://r:6379/0"
        );
        p.spec.redis.mode = RedisMode::Cluster;
        p.spec.redis.endpoints = vec!["a:1".into(), "b:2".into()];
        assert!(!data(&validate(&p).unwrap()).contains_key(env::REDIS_URL));
    }

    #[test]
    fn holds_the_settings_and_hashes_them() {
        let v = validate(&sample()).unwrap();
        let cm = build(&v, &owner()).unwrap();
        let data = cm.data.clone().unwrap();
        assert_eq!(
            data[env::INCLUDE_TABLES],
            "payments.payments,payments.purchases,payments.packages"
        );
        assert_eq!(data[env::TOPIC_PREFIX], "ps");
        assert_eq!(data[env::CONSUMER_GROUP], "paystream-consumer-ps");
        assert_eq!(cm.metadata.owner_references.unwrap()[0].uid, "u-1");
        let h1 = config_hash(&build(&v, &owner()).unwrap());
        assert_eq!(h1.len(), 16);
        let mut p = sample();
        p.spec.kafka.bootstrap_servers = "other:9092".into();
        let h2 = config_hash(&build(&validate(&p).unwrap(), &owner()).unwrap());
        assert_ne!(h1, h2, "a configuration change changes the hash");
    }
}
