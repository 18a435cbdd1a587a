//! MySQL through `sqlx`: the reads a cache miss or a Redis outage needs, and
//! the two writes. Every statement is a `'static` string with `?`
//! placeholders (sqlx's `SqlSafeStr` refuses anything else), so no input is
//! ever spliced into SQL. Reads pass a semaphore first: however many requests
//! miss the cache, at most `--mysql-read-concurrency` read queries run at
//! once, and a read that cannot get a slot within `--mysql-read-wait-ms` is
//! refused ([`StoreError::Busy`]) instead of queueing on the database.

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use paystream_core::model::{PaymentMethod, PaymentStatus, PurchaseStatus};
use paystream_core::readmodel::{Cursor, PackageView, PurchaseView, micros};
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions, MySqlRow, MySqlSslMode};
use sqlx::{Acquire, MySql, Row, Transaction};
use tokio::sync::Semaphore;

use crate::metrics::ApiMetrics;
use crate::provider;
use crate::writes::{self, NewPayment, NewPurchase, PayRefusal};

/// How to reach MySQL and how hard to use it.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// User (DML only is enough).
    pub user: String,
    /// Password.
    pub password: String,
    /// Database.
    pub database: String,
    /// TLS mode.
    pub ssl_mode: MySqlSslMode,
    /// CA (PEM) for verifying the server.
    pub ssl_ca: Option<String>,
    /// Pool size.
    pub max_connections: u32,
    /// Connections kept open while idle.
    pub min_connections: u32,
    /// Longest wait for a pooled connection.
    pub acquire_timeout: Duration,
    /// Read queries at once.
    pub read_concurrency: usize,
    /// Longest wait for a read slot.
    pub read_wait: Duration,
    /// Longest a read query may take (a stalled database must not hold a
    /// read slot forever).
    pub query_timeout: Duration,
}

/// A read or write that failed for a reason that is not the client's.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The read limit stayed saturated.
    #[error("the database read limit is saturated")]
    Busy,
    /// A read query did not answer in time.
    #[error("the database did not answer in time")]
    Timeout,
    /// The database failed or could not be reached.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// A row held a value the model does not know.
    #[error("unexpected row: {0}")]
    Row(String),
}

/// Why a write was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// No such purchase for this user.
    #[error("no such purchase")]
    NotFound,
    /// The package does not exist.
    #[error("package {0} does not exist")]
    UnknownPackage(u64),
    /// The package can no longer be bought.
    #[error("package {0} is not for sale any more")]
    InactivePackage(u64),
    /// Price times quantity does not fit.
    #[error("the amount is too large")]
    AmountTooLarge,
    /// The token's user is not in the database.
    #[error("user {0} does not exist")]
    UnknownUser(u64),
    /// The idempotency key was used for a different request.
    #[error("{0}")]
    KeyReused(String),
    /// The purchase's state or version refuses the payment.
    #[error("payment refused")]
    Refused(PayRefusal),
    /// The row changed between read and update.
    #[error("the purchase changed concurrently")]
    VersionConflict,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for WriteError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(StoreError::Db(e))
    }
}

/// A payment as the API answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PaymentView {
    /// Payment id.
    pub id: u64,
    /// The purchase paid.
    pub purchase_id: u64,
    /// Amount, exact decimal string.
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, example = "59.97")]
    pub amount: Decimal,
    /// ISO-4217 currency.
    pub currency: String,
    /// How it was paid.
    #[schema(value_type = String, example = "card")]
    pub method: PaymentMethod,
    /// Outcome.
    #[schema(value_type = String, example = "succeeded")]
    pub status: PaymentStatus,
    /// The provider's reference.
    pub provider_ref: Option<String>,
    /// Creation time (UTC, microseconds).
    #[serde(with = "micros")]
    #[schema(value_type = String, example = "2026-01-01T00:00:00.000000Z")]
    pub created_at: DateTime<Utc>,
    /// Row version.
    pub version: u64,
}

/// A purchase with its package.
pub type Joined = (PurchaseView, PackageView);

/// The outcome of `POST /v1/purchases`.
#[derive(Debug, Clone)]
pub struct Created {
    /// The purchase and its package.
    pub joined: Joined,
    /// Whether this answers a retry of an earlier request.
    pub replayed: bool,
}

/// The outcome of `POST /v1/purchases/{id}/payments`.
#[derive(Debug, Clone)]
pub struct Paid {
    /// The payment.
    pub payment: PaymentView,
    /// The purchase after the payment, with its package.
    pub joined: Joined,
    /// Whether this answers a retry of an earlier request.
    pub replayed: bool,
}

/// MySQL access; cheap to share behind an `Arc`.
pub struct Store {
    pool: MySqlPool,
    read_slots: Semaphore,
    read_wait: Duration,
    query_timeout: Duration,
    metrics: ApiMetrics,
}

const BY_ID: &str = "SELECT p.id, p.user_id, p.package_id, p.quantity, p.amount, p.currency, \
    p.status, p.created_at, p.updated_at, p.version, k.code AS k_code, k.name AS k_name, \
    k.price AS k_price, k.currency AS k_currency, k.active AS k_active, k.version AS k_version \
    FROM purchases p JOIN packages k ON k.id = p.package_id WHERE p.id = ?";

const FIRST_PAGE: &str = "SELECT p.id, p.user_id, p.package_id, p.quantity, p.amount, \
    p.currency, p.status, p.created_at, p.updated_at, p.version, k.code AS k_code, \
    k.name AS k_name, k.price AS k_price, k.currency AS k_currency, k.active AS k_active, \
    k.version AS k_version FROM purchases p JOIN packages k ON k.id = p.package_id \
    WHERE p.user_id = ? ORDER BY p.created_at DESC, p.id DESC LIMIT ?";

const NEXT_PAGE: &str = "SELECT p.id, p.user_id, p.package_id, p.quantity, p.amount, \
    p.currency, p.status, p.created_at, p.updated_at, p.version, k.code AS k_code, \
    k.name AS k_name, k.price AS k_price, k.currency AS k_currency, k.active AS k_active, \
    k.version AS k_version FROM purchases p JOIN packages k ON k.id = p.package_id \
    WHERE p.user_id = ? AND (p.created_at < ? OR (p.created_at = ? AND p.id < ?)) \
    ORDER BY p.created_at DESC, p.id DESC LIMIT ?";

const BY_USER_KEY: &str = "SELECT p.id, p.user_id, p.package_id, p.quantity, p.amount, \
    p.currency, p.status, p.created_at, p.updated_at, p.version, k.code AS k_code, \
    k.name AS k_name, k.price AS k_price, k.currency AS k_currency, k.active AS k_active, \
    k.version AS k_version FROM purchases p JOIN packages k ON k.id = p.package_id \
    WHERE p.user_id = ? AND p.idempotency_key = ?";

const PACKAGE: &str =
    "SELECT id, code, name, price, currency, active, version FROM packages WHERE id = ?";

const PAYMENT_BY_KEY: &str = "SELECT id, purchase_id, amount, currency, method, status, \
    provider_ref, created_at, version FROM payments WHERE idempotency_key = ?";

const PAYMENT_BY_ID: &str = "SELECT id, purchase_id, amount, currency, method, status, \
    provider_ref, created_at, version FROM payments WHERE id = ?";

const LOCK_PURCHASE: &str =
    "SELECT user_id, status, version, amount, currency FROM purchases WHERE id = ? FOR UPDATE";

fn utc(t: NaiveDateTime) -> DateTime<Utc> {
    t.and_utc()
}

fn purchase_from(row: &MySqlRow) -> Result<PurchaseView, StoreError> {
    let status: String = row.try_get("status")?;
    Ok(PurchaseView {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        package_id: row.try_get("package_id")?,
        quantity: row.try_get("quantity")?,
        amount: row.try_get("amount")?,
        currency: row.try_get("currency")?,
        status: PurchaseStatus::parse(&status)
            .ok_or_else(|| StoreError::Row(format!("purchase status {status:?}")))?,
        created_at: utc(row.try_get("created_at")?),
        updated_at: utc(row.try_get("updated_at")?),
        version: row.try_get("version")?,
    })
}

fn joined_from(row: &MySqlRow) -> Result<Joined, StoreError> {
    let p = purchase_from(row)?;
    let k = PackageView {
        id: p.package_id,
        code: row.try_get("k_code")?,
        name: row.try_get("k_name")?,
        price: row.try_get("k_price")?,
        currency: row.try_get("k_currency")?,
        active: row.try_get("k_active")?,
        version: row.try_get("k_version")?,
    };
    Ok((p, k))
}

fn package_from(row: &MySqlRow) -> Result<PackageView, StoreError> {
    Ok(PackageView {
        id: row.try_get("id")?,
        code: row.try_get("code")?,
        name: row.try_get("name")?,
        price: row.try_get("price")?,
        currency: row.try_get("currency")?,
        active: row.try_get("active")?,
        version: row.try_get("version")?,
    })
}

fn payment_from(row: &MySqlRow) -> Result<PaymentView, StoreError> {
    let method: String = row.try_get("method")?;
    let status: String = row.try_get("status")?;
    Ok(PaymentView {
        id: row.try_get("id")?,
        purchase_id: row.try_get("purchase_id")?,
        amount: row.try_get("amount")?,
        currency: row.try_get("currency")?,
        method: match method.as_str() {
            "card" => PaymentMethod::Card,
            "wallet" => PaymentMethod::Wallet,
            "bank_transfer" => PaymentMethod::BankTransfer,
            other => return Err(StoreError::Row(format!("payment method {other:?}"))),
        },
        status: match status.as_str() {
            "pending" => PaymentStatus::Pending,
            "succeeded" => PaymentStatus::Succeeded,
            "failed" => PaymentStatus::Failed,
            "refunded" => PaymentStatus::Refunded,
            other => return Err(StoreError::Row(format!("payment status {other:?}"))),
        },
        provider_ref: row.try_get("provider_ref")?,
        created_at: utc(row.try_get("created_at")?),
        version: row.try_get("version")?,
    })
}

fn is_kind(e: &sqlx::Error, kind: sqlx::error::ErrorKind) -> bool {
    e.as_database_error().is_some_and(|d| d.kind() == kind)
}

impl Store {
    /// A pool that connects lazily: the API starts (and serves from Redis)
    /// while MySQL is down.
    pub fn new(c: &StoreConfig, metrics: ApiMetrics) -> Self {
        let mut opts = MySqlConnectOptions::new()
            .host(&c.host)
            .port(c.port)
            .username(&c.user)
            .password(&c.password)
            .database(&c.database)
            .ssl_mode(c.ssl_mode)
            .timezone(Some("+00:00".to_string()));
        if let Some(ca) = &c.ssl_ca {
            opts = opts.ssl_ca(ca);
        }
        let pool = MySqlPoolOptions::new()
            .max_connections(c.max_connections.max(1))
            .min_connections(c.min_connections.min(c.max_connections))
            .acquire_timeout(c.acquire_timeout)
            .connect_lazy_with(opts);
        Self {
            pool,
            read_slots: Semaphore::new(c.read_concurrency.max(1)),
            read_wait: c.read_wait,
            query_timeout: c.query_timeout,
            metrics,
        }
    }

    /// The pool (tests and health checks).
    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    /// Whether MySQL answers.
    pub async fn ping(&self) -> bool {
        self.timed(sqlx::query("SELECT 1").execute(&self.pool))
            .await
            .is_ok()
    }

    async fn read_slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>, StoreError> {
        match tokio::time::timeout(self.read_wait, self.read_slots.acquire()).await {
            Ok(Ok(p)) => {
                self.metrics.db_queries.inc();
                Ok(p)
            }
            _ => {
                self.metrics.db_read_rejected.inc();
                Err(StoreError::Busy)
            }
        }
    }

    async fn timed<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.query_timeout, f).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(StoreError::Timeout),
        }
    }

    /// One purchase with its package.
    pub async fn purchase(&self, id: u64) -> Result<Option<Joined>, StoreError> {
        let _slot = self.read_slot().await?;
        let row = self
            .timed(sqlx::query(BY_ID).bind(id).fetch_optional(&self.pool))
            .await?;
        row.as_ref().map(joined_from).transpose()
    }

    /// One package.
    pub async fn package(&self, id: u64) -> Result<Option<PackageView>, StoreError> {
        let _slot = self.read_slot().await?;
        let row = self
            .timed(sqlx::query(PACKAGE).bind(id).fetch_optional(&self.pool))
            .await?;
        row.as_ref().map(package_from).transpose()
    }

    /// Up to `limit` purchases of `user_id`, newest first, after `after`.
    pub async fn page(
        &self,
        user_id: u64,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Vec<Joined>, StoreError> {
        let _slot = self.read_slot().await?;
        let rows = match after {
            None => {
                self.timed(
                    sqlx::query(FIRST_PAGE)
                        .bind(user_id)
                        .bind(limit)
                        .fetch_all(&self.pool),
                )
                .await?
            }
            Some(c) => {
                let t = DateTime::<Utc>::from_timestamp_micros(c.score)
                    .ok_or_else(|| StoreError::Row("cursor time out of range".into()))?
                    .naive_utc();
                self.timed(
                    sqlx::query(NEXT_PAGE)
                        .bind(user_id)
                        .bind(t)
                        .bind(t)
                        .bind(c.id)
                        .bind(limit)
                        .fetch_all(&self.pool),
                )
                .await?
            }
        };
        rows.iter().map(joined_from).collect()
    }

    async fn joined_in(
        tx: &mut Transaction<'_, MySql>,
        id: u64,
    ) -> Result<Option<Joined>, StoreError> {
        let conn = tx.acquire().await?;
        let row = sqlx::query(BY_ID).bind(id).fetch_optional(conn).await?;
        row.as_ref().map(joined_from).transpose()
    }

    /// Buys `req` for `user_id` under the idempotency key `key`.
    pub async fn create_purchase(
        &self,
        user_id: u64,
        req: &NewPurchase,
        key: &str,
    ) -> Result<Created, WriteError> {
        let pkg = sqlx::query(PACKAGE)
            .bind(req.package_id)
            .fetch_optional(&self.pool)
            .await?;
        let pkg = match pkg.as_ref().map(package_from).transpose()? {
            Some(p) => p,
            None => {
                // A retry whose package was deleted since still replays.
                return match self.replay_purchase(user_id, req, key).await? {
                    Some(c) => Ok(c),
                    None => Err(WriteError::UnknownPackage(req.package_id)),
                };
            }
        };
        let amount = writes::amount(pkg.price, req.quantity).ok_or(WriteError::AmountTooLarge)?;
        let inserted = sqlx::query(
            "INSERT INTO purchases (user_id, package_id, quantity, amount, currency, status, \
             idempotency_key) VALUES (?, ?, ?, ?, ?, 'pending', ?)",
        )
        .bind(user_id)
        .bind(req.package_id)
        .bind(req.quantity)
        .bind(amount)
        .bind(&pkg.currency)
        .bind(key);
        let id = if pkg.active {
            match inserted.execute(&self.pool).await {
                Ok(r) => r.last_insert_id(),
                Err(e) if is_kind(&e, sqlx::error::ErrorKind::UniqueViolation) => {
                    return match self.replay_purchase(user_id, req, key).await? {
                        Some(c) => Ok(c),
                        None => Err(WriteError::Store(StoreError::Row(
                            "duplicate idempotency key vanished".into(),
                        ))),
                    };
                }
                Err(e) if is_kind(&e, sqlx::error::ErrorKind::ForeignKeyViolation) => {
                    return Err(WriteError::UnknownUser(user_id));
                }
                Err(e) => return Err(e.into()),
            }
        } else {
            return match self.replay_purchase(user_id, req, key).await? {
                Some(c) => Ok(c),
                None => Err(WriteError::InactivePackage(req.package_id)),
            };
        };
        let row = sqlx::query(BY_ID)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        match row.as_ref().map(joined_from).transpose()? {
            Some(joined) => Ok(Created {
                joined,
                replayed: false,
            }),
            None => Err(WriteError::Store(StoreError::Row(format!(
                "purchase {id} vanished after insert"
            )))),
        }
    }

    async fn replay_purchase(
        &self,
        user_id: u64,
        req: &NewPurchase,
        key: &str,
    ) -> Result<Option<Created>, WriteError> {
        let row = sqlx::query(BY_USER_KEY)
            .bind(user_id)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        let Some(joined) = row.as_ref().map(joined_from).transpose()? else {
            return Ok(None);
        };
        if joined.0.package_id != req.package_id || joined.0.quantity != req.quantity {
            return Err(WriteError::KeyReused(format!(
                "Idempotency-Key was first used for package {} x {}; a retry must send the same body",
                joined.0.package_id, joined.0.quantity
            )));
        }
        Ok(Some(Created {
            joined,
            replayed: true,
        }))
    }

    /// Pays purchase `purchase_id` of `user_id`, under idempotency key `key`.
    pub async fn pay(
        &self,
        user_id: u64,
        purchase_id: u64,
        req: &NewPayment,
        key: &str,
        if_match: Option<u64>,
    ) -> Result<Paid, WriteError> {
        let stored_key = writes::payment_key(user_id, key);
        let mut tx = self.pool.begin().await?;
        let locked = {
            let conn = tx.acquire().await?;
            sqlx::query(LOCK_PURCHASE)
                .bind(purchase_id)
                .fetch_optional(conn)
                .await?
        };
        let Some(locked) = locked else {
            return Err(WriteError::NotFound);
        };
        let owner: u64 = locked.try_get("user_id")?;
        if owner != user_id {
            return Err(WriteError::NotFound);
        }
        let existing = {
            let conn = tx.acquire().await?;
            sqlx::query(PAYMENT_BY_KEY)
                .bind(&stored_key)
                .fetch_optional(conn)
                .await?
        };
        if let Some(row) = existing {
            let payment = payment_from(&row)?;
            let joined = Self::joined_in(&mut tx, purchase_id).await?;
            tx.commit().await?;
            return replay_payment(payment, joined, purchase_id);
        }
        let status: String = locked.try_get("status")?;
        let status = PurchaseStatus::parse(&status)
            .ok_or_else(|| StoreError::Row(format!("purchase status {status:?}")))?;
        let version: u64 = locked.try_get("version")?;
        writes::check_payable(status, version, if_match).map_err(WriteError::Refused)?;
        let amount: Decimal = locked.try_get("amount")?;
        let currency: String = locked.try_get("currency")?;
        let capture = provider::capture(purchase_id, &stored_key, amount);
        let status_str = match capture.status {
            PaymentStatus::Pending => "pending",
            PaymentStatus::Succeeded => "succeeded",
            PaymentStatus::Failed => "failed",
            PaymentStatus::Refunded => "refunded",
        };
        let inserted = {
            let conn = tx.acquire().await?;
            sqlx::query(
                "INSERT INTO payments (purchase_id, amount, currency, method, status, \
                 provider_ref, idempotency_key) VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(purchase_id)
            .bind(amount)
            .bind(&currency)
            .bind(writes::method_str(req.method))
            .bind(status_str)
            .bind(&capture.provider_ref)
            .bind(&stored_key)
            .execute(conn)
            .await
        };
        let payment_id = match inserted {
            Ok(r) => r.last_insert_id(),
            Err(e) if is_kind(&e, sqlx::error::ErrorKind::UniqueViolation) => {
                tx.rollback().await?;
                let row = sqlx::query(PAYMENT_BY_KEY)
                    .bind(&stored_key)
                    .fetch_optional(&self.pool)
                    .await?;
                let payment = row
                    .as_ref()
                    .map(payment_from)
                    .transpose()?
                    .ok_or_else(|| StoreError::Row("duplicate payment key vanished".into()))?;
                let joined = sqlx::query(BY_ID)
                    .bind(purchase_id)
                    .fetch_optional(&self.pool)
                    .await?;
                let joined = joined.as_ref().map(joined_from).transpose()?;
                return replay_payment(payment, joined, purchase_id);
            }
            Err(e) => return Err(e.into()),
        };
        let updated = {
            let conn = tx.acquire().await?;
            sqlx::query("UPDATE purchases SET status = 'paid' WHERE id = ? AND version = ?")
                .bind(purchase_id)
                .bind(version)
                .execute(conn)
                .await?
        };
        if updated.rows_affected() != 1 {
            tx.rollback().await?;
            return Err(WriteError::VersionConflict);
        }
        let payment = {
            let conn = tx.acquire().await?;
            sqlx::query(PAYMENT_BY_ID)
                .bind(payment_id)
                .fetch_optional(conn)
                .await?
        };
        let payment = payment
            .as_ref()
            .map(payment_from)
            .transpose()?
            .ok_or_else(|| StoreError::Row("payment vanished after insert".into()))?;
        let joined = Self::joined_in(&mut tx, purchase_id)
            .await?
            .ok_or(WriteError::NotFound)?;
        tx.commit().await?;
        Ok(Paid {
            payment,
            joined,
            replayed: false,
        })
    }
}

fn replay_payment(
    payment: PaymentView,
    joined: Option<Joined>,
    purchase_id: u64,
) -> Result<Paid, WriteError> {
    if payment.purchase_id != purchase_id {
        return Err(WriteError::KeyReused(format!(
            "Idempotency-Key was first used to pay purchase {}; use a new key for another purchase",
            payment.purchase_id
        )));
    }
    let joined = joined.ok_or(WriteError::NotFound)?;
    Ok(Paid {
        payment,
        joined,
        replayed: true,
    })
}
