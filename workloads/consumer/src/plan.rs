//! Plans one batch: from change-topic records to the guarded Redis writes that
//! apply them, the dead letters, and the offsets to commit. Pure.
//!
//! Every write carries its row version, so the plan keeps only the newest
//! write per target (a document, or one purchase's place in one user's list):
//! the others could not land anyway. What remains is order-free, which lets
//! the sink pipeline the writes and, in Redis Cluster, send each slot's share
//! on its own. An update that moves a purchase to another user also removes
//! it from the old user's list, guarded by the same version.

use std::collections::BTreeMap;

use paystream_core::readmodel::{Keys, ScriptCall, Version, score};

use crate::deadletter::DeadLetter;
use crate::decode::{Change, Decoded, Table, decode};

/// One record as read from Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Value bytes; `None` for a tombstone.
    pub payload: Option<Vec<u8>>,
}

/// What the planner needs to know.
#[derive(Debug, Clone)]
pub struct PlanSettings {
    /// The read model's keys.
    pub keys: Keys,
    /// Change topic to table.
    pub topics: BTreeMap<String, Table>,
    /// Lifetime of delete tombstones.
    pub tombstone_ttl_ms: u64,
    /// The consumer group (named in dead letters).
    pub group: String,
}

/// A topic and partition.
pub type TopicPartition = (String, i32);

/// The plan of one batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Guarded writes, at most one per target, in no particular order.
    pub calls: Vec<ScriptCall>,
    /// Records that go to the dead-letter topic.
    pub dead_letters: Vec<DeadLetter>,
    /// Per partition, the offset to commit (last record + 1).
    pub next_offsets: BTreeMap<TopicPartition, i64>,
    /// Change events decoded.
    pub events: usize,
    /// Tombstones seen.
    pub tombstones: usize,
    /// Records of topics the model does not use.
    pub ignored: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Doc(String),
    Member(u64, u64),
}

/// Plans `records` (in any order; offsets per partition are taken as the max).
/// `now_ms` is the writer's clock, for tombstone expiry.
pub fn plan(records: &[Record], settings: &PlanSettings, now_ms: i64) -> Plan {
    let mut out = Plan::default();
    let mut best: BTreeMap<Target, ScriptCall> = BTreeMap::new();
    let ttl = settings.tombstone_ttl_ms;
    let mut put = |target: Target, call: ScriptCall| match best.get(&target) {
        Some(have) if have.version().rank() >= call.version().rank() => {}
        _ => {
            best.insert(target, call);
        }
    };
    for r in records {
        let next = out
            .next_offsets
            .entry((r.topic.clone(), r.partition))
            .or_insert(r.offset + 1);
        *next = (*next).max(r.offset + 1);
        let Some(table) = settings.topics.get(&r.topic) else {
            out.ignored += 1;
            continue;
        };
        let change = match decode(*table, r.key.as_deref(), r.payload.as_deref()) {
            Ok(Decoded::Tombstone) => {
                out.tombstones += 1;
                continue;
            }
            Ok(Decoded::Change(c)) => c,
            Err(reject) => {
                out.dead_letters.push(DeadLetter::new(
                    reject.to_string(),
                    (&r.topic, r.partition, r.offset),
                    r.key.as_deref(),
                    r.payload.as_deref(),
                    &settings.group,
                ));
                continue;
            }
        };
        out.events += 1;
        let keys = &settings.keys;
        match change {
            Change::PurchaseUpsert { view, moved_from } => {
                let version = Version::live(view.version);
                let member = |user_id, version| ScriptCall::Member {
                    user_id,
                    purchase_id: view.id,
                    version,
                    score: score(view.created_at),
                    tombstone_ttl_ms: ttl,
                    now_ms,
                };
                if let Some(old) = moved_from {
                    put(
                        Target::Member(old, view.id),
                        member(old, Version::deleted(view.version)),
                    );
                }
                put(
                    Target::Member(view.user_id, view.id),
                    member(view.user_id, version),
                );
                let key = keys.purchase(view.id);
                let json = serde_json::to_string(&view).unwrap_or_default();
                put(
                    Target::Doc(key.clone()),
                    ScriptCall::Doc {
                        key,
                        version,
                        json,
                        tombstone_ttl_ms: ttl,
                    },
                );
            }
            Change::PurchaseDelete {
                id,
                user_id,
                version,
            } => {
                let version = Version::deleted(version);
                put(
                    Target::Member(user_id, id),
                    ScriptCall::Member {
                        user_id,
                        purchase_id: id,
                        version,
                        score: 0,
                        tombstone_ttl_ms: ttl,
                        now_ms,
                    },
                );
                let key = keys.purchase(id);
                put(
                    Target::Doc(key.clone()),
                    ScriptCall::Doc {
                        key,
                        version,
                        json: String::new(),
                        tombstone_ttl_ms: ttl,
                    },
                );
            }
            Change::PackageUpsert { view } => {
                let key = keys.package(view.id);
                let json = serde_json::to_string(&view).unwrap_or_default();
                put(
                    Target::Doc(key.clone()),
                    ScriptCall::Doc {
                        key,
                        version: Version::live(view.version),
                        json,
                        tombstone_ttl_ms: ttl,
                    },
                );
            }
            Change::PackageDelete { id, version } => {
                let key = keys.package(id);
                put(
                    Target::Doc(key.clone()),
                    ScriptCall::Doc {
                        key,
                        version: Version::deleted(version),
                        json: String::new(),
                        tombstone_ttl_ms: ttl,
                    },
                );
            }
        }
    }
    out.calls = best.into_values().collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::tests::{envelope, purchase_row};
    use serde_json::Value;

    fn settings() -> PlanSettings {
        PlanSettings {
            keys: Keys::new("ps").unwrap(),
            topics: [
                ("ps.payments.purchases".to_string(), Table::Purchases),
                ("ps.payments.packages".to_string(), Table::Packages),
            ]
            .into(),
            tombstone_ttl_ms: 1000,
            group: "g".into(),
        }
    }

    fn rec(offset: i64, id: u64, payload: Option<Vec<u8>>) -> Record {
        Record {
            topic: "ps.payments.purchases".into(),
            partition: 0,
            offset,
            key: Some(format!("{{\"id\":{id}}}").into_bytes()),
            payload,
        }
    }

    #[test]
    fn keeps_the_newest_write_per_target() {
        let recs = vec![
            rec(
                10,
                1,
                Some(envelope(
                    "purchases",
                    "c",
                    Value::Null,
                    purchase_row(1, 5, 1),
                )),
            ),
            rec(
                11,
                1,
                Some(envelope(
                    "purchases",
                    "u",
                    purchase_row(1, 5, 1),
                    purchase_row(1, 5, 2),
                )),
            ),
            rec(
                12,
                1,
                Some(envelope(
                    "purchases",
                    "c",
                    Value::Null,
                    purchase_row(1, 5, 1),
                )),
            ),
        ];
        let p = plan(&recs, &settings(), 0);
        assert_eq!(p.events, 3);
        assert_eq!(p.calls.len(), 2, "one doc and one membership: {p:#?}");
        assert!(p.calls.iter().all(|c| c.version() == Version::live(2)));
        assert_eq!(p.next_offsets[&("ps.payments.purchases".into(), 0)], 13);
    }

    #[test]
    fn a_delete_beats_the_upsert_of_its_version_and_tombstones_do_nothing() {
        let recs = vec![
            rec(
                1,
                1,
                Some(envelope(
                    "purchases",
                    "d",
                    purchase_row(1, 5, 3),
                    Value::Null,
                )),
            ),
            rec(2, 1, None),
            rec(
                3,
                1,
                Some(envelope(
                    "purchases",
                    "r",
                    Value::Null,
                    purchase_row(1, 5, 3),
                )),
            ),
        ];
        let p = plan(&recs, &settings(), 0);
        assert_eq!(p.tombstones, 1);
        assert_eq!(p.calls.len(), 2);
        assert!(p.calls.iter().all(|c| c.version() == Version::deleted(3)));
    }

    #[test]
    fn a_move_to_another_user_removes_the_old_membership() {
        let recs = vec![rec(
            0,
            1,
            Some(envelope(
                "purchases",
                "u",
                purchase_row(1, 5, 1),
                purchase_row(1, 6, 2),
            )),
        )];
        let p = plan(&recs, &settings(), 0);
        let members: Vec<(u64, Version)> = p
            .calls
            .iter()
            .filter_map(|c| match c {
                ScriptCall::Member {
                    user_id, version, ..
                } => Some((*user_id, *version)),
                _ => None,
            })
            .collect();
        assert_eq!(
            members,
            vec![(5, Version::deleted(2)), (6, Version::live(2))]
        );
    }

    #[test]
    fn bad_records_become_dead_letters_and_still_advance_offsets() {
        let mut bad = rec(7, 1, Some(b"{oops".to_vec()));
        bad.partition = 2;
        let other = Record {
            topic: "ps.payments.users".into(),
            ..rec(9, 1, None)
        };
        let p = plan(&[bad, other], &settings(), 0);
        assert!(p.calls.is_empty());
        assert_eq!(p.dead_letters.len(), 1);
        assert_eq!(p.dead_letters[0].offset, 7);
        assert_eq!(p.dead_letters[0].payload.as_deref(), Some("{oops"));
        assert_eq!(p.ignored, 1);
        assert_eq!(p.next_offsets[&("ps.payments.purchases".into(), 2)], 8);
        assert_eq!(p.next_offsets[&("ps.payments.users".into(), 0)], 10);
    }
}
