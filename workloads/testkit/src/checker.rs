//! The read-model checker: reads MySQL and Redis and compares them row by
//! row. Every purchase and package that MySQL holds must be in Redis, live,
//! at the same version, with the same document; every id MySQL does not hold
//! (up to the table's AUTO_INCREMENT) must be absent or a tombstone in Redis;
//! every user's list must hold exactly that user's purchases, newest first,
//! with `created_at` as the score. The consumer's tests, the API's and the
//! e2e suite use it to say "Redis equals MySQL".
//!
//! It reads key by key (no SCAN, no multi-key commands), so it works the same
//! against a standalone server and a Redis Cluster.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use mysql_async::Conn;
use mysql_async::prelude::*;
use paystream_core::model::PurchaseStatus;
use paystream_core::readmodel::{Keys, PackageView, PurchaseView, member, score};
use redis::aio::ConnectionLike;
use serde::de::DeserializeOwned;

/// The comparison could not run.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// MySQL failed.
    #[error("mysql: {0}")]
    Mysql(#[from] mysql_async::Error),
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// MySQL returned something the read model cannot represent.
    #[error("data: {0}")]
    Data(String),
}

/// The outcome of one comparison.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Purchases in MySQL.
    pub purchases: usize,
    /// Packages in MySQL.
    pub packages: usize,
    /// Users whose lists were compared.
    pub users: usize,
    /// Ids checked for absence (deleted or never written).
    pub absent_checked: usize,
    /// Number of differences found.
    pub mismatches: usize,
    /// The first differences, described.
    pub examples: Vec<String>,
}

impl Report {
    /// Redis equals MySQL.
    pub fn is_equal(&self) -> bool {
        self.mismatches == 0
    }

    fn differ(&mut self, what: String) {
        self.mismatches += 1;
        if self.examples.len() < 20 {
            self.examples.push(what);
        }
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} purchases, {} packages, {} users, {} absent ids checked: {} differences",
            self.purchases, self.packages, self.users, self.absent_checked, self.mismatches
        )?;
        for e in &self.examples {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

fn time(s: &str) -> Result<DateTime<Utc>, CheckError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| CheckError::Data(format!("timestamp {s:?}: {e}")))
}

fn decimal(s: &str) -> Result<rust_decimal::Decimal, CheckError> {
    s.parse()
        .map_err(|e| CheckError::Data(format!("decimal {s:?}: {e}")))
}

/// Purchases of `db` as the read model should show them.
pub async fn mysql_purchases(mysql: &mut Conn, db: &str) -> Result<Vec<PurchaseView>, CheckError> {
    mysql_purchases_in(mysql, db, None).await
}

/// Purchases of `db` whose id is in `ids` (every purchase for `None`), as
/// the read model should show them.
pub async fn mysql_purchases_in(
    mysql: &mut Conn,
    db: &str,
    ids: Option<&[u64]>,
) -> Result<Vec<PurchaseView>, CheckError> {
    let filter = match ids {
        Some([]) => return Ok(Vec::new()),
        Some(ids) => {
            let list: Vec<String> = ids.iter().map(u64::to_string).collect();
            format!(" WHERE id IN ({})", list.join(","))
        }
        None => String::new(),
    };
    type Row = (
        u64,
        u64,
        u64,
        u32,
        String,
        String,
        String,
        String,
        String,
        u64,
    );
    let rows: Vec<Row> = mysql
        .query(format!(
            "SELECT id, user_id, package_id, quantity, CAST(amount AS CHAR), currency, \
             CAST(status AS CHAR), DATE_FORMAT(created_at, '%Y-%m-%dT%H:%i:%s.%fZ'), \
             DATE_FORMAT(updated_at, '%Y-%m-%dT%H:%i:%s.%fZ'), version FROM {db}.purchases{filter}"
        ))
        .await?;
    rows.into_iter()
        .map(|r| {
            Ok(PurchaseView {
                id: r.0,
                user_id: r.1,
                package_id: r.2,
                quantity: r.3,
                amount: decimal(&r.4)?,
                currency: r.5,
                status: PurchaseStatus::parse(&r.6)
                    .ok_or_else(|| CheckError::Data(format!("status {:?}", r.6)))?,
                created_at: time(&r.7)?,
                updated_at: time(&r.8)?,
                version: r.9,
            })
        })
        .collect()
}

/// Packages of `db` as the read model should show them.
pub async fn mysql_packages(mysql: &mut Conn, db: &str) -> Result<Vec<PackageView>, CheckError> {
    type Row = (u64, String, String, String, String, i64, u64);
    let rows: Vec<Row> = mysql
        .query(format!(
            "SELECT id, code, name, CAST(price AS CHAR), currency, active, version FROM {db}.packages"
        ))
        .await?;
    rows.into_iter()
        .map(|r| {
            Ok(PackageView {
                id: r.0,
                code: r.1,
                name: r.2,
                price: decimal(&r.3)?,
                currency: r.4,
                active: r.5 != 0,
                version: r.6,
            })
        })
        .collect()
}

/// The highest id `table` has handed out (AUTO_INCREMENT - 1, or MAX(id)).
async fn id_bound(mysql: &mut Conn, db: &str, table: &str) -> Result<u64, CheckError> {
    let max: Option<u64> = mysql
        .query_first(format!("SELECT COALESCE(MAX(id), 0) FROM {db}.{table}"))
        .await?;
    let next: Option<Option<u64>> = mysql
        .exec_first(
            "SELECT AUTO_INCREMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (db, table),
        )
        .await?;
    let next = next.flatten().unwrap_or(1);
    Ok(max.unwrap_or(0).max(next.saturating_sub(1)))
}

async fn hgetall_all<C>(
    redis: &C,
    keys: Vec<String>,
) -> Result<Vec<HashMap<String, String>>, CheckError>
where
    C: ConnectionLike + Clone + Send + 'static,
{
    let requests: Vec<_> = keys
        .into_iter()
        .map(|k| {
            let mut c = redis.clone();
            async move {
                redis::cmd("HGETALL")
                    .arg(k)
                    .query_async::<HashMap<String, String>>(&mut c)
                    .await
            }
        })
        .collect();
    let results: Vec<_> = futures::stream::iter(requests)
        .buffered(128)
        .collect()
        .await;
    Ok(results.into_iter().collect::<Result<Vec<_>, _>>()?)
}

fn compare_doc<V: DeserializeOwned + PartialEq + Debug>(
    what: &str,
    id: u64,
    want: Option<(&V, u64)>,
    got: &HashMap<String, String>,
) -> Option<String> {
    match want {
        Some((row, version)) => {
            if got.get("del").map(String::as_str) != Some("0") {
                return Some(format!(
                    "{what} {id}: in MySQL (v{version}) but Redis has {got:?}"
                ));
            }
            if got.get("v") != Some(&version.to_string()) {
                return Some(format!(
                    "{what} {id}: MySQL v{version}, Redis v{:?}",
                    got.get("v")
                ));
            }
            let doc: Option<V> = got.get("d").and_then(|d| serde_json::from_str(d).ok());
            if doc.as_ref() != Some(row) {
                return Some(format!(
                    "{what} {id}: MySQL {row:?}, Redis {:?}",
                    got.get("d")
                ));
            }
            None
        }
        None => match got.get("del").map(String::as_str) {
            None | Some("1") => None,
            Some(_) => Some(format!(
                "{what} {id}: not in MySQL but live in Redis: {got:?}"
            )),
        },
    }
}

/// Compares the read model under `keys` in `redis` with database `db`.
pub async fn compare<C>(
    mysql: &mut Conn,
    db: &str,
    redis: &C,
    keys: &Keys,
) -> Result<Report, CheckError>
where
    C: ConnectionLike + Clone + Send + 'static,
{
    let mut report = Report::default();
    let purchases = mysql_purchases(mysql, db).await?;
    let packages = mysql_packages(mysql, db).await?;
    let users: Vec<u64> = mysql.query(format!("SELECT id FROM {db}.users")).await?;
    report.purchases = purchases.len();
    report.packages = packages.len();
    report.users = users.len();

    // Documents, by id up to what MySQL has handed out.
    let by_id: BTreeMap<u64, &PurchaseView> = purchases.iter().map(|p| (p.id, p)).collect();
    let bound = id_bound(mysql, db, "purchases").await?;
    let docs = hgetall_all(redis, (1..=bound).map(|id| keys.purchase(id)).collect()).await?;
    for (id, got) in (1..=bound).zip(&docs) {
        let want = by_id.get(&id).map(|p| (*p, p.version));
        report.absent_checked += usize::from(want.is_none());
        if let Some(d) = compare_doc("purchase", id, want, got) {
            report.differ(d);
        }
    }
    let by_id: BTreeMap<u64, &PackageView> = packages.iter().map(|p| (p.id, p)).collect();
    let bound = id_bound(mysql, db, "packages").await?;
    let docs = hgetall_all(redis, (1..=bound).map(|id| keys.package(id)).collect()).await?;
    for (id, got) in (1..=bound).zip(&docs) {
        let want = by_id.get(&id).map(|p| (*p, p.version));
        report.absent_checked += usize::from(want.is_none());
        if let Some(d) = compare_doc("package", id, want, got) {
            report.differ(d);
        }
    }

    // Lists: exactly the user's purchases, newest first by (created_at, id).
    let mut lists: BTreeMap<u64, Vec<(String, i64)>> =
        users.iter().map(|u| (*u, Vec::new())).collect();
    for p in &purchases {
        lists
            .entry(p.user_id)
            .or_default()
            .push((member(p.id), score(p.created_at)));
    }
    let requests: Vec<_> = lists
        .keys()
        .map(|u| {
            let mut c = redis.clone();
            let key = keys.user_purchases(*u);
            async move {
                redis::cmd("ZREVRANGE")
                    .arg(key)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES")
                    .query_async::<Vec<(String, f64)>>(&mut c)
                    .await
            }
        })
        .collect();
    let got: Vec<_> = futures::stream::iter(requests).buffered(64).collect().await;
    for ((user, want), got) in lists.iter_mut().zip(got) {
        want.sort_by(|a, b| (b.1, &b.0).cmp(&(a.1, &a.0)));
        let got: Vec<(String, i64)> = got?.into_iter().map(|(m, s)| (m, s as i64)).collect();
        if &got != want {
            let extra: Vec<&String> = got
                .iter()
                .filter(|g| !want.contains(g))
                .map(|g| &g.0)
                .take(5)
                .collect();
            let missing: Vec<&String> = want
                .iter()
                .filter(|w| !got.contains(w))
                .map(|w| &w.0)
                .take(5)
                .collect();
            report.differ(format!(
                "user {user}: list of {} in Redis vs {} in MySQL; extra {extra:?}, missing {missing:?}",
                got.len(),
                want.len()
            ));
        }
    }
    Ok(report)
}
