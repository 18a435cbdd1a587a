//! The API's Prometheus metrics, under the `paystream_api` prefix: request
//! latency histograms by route, method and status; cache results (hit ratio
//! = `hit / (hit + miss + stale + bypass)`), MySQL reads by reason and the
//! fallback count while Redis is unusable; coalesced waits, fills, the near
//! cache and the health of Redis and MySQL. Every handle used while serving
//! is created up front and updated with atomics only, so no request takes a
//! lock to count itself.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use std::sync::Arc;

/// Upper bounds of the latency buckets, seconds.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

#[derive(Debug, Default)]
struct HistogramInner {
    counts: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

/// A latency histogram updated with atomics only (prometheus-client's own
/// histogram takes a mutex per observation).
#[derive(Debug, Clone, Default)]
pub struct LatencyHistogram {
    inner: Arc<HistogramInner>,
}

impl LatencyHistogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        if let Some(c) = self.inner.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.inner.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.inner
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        // The encoder accumulates: it wants each bucket's own count.
        let mut total = 0u64;
        let mut buckets = Vec::with_capacity(LATENCY_BUCKETS.len() + 1);
        for (i, c) in self.inner.counts.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            total += n;
            let upper = LATENCY_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY);
            buckets.push((upper, n));
        }
        let sum = self.inner.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, total, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Labels of the request histogram.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Route template, e.g. `/v1/purchases/{id}`, or `unmatched`.
    pub route: String,
    /// HTTP method.
    pub method: String,
    /// Status code.
    pub status: u16,
}

/// A label with one value.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Kind {
    /// The value.
    pub kind: String,
}

/// The routes whose handles are made up front: `(method, template)`.
pub const ROUTES: [(&str, &str); 10] = [
    ("GET", "/v1/users/{user_id}/purchases"),
    ("GET", "/v1/purchases/{id}"),
    ("POST", "/v1/purchases"),
    ("POST", "/v1/purchases/{id}/payments"),
    ("GET", "/openapi.json"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/bench/constant"),
    ("GET", "/bench/mysql/purchases/{id}"),
];

/// The statuses whose handles are made up front.
pub const STATUSES: [u16; 17] = [
    200, 201, 304, 400, 401, 403, 404, 405, 409, 412, 413, 415, 422, 429, 500, 503, 504,
];

type Slots = [[OnceLock<LatencyHistogram>; STATUSES.len()]; ROUTES.len()];

/// Request latency by route, method and status.
pub struct RequestMetrics {
    family: Family<RequestLabels, LatencyHistogram>,
    slots: Box<Slots>,
}

impl RequestMetrics {
    fn new(family: Family<RequestLabels, LatencyHistogram>) -> Self {
        Self {
            family,
            slots: Box::new(std::array::from_fn(|_| {
                std::array::from_fn(|_| OnceLock::new())
            })),
        }
    }

    /// Records one request. Known routes and statuses use a cached handle;
    /// anything else goes through the family (a lock, but never on a
    /// well-formed hot path).
    pub fn observe(&self, method: &str, route: Option<&str>, status: u16, took: Duration) {
        let r =
            route.and_then(|route| ROUTES.iter().position(|(m, t)| *t == route && *m == method));
        let s = STATUSES.iter().position(|x| *x == status);
        if let (Some(r), Some(s)) = (r, s)
            && let Some(slot) = self.slots.get(r).and_then(|row| row.get(s))
        {
            slot.get_or_init(|| self.handle(method, route.unwrap_or("unmatched"), status))
                .observe(took);
            return;
        }
        self.handle(method, route.unwrap_or("unmatched"), status)
            .observe(took);
    }

    fn handle(&self, method: &str, route: &str, status: u16) -> LatencyHistogram {
        self.family
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                method: method.to_string(),
                status,
            })
            .clone()
    }
}

fn counter(family: &Family<Kind, Counter>, kind: &str) -> Counter {
    family
        .get_or_create(&Kind {
            kind: kind.to_string(),
        })
        .clone()
}

/// Cache lookups by result.
#[derive(Clone)]
pub struct CacheCounters {
    /// Served from Redis (or the near cache).
    pub hit: Counter,
    /// Not in Redis.
    pub miss: Counter,
    /// In Redis, but older than the reader's minimum version.
    pub stale: Counter,
    /// Redis skipped because it is down.
    pub bypass: Counter,
}

/// MySQL reads by reason.
#[derive(Clone)]
pub struct ReadReasons {
    /// A cache miss.
    pub miss: Counter,
    /// The cached copy was older than the reader asked for.
    pub stale: Counter,
    /// Redis is down or failed: the fallback.
    pub redis_down: Counter,
    /// A list while the read model is incomplete (rebuilding or lost).
    pub model_incomplete: Counter,
}

/// Handles to every API metric; cheap to clone.
#[derive(Clone)]
pub struct ApiMetrics {
    /// Request latency.
    pub requests: Arc<RequestMetrics>,
    /// Cache results.
    pub cache: CacheCounters,
    /// Near-cache hits.
    pub near_hit: Counter,
    /// Near-cache misses.
    pub near_miss: Counter,
    /// Near-cache invalidations received.
    pub near_invalidations: Counter,
    /// MySQL reads by reason.
    pub mysql_reads: ReadReasons,
    /// Requests served from MySQL because Redis was unusable.
    pub fallback: Counter,
    /// Read queries actually sent to MySQL.
    pub db_queries: Counter,
    /// Requests that joined a load already in flight instead of querying.
    pub coalesced: Counter,
    /// Reads refused because the MySQL read limit was saturated.
    pub db_read_rejected: Counter,
    /// Cache fills that were applied.
    pub fills_applied: Counter,
    /// Cache fills the version rule ignored (Redis held a newer version).
    pub fills_ignored: Counter,
    /// Cache fills that failed.
    pub fills_failed: Counter,
    /// 1 while Redis answers.
    pub redis_up: Gauge,
    /// 1 while MySQL answers.
    pub mysql_up: Gauge,
    /// 1 while the read model's lists are complete.
    pub model_complete: Gauge,
    /// Requests being served.
    pub in_flight: Gauge,
}

impl ApiMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let r = registry.sub_registry_with_prefix("api");
        let family = Family::<RequestLabels, LatencyHistogram>::default();
        r.register(
            "request_duration_seconds",
            "Request latency by route, method and status",
            family.clone(),
        );
        let cache = Family::<Kind, Counter>::default();
        r.register(
            "cache_lookups",
            "Read-model lookups by result (hit, miss, stale, bypass)",
            cache.clone(),
        );
        let near = Family::<Kind, Counter>::default();
        r.register(
            "near_cache_lookups",
            "Near-cache lookups by result",
            near.clone(),
        );
        let reads = Family::<Kind, Counter>::default();
        r.register(
            "mysql_reads",
            "Reads answered from MySQL, by reason (miss, stale, redis_down, model_incomplete)",
            reads.clone(),
        );
        let fills = Family::<Kind, Counter>::default();
        r.register(
            "cache_fills",
            "Cache fills after a MySQL read, by result (applied, ignored, failed)",
            fills.clone(),
        );
        let m = Self {
            requests: Arc::new(RequestMetrics::new(family)),
            cache: CacheCounters {
                hit: counter(&cache, "hit"),
                miss: counter(&cache, "miss"),
                stale: counter(&cache, "stale"),
                bypass: counter(&cache, "bypass"),
            },
            near_hit: counter(&near, "hit"),
            near_miss: counter(&near, "miss"),
            near_invalidations: Counter::default(),
            mysql_reads: ReadReasons {
                miss: counter(&reads, "miss"),
                stale: counter(&reads, "stale"),
                redis_down: counter(&reads, "redis_down"),
                model_incomplete: counter(&reads, "model_incomplete"),
            },
            fallback: Counter::default(),
            db_queries: Counter::default(),
            coalesced: Counter::default(),
            db_read_rejected: Counter::default(),
            fills_applied: counter(&fills, "applied"),
            fills_ignored: counter(&fills, "ignored"),
            fills_failed: counter(&fills, "failed"),
            redis_up: Gauge::default(),
            mysql_up: Gauge::default(),
            model_complete: Gauge::default(),
            in_flight: Gauge::default(),
        };
        r.register(
            "near_cache_invalidations",
            "Near-cache invalidations received from Redis",
            m.near_invalidations.clone(),
        );
        r.register(
            "fallback",
            "Requests served from MySQL because Redis was down or failing",
            m.fallback.clone(),
        );
        r.register(
            "db_read_queries",
            "Read queries sent to MySQL",
            m.db_queries.clone(),
        );
        r.register(
            "coalesced_reads",
            "Reads that joined an identical MySQL load already in flight",
            m.coalesced.clone(),
        );
        r.register(
            "db_read_rejected",
            "Reads refused (503) because the MySQL read limit was saturated",
            m.db_read_rejected.clone(),
        );
        r.register("redis_up", "1 while Redis answers", m.redis_up.clone());
        r.register("mysql_up", "1 while MySQL answers", m.mysql_up.clone());
        r.register(
            "read_model_complete",
            "1 while the read model's lists are complete (the consumer is live)",
            m.model_complete.clone(),
        );
        r.register(
            "in_flight_requests",
            "Requests being served",
            m.in_flight.clone(),
        );
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_encode_and_count() {
        let mut reg = Registry::with_prefix("paystream");
        let m = ApiMetrics::register(&mut reg);
        m.requests.observe(
            "GET",
            Some("/v1/purchases/{id}"),
            200,
            Duration::from_micros(300),
        );
        m.requests.observe(
            "GET",
            Some("/v1/purchases/{id}"),
            200,
            Duration::from_millis(30),
        );
        m.requests
            .observe("GET", None, 404, Duration::from_micros(50));
        m.requests
            .observe("PUT", Some("/x"), 599, Duration::from_secs(20));
        m.cache.hit.inc();
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap_or_default();
        assert!(out.contains(
            "paystream_api_request_duration_seconds_count{route=\"/v1/purchases/{id}\",method=\"GET\",status=\"200\"} 2"
        ), "{out}");
        assert!(
            out.contains(
                "le=\"0.0005\",route=\"/v1/purchases/{id}\",method=\"GET\",status=\"200\"} 1"
            ),
            "{out}"
        );
        assert!(out.contains("route=\"unmatched\""), "{out}");
        assert!(out.contains("status=\"599\""), "{out}");
        assert!(
            out.contains("paystream_api_cache_lookups_total{kind=\"hit\"} 1"),
            "{out}"
        );
        assert!(out.contains("paystream_api_fallback_total 0"), "{out}");
    }
}
