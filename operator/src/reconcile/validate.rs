//! Checks the spec for what the schema and CEL rules cannot see, and turns
//! it into a [`Validated`] pipeline the builders can trust. Each problem is a
//! sentence telling the user what to fix; the controller shows them in the
//! Degraded condition instead of failing the watcher.

use std::collections::BTreeSet;

use crate::crd::{PaymentPipeline, PaymentPipelineSpec};

/// Longest Kafka topic name.
const MAX_TOPIC_LEN: usize = 249;

/// A pipeline whose spec passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Validated {
    /// Name of the PaymentPipeline.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// The spec as written.
    pub spec: PaymentPipelineSpec,
    /// Change topics, one per table: `<prefix>.<db>.<table>`.
    pub change_topics: Vec<String>,
    /// Most consumer replicas: the autoscaling maximum (or fixed replicas)
    /// capped at the partitions.
    pub consumer_cap: i32,
}

/// Validates `pipeline`; every problem found, or the validated pipeline.
pub fn validate(pipeline: &PaymentPipeline) -> Result<Validated, Vec<String>> {
    let mut problems = Vec::new();
    let name = pipeline.metadata.name.clone().unwrap_or_default();
    let namespace = pipeline.metadata.namespace.clone().unwrap_or_default();
    if name.is_empty() || namespace.is_empty() {
        problems.push("the PaymentPipeline has no name or namespace".to_string());
    }
    // Deployment names append `-consumer`; Services must be DNS labels.
    if name.len() > 50 {
        problems.push(format!(
            "metadata.name {name:?} is longer than 50 characters; the workloads' names would exceed 63"
        ));
    }
    let spec = &pipeline.spec;
    let mut seen = BTreeSet::new();
    for table in &spec.source.tables {
        if !seen.insert(table) {
            problems.push(format!("source.tables lists {table:?} twice"));
        }
    }
    for table in paystream_core::readmodel::SOURCE_TABLES {
        if !spec.source.tables.iter().any(|t| t == table) {
            problems.push(format!(
                "source.tables lacks {table:?}: the consumer builds the read model from the purchases and packages tables"
            ));
        }
    }
    let change_topics: Vec<String> = spec
        .source
        .tables
        .iter()
        .map(|t| change_topic(&spec.kafka.topic_prefix, &spec.source.database, t))
        .collect();
    for topic in &change_topics {
        if topic.len() > MAX_TOPIC_LEN {
            problems.push(format!(
                "topic {topic:?} would be longer than {MAX_TOPIC_LEN} characters; shorten kafka.topicPrefix or the table name"
            ));
        }
    }
    if spec.kafka.partitions < 1 {
        problems.push("kafka.partitions must be at least 1".into());
    }
    for endpoint in &spec.redis.endpoints {
        let ok = endpoint
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !ok {
            problems.push(format!(
                "redis.endpoints entry {endpoint:?} is not host:port"
            ));
        }
    }
    for (label, workload) in [("consumer", &spec.consumer), ("api", &spec.api.scaling())] {
        if let Some(a) = &workload.autoscaling
            && a.min_replicas > a.max_replicas
        {
            problems.push(format!(
                "{label}.autoscaling.minReplicas ({}) exceeds maxReplicas ({})",
                a.min_replicas, a.max_replicas
            ));
        }
    }
    if spec
        .api
        .autoscaling
        .as_ref()
        .is_some_and(|a| a.target_lag_per_replica.is_some())
    {
        problems
            .push("api.autoscaling: the API scales on CPU only; use targetCpuUtilization".into());
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let wanted = match &spec.consumer.autoscaling {
        Some(a) => a.max_replicas,
        None => spec.consumer.replicas.unwrap_or(1),
    };
    Ok(Validated {
        name,
        namespace,
        spec: spec.clone(),
        consumer_cap: wanted.min(spec.kafka.partitions).max(0),
        change_topics,
    })
}

/// The change topic of one table.
pub fn change_topic(prefix: &str, database: &str, table: &str) -> String {
    format!("{prefix}.{database}.{table}")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A valid pipeline for the builders' tests.
    pub(crate) fn sample() -> PaymentPipeline {
        let mut p: PaymentPipeline = serde_json::from_value(serde_json::json!({
            "apiVersion": "paystream.io/v1alpha1",
            "kind": "PaymentPipeline",
            "metadata": { "name": "demo", "namespace": "pay", "uid": "u-1", "generation": 3 },
            "spec": {
                "source": {
                    "host": "db", "port": 3306, "database": "payments",
                    "tables": ["payments", "purchases", "packages"],
                    "credentialsSecretRef": { "name": "db-cdc" }
                },
                "kafka": { "bootstrapServers": "k:9092", "topicPrefix": "ps", "partitions": 4 },
                "redis": { "endpoints": ["r:6379"], "credentialsSecretRef": { "name": "redis" } },
                "consumer": { "autoscaling": { "minReplicas": 1, "maxReplicas": 10, "targetCpuUtilization": 70 } },
                "api": {
                    "replicas": 2,
                    "jwtSecretRef": { "name": "api-jwt", "key": "secret" },
                    "databaseCredentialsSecretRef": { "name": "db-app" }
                }
            }
        }))
        .unwrap();
        p.metadata.namespace = Some("pay".into());
        p
    }

    #[test]
    fn a_valid_spec_yields_topics_and_a_capped_consumer() {
        let v = validate(&sample()).unwrap();
        assert_eq!(
            v.change_topics,
            vec![
                "ps.payments.payments",
                "ps.payments.purchases",
                "ps.payments.packages"
            ]
        );
        assert_eq!(
            v.consumer_cap, 4,
            "maxReplicas 10 is capped at 4 partitions"
        );
    }

    #[test]
    fn a_pipeline_must_capture_the_read_models_tables() {
        let mut p = sample();
        p.spec.source.tables = vec!["users".into(), "purchases".into()];
        let problems = validate(&p).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("lacks \"packages\""), "{problems:?}");
    }

    #[test]
    fn problems_say_what_to_fix() {
        let mut p = sample();
        p.spec.source.tables.push("payments".into());
        p.spec.redis.endpoints = vec!["nohost".into()];
        p.spec.kafka.partitions = 0;
        let problems = validate(&p).unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("twice"));
        assert!(
            problems
                .iter()
                .any(|m| m.contains("partitions must be at least 1"))
        );
        assert!(problems.iter().any(|m| m.contains("not host:port")));
    }
}
