//! The seeded writer: `--writers` connections straight to MariaDB, together
//! aiming at `--rate` row changes a second, each running random transactions
//! of one to six statements: multi-row inserts, status and quantity updates,
//! moves to another user, deletes, primary-key changes (`UPDATE purchases
//! SET id = ...`: the scratch tables are `CREATE TABLE ... LIKE` copies, which
//! carry no foreign keys, so nothing refuses it) and catalogue changes; a few
//! end in ROLLBACK. Each writer owns its rows (so no two writers race on a
//! row) and records every purchase and user it touched. Every transaction
//! also inserts its number into a marker table outside the captured
//! database, so a COMMIT whose outcome was lost with the connection is
//! resolved afterwards by looking the marker up (after killing the old
//! session), and only committed transactions count as written.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mysql_async::prelude::*;
use mysql_async::{Conn, TxOpts};
use paystream_testkit::Stack;
use serde::Serialize;
use tokio::time::Instant;

use super::pipeline::PACKAGES;
use super::rng::Rng;
use super::timeline::Timeline;
use crate::mysql::admin;

// ---- What was touched ------------------------------------------------------------

#[derive(Default)]
struct Sampled {
    set: HashSet<u64>,
    list: Vec<u64>,
}

impl Sampled {
    fn add(&mut self, x: u64) {
        if self.set.insert(x) {
            self.list.push(x);
        }
    }
}

/// Every purchase id and user the run wrote, and the primary-key moves.
#[derive(Default)]
pub struct Touched {
    ids: Mutex<Sampled>,
    users: Mutex<Sampled>,
    moves: Mutex<Vec<(u64, u64)>>,
}

impl Touched {
    /// Records purchase `id`.
    pub fn purchase(&self, id: u64) {
        if let Ok(mut s) = self.ids.lock() {
            s.add(id);
        }
    }

    /// Records user `u`.
    pub fn user(&self, u: u64) {
        if let Ok(mut s) = self.users.lock() {
            s.add(u);
        }
    }

    fn moved(&self, from: u64, to: u64) {
        if let Ok(mut m) = self.moves.lock() {
            m.push((from, to));
        }
    }

    /// A random touched purchase.
    pub fn sample_purchase(&self, rng: &mut Rng) -> Option<u64> {
        let s = self.ids.lock().ok()?;
        s.list.get(rng.below(s.list.len() as u64) as usize).copied()
    }

    /// A random touched user.
    pub fn sample_user(&self, rng: &mut Rng) -> Option<u64> {
        let s = self.users.lock().ok()?;
        s.list.get(rng.below(s.list.len() as u64) as usize).copied()
    }

    /// Every touched purchase.
    pub fn purchases(&self) -> Vec<u64> {
        self.ids.lock().map(|s| s.list.clone()).unwrap_or_default()
    }

    /// Committed primary-key changes, `(old id, new id)`.
    pub fn moves(&self) -> Vec<(u64, u64)> {
        self.moves.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

// ---- Planning (pure) ---------------------------------------------------------------

/// A writer's live rows: `(id, user)`, sampled uniformly.
#[derive(Debug, Default, Clone)]
pub struct Live {
    rows: Vec<(u64, u64)>,
    pos: HashMap<u64, usize>,
}

impl Live {
    /// Adds (or re-owns) row `id` of `user`.
    pub fn insert(&mut self, id: u64, user: u64) {
        match self.pos.get(&id) {
            Some(&i) => self.rows[i].1 = user,
            None => {
                self.pos.insert(id, self.rows.len());
                self.rows.push((id, user));
            }
        }
    }

    /// Removes row `id`.
    pub fn remove(&mut self, id: u64) {
        let Some(i) = self.pos.remove(&id) else {
            return;
        };
        self.rows.swap_remove(i);
        if let Some(&(moved, _)) = self.rows.get(i) {
            self.pos.insert(moved, i);
        }
    }

    fn sample(&self, rng: &mut Rng) -> Option<(u64, u64)> {
        self.rows
            .get(rng.below(self.rows.len() as u64) as usize)
            .copied()
    }
}

/// A new purchase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRow {
    /// Its id.
    pub id: u64,
    /// Its owner.
    pub user: u64,
    /// Its package.
    pub package: u64,
    /// Units.
    pub quantity: u64,
}

/// One statement of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stmt {
    /// A (multi-row) insert.
    Insert(Vec<NewRow>),
    /// New status and one more unit.
    Update { id: u64, status: &'static str },
    /// To another user.
    Move { id: u64, from: u64, to: u64 },
    /// Gone.
    Delete { id: u64, user: u64 },
    /// A new primary key.
    Rekey { id: u64, to: u64 },
    /// A catalogue change (new name, price).
    Package { id: u64 },
}

/// A planned transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Txn {
    /// Its statements, in order.
    pub stmts: Vec<Stmt>,
    /// Ends in ROLLBACK instead of COMMIT.
    pub rollback: bool,
}

impl Txn {
    /// Row changes it makes if committed.
    pub fn rows(&self) -> u64 {
        self.stmts
            .iter()
            .map(|s| match s {
                Stmt::Insert(r) => r.len() as u64,
                _ => 1,
            })
            .sum()
    }
}

const STATUSES: [&str; 4] = ["pending", "paid", "cancelled", "refunded"];

/// Plans one transaction over `live` (never touching a row twice), users
/// `1..=users`, new ids from `next_id`.
pub fn plan(rng: &mut Rng, live: &Live, users: u64, next_id: &mut dyn FnMut() -> u64) -> Txn {
    let count = if rng.percent(10) {
        rng.between(4, 6)
    } else {
        rng.between(1, 3)
    };
    let mut used: HashSet<u64> = HashSet::new();
    let mut stmts = Vec::new();
    for _ in 0..count {
        let roll = rng.below(100);
        let pick = (0..5)
            .filter_map(|_| live.sample(rng))
            .find(|(id, _)| !used.contains(id));
        let stmt = match (roll, pick) {
            (35.., Some((id, user))) => {
                used.insert(id);
                match roll {
                    35..=64 => Stmt::Update {
                        id,
                        status: STATUSES[rng.below(4) as usize],
                    },
                    65..=71 => Stmt::Move {
                        id,
                        from: user,
                        to: rng.between(1, users),
                    },
                    72..=83 => Stmt::Delete { id, user },
                    84..=91 => Stmt::Rekey { id, to: next_id() },
                    92..=93 => Stmt::Package {
                        id: rng.between(1, PACKAGES),
                    },
                    _ => Stmt::Update {
                        id,
                        status: STATUSES[rng.below(4) as usize],
                    },
                }
            }
            _ => {
                let n = if rng.percent(30) {
                    rng.between(2, 10)
                } else {
                    1
                };
                Stmt::Insert(
                    (0..n)
                        .map(|_| NewRow {
                            id: next_id(),
                            user: rng.between(1, users),
                            package: rng.between(1, PACKAGES),
                            quantity: rng.between(1, 5),
                        })
                        .collect(),
                )
            }
        };
        stmts.push(stmt);
    }
    Txn {
        stmts,
        rollback: rng.percent(3),
    }
}

/// The SQL of `s` against database `db` (writer `w` keys its inserts).
pub fn sql(s: &Stmt, db: &str, w: u64) -> String {
    match s {
        Stmt::Insert(rows) => {
            let values: Vec<String> = rows
                .iter()
                .map(|r| {
                    format!(
                        "({}, {}, {}, {}, {}.{:02}, 'EUR', 'pending', 'c{w}-n{}')",
                        r.id,
                        r.user,
                        r.package,
                        r.quantity,
                        r.quantity * 9,
                        r.id % 100,
                        r.id
                    )
                })
                .collect();
            format!(
                "INSERT INTO {db}.purchases (id, user_id, package_id, quantity, amount, currency, status, idempotency_key) VALUES {}",
                values.join(", ")
            )
        }
        Stmt::Update { id, status } => {
            format!(
                "UPDATE {db}.purchases SET status = '{status}', quantity = quantity + 1 WHERE id = {id}"
            )
        }
        Stmt::Move { id, to, .. } => {
            format!("UPDATE {db}.purchases SET user_id = {to} WHERE id = {id}")
        }
        Stmt::Delete { id, .. } => format!("DELETE FROM {db}.purchases WHERE id = {id}"),
        Stmt::Rekey { id, to } => format!("UPDATE {db}.purchases SET id = {to} WHERE id = {id}"),
        Stmt::Package { id } => format!(
            "UPDATE {db}.packages SET name = CONCAT('Pack ', id, ' v', version + 1), price = price + 0.01 WHERE id = {id}"
        ),
    }
}

/// Applies a committed `txn` to `live` and `touched`.
pub fn apply(txn: &Txn, live: &mut Live, touched: &Touched) {
    for s in &txn.stmts {
        match s {
            Stmt::Insert(rows) => {
                for r in rows {
                    live.insert(r.id, r.user);
                    touched.purchase(r.id);
                    touched.user(r.user);
                }
            }
            Stmt::Update { id, .. } => touched.purchase(*id),
            Stmt::Move { id, from, to } => {
                live.insert(*id, *to);
                touched.purchase(*id);
                touched.user(*from);
                touched.user(*to);
            }
            Stmt::Delete { id, user } => {
                live.remove(*id);
                touched.purchase(*id);
                touched.user(*user);
            }
            Stmt::Rekey { id, to } => {
                let user = live.pos.get(id).map(|&i| live.rows[i].1);
                live.remove(*id);
                if let Some(u) = user {
                    live.insert(*to, u);
                    touched.user(u);
                }
                touched.purchase(*id);
                touched.purchase(*to);
                touched.moved(*id, *to);
            }
            Stmt::Package { .. } => {}
        }
    }
}

// ---- Running -----------------------------------------------------------------------

/// What one writer did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    /// Committed transactions.
    pub committed: u64,
    /// Row changes in them.
    pub rows: u64,
    /// Transactions ended by ROLLBACK on purpose.
    pub rolled_back: u64,
    /// Transactions that failed (not written).
    pub failed: u64,
    /// Of those, refused by the server (a deadlock on the catalogue).
    pub refused: u64,
    /// Transactions refused because an id the run chose was just taken by
    /// the API's AUTO_INCREMENT (not written, not counted as failed).
    pub id_conflicts: u64,
    /// Connection attempts that failed.
    pub connect_failures: u64,
    /// COMMITs whose outcome was unknown when sent.
    pub unknown: u64,
    /// ... resolved as committed.
    pub unknown_committed: u64,
    /// ... resolved as not committed.
    pub unknown_aborted: u64,
    /// ... never resolved.
    pub unresolved: u64,
    /// The first error.
    pub first_error: Option<String>,
}

impl Stats {
    /// Adds `o` into `self` (the first error wins).
    pub fn absorb(&mut self, o: &Stats) {
        self.committed += o.committed;
        self.rows += o.rows;
        self.rolled_back += o.rolled_back;
        self.failed += o.failed;
        self.refused += o.refused;
        self.id_conflicts += o.id_conflicts;
        self.connect_failures += o.connect_failures;
        self.unknown += o.unknown;
        self.unknown_committed += o.unknown_committed;
        self.unknown_aborted += o.unknown_aborted;
        self.unresolved += o.unresolved;
        if self.first_error.is_none() {
            self.first_error.clone_from(&o.first_error);
        }
    }
}

/// A new purchase id for the run. The run's ids are two apart: the API's
/// AUTO_INCREMENT hands out the largest id so far plus one, which is then
/// never one the run has chosen but not yet inserted.
pub fn new_id(counter: &AtomicU64) -> u64 {
    counter.fetch_add(2, Ordering::Relaxed)
}

/// What all writers share.
pub struct Shared {
    /// The stack.
    pub stack: Stack,
    /// The scratch database.
    pub db: String,
    /// The marker database.
    pub txn_db: String,
    /// Users `1..=users` are written.
    pub users: u64,
    /// The next new purchase id.
    pub next_id: Arc<AtomicU64>,
    /// The next transaction marker.
    pub next_txn: AtomicU64,
    /// What was touched.
    pub touched: Arc<Touched>,
    /// The run's timeline.
    pub timeline: Arc<Timeline>,
    /// Set to stop writing.
    pub stop: Arc<AtomicBool>,
}

enum Outcome {
    Committed(u64),
    RolledBack,
    Failed { refused: bool, error: String },
    IdConflict,
    Unknown(String),
}

/// MariaDB's "duplicate entry" error.
const ER_DUP_ENTRY: u16 = 1062;

/// One writing connection.
pub struct Writer {
    w: u64,
    rng: Rng,
    live: Live,
    conn: Option<Conn>,
    /// When the server of `conn` started (see [`server_started`]).
    started: i64,
    shared: Arc<Shared>,
    stats: Stats,
}

/// The server's start time in epoch seconds, as `c` sees it: connection ids
/// start again after a restart, so an old session's id only names that
/// session on the same server run.
async fn server_started(c: &mut Conn) -> Result<i64, mysql_async::Error> {
    let v: Option<i64> = c
        .query_first(
            "SELECT CAST(UNIX_TIMESTAMP() - VARIABLE_VALUE AS SIGNED) FROM information_schema.GLOBAL_STATUS \
             WHERE VARIABLE_NAME = 'UPTIME'",
        )
        .await?;
    Ok(v.unwrap_or(0))
}

/// Whether two [`server_started`] readings are the same server run (they
/// may differ by rounding).
fn same_run(a: i64, b: i64) -> bool {
    (a - b).abs() <= 2
}

const STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);

impl Writer {
    /// Writer `w` of `writers`, owning the seeded rows `1..=rows` with id
    /// `w` modulo `writers` (see `pipeline::create_db`).
    pub fn new(w: u64, writers: u64, seed: u64, rows: u64, shared: Arc<Shared>) -> Self {
        let mut live = Live::default();
        for id in (1..=rows).filter(|id| id % writers == w) {
            let user = 1 + id * 7919 % shared.users;
            live.insert(id, user);
        }
        Self {
            w,
            rng: Rng::fork(seed, 100 + w),
            live,
            conn: None,
            started: 0,
            shared,
            stats: Stats::default(),
        }
    }

    /// Writes at `rate` row changes a second until told to stop.
    pub async fn run(mut self, rate: f64) -> Stats {
        let mut due = Instant::now();
        let mut backoff = Duration::from_millis(100);
        while !self.shared.stop.load(Ordering::Relaxed) {
            tokio::time::sleep_until(due).await;
            if self.conn.is_none() && !self.connect().await {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
            backoff = Duration::from_millis(100);
            let next = Arc::clone(&self.shared.next_id);
            let txn = plan(&mut self.rng, &self.live, self.shared.users, &mut || {
                new_id(&next)
            });
            let marker = self.shared.next_txn.fetch_add(1, Ordering::Relaxed);
            let outcome = self.execute(&txn, marker).await;
            self.settle(&txn, marker, outcome).await;
            due += Duration::from_secs_f64(txn.rows() as f64 / rate.max(0.1));
            let now = Instant::now();
            if due + Duration::from_secs(1) < now {
                due = now;
            }
        }
        self.stats
    }

    async fn connect(&mut self) -> bool {
        let open = async {
            let mut c = admin(&self.shared.stack).await?;
            let started = server_started(&mut c).await?;
            anyhow::Ok((c, started))
        };
        match tokio::time::timeout(Duration::from_secs(5), open).await {
            Ok(Ok((c, started))) => {
                self.conn = Some(c);
                self.started = started;
                true
            }
            Ok(Err(e)) => self.connect_failed(e.to_string()),
            Err(_) => self.connect_failed("connect timed out".into()),
        }
    }

    fn connect_failed(&mut self, e: String) -> bool {
        self.stats.connect_failures += 1;
        self.stats.first_error.get_or_insert(e);
        false
    }

    async fn execute(&mut self, txn: &Txn, marker: u64) -> Outcome {
        let Some(conn) = self.conn.as_mut() else {
            return Outcome::Failed {
                refused: false,
                error: "no connection".into(),
            };
        };
        let (db, w, txn_db) = (&self.shared.db, self.w, &self.shared.txn_db);
        let commit_sent = AtomicBool::new(false);
        let work = async {
            let mut tx = conn.start_transaction(TxOpts::default()).await?;
            let mut affected = 0;
            for s in &txn.stmts {
                tx.query_drop(sql(s, db, w)).await?;
                affected += tx.affected_rows();
            }
            if txn.rollback {
                tx.rollback().await?;
                return Ok(None);
            }
            tx.query_drop(format!("INSERT INTO {txn_db}.txns (id) VALUES ({marker})"))
                .await?;
            commit_sent.store(true, Ordering::Relaxed);
            tx.commit().await?;
            Ok::<_, mysql_async::Error>(Some(affected))
        };
        let r = tokio::time::timeout(STATEMENT_TIMEOUT * 3, work).await;
        let sent = commit_sent.load(Ordering::Relaxed);
        match r {
            Ok(Ok(Some(rows))) => Outcome::Committed(rows),
            Ok(Ok(None)) => Outcome::RolledBack,
            Ok(Err(mysql_async::Error::Server(e))) if !sent && e.code == ER_DUP_ENTRY => {
                Outcome::IdConflict
            }
            Ok(Err(mysql_async::Error::Server(e))) if !sent => Outcome::Failed {
                refused: true,
                error: format!("server: {} {}", e.code, e.message),
            },
            Ok(Err(e)) if sent => Outcome::Unknown(e.to_string()),
            Err(_) if sent => Outcome::Unknown("COMMIT timed out".into()),
            Ok(Err(e)) => Outcome::Failed {
                refused: false,
                error: e.to_string(),
            },
            Err(_) => Outcome::Failed {
                refused: false,
                error: "statement timed out".into(),
            },
        }
    }

    async fn settle(&mut self, txn: &Txn, marker: u64, outcome: Outcome) {
        let tl = Arc::clone(&self.shared.timeline);
        match outcome {
            Outcome::Committed(rows) => self.committed(txn, rows),
            Outcome::RolledBack => self.stats.rolled_back += 1,
            Outcome::IdConflict => self.stats.id_conflicts += 1,
            Outcome::Failed { refused, error } => {
                self.stats.failed += 1;
                self.stats.refused += u64::from(refused);
                self.stats.first_error.get_or_insert(error);
                tl.add(|b| b.failed_txns += 1);
                if !refused {
                    self.conn = None;
                }
            }
            Outcome::Unknown(error) => {
                self.stats.unknown += 1;
                self.stats.first_error.get_or_insert(error);
                tl.add(|b| b.unknown_commits += 1);
                let old = self.conn.take().map(|c| (c.id(), self.started));
                match self.resolve(marker, old).await {
                    Some(true) => {
                        self.stats.unknown_committed += 1;
                        self.committed(txn, txn.rows());
                    }
                    Some(false) => {
                        self.stats.unknown_aborted += 1;
                        tl.add(|b| b.failed_txns += 1);
                    }
                    None => self.stats.unresolved += 1,
                }
            }
        }
    }

    fn committed(&mut self, txn: &Txn, rows: u64) {
        self.stats.committed += 1;
        self.stats.rows += rows;
        apply(txn, &mut self.live, &self.shared.touched);
        self.shared.timeline.add(|b| {
            b.txns += 1;
            b.rows += rows;
        });
    }

    /// Whether transaction `marker` committed: waits (up to two minutes)
    /// for MariaDB, ends the old session `old` (its id and server run) if
    /// the server did not restart, so it cannot commit later, then looks the
    /// marker up.
    async fn resolve(&mut self, marker: u64, old: Option<(u32, i64)>) -> Option<bool> {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if (self.conn.is_some() || self.connect().await)
                && let Some(c) = self.conn.as_mut()
            {
                let now_started = self.started;
                let look = async {
                    if let Some((id, _)) = old.filter(|(_, s)| same_run(*s, now_started)) {
                        let _ = c.query_drop(format!("KILL {id}")).await;
                        loop {
                            let n: Option<u64> = c
                                .query_first(format!("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = {id}"))
                                .await?;
                            if n == Some(0) {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                    let n: Option<u64> = c
                        .query_first(format!(
                            "SELECT COUNT(*) FROM {}.txns WHERE id = {marker}",
                            self.shared.txn_db
                        ))
                        .await?;
                    Ok::<_, mysql_async::Error>(n.unwrap_or(0) > 0)
                };
                match tokio::time::timeout(STATEMENT_TIMEOUT, look).await {
                    Ok(Ok(found)) => return Some(found),
                    _ => self.conn = None,
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(n: u64) -> Live {
        let mut l = Live::default();
        for id in 1..=n {
            l.insert(id, id % 7 + 1);
        }
        l
    }

    #[test]
    fn server_runs_are_told_apart() {
        assert!(same_run(100, 101));
        assert!(same_run(100, 98));
        assert!(!same_run(100, 110));
    }

    #[test]
    fn live_rows_are_kept_in_step() {
        let mut l = live(5);
        l.remove(2);
        l.remove(9);
        assert_eq!(l.rows.len(), 4);
        l.insert(3, 42);
        assert_eq!(l.rows.len(), 4);
        l.remove(5);
        l.remove(1);
        l.remove(3);
        l.remove(4);
        assert_eq!(l.rows.len(), 0);
        assert!(l.sample(&mut Rng::new(1)).is_none());
    }

    #[test]
    fn plans_are_seeded_and_never_touch_a_row_twice() {
        let l = live(200);
        let mut next = 1000;
        let mut ids = || {
            next += 1;
            next
        };
        let a: Vec<Txn> = {
            let mut rng = Rng::new(4);
            (0..500).map(|_| plan(&mut rng, &l, 50, &mut ids)).collect()
        };
        for t in &a {
            let mut seen = HashSet::new();
            for s in &t.stmts {
                let id = match s {
                    Stmt::Update { id, .. }
                    | Stmt::Move { id, .. }
                    | Stmt::Delete { id, .. }
                    | Stmt::Rekey { id, .. } => *id,
                    _ => continue,
                };
                assert!(seen.insert(id), "{t:?}");
            }
            assert!((1..=6).contains(&t.stmts.len()));
        }
        let kinds = |f: fn(&Stmt) -> bool| a.iter().flat_map(|t| &t.stmts).filter(|s| f(s)).count();
        assert!(kinds(|s| matches!(s, Stmt::Insert(r) if r.len() > 1)) > 0);
        assert!(kinds(|s| matches!(s, Stmt::Rekey { .. })) > 0);
        assert!(kinds(|s| matches!(s, Stmt::Delete { .. })) > 0);
        assert!(kinds(|s| matches!(s, Stmt::Move { .. })) > 0);
        assert!(kinds(|s| matches!(s, Stmt::Package { .. })) > 0);
        assert!(a.iter().any(|t| t.rollback));
        let mut rng = Rng::new(4);
        let mut next2 = 1000;
        let again = plan(&mut rng, &l, 50, &mut || {
            next2 += 1;
            next2
        });
        assert_eq!(again, a[0]);
    }

    #[test]
    fn an_empty_writer_inserts() {
        let mut rng = Rng::new(1);
        let t = plan(&mut rng, &Live::default(), 10, &mut || 7);
        assert!(t.stmts.iter().all(|s| matches!(s, Stmt::Insert(_))));
        assert!(t.rows() >= t.stmts.len() as u64);
    }

    #[test]
    fn sql_and_apply() {
        let rows = vec![NewRow {
            id: 11,
            user: 3,
            package: 2,
            quantity: 4,
        }];
        let s = sql(&Stmt::Insert(rows.clone()), "d", 1);
        assert!(
            s.contains("(11, 3, 2, 4, 36.11, 'EUR', 'pending', 'c1-n11')"),
            "{s}"
        );
        assert_eq!(
            sql(&Stmt::Rekey { id: 1, to: 9 }, "d", 0),
            "UPDATE d.purchases SET id = 9 WHERE id = 1"
        );
        let touched = Touched::default();
        let mut l = live(3);
        let t = Txn {
            stmts: vec![
                Stmt::Insert(rows),
                Stmt::Rekey { id: 1, to: 20 },
                Stmt::Delete { id: 2, user: 3 },
                Stmt::Move {
                    id: 3,
                    from: 4,
                    to: 5,
                },
            ],
            rollback: false,
        };
        apply(&t, &mut l, &touched);
        assert_eq!(l.rows.len(), 3);
        assert_eq!(touched.moves(), vec![(1, 20)]);
        let mut p = touched.purchases();
        p.sort_unstable();
        assert_eq!(p, vec![1, 2, 3, 11, 20]);
        assert!(touched.users.lock().unwrap().set.contains(&5));
    }
}
