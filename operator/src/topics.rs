//! The pipeline's Kafka topics: [`plan`] decides, purely, what to do to each
//! topic given what exists; the shared [`Cluster`] clients describe topics
//! and carry the plan out through the admin API. Partitions only grow: a smaller count is
//! refused and the topic is left untouched.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use paystream_core::checkpoint::checkpoint_topic;
use rdkafka::admin::{
    AdminOptions, AlterConfig, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::crd::KafkaSpec;
use crate::kafka::Cluster;

/// A topic as the spec wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredTopic {
    /// Name.
    pub name: String,
    /// Partitions.
    pub partitions: i32,
    /// Replication factor (creation only).
    pub replication_factor: i32,
    /// Topic configuration the operator manages.
    pub config: BTreeMap<String, String>,
}

/// A topic as it is in Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingTopic {
    /// Partitions.
    pub partitions: i32,
    /// Its configuration (only the keys the operator asked about).
    pub config: BTreeMap<String, String>,
}

/// What to do to the topics.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TopicPlan {
    /// Topics to create.
    pub create: Vec<DesiredTopic>,
    /// `(topic, from, to)` partition increases.
    pub grow: Vec<(String, i32, i32)>,
    /// `(topic, existing, asked)` decreases, refused.
    pub refused: Vec<(String, i32, i32)>,
    /// Topics whose configuration differs: set it.
    pub reconfigure: Vec<DesiredTopic>,
}

impl TopicPlan {
    /// Nothing to change and nothing refused.
    pub fn is_noop(&self) -> bool {
        self.create.is_empty() && self.grow.is_empty() && self.reconfigure.is_empty()
    }
}

/// The pipeline's topics: a change topic per table and the checkpoint
/// topic. Pure.
pub fn desired(kafka: &KafkaSpec, change_topics: &[String]) -> Vec<DesiredTopic> {
    let mut change_config = kafka.topic_config.clone();
    change_config.insert("cleanup.policy".into(), "compact,delete".into());
    let mut out: Vec<DesiredTopic> = change_topics
        .iter()
        .map(|t| DesiredTopic {
            name: t.clone(),
            partitions: kafka.partitions,
            replication_factor: kafka.replication_factor,
            config: change_config.clone(),
        })
        .collect();
    out.push(DesiredTopic {
        name: checkpoint_topic(&kafka.topic_prefix),
        partitions: 1,
        replication_factor: kafka.replication_factor,
        config: BTreeMap::from([("cleanup.policy".into(), "compact".into())]),
    });
    out
}

/// Decides what to do to each topic. A decrease is refused and the topic is
/// not touched at all (not even its configuration). Pure.
pub fn plan(desired: &[DesiredTopic], existing: &HashMap<String, ExistingTopic>) -> TopicPlan {
    let mut p = TopicPlan::default();
    for d in desired {
        match existing.get(&d.name) {
            None => p.create.push(d.clone()),
            Some(e) if d.partitions < e.partitions => {
                p.refused.push((d.name.clone(), e.partitions, d.partitions));
            }
            Some(e) => {
                if d.partitions > e.partitions {
                    p.grow.push((d.name.clone(), e.partitions, d.partitions));
                }
                if d.config.iter().any(|(k, v)| e.config.get(k) != Some(v)) {
                    p.reconfigure.push(d.clone());
                }
            }
        }
    }
    p
}

/// A Kafka admin operation failed.
#[derive(Debug, thiserror::Error)]
#[error("kafka: {what}: {source}")]
pub struct TopicError {
    what: String,
    #[source]
    source: KafkaError,
}

impl TopicError {
    /// The clients for the cluster could not be made.
    pub fn connecting(source: KafkaError) -> Self {
        Self {
            what: "creating the Kafka clients".into(),
            source,
        }
    }
}

fn err(what: impl Into<String>) -> impl FnOnce(KafkaError) -> TopicError {
    let what = what.into();
    move |source| TopicError { what, source }
}

/// The librdkafka client settings for a pipeline's Kafka, with SASL
/// credentials read from its Secret when it names one.
pub fn client_config(kafka: &KafkaSpec, sasl: Option<(String, String)>) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &kafka.bootstrap_servers)
        .set("security.protocol", kafka.security_protocol.as_librdkafka())
        .set("socket.timeout.ms", "10000")
        .set("reconnect.backoff.max.ms", "5000");
    if let Some(m) = &kafka.sasl_mechanism {
        c.set("sasl.mechanism", m);
    }
    if let Some((user, password)) = sasl {
        c.set("sasl.username", user).set("sasl.password", password);
    }
    c
}

/// The existing topics among `names` and their partition counts, from the
/// reader's metadata, one topic per request (asking for all topics would
/// fetch every pipeline's). Blocking.
fn partitions_blocking(
    cluster: &Cluster,
    names: &[String],
) -> Result<HashMap<String, i32>, KafkaError> {
    let mut out = HashMap::new();
    for name in names {
        let ids = cluster.partition_ids(name)?;
        if !ids.is_empty() {
            out.insert(name.clone(), i32::try_from(ids.len()).unwrap_or(i32::MAX));
        }
    }
    Ok(out)
}

/// The partition counts of the existing topics among `names`.
pub async fn partitions(
    cluster: &Arc<Cluster>,
    names: &[String],
) -> Result<HashMap<String, i32>, TopicError> {
    let c = cluster.clone();
    let names = names.to_vec();
    tokio::task::spawn_blocking(move || partitions_blocking(&c, &names))
        .await
        .map_err(|e| TopicError {
            what: format!("reading metadata: {e}"),
            source: KafkaError::Canceled,
        })?
        .map_err(err("fetching metadata"))
}

impl Cluster {
    fn options(&self) -> AdminOptions {
        AdminOptions::new()
            .operation_timeout(Some(self.timeout))
            .request_timeout(Some(self.timeout))
    }

    /// The existing topics among `names`, with the configuration keys in
    /// `keys`.
    pub async fn describe(
        self: &Arc<Self>,
        names: &[String],
        keys: &[&str],
    ) -> Result<HashMap<String, ExistingTopic>, TopicError> {
        let mut out: HashMap<String, ExistingTopic> = partitions(self, names)
            .await?
            .into_iter()
            .map(|(name, partitions)| {
                (
                    name,
                    ExistingTopic {
                        partitions,
                        config: BTreeMap::new(),
                    },
                )
            })
            .collect();
        let specs: Vec<ResourceSpecifier> = out
            .keys()
            .map(|n| ResourceSpecifier::Topic(n.as_str()))
            .collect();
        if specs.is_empty() {
            return Ok(out);
        }
        let described = self
            .admin
            .describe_configs(specs.iter(), &self.options())
            .await
            .map_err(err("describing topic configs"))?;
        let mut configs = Vec::new();
        for r in described.into_iter().flatten() {
            if let rdkafka::admin::OwnedResourceSpecifier::Topic(name) = &r.specifier {
                let config: BTreeMap<String, String> = keys
                    .iter()
                    .filter_map(|k| {
                        r.get(k)
                            .and_then(|e| e.value.clone())
                            .map(|v| (k.to_string(), v))
                    })
                    .collect();
                configs.push((name.clone(), config));
            }
        }
        for (name, config) in configs {
            if let Some(t) = out.get_mut(&name) {
                t.config = config;
            }
        }
        Ok(out)
    }

    /// Carries out `plan` (never the refused part). Returns a line per change.
    pub async fn execute(&self, plan: &TopicPlan) -> Result<Vec<String>, TopicError> {
        let mut done = Vec::new();
        // One request creates them all: KRaft answers once each is created.
        let new: Vec<NewTopic> = plan
            .create
            .iter()
            .map(|d| {
                d.config.iter().fold(
                    NewTopic::new(
                        &d.name,
                        d.partitions,
                        TopicReplication::Fixed(d.replication_factor),
                    ),
                    |t, (k, v)| t.set(k, v),
                )
            })
            .collect();
        if !new.is_empty() {
            let results = self
                .admin
                .create_topics(new.iter(), &self.options())
                .await
                .map_err(err("creating topics"))?;
            for r in results {
                match r {
                    Ok(name) => {
                        let partitions = plan
                            .create
                            .iter()
                            .find(|d| d.name == name)
                            .map_or(0, |d| d.partitions);
                        done.push(format!("created topic {name} with {partitions} partitions"));
                    }
                    Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((name, code)) => {
                        return Err(TopicError {
                            what: format!("creating {name}"),
                            source: KafkaError::AdminOp(code),
                        });
                    }
                }
            }
        }
        for (name, from, to) in &plan.grow {
            let n = NewPartitions::new(name, usize::try_from(*to).unwrap_or(1));
            let results = self
                .admin
                .create_partitions([&n], &self.options())
                .await
                .map_err(err(format!("growing {name}")))?;
            for r in results {
                if let Err((_, code)) = r {
                    return Err(TopicError {
                        what: format!("growing {name}"),
                        source: KafkaError::AdminOp(code),
                    });
                }
            }
            done.push(format!(
                "increased partitions of {name} from {from} to {to}"
            ));
        }
        for d in &plan.reconfigure {
            let mut a = AlterConfig::new(ResourceSpecifier::Topic(&d.name));
            for (k, v) in &d.config {
                a = a.set(k, v);
            }
            let results = self
                .admin
                .alter_configs([&a], &self.options())
                .await
                .map_err(err(format!("configuring {}", d.name)))?;
            for r in results {
                if let Err((_, code)) = r {
                    return Err(TopicError {
                        what: format!("configuring {}", d.name),
                        source: KafkaError::AdminOp(code),
                    });
                }
            }
            done.push(format!("updated the configuration of {}", d.name));
        }
        Ok(done)
    }

    /// Deletes `names` (missing ones are fine).
    pub async fn delete(&self, names: &[&str]) -> Result<(), TopicError> {
        let results = self
            .admin
            .delete_topics(names, &self.options())
            .await
            .map_err(err("deleting topics"))?;
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
                Err((t, code)) => {
                    return Err(TopicError {
                        what: format!("deleting {t}"),
                        source: KafkaError::AdminOp(code),
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kafka(partitions: i32) -> KafkaSpec {
        serde_json::from_value(serde_json::json!({
            "bootstrapServers": "k:9092", "topicPrefix": "ps", "partitions": partitions,
            "topicConfig": { "retention.ms": "1000" }
        }))
        .unwrap()
    }

    fn existing(partitions: i32, cleanup: &str) -> ExistingTopic {
        ExistingTopic {
            partitions,
            config: BTreeMap::from([
                ("cleanup.policy".to_string(), cleanup.to_string()),
                ("retention.ms".to_string(), "1000".to_string()),
            ]),
        }
    }

    #[test]
    fn creates_what_is_missing_including_the_checkpoint_topic() {
        let d = desired(&kafka(3), &["ps.db.t".into()]);
        assert_eq!(d.len(), 2);
        assert_eq!(d[1].name, "ps.checkpoints");
        assert_eq!(d[1].partitions, 1);
        let p = plan(&d, &HashMap::new());
        assert_eq!(p.create.len(), 2);
        assert!(!p.is_noop());
    }

    #[test]
    fn grows_refuses_shrinking_and_leaves_equal_topics_alone() {
        let d = desired(&kafka(6), &["ps.db.t".into()]);
        let mut have = HashMap::from([
            ("ps.db.t".to_string(), existing(3, "compact,delete")),
            (
                "ps.checkpoints".to_string(),
                ExistingTopic {
                    partitions: 1,
                    config: BTreeMap::from([("cleanup.policy".into(), "compact".into())]),
                },
            ),
        ]);
        let p = plan(&d, &have);
        assert_eq!(p.grow, vec![("ps.db.t".to_string(), 3, 6)]);
        assert!(p.refused.is_empty() && p.reconfigure.is_empty());

        have.insert("ps.db.t".into(), existing(6, "compact,delete"));
        assert!(plan(&d, &have).is_noop());

        // Shrinking is refused, and the topic is not reconfigured either.
        have.insert("ps.db.t".into(), existing(8, "delete"));
        let p = plan(&d, &have);
        assert_eq!(p.refused, vec![("ps.db.t".to_string(), 8, 6)]);
        assert!(p.is_noop());
    }

    #[test]
    fn reconfigures_a_drifted_topic() {
        let d = desired(&kafka(3), &["ps.db.t".into()]);
        let have = HashMap::from([
            ("ps.db.t".to_string(), existing(3, "delete")),
            (
                "ps.checkpoints".to_string(),
                ExistingTopic {
                    partitions: 1,
                    config: BTreeMap::from([("cleanup.policy".into(), "compact".into())]),
                },
            ),
        ]);
        let p = plan(&d, &have);
        assert_eq!(p.reconfigure.len(), 1);
        assert_eq!(p.reconfigure[0].name, "ps.db.t");
    }
}
