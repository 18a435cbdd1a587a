//! The Lua guard against real Redis servers (standalone, the local Cluster and
//! the TLS port): newer versions win, replays and older versions are refused,
//! a delete beats an upsert of its version and keeps late upserts out, list
//! membership follows moves between users, removal tombstones are collected
//! after their TTL, marks report what Redis lost, and a server that lost the
//! script gets it again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;

use common::Target;
use paystream_consumer::redis_client::{RedisArgs, RedisConn};
use paystream_consumer::sink::{Applied, Sink};
use paystream_core::readmodel::{
    Keys, Mark, ModelStatus, ScriptCall, Version, member, model_status,
};
use paystream_testkit::{Stack, unique_name};

fn doc(keys: &Keys, id: u64, version: Version, json: &str) -> ScriptCall {
    ScriptCall::Doc {
        key: keys.purchase(id),
        version,
        json: json.to_string(),
        tombstone_ttl_ms: 60_000,
    }
}

fn mem(user: u64, id: u64, version: Version, score: i64, now_ms: i64) -> ScriptCall {
    ScriptCall::Member {
        user_id: user,
        purchase_id: id,
        version,
        score,
        tombstone_ttl_ms: 1000,
        now_ms,
    }
}

async fn hash(c: &mut RedisConn, key: &str) -> HashMap<String, String> {
    redis::cmd("HGETALL").arg(key).query_async(c).await.unwrap()
}

async fn list(c: &mut RedisConn, key: &str) -> Vec<String> {
    redis::cmd("ZREVRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .query_async(c)
        .await
        .unwrap()
}

const A: Applied = Applied {
    applied: 1,
    ignored: 0,
};
const I: Applied = Applied {
    applied: 0,
    ignored: 1,
};

async fn guard_semantics(args: RedisArgs, flush_scripts: impl AsyncFn()) {
    let keys = Keys::new(&unique_name("script")).unwrap();
    let mut sink = Sink::new(args.clone(), keys.clone(), 100);
    let mut c = args.connect().await.unwrap();
    let k = keys.purchase(1);

    assert_eq!(
        sink.apply(&[doc(&keys, 1, Version::live(2), "v2")])
            .await
            .unwrap(),
        A
    );
    assert_eq!(
        sink.apply(&[doc(&keys, 1, Version::live(2), "v2'")])
            .await
            .unwrap(),
        I,
        "replay"
    );
    assert_eq!(
        sink.apply(&[doc(&keys, 1, Version::live(1), "v1")])
            .await
            .unwrap(),
        I,
        "older"
    );
    assert_eq!(hash(&mut c, &k).await["d"], "v2");
    assert_eq!(
        sink.apply(&[doc(&keys, 1, Version::live(3), "v3")])
            .await
            .unwrap(),
        A
    );
    assert_eq!(
        sink.apply(&[doc(&keys, 1, Version::deleted(3), "")])
            .await
            .unwrap(),
        A,
        "delete wins a tie"
    );
    let h = hash(&mut c, &k).await;
    assert_eq!(
        (h["v"].as_str(), h["del"].as_str(), h.get("d")),
        ("3", "1", None)
    );
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&k)
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 60_000, "tombstone expires: {ttl}");
    for late in [Version::live(3), Version::live(2), Version::deleted(3)] {
        assert_eq!(
            sink.apply(&[doc(&keys, 1, late, "late")]).await.unwrap(),
            I,
            "{late:?}"
        );
    }
    assert_eq!(hash(&mut c, &k).await["del"], "1");

    // Membership: add, move to another user, stale re-add, delete, late add.
    let (u5, u6) = (keys.user_purchases(5), keys.user_purchases(6));
    assert_eq!(
        sink.apply(&[mem(5, 9, Version::live(1), 100, 0)])
            .await
            .unwrap(),
        A
    );
    assert_eq!(list(&mut c, &u5).await, vec![member(9)]);
    let moved = sink
        .apply(&[
            mem(5, 9, Version::deleted(2), 100, 0),
            mem(6, 9, Version::live(2), 100, 0),
        ])
        .await
        .unwrap();
    assert_eq!(moved.applied, 2);
    assert_eq!(
        sink.apply(&[mem(5, 9, Version::live(1), 100, 0)])
            .await
            .unwrap(),
        I
    );
    assert!(list(&mut c, &u5).await.is_empty());
    assert_eq!(list(&mut c, &u6).await, vec![member(9)]);
    assert_eq!(
        sink.apply(&[mem(6, 9, Version::deleted(3), 0, 0)])
            .await
            .unwrap(),
        A
    );
    assert_eq!(
        sink.apply(&[mem(6, 9, Version::live(3), 100, 0)])
            .await
            .unwrap(),
        I
    );
    assert!(list(&mut c, &u6).await.is_empty());
    // Ordering: newest first, ties broken by id.
    sink.apply(&[
        mem(7, 1, Version::live(1), 50, 0),
        mem(7, 2, Version::live(1), 70, 0),
        mem(7, 3, Version::live(1), 70, 0),
    ])
    .await
    .unwrap();
    assert_eq!(
        list(&mut c, &keys.user_purchases(7)).await,
        vec![member(3), member(2), member(1)]
    );
    // Removal tombstones (TTL 1 s) are collected by a later write after expiry.
    let pver = keys.user_versions(6);
    assert!(hash(&mut c, &pver).await.contains_key(&member(9)));
    sink.apply(&[mem(6, 10, Version::live(1), 1, 5_000)])
        .await
        .unwrap();
    let left = hash(&mut c, &pver).await;
    assert!(!left.contains_key(&member(9)), "collected: {left:?}");
    assert!(left.contains_key(&member(10)));

    // Marks: only existing marks advance; missing ones are reported.
    let f = "t#0".to_string();
    assert_eq!(
        sink.advance_marks(&[(f.clone(), Mark::Live(5))])
            .await
            .unwrap(),
        vec![f.clone()]
    );
    sink.write_meta(&[
        (f.clone(), Mark::Rebuilding(0).encode()),
        ("n:t".into(), "1".into()),
    ])
    .await
    .unwrap();
    assert_eq!(
        model_status(&sink.all_meta().await.unwrap(), &["t"]),
        ModelStatus::Rebuilding
    );
    assert!(
        sink.advance_marks(&[(f.clone(), Mark::Live(5))])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        sink.read_marks(std::slice::from_ref(&f)).await.unwrap(),
        vec![Some(Mark::Live(5))]
    );
    assert_eq!(
        model_status(&sink.all_meta().await.unwrap(), &["t"]),
        ModelStatus::Complete
    );

    // A server that lost the script gets it again.
    flush_scripts().await;
    assert_eq!(
        sink.apply(&[doc(&keys, 2, Version::live(1), "x")])
            .await
            .unwrap(),
        A
    );
    flush_scripts().await;
    assert!(
        sink.advance_marks(&[(f, Mark::Live(6))])
            .await
            .unwrap()
            .is_empty()
    );
}

async fn flush_standalone(url: &str) {
    let mut c = RedisArgs::standalone(url).connect().await.unwrap();
    let _: String = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut c)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_guard_on_a_standalone_server() {
    let url = Stack::from_env().redis_url();
    guard_semantics(RedisArgs::standalone(&url), async || {
        flush_standalone(&url).await
    })
    .await;
}

#[tokio::test]
async fn the_guard_on_a_cluster() {
    let target = Target::cluster();
    let Target::Cluster { nodes, password } = &target else {
        unreachable!()
    };
    let urls: Vec<String> = nodes
        .iter()
        .map(|n| format!("redis://:{password}@{n}/"))
        .collect();
    guard_semantics(target.args(), async || {
        for u in &urls {
            flush_standalone(u).await;
        }
    })
    .await;
}

#[tokio::test]
async fn the_guard_over_tls() {
    let stack = Stack::from_env();
    let mut args = RedisArgs::standalone(&format!("redis://127.0.0.1:{}/0", stack.redis_tls_port));
    args.redis_tls = true;
    args.redis_tls_ca = Some(stack.tls_ca.clone());
    args.redis_password = Some(stack.redis_password.clone());
    let url = stack.redis_url();
    guard_semantics(args.clone(), async || flush_standalone(&url).await).await;
    // Without the CA the server's certificate is not trusted.
    args.redis_tls_ca = None;
    assert!(args.connect().await.is_err());
}
