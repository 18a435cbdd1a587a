//! The final checks, once writing has stopped. First the read model must
//! converge: testkit's `checker::compare` of the private Redis with the
//! scratch database is polled until it finds no difference (or the settle
//! time runs out). Then every row is classified against MySQL's final state
//! in three places: the Redis documents, the API (`GET /v1/purchases/{id}`
//! for every row and every touched id, every user's list page by page), and
//! the change topics read `read_committed` from the beginning, where each
//! key's versions must form a chain without gaps or repeats that ends in
//! MySQL's state. The classification functions are pure and tested here.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use paystream_core::readmodel::{Keys, PurchaseView};
use paystream_testkit::Stack;
use paystream_testkit::checker;
use paystream_testkit::unique_name;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::Serialize;
use serde_json::Value as Json;
use tokio::time::Instant;

use super::api::Api;
use crate::cdc::partitions;
use crate::mysql::admin;

/// A row's state as a version: live at `v`, or deleted after `v`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Live at this version.
    Live(u64),
    /// Deleted; the version it had.
    Deleted(u64),
}

/// One change event, as far as the chain check cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ev {
    /// The row's id (the key's `id`).
    pub id: u64,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// The state after the event; `None` for a tombstone.
    pub state: Option<State>,
}

/// What the chain check found on one topic.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Chains {
    /// Keys seen (plus MySQL rows with no event).
    pub keys: usize,
    /// Events (tombstones not counted).
    pub events: usize,
    /// Repeated `(key, version)` events.
    pub dups: usize,
    /// Rows whose chain misses a version (or continues after a delete).
    pub gaps: BTreeSet<u64>,
    /// Rows whose last event is not MySQL's final state.
    pub tail: BTreeSet<u64>,
    /// The first problems, described.
    pub examples: Vec<String>,
}

impl Chains {
    fn note(&mut self, what: String) {
        if self.examples.len() < 20 {
            self.examples.push(what);
        }
    }
}

/// Parses a record into an [`Ev`] (`None` if its key is not `{"id":N}`).
pub fn event(key: Option<&[u8]>, value: Option<&[u8]>, partition: i32, offset: i64) -> Option<Ev> {
    let id = serde_json::from_slice::<Json>(key?).ok()?["id"].as_u64()?;
    let state = match value {
        None => None,
        Some(v) => {
            let v: Json = serde_json::from_slice(v).ok()?;
            Some(if v["op"] == "d" {
                State::Deleted(v["before"]["version"].as_u64()?)
            } else {
                State::Live(v["after"]["version"].as_u64()?)
            })
        }
    };
    Some(Ev {
        id,
        partition,
        offset,
        state,
    })
}

/// Whether `next` may follow `last` in one key's chain; `first_version` is
/// what a key's first event must carry.
fn follows(last: Option<State>, next: State, first_version: u64) -> bool {
    match (last, next) {
        (None, State::Live(v)) => v == first_version,
        (None, State::Deleted(_)) => false,
        (Some(State::Live(p)), State::Live(v)) => v == p + 1,
        (Some(State::Live(p)), State::Deleted(v)) => v == p,
        (Some(State::Deleted(_)), _) => false,
    }
}

/// Checks every key's chain of `events` against `finals` (MySQL's version
/// of every live row). `moves` are primary-key changes `(old, new)`: the new
/// key's chain starts one version after the old key's delete.
pub fn check_chains(events: &[Ev], moves: &[(u64, u64)], finals: &HashMap<u64, u64>) -> Chains {
    let mut sorted: Vec<&Ev> = events.iter().collect();
    sorted.sort_by_key(|e| (e.partition, e.offset));
    let mut by_key: HashMap<u64, Vec<State>> = HashMap::new();
    for e in sorted {
        if let Some(s) = e.state {
            by_key.entry(e.id).or_default().push(s);
        }
    }
    let moved_from: HashMap<u64, u64> = moves.iter().map(|&(old, new)| (new, old)).collect();
    let mut keys: BTreeSet<u64> = by_key.keys().copied().collect();
    keys.extend(finals.keys());
    let mut out = Chains {
        keys: keys.len(),
        ..Chains::default()
    };
    let mut last_of: HashMap<u64, Option<State>> = HashMap::new();
    for &id in &keys {
        let chain = by_key.get(&id).map(Vec::as_slice).unwrap_or_default();
        out.events += chain.len();
        let first = moved_from
            .get(&id)
            .and_then(|old| by_key.get(old)?.last().copied())
            .map_or(1, |s| match s {
                State::Live(v) | State::Deleted(v) => v + 1,
            });
        let mut seen = HashSet::new();
        let mut last = None;
        for &s in chain {
            if !seen.insert(s) {
                out.dups += 1;
                out.note(format!("key {id}: {s:?} repeated"));
                continue;
            }
            if !follows(last, s, first) && out.gaps.insert(id) {
                out.note(format!("key {id}: {s:?} after {last:?}"));
            }
            last = Some(s);
        }
        last_of.insert(id, last);
    }
    for (&id, &last) in &last_of {
        let ok = match (finals.get(&id), last) {
            (Some(&v), Some(State::Live(l))) => l == v,
            (Some(_), _) => false,
            (None, Some(State::Live(_))) => false,
            (None, _) => true,
        };
        if !ok && out.tail.insert(id) {
            out.note(format!(
                "key {id}: ends at {last:?}, MySQL has {:?}",
                finals.get(&id)
            ));
        }
    }
    out
}

/// Reads `topic` from the beginning (`read_committed`) to its end.
pub fn read_topic(stack: &Stack, topic: &str) -> anyhow::Result<Vec<Ev>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &stack.kafka_bootstrap)
        .set("group.id", unique_name("chaos-verify"))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()?;
    let parts = partitions(&consumer, topic, Duration::from_secs(30))?;
    let mut tpl = TopicPartitionList::new();
    for &p in &parts {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let start = std::time::Instant::now();
    let mut out = Vec::new();
    let mut done: HashSet<i32> = HashSet::new();
    let mut idle = 0;
    while done.len() < parts.len() {
        if start.elapsed() > Duration::from_secs(300) {
            anyhow::bail!("reading {topic} took more than 300 s");
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                idle = 0;
                if let Some(e) = event(m.key(), m.payload(), m.partition(), m.offset()) {
                    out.push(e);
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                done.insert(p);
            }
            Some(Err(e)) => anyhow::bail!("reading {topic}: {e}"),
            None => {
                idle += 1;
                // Nothing for 10 s: the end, whatever EOF says.
                if idle >= 50 {
                    break;
                }
            }
        }
    }
    Ok(out)
}

// ---- Redis and the API ----------------------------------------------------------------

/// Rows the three places disagree with MySQL about.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Verdicts {
    /// MySQL's final state is not there.
    pub lost: BTreeSet<u64>,
    /// An older state is there.
    pub stale: BTreeSet<u64>,
    /// A newer state than MySQL's is there, or different fields.
    pub wrong: BTreeSet<u64>,
    /// No usable answer.
    pub errors: usize,
    /// Lists not in MySQL's newest-first order.
    pub misordered_lists: usize,
    /// The first problems, described.
    pub examples: Vec<String>,
}

impl Verdicts {
    fn note(&mut self, what: String) {
        if self.examples.len() < 20 {
            self.examples.push(what);
        }
    }
}

/// What Redis holds for a purchase: `(version, deleted)`, or nothing.
pub type Stored = Option<(u64, bool)>;

/// Classifies the stored state of `id` against MySQL's version.
pub fn classify(v: &mut Verdicts, id: u64, mysql: Option<u64>, stored: Stored, place: &str) {
    match (mysql, stored) {
        (Some(m), Some((s, false))) if s == m => {}
        (Some(m), Some((s, false))) if s < m => {
            v.stale.insert(id);
            v.note(format!("{place}: purchase {id} at v{s}, MySQL v{m}"));
        }
        (Some(m), Some((s, false))) => {
            v.wrong.insert(id);
            v.note(format!(
                "{place}: purchase {id} at v{s}, newer than MySQL v{m}"
            ));
        }
        (Some(m), _) => {
            v.lost.insert(id);
            v.note(format!("{place}: purchase {id} (MySQL v{m}) is missing"));
        }
        (None, Some((s, false))) => {
            v.stale.insert(id);
            v.note(format!(
                "{place}: purchase {id} is deleted in MySQL but live at v{s}"
            ));
        }
        (None, _) => {}
    }
}

/// The read model's `(v, del)` of every id in `ids`.
pub async fn redis_states(
    url: &str,
    keys: &Keys,
    ids: &[u64],
) -> anyhow::Result<HashMap<u64, Stored>> {
    let client = redis::Client::open(url)?;
    let mut c = client.get_multiplexed_async_connection().await?;
    let mut out = HashMap::new();
    for chunk in ids.chunks(500) {
        let mut p = redis::pipe();
        for id in chunk {
            p.cmd("HMGET").arg(keys.purchase(*id)).arg("v").arg("del");
        }
        let got: Vec<(Option<u64>, Option<String>)> = p.query_async(&mut c).await?;
        for (id, (v, del)) in chunk.iter().zip(got) {
            out.insert(*id, v.map(|v| (v, del.as_deref() == Some("1"))));
        }
    }
    Ok(out)
}

/// Polls the checker until Redis equals MySQL or `cap` passes; returns the
/// last report and the seconds it took.
pub async fn converge(
    stack: &Stack,
    db: &str,
    url: &str,
    keys: &Keys,
    cap: Duration,
) -> (Option<checker::Report>, f64) {
    let start = Instant::now();
    let mut last = None;
    loop {
        let attempt = async {
            let mut my = admin(stack).await?;
            let client = redis::Client::open(url)?;
            let redis = client.get_multiplexed_async_connection().await?;
            anyhow::Ok(checker::compare(&mut my, db, &redis, keys).await?)
        };
        match attempt.await {
            Ok(r) if r.is_equal() => return (Some(r), start.elapsed().as_secs_f64()),
            Ok(r) => last = Some(r),
            Err(e) => eprintln!("chaos: checker: {e}"),
        }
        if start.elapsed() >= cap || super::interrupted() {
            return (last, start.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Reads every id of `ids` through the API and classifies the answers.
pub async fn api_by_id(
    api: &Api,
    ids: &[u64],
    mysql: &HashMap<u64, PurchaseView>,
    v: &mut Verdicts,
) {
    let answers: Vec<(u64, anyhow::Result<super::api::Answer>)> =
        futures::stream::iter(ids.iter().copied())
            .map(|id| async move { (id, api.get(&format!("/v1/purchases/{id}")).await) })
            .buffer_unordered(16)
            .collect()
            .await;
    for (id, a) in answers {
        let want = mysql.get(&id);
        let stored = match a {
            Ok(a) if a.status == 200 => match serde_json::from_slice::<PurchaseView>(&a.body) {
                Ok(got) => {
                    if a.etag != Some(got.version) {
                        v.wrong.insert(id);
                        v.note(format!(
                            "API: purchase {id}: ETag {:?} but document v{}",
                            a.etag, got.version
                        ));
                    }
                    if let Some(m) = want
                        && got.version == m.version
                        && &got != m
                    {
                        v.wrong.insert(id);
                        v.note(format!(
                            "API: purchase {id} v{}: {got:?} but MySQL {m:?}",
                            got.version
                        ));
                    }
                    Some((got.version, false))
                }
                Err(_) => {
                    v.errors += 1;
                    continue;
                }
            },
            Ok(a) if a.status == 404 => None,
            _ => {
                v.errors += 1;
                v.note(format!("API: purchase {id}: no usable answer"));
                continue;
            }
        };
        classify(v, id, want.map(|m| m.version), stored, "API");
    }
}

/// Compares one user's list (ids and versions, newest first) with MySQL's.
pub fn compare_list(v: &mut Verdicts, user: u64, want: &[(u64, u64)], got: &[(u64, u64)]) {
    let w: HashMap<u64, u64> = want.iter().copied().collect();
    let g: HashMap<u64, u64> = got.iter().copied().collect();
    for (id, ver) in want {
        classify(
            v,
            *id,
            Some(*ver),
            g.get(id).map(|&s| (s, false)),
            "API list",
        );
    }
    for (id, ver) in got {
        if !w.contains_key(id) {
            classify(v, *id, None, Some((*ver, false)), "API list");
        }
    }
    let order_w: Vec<u64> = want
        .iter()
        .map(|x| x.0)
        .filter(|id| g.contains_key(id))
        .collect();
    let order_g: Vec<u64> = got
        .iter()
        .map(|x| x.0)
        .filter(|id| w.contains_key(id))
        .collect();
    if order_w != order_g {
        v.misordered_lists += 1;
        v.note(format!(
            "API list of user {user}: not in MySQL's newest-first order"
        ));
    }
}

/// Every page of `user`'s list through the API: `(id, version)` in order.
pub async fn api_list(api: &Api, user: u64) -> anyhow::Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10_000 {
        let path = match &cursor {
            None => format!("/v1/users/{user}/purchases?limit=100"),
            Some(c) => format!("/v1/users/{user}/purchases?limit=100&cursor={c}"),
        };
        let a = api.get(&path).await?;
        if a.status != 200 {
            anyhow::bail!("GET {path}: {}", a.status);
        }
        let page: Json = serde_json::from_slice(&a.body)?;
        for item in page["items"].as_array().into_iter().flatten() {
            if let (Some(id), Some(ver)) = (item["id"].as_u64(), item["version"].as_u64()) {
                out.push((id, ver));
            }
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return Ok(out),
        }
    }
    anyhow::bail!("user {user}: more than 10,000 pages")
}

/// MySQL's lists: per user, `(id, version)` newest first by `(created_at, id)`.
pub fn mysql_lists(rows: &[PurchaseView]) -> HashMap<u64, Vec<(u64, u64)>> {
    let mut by_user: HashMap<u64, Vec<&PurchaseView>> = HashMap::new();
    for r in rows {
        by_user.entry(r.user_id).or_default().push(r);
    }
    by_user
        .into_iter()
        .map(|(u, mut rs)| {
            rs.sort_by_key(|r| std::cmp::Reverse((r.created_at, r.id)));
            (u, rs.iter().map(|r| (r.id, r.version)).collect())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use State::{Deleted, Live};

    fn ev(id: u64, offset: i64, state: Option<State>) -> Ev {
        Ev {
            id,
            partition: 0,
            offset,
            state,
        }
    }

    fn finals(v: &[(u64, u64)]) -> HashMap<u64, u64> {
        v.iter().copied().collect()
    }

    #[test]
    fn a_clean_history_passes() {
        let evs = vec![
            ev(1, 0, Some(Live(1))),
            ev(2, 1, Some(Live(1))),
            ev(1, 2, Some(Live(2))),
            ev(2, 3, Some(Deleted(1))),
            ev(2, 4, None),
        ];
        let c = check_chains(&evs, &[], &finals(&[(1, 2)]));
        assert_eq!((c.dups, c.gaps.len(), c.tail.len()), (0, 0, 0), "{c:?}");
        // A primary-key change: 2 is deleted at v1, 3 starts at v2.
        let evs2 = vec![
            ev(2, 0, Some(Live(1))),
            ev(2, 1, Some(Deleted(1))),
            ev(3, 2, Some(Live(2))),
        ];
        let c = check_chains(&evs2, &[(2, 3)], &finals(&[(3, 2)]));
        assert_eq!((c.dups, c.gaps.len(), c.tail.len()), (0, 0, 0), "{c:?}");
        assert_eq!(c.events, 3);
    }

    #[test]
    fn repeats_gaps_and_tails_are_found() {
        let evs = vec![
            ev(1, 0, Some(Live(1))),
            ev(1, 1, Some(Live(2))),
            ev(1, 2, Some(Live(2))),
            ev(2, 3, Some(Live(1))),
            ev(2, 4, Some(Live(3))),
            ev(3, 5, Some(Live(1))),
        ];
        let c = check_chains(&evs, &[], &finals(&[(1, 2), (2, 3), (3, 2), (4, 1)]));
        assert_eq!(c.dups, 1);
        assert_eq!(c.gaps, BTreeSet::from([2]));
        assert_eq!(c.tail, BTreeSet::from([3, 4]));
        assert_eq!(c.keys, 4);
    }

    #[test]
    fn deletes_must_reach_kafka_and_stay() {
        let live_after_delete = vec![
            ev(1, 0, Some(Live(1))),
            ev(1, 1, Some(Deleted(1))),
            ev(1, 2, Some(Live(2))),
        ];
        let c = check_chains(&live_after_delete, &[], &finals(&[]));
        assert_eq!(c.gaps, BTreeSet::from([1]));
        let never_deleted = vec![ev(5, 0, Some(Live(1)))];
        assert_eq!(
            check_chains(&never_deleted, &[], &finals(&[])).tail,
            BTreeSet::from([5])
        );
        let moved_wrong = vec![
            ev(2, 0, Some(Live(1))),
            ev(2, 1, Some(Deleted(1))),
            ev(3, 2, Some(Live(1))),
        ];
        assert_eq!(
            check_chains(&moved_wrong, &[(2, 3)], &finals(&[(3, 1)])).gaps,
            BTreeSet::from([3])
        );
    }

    #[test]
    fn events_are_parsed() {
        let e = event(
            Some(br#"{"id":7}"#),
            Some(br#"{"op":"u","before":{"version":1},"after":{"version":2}}"#),
            1,
            5,
        );
        assert_eq!(
            e,
            Some(Ev {
                id: 7,
                partition: 1,
                offset: 5,
                state: Some(Live(2))
            })
        );
        let d = event(
            Some(br#"{"id":7}"#),
            Some(br#"{"op":"d","before":{"version":2},"after":null}"#),
            1,
            6,
        );
        assert_eq!(d.and_then(|e| e.state), Some(Deleted(2)));
        assert_eq!(
            event(Some(br#"{"id":7}"#), None, 1, 7).map(|e| e.state),
            Some(None)
        );
        assert!(event(None, None, 0, 0).is_none());
        assert!(event(Some(b"x"), None, 0, 0).is_none());
    }

    #[test]
    fn stored_states_are_classified() {
        let mut v = Verdicts::default();
        classify(&mut v, 1, Some(3), Some((3, false)), "r");
        classify(&mut v, 2, Some(3), Some((2, false)), "r");
        classify(&mut v, 3, Some(3), None, "r");
        classify(&mut v, 4, Some(3), Some((3, true)), "r");
        classify(&mut v, 5, None, Some((3, false)), "r");
        classify(&mut v, 6, None, Some((3, true)), "r");
        classify(&mut v, 7, None, None, "r");
        classify(&mut v, 8, Some(1), Some((2, false)), "r");
        assert_eq!(v.stale, BTreeSet::from([2, 5]));
        assert_eq!(v.lost, BTreeSet::from([3, 4]));
        assert_eq!(v.wrong, BTreeSet::from([8]));
    }

    #[test]
    fn lists_are_compared_in_order() {
        let mut v = Verdicts::default();
        compare_list(
            &mut v,
            1,
            &[(3, 1), (2, 2), (1, 1)],
            &[(3, 1), (2, 2), (1, 1)],
        );
        assert_eq!((v.lost.len(), v.stale.len(), v.misordered_lists), (0, 0, 0));
        compare_list(
            &mut v,
            1,
            &[(3, 1), (2, 2), (1, 1)],
            &[(2, 2), (3, 1), (9, 1)],
        );
        assert_eq!(v.lost, BTreeSet::from([1]));
        assert_eq!(v.stale, BTreeSet::from([9]));
        assert_eq!(v.misordered_lists, 1);
    }
}
