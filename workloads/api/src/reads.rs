//! The read path. A purchase or a page of a user's list is answered from the
//! Redis read model (or the near cache) when it holds what the reader may see
//! and asked for; otherwise from MySQL, through a coalesced load that also
//! fills Redis under the version rule. MySQL also answers every read while
//! Redis is down (counted as the fallback) and a list while the model is
//! incomplete. Authorisation is decided here, on the owner recorded in the
//! document: another user's purchase is "not found", another user's list is
//! "forbidden".
//!
//! Read-your-writes: a reader may ask for a minimum version (a single
//! purchase) or pass the consistency token `<purchase_id>:<version>` a write
//! returned (a list). A cached copy older than that is not served; MySQL,
//! which the write went to, answers instead and refreshes the cache.

use std::sync::Arc;

use bytes::Bytes;
use paystream_core::readmodel::{Cursor, ModelStatus, PackageView, score};

use crate::auth::Caller;
use crate::cache::{Cache, Doc};
use crate::coalesce::Coalescer;
use crate::document::{self, Head};
use crate::hints::PackageHints;
use crate::metrics::ApiMetrics;
use crate::near::NearCache;
use crate::params::MinVersion;
use crate::store::{Joined, Store, StoreError};

/// Why a read has no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// No such purchase, or not the caller's.
    #[error("not found")]
    NotFound,
    /// Another user's list.
    #[error("forbidden")]
    Forbidden,
    /// MySQL's read limit is saturated.
    #[error("the database is busy")]
    Busy,
    /// Neither Redis nor MySQL could answer.
    #[error("no store can answer: {0}")]
    Unavailable(String),
}

/// An answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// The JSON document.
    pub body: Bytes,
    /// The purchase version (single reads; 0 for pages).
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum LoadKey {
    Purchase(u64),
    Package(u64),
    Page(u64, Option<(i64, u64)>, u32),
}

#[derive(Debug, Clone)]
enum Loaded {
    /// Redis had it after all (a late joiner re-checked).
    Cached(Bytes, Head),
    Purchase(Option<Arc<Joined>>),
    Package(Option<Arc<PackageView>>),
    Page(Arc<Vec<Joined>>),
    Failed(ReadError),
}

fn failed(e: StoreError) -> Loaded {
    match e {
        StoreError::Busy => Loaded::Failed(ReadError::Busy),
        other => {
            tracing::warn!(error = %other, "mysql read failed");
            Loaded::Failed(ReadError::Unavailable(other.to_string()))
        }
    }
}

/// Why MySQL answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    Miss,
    Stale,
    RedisDown,
    ModelIncomplete,
}

/// The read service.
pub struct Reads {
    cache: Arc<Cache>,
    store: Arc<Store>,
    near: Option<Arc<NearCache>>,
    loads: Coalescer<LoadKey, Loaded>,
    hints: PackageHints,
    metrics: ApiMetrics,
}

impl Reads {
    /// Reads over `cache` and `store`, with an optional near cache.
    pub fn new(
        cache: Arc<Cache>,
        store: Arc<Store>,
        near: Option<Arc<NearCache>>,
        metrics: ApiMetrics,
    ) -> Self {
        Self {
            cache,
            store,
            near,
            loads: Coalescer::default(),
            hints: PackageHints::new(1 << 16),
            metrics,
        }
    }

    /// The Redis side.
    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// The MySQL side.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    fn count(&self, r: Reason) {
        match r {
            Reason::Miss => self.metrics.mysql_reads.miss.inc(),
            Reason::Stale => self.metrics.mysql_reads.stale.inc(),
            Reason::RedisDown => {
                self.metrics.fallback.inc();
                self.metrics.mysql_reads.redis_down.inc()
            }
            Reason::ModelIncomplete => self.metrics.mysql_reads.model_incomplete.inc(),
        };
    }

    /// A document from the near cache or Redis.
    async fn doc(&self, key: &str) -> Result<Option<Doc>, ()> {
        if let Some(near) = &self.near {
            if let Some(d) = near.get(key) {
                return Ok(Some(d));
            }
            let ticket = near.ticket();
            let d = self.cache.doc(key).await.map_err(|_| ())?;
            if let Some(d) = &d {
                near.insert(key, d.clone(), ticket);
            }
            return Ok(d);
        }
        self.cache.doc(key).await.map_err(|_| ())
    }

    async fn docs(&self, keys: &[String]) -> Result<Vec<Option<Doc>>, ()> {
        let Some(near) = &self.near else {
            return self.cache.docs(keys).await.map_err(|_| ());
        };
        let mut out: Vec<Option<Doc>> = keys.iter().map(|k| near.get(k)).collect();
        let missing: Vec<String> = keys
            .iter()
            .zip(&out)
            .filter(|(_, d)| d.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        if missing.is_empty() {
            return Ok(out);
        }
        let ticket = near.ticket();
        let mut fetched = self.cache.docs(&missing).await.map_err(|_| ())?.into_iter();
        for (k, slot) in keys.iter().zip(out.iter_mut()) {
            if slot.is_none() {
                let d = fetched.next().flatten();
                if let Some(d) = &d {
                    near.insert(k, d.clone(), ticket);
                }
                *slot = d;
            }
        }
        Ok(out)
    }

    /// `GET /v1/purchases/{id}`.
    pub async fn purchase(
        &self,
        caller: Caller,
        id: u64,
        min: Option<u64>,
    ) -> Result<Served, ReadError> {
        let reason = if self.cache.is_up() {
            let key = self.cache.keys().purchase(id);
            // With a package hint (and no near cache), the purchase and its
            // package come back in one round trip.
            let mut guessed: Option<(u64, Bytes)> = None;
            let found = match self.hints.get(id).filter(|_| self.near.is_none()) {
                Some(pkg) => {
                    let pkey = self.cache.keys().package(pkg);
                    match self.cache.doc_pair(&key, &pkey).await {
                        Ok((d, p)) => {
                            if let Some(Doc { data: Some(b), .. }) = p {
                                guessed = Some((pkg, b));
                            }
                            Ok(d)
                        }
                        Err(_) => Err(()),
                    }
                }
                None => self.doc(&key).await,
            };
            match found {
                Ok(Some(doc)) if min.is_some_and(|m| doc.version < m) => {
                    self.metrics.cache.stale.inc();
                    Reason::Stale
                }
                Ok(Some(Doc { deleted: true, .. })) => {
                    self.metrics.cache.hit.inc();
                    return Err(ReadError::NotFound);
                }
                Ok(Some(Doc {
                    data: Some(data), ..
                })) => match document::head(&data) {
                    Some(head) => {
                        if !caller.may_read(head.user_id) {
                            self.metrics.cache.hit.inc();
                            return Err(ReadError::NotFound);
                        }
                        if let Some((pkg, pdata)) = &guessed
                            && *pkg == head.package_id
                            && let Some(body) = document::purchase(&data, pdata)
                        {
                            self.metrics.cache.hit.inc();
                            return Ok(Served {
                                body,
                                version: head.version,
                            });
                        }
                        if let Some(body) = self.with_package(&data, head.package_id).await? {
                            self.hints.set(id, head.package_id);
                            self.metrics.cache.hit.inc();
                            return Ok(Served {
                                body,
                                version: head.version,
                            });
                        }
                        self.metrics.cache.miss.inc();
                        Reason::Miss
                    }
                    None => {
                        self.metrics.cache.miss.inc();
                        Reason::Miss
                    }
                },
                Ok(_) => {
                    self.metrics.cache.miss.inc();
                    Reason::Miss
                }
                Err(()) => {
                    self.metrics.cache.bypass.inc();
                    Reason::RedisDown
                }
            }
        } else {
            self.metrics.cache.bypass.inc();
            Reason::RedisDown
        };
        self.count(reason);
        let mut loaded = self.load_purchase(id, min).await;
        let version = match &loaded {
            Loaded::Purchase(Some(j)) => Some(j.0.version),
            Loaded::Cached(_, h) => Some(h.version),
            _ => None,
        };
        if let (Some(v), Some(m)) = (version, min)
            && v < m
        {
            // Joined a load that began before the reader's write committed.
            loaded = load_purchase(self.cache.clone(), self.store.clone(), id, min).await;
        }
        match loaded {
            Loaded::Cached(data, head) => {
                if !caller.may_read(head.user_id) {
                    return Err(ReadError::NotFound);
                }
                match self.with_package(&data, head.package_id).await? {
                    Some(body) => Ok(Served {
                        body,
                        version: head.version,
                    }),
                    None => Err(ReadError::NotFound),
                }
            }
            Loaded::Purchase(Some(j)) => {
                self.hints.set(j.0.id, j.0.package_id);
                if !caller.may_read(j.0.user_id) {
                    return Err(ReadError::NotFound);
                }
                let body = document::purchase(
                    &document::purchase_bytes(&j.0),
                    &document::package_bytes(&j.1),
                )
                .ok_or_else(|| ReadError::Unavailable("cannot encode the purchase".into()))?;
                Ok(Served {
                    body,
                    version: j.0.version,
                })
            }
            Loaded::Purchase(None) => Err(ReadError::NotFound),
            Loaded::Failed(e) => Err(e),
            _ => Err(ReadError::Unavailable("unexpected load result".into())),
        }
    }

    async fn load_purchase(&self, id: u64, min: Option<u64>) -> Loaded {
        let (cache, store) = (self.cache.clone(), self.store.clone());
        let (v, joined) = self
            .loads
            .run(LoadKey::Purchase(id), move || {
                load_purchase(cache, store, id, min)
            })
            .await;
        if joined {
            self.metrics.coalesced.inc();
        }
        v.unwrap_or(Loaded::Failed(ReadError::Unavailable(
            "load task failed".into(),
        )))
    }

    /// The purchase document `data` joined with its package, from the cache
    /// or a (coalesced) MySQL load. `None` when the package does not exist.
    async fn with_package(&self, data: &[u8], package_id: u64) -> Result<Option<Bytes>, ReadError> {
        let key = self.cache.keys().package(package_id);
        if self.cache.is_up()
            && let Ok(Some(Doc {
                data: Some(pkg), ..
            })) = self.doc(&key).await
        {
            return Ok(document::purchase(data, &pkg));
        }
        match self.load_package(package_id).await {
            Loaded::Package(Some(p)) => Ok(document::purchase(data, &document::package_bytes(&p))),
            Loaded::Package(None) => Ok(None),
            Loaded::Failed(e) => Err(e),
            _ => Err(ReadError::Unavailable("unexpected load result".into())),
        }
    }

    async fn load_package(&self, id: u64) -> Loaded {
        let (cache, store) = (self.cache.clone(), self.store.clone());
        let (v, joined) = self
            .loads
            .run(LoadKey::Package(id), move || async move {
                match store.package(id).await {
                    Ok(Some(p)) => {
                        cache.fill_package(&p).await;
                        Loaded::Package(Some(Arc::new(p)))
                    }
                    Ok(None) => Loaded::Package(None),
                    Err(e) => failed(e),
                }
            })
            .await;
        if joined {
            self.metrics.coalesced.inc();
        }
        v.unwrap_or(Loaded::Failed(ReadError::Unavailable(
            "load task failed".into(),
        )))
    }

    /// `GET /v1/users/{user_id}/purchases`.
    pub async fn user_purchases(
        &self,
        caller: Caller,
        user_id: u64,
        after: Option<Cursor>,
        limit: u32,
        token: Option<MinVersion>,
    ) -> Result<Bytes, ReadError> {
        if !caller.may_read(user_id) {
            return Err(ReadError::Forbidden);
        }
        let reason = if !self.cache.is_up() {
            self.metrics.cache.bypass.inc();
            Reason::RedisDown
        } else if self.cache.model_status() != ModelStatus::Complete {
            self.metrics.cache.miss.inc();
            Reason::ModelIncomplete
        } else {
            match self.cached_page(user_id, after, limit, token).await {
                Ok(Some(body)) => {
                    self.metrics.cache.hit.inc();
                    return Ok(body);
                }
                Ok(None) => {
                    self.metrics.cache.stale.inc();
                    Reason::Stale
                }
                Err(()) => {
                    self.metrics.cache.bypass.inc();
                    Reason::RedisDown
                }
            }
        };
        self.count(reason);
        let key = LoadKey::Page(user_id, after.map(|c| (c.score, c.id)), limit);
        let (cache, store) = (self.cache.clone(), self.store.clone());
        let (v, joined) = self
            .loads
            .run(key, move || async move {
                match store.page(user_id, after, limit + 1).await {
                    Ok(rows) => {
                        cache.fill(&rows, true).await;
                        Loaded::Page(Arc::new(rows))
                    }
                    Err(e) => failed(e),
                }
            })
            .await;
        if joined {
            self.metrics.coalesced.inc();
        }
        let rows = match v {
            Some(Loaded::Page(rows)) => rows,
            Some(Loaded::Failed(e)) => return Err(e),
            _ => return Err(ReadError::Unavailable("load task failed".into())),
        };
        let shown = &rows[..rows.len().min(limit as usize)];
        let next = (rows.len() > limit as usize)
            .then(|| shown.last())
            .flatten()
            .map(|(p, _)| Cursor {
                score: score(p.created_at),
                id: p.id,
            });
        let bytes: Vec<(Bytes, Bytes)> = shown
            .iter()
            .map(|(p, k)| (document::purchase_bytes(p), document::package_bytes(k)))
            .collect();
        document::page(bytes.iter().map(|(p, k)| (&p[..], &k[..])), next)
            .ok_or_else(|| ReadError::Unavailable("cannot encode the page".into()))
    }

    /// A page from Redis; `Ok(None)` when the model has not applied the
    /// reader's write yet.
    async fn cached_page(
        &self,
        user_id: u64,
        after: Option<Cursor>,
        limit: u32,
        token: Option<MinVersion>,
    ) -> Result<Option<Bytes>, ()> {
        if let Some(MinVersion {
            purchase_id: Some(pid),
            version,
        }) = token
            && !self
                .cache
                .has_applied(user_id, pid, version)
                .await
                .map_err(|_| ())?
        {
            return Ok(None);
        }
        let page = self
            .cache
            .page(user_id, after, limit)
            .await
            .map_err(|_| ())?;
        let keys: Vec<String> = page
            .entries
            .iter()
            .map(|(_, id)| self.cache.keys().purchase(*id))
            .collect();
        let docs = self.docs(&keys).await?;
        let mut items: Vec<(Bytes, Head)> = Vec::with_capacity(docs.len());
        for ((_, id), doc) in page.entries.iter().zip(docs) {
            match doc {
                Some(Doc { deleted: true, .. }) => {}
                Some(Doc {
                    data: Some(data), ..
                }) => match document::head(&data) {
                    Some(h) if h.user_id == user_id => items.push((data, h)),
                    Some(_) => {}
                    None => return Err(()),
                },
                _ => {
                    // Listed but not stored yet: read it through.
                    match self.load_purchase(*id, None).await {
                        Loaded::Purchase(Some(j)) if j.0.user_id == user_id => {
                            let data = document::purchase_bytes(&j.0);
                            let h = Head {
                                id: j.0.id,
                                user_id,
                                package_id: j.0.package_id,
                                version: j.0.version,
                            };
                            items.push((data, h));
                        }
                        Loaded::Cached(data, h) if h.user_id == user_id => items.push((data, h)),
                        Loaded::Failed(_) => return Err(()),
                        _ => {}
                    }
                }
            }
        }
        let mut package_ids: Vec<u64> = items.iter().map(|(_, h)| h.package_id).collect();
        package_ids.sort_unstable();
        package_ids.dedup();
        let pkeys: Vec<String> = package_ids
            .iter()
            .map(|id| self.cache.keys().package(*id))
            .collect();
        let pdocs = self.docs(&pkeys).await?;
        let mut packages: Vec<(u64, Bytes)> = Vec::with_capacity(package_ids.len());
        for (id, d) in package_ids.iter().zip(pdocs) {
            match d {
                Some(Doc { data: Some(b), .. }) => packages.push((*id, b)),
                _ => match self.load_package(*id).await {
                    Loaded::Package(Some(p)) => packages.push((*id, document::package_bytes(&p))),
                    Loaded::Package(None) => {}
                    _ => return Err(()),
                },
            }
        }
        let next = if page.more {
            page.entries
                .last()
                .map(|(s, id)| Cursor { score: *s, id: *id })
        } else {
            None
        };
        let joined = items.iter().filter_map(|(d, h)| {
            packages
                .binary_search_by_key(&h.package_id, |(id, _)| *id)
                .ok()
                .and_then(|i| packages.get(i))
                .map(|(_, p)| (&d[..], &p[..]))
        });
        document::page(joined, next).map(Some).ok_or(())
    }
}

async fn load_purchase(cache: Arc<Cache>, store: Arc<Store>, id: u64, min: Option<u64>) -> Loaded {
    // A reader that missed just before another load filled the cache
    // re-checks it instead of querying MySQL again.
    if cache.is_up()
        && let Ok(Some(Doc {
            data: Some(data),
            version,
            ..
        })) = cache.doc(&cache.keys().purchase(id)).await
        && min.is_none_or(|m| version >= m)
        && let Some(head) = document::head(&data)
    {
        return Loaded::Cached(data, head);
    }
    match store.purchase(id).await {
        Ok(Some(j)) => {
            cache.fill(std::slice::from_ref(&j), false).await;
            Loaded::Purchase(Some(Arc::new(j)))
        }
        Ok(None) => Loaded::Purchase(None),
        Err(e) => failed(e),
    }
}
