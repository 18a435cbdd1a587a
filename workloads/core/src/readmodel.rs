//! The Redis read model: key layout, the documents the API serves, the
//! version rule and the one Lua script that applies every guarded write.
//!
//! The consumer writes the model from the change topics and the API fills it
//! from MySQL on a cache miss; both build keys and script calls here, so they
//! cannot disagree on where a value lives or when a write may land. A write
//! carries the row's `version` and a deleted flag; it applies only when
//! `(version, deleted)` is greater than what is stored (see [`supersedes`]),
//! so replays, re-deliveries and stale cache fills never move the model back.
//! Keys that one script call touches share a Redis Cluster hash tag, so every
//! call is atomic on one slot. `docs/read-model.md` describes the layout and
//! `docs/adr/0003-read-model-version.md` the choice of version.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::model::PurchaseStatus;

/// The source tables the read model is built from: the consumer reads their
/// change topics and waits until both exist, so a pipeline must capture them.
pub const SOURCE_TABLES: [&str; 2] = ["purchases", "packages"];

/// The Lua script behind every guarded write (`EVALSHA` it; load it once per
/// server). `ARGV[1]` names the operation; [`ScriptCall`] builds the keys and
/// arguments of each.
///
/// - `doc`: one document hash `{v, del, d}`. Applies when the incoming rank
///   `2 * version + deleted` is greater than the stored one. A delete keeps
///   only `{v, del}` and expires after the tombstone TTL.
/// - `member`: one purchase's membership of a user's list, guarded by the
///   user's version hash; a removal leaves a tombstone rank that is collected
///   after the TTL (the user's `gone` sorted set holds the expiry times).
/// - `marks`: advances consumer offset marks that still exist and returns the
///   fields that were missing (Redis lost data).
///
/// Returns 1 when the write applied, 0 when the stored state was newer or
/// equal, and for `marks` the list of missing fields.
pub const SCRIPT: &str = r#"-- paystream read-model writer (workloads/core/src/readmodel.rs)
local op = ARGV[1]
if op == 'doc' then
  local rank = 2 * tonumber(ARGV[2]) + tonumber(ARGV[3])
  local cur = redis.call('HMGET', KEYS[1], 'v', 'del')
  if cur[1] then
    local stored = 2 * tonumber(cur[1]) + (tonumber(cur[2]) or 0)
    if rank <= stored then return 0 end
  end
  if ARGV[3] == '1' then
    redis.call('DEL', KEYS[1])
    redis.call('HSET', KEYS[1], 'v', ARGV[2], 'del', '1')
    redis.call('PEXPIRE', KEYS[1], ARGV[5])
  else
    redis.call('HSET', KEYS[1], 'v', ARGV[2], 'del', '0', 'd', ARGV[4])
    redis.call('PERSIST', KEYS[1])
  end
  return 1
elseif op == 'member' then
  local rank = 2 * tonumber(ARGV[3]) + tonumber(ARGV[4])
  local cur = tonumber(redis.call('HGET', KEYS[2], ARGV[2]))
  local applied = 0
  if (not cur) or rank > cur then
    redis.call('HSET', KEYS[2], ARGV[2], rank)
    if ARGV[4] == '1' then
      redis.call('ZREM', KEYS[1], ARGV[2])
      redis.call('ZADD', KEYS[3], tonumber(ARGV[7]) + tonumber(ARGV[6]), ARGV[2])
    else
      redis.call('ZADD', KEYS[1], ARGV[5], ARGV[2])
      redis.call('ZREM', KEYS[3], ARGV[2])
    end
    applied = 1
  end
  local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[7], 'LIMIT', 0, 32)
  for _, m in ipairs(expired) do
    redis.call('HDEL', KEYS[2], m)
    redis.call('ZREM', KEYS[3], m)
  end
  return applied
elseif op == 'marks' then
  local missing = {}
  for i = 2, #ARGV, 2 do
    if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then
      redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    else
      table.insert(missing, ARGV[i])
    end
  end
  return missing
end
return redis.error_reply('paystream: unknown read-model op ' .. tostring(op))
"#;

/// A key prefix that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("read-model key prefix {0:?} must be non-empty and use only [A-Za-z0-9._:-]")]
pub struct PrefixError(pub String);

/// Builds every key of one read model. The prefix separates models (one per
/// source) sharing a Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix`; braces are refused because they would change the
    /// Redis Cluster hash tags.
    pub fn new(prefix: &str) -> Result<Self, PrefixError> {
        let ok = !prefix.is_empty()
            && prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'));
        if ok {
            Ok(Self {
                prefix: prefix.to_string(),
            })
        } else {
            Err(PrefixError(prefix.to_string()))
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// One purchase: hash `{v, del, d}` where `d` is a [`PurchaseView`] JSON.
    pub fn purchase(&self, id: u64) -> String {
        format!("{}:purchase:{{{id}}}", self.prefix)
    }

    /// One catalogue package: hash `{v, del, d}` where `d` is a [`PackageView`] JSON.
    pub fn package(&self, id: u64) -> String {
        format!("{}:package:{{{id}}}", self.prefix)
    }

    /// A user's purchases: sorted set, score = `created_at` in microseconds,
    /// member = the zero-padded purchase id ([`member`]).
    pub fn user_purchases(&self, user_id: u64) -> String {
        format!("{}:user:{{{user_id}}}:purchases", self.prefix)
    }

    /// The version guard of a user's list: hash member to rank.
    pub fn user_versions(&self, user_id: u64) -> String {
        format!("{}:user:{{{user_id}}}:pver", self.prefix)
    }

    /// When the removal tombstones of a user's list expire: sorted set,
    /// score = expiry in milliseconds since the epoch.
    pub fn user_gone(&self, user_id: u64) -> String {
        format!("{}:user:{{{user_id}}}:pgone", self.prefix)
    }

    /// The consumer's applied-offset marks (hash; see [`Mark`]). Its loss is
    /// how the consumer notices that Redis lost data.
    pub fn meta_offsets(&self) -> String {
        format!("{}:meta:{{meta}}:offsets", self.prefix)
    }
}

/// The sorted-set member of a purchase id: zero-padded to 20 digits so that
/// lexicographic order (the tie-break of equal scores) is numeric order.
pub fn member(id: u64) -> String {
    format!("{id:020}")
}

/// The purchase id of a sorted-set member.
pub fn parse_member(member: &str) -> Option<u64> {
    member.parse().ok()
}

/// The sorted-set score of a purchase: `created_at` in microseconds since the
/// epoch. Exact in an `f64` until the year 2255.
pub fn score(created_at: DateTime<Utc>) -> i64 {
    created_at.timestamp_micros()
}

/// A row version and whether the row is deleted: what every write is guarded by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Version {
    /// The row's `version` column (1 on insert, +1 per update).
    pub version: u64,
    /// The write removes the row.
    pub deleted: bool,
}

impl Version {
    /// A live row at `version`.
    pub fn live(version: u64) -> Self {
        Self {
            version,
            deleted: false,
        }
    }

    /// A deleted row whose last version was `version`.
    pub fn deleted(version: u64) -> Self {
        Self {
            version,
            deleted: true,
        }
    }

    /// `(version, deleted)` as one number, the form the script compares:
    /// `2 * version + deleted`. Exact in Lua for versions below 2^52.
    pub fn rank(self) -> u64 {
        self.version
            .saturating_mul(2)
            .saturating_add(u64::from(self.deleted))
    }
}

/// The version rule: a write applies iff `(version, deleted)` of the incoming
/// write is lexicographically greater than the stored one. A delete beats an
/// upsert of the same version; an exact replay is a no-op. The script
/// implements the same rule; this function is its specification.
pub fn supersedes(incoming: Version, stored: Option<Version>) -> bool {
    match stored {
        None => true,
        Some(s) => (incoming.version, incoming.deleted) > (s.version, s.deleted),
    }
}

/// Timestamps as the change events write them: ISO-8601 UTC with six
/// fractional digits and `Z`.
pub mod micros {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Formats `t` with microseconds.
    pub fn format(t: &DateTime<Utc>) -> String {
        t.to_rfc3339_opts(SecondsFormat::Micros, true)
    }

    /// Serde serializer.
    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(t))
    }

    /// Serde deserializer: any RFC 3339 timestamp.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

/// A purchase as the API serves it (the `d` field of its document). The
/// package's name and price are joined at read time from [`PackageView`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseView {
    /// Purchase id.
    pub id: u64,
    /// The buyer.
    pub user_id: u64,
    /// The package bought.
    pub package_id: u64,
    /// Units bought.
    pub quantity: u32,
    /// Total amount, as an exact decimal string.
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    /// ISO-4217 currency.
    pub currency: String,
    /// Lifecycle status.
    pub status: PurchaseStatus,
    /// Creation time (UTC, microseconds).
    #[serde(with = "micros")]
    pub created_at: DateTime<Utc>,
    /// Last change (UTC, microseconds).
    #[serde(with = "micros")]
    pub updated_at: DateTime<Utc>,
    /// Row version.
    pub version: u64,
}

/// A catalogue package as the API shows it next to a purchase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageView {
    /// Package id.
    pub id: u64,
    /// Business code.
    pub code: String,
    /// Display name.
    pub name: String,
    /// Unit price, as an exact decimal string.
    #[serde(with = "rust_decimal::serde::str")]
    pub price: Decimal,
    /// ISO-4217 currency.
    pub currency: String,
    /// Whether it can still be bought.
    pub active: bool,
    /// Row version.
    pub version: u64,
}

/// One guarded write, as keys and arguments of [`SCRIPT`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptCall {
    /// Write or delete one document.
    Doc {
        /// The document key ([`Keys::purchase`] or [`Keys::package`]).
        key: String,
        /// Guard.
        version: Version,
        /// The view JSON; ignored for deletes.
        json: String,
        /// How long a delete tombstone lives.
        tombstone_ttl_ms: u64,
    },
    /// Add a purchase to, or remove it from, a user's list.
    Member {
        /// The user.
        user_id: u64,
        /// The purchase.
        purchase_id: u64,
        /// Guard.
        version: Version,
        /// Score ([`score`]); ignored for removals.
        score: i64,
        /// How long a removal tombstone lives.
        tombstone_ttl_ms: u64,
        /// The writer's clock, milliseconds since the epoch (tombstone expiry).
        now_ms: i64,
    },
}

impl ScriptCall {
    /// The `KEYS` of the call, all in one hash slot.
    pub fn keys(&self, keys: &Keys) -> Vec<String> {
        match self {
            Self::Doc { key, .. } => vec![key.clone()],
            Self::Member { user_id, .. } => vec![
                keys.user_purchases(*user_id),
                keys.user_versions(*user_id),
                keys.user_gone(*user_id),
            ],
        }
    }

    /// The `ARGV` of the call.
    pub fn args(&self) -> Vec<String> {
        let flag = |v: &Version| if v.deleted { "1" } else { "0" }.to_string();
        match self {
            Self::Doc {
                version,
                json,
                tombstone_ttl_ms,
                ..
            } => vec![
                "doc".into(),
                version.version.to_string(),
                flag(version),
                if version.deleted {
                    String::new()
                } else {
                    json.clone()
                },
                tombstone_ttl_ms.max(&1).to_string(),
            ],
            Self::Member {
                purchase_id,
                version,
                score,
                tombstone_ttl_ms,
                now_ms,
                ..
            } => vec![
                "member".into(),
                member(*purchase_id),
                version.version.to_string(),
                flag(version),
                score.to_string(),
                tombstone_ttl_ms.to_string(),
                now_ms.to_string(),
            ],
        }
    }

    /// The guard of the call.
    pub fn version(&self) -> Version {
        match self {
            Self::Doc { version, .. } | Self::Member { version, .. } => *version,
        }
    }
}

/// The keys and arguments of a `marks` call: advance each existing mark.
pub fn marks_call(keys: &Keys, marks: &[(String, Mark)]) -> (Vec<String>, Vec<String>) {
    let mut args = Vec::with_capacity(1 + marks.len() * 2);
    args.push("marks".to_string());
    for (field, mark) in marks {
        args.push(field.clone());
        args.push(mark.encode());
    }
    (vec![keys.meta_offsets()], args)
}

/// The consumer's progress on one partition, stored in [`Keys::meta_offsets`]
/// under [`mark_field`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Applied up to (not including) this offset, and the model holds the
    /// partition's whole history.
    Live(i64),
    /// Replaying from the beginning after a loss (or a first start); applied
    /// up to this offset so far.
    Rebuilding(i64),
}

impl Mark {
    /// The stored form: `<offset>` or `r<offset>`.
    pub fn encode(self) -> String {
        match self {
            Self::Live(o) => o.to_string(),
            Self::Rebuilding(o) => format!("r{o}"),
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        match s.strip_prefix('r') {
            Some(rest) => rest.parse().ok().map(Self::Rebuilding),
            None => s.parse().ok().map(Self::Live),
        }
    }

    /// The next offset to apply.
    pub fn offset(self) -> i64 {
        match self {
            Self::Live(o) | Self::Rebuilding(o) => o,
        }
    }
}

/// The hash field of one partition's mark: `<topic>#<partition>`.
pub fn mark_field(topic: &str, partition: i32) -> String {
    format!("{topic}#{partition}")
}

/// The hash field holding a topic's partition count: `n:<topic>`.
pub fn partition_count_field(topic: &str) -> String {
    format!("n:{topic}")
}

/// Whether the API may trust the model's lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelStatus {
    /// Every partition of every topic is live: the lists are complete (and at
    /// most briefly behind).
    Complete,
    /// Some partition is replaying or not applied yet: read lists from MySQL.
    Rebuilding,
    /// No marks at all (Redis lost its data, or the consumer never ran).
    Unknown,
}

/// Judges the marks hash (all its fields) for `topics`. Pure, so the API and
/// the tests read the model's state the same way.
pub fn model_status(fields: &BTreeMap<String, String>, topics: &[&str]) -> ModelStatus {
    if fields.is_empty() {
        return ModelStatus::Unknown;
    }
    for topic in topics {
        let Some(n) = fields
            .get(&partition_count_field(topic))
            .and_then(|n| n.parse::<i32>().ok())
        else {
            return ModelStatus::Rebuilding;
        };
        for p in 0..n {
            match fields
                .get(&mark_field(topic, p))
                .and_then(|m| Mark::parse(m))
            {
                Some(Mark::Live(_)) => {}
                _ => return ModelStatus::Rebuilding,
            }
        }
    }
    ModelStatus::Complete
}

/// A page position in a user's list: the last item served. Lists run newest
/// first by `(created_at, id)`; the next page holds the items strictly after
/// the cursor in that order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// Score of the last item ([`score`]).
    pub score: i64,
    /// Id of the last item.
    pub id: u64,
}

impl Cursor {
    /// Opaque form: URL-safe base64 of `<score>:<id>`.
    pub fn encode(self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}", self.score, self.id))
    }

    /// Parses [`Cursor::encode`]'s form.
    pub fn decode(s: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(s).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let (score, id) = text.split_once(':')?;
        Some(Self {
            score: score.parse().ok()?,
            id: id.parse().ok()?,
        })
    }

    /// Whether an item `(score, id)` comes after this cursor, newest first.
    pub fn is_before(self, score: i64, id: u64) -> bool {
        (score, id) < (self.score, self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_a_hash_tag_per_script_call() {
        let k = Keys::new("ps").unwrap();
        assert_eq!(k.purchase(42), "ps:purchase:{42}");
        assert_eq!(k.package(7), "ps:package:{7}");
        assert_eq!(k.user_purchases(9), "ps:user:{9}:purchases");
        assert_eq!(k.user_versions(9), "ps:user:{9}:pver");
        assert_eq!(k.user_gone(9), "ps:user:{9}:pgone");
        assert_eq!(k.meta_offsets(), "ps:meta:{meta}:offsets");
        let call = ScriptCall::Member {
            user_id: 9,
            purchase_id: 1,
            version: Version::live(1),
            score: 0,
            tombstone_ttl_ms: 1,
            now_ms: 0,
        };
        let tags: Vec<&str> = call
            .keys(&k)
            .iter()
            .map(|key| {
                let open = key.find('{').unwrap();
                let close = key.find('}').unwrap();
                &key[open..=close]
            })
            .map(|t| if t == "{9}" { "{9}" } else { "other" })
            .collect();
        assert_eq!(tags, vec!["{9}"; 3]);
        assert!(Keys::new("bad{tag}").is_err());
        assert!(Keys::new("").is_err());
        assert!(Keys::new("paystream.test-1:x").is_ok());
    }

    #[test]
    fn members_sort_like_numbers() {
        assert_eq!(member(42), "00000000000000000042");
        assert!(member(9) < member(10));
        assert!(member(99_999) < member(100_000));
        assert_eq!(parse_member(&member(u64::MAX)), Some(u64::MAX));
    }

    #[test]
    fn scores_are_exact_microseconds() {
        let t = DateTime::parse_from_rfc3339("2024-05-03T23:59:59.999999Z")
            .unwrap()
            .with_timezone(&Utc);
        let s = score(t);
        assert_eq!(s, 1_714_780_799_999_999);
        assert_eq!(s as f64 as i64, s, "exact in f64");
    }

    #[test]
    fn the_version_rule() {
        assert!(supersedes(Version::live(1), None));
        assert!(supersedes(Version::deleted(1), None));
        assert!(supersedes(Version::live(2), Some(Version::live(1))));
        assert!(
            !supersedes(Version::live(1), Some(Version::live(1))),
            "replay"
        );
        assert!(
            !supersedes(Version::live(1), Some(Version::live(2))),
            "older"
        );
        assert!(
            supersedes(Version::deleted(2), Some(Version::live(2))),
            "delete wins a tie"
        );
        assert!(
            !supersedes(Version::live(2), Some(Version::deleted(2))),
            "late upsert"
        );
        assert!(!supersedes(Version::deleted(2), Some(Version::deleted(2))));
        assert!(!supersedes(Version::live(1), Some(Version::deleted(2))));
        // The rank orders exactly like the rule.
        for a in [Version::live(3), Version::deleted(3), Version::live(4)] {
            for b in [Version::live(3), Version::deleted(3), Version::live(4)] {
                assert_eq!(supersedes(a, Some(b)), a.rank() > b.rank(), "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn script_calls_build_their_arguments() {
        let doc = ScriptCall::Doc {
            key: "ps:purchase:{1}".into(),
            version: Version::deleted(3),
            json: "{}".into(),
            tombstone_ttl_ms: 1000,
        };
        assert_eq!(doc.args(), vec!["doc", "3", "1", "", "1000"]);
        let m = ScriptCall::Member {
            user_id: 2,
            purchase_id: 1,
            version: Version::live(5),
            score: 1_700_000_000_000_000,
            tombstone_ttl_ms: 10,
            now_ms: 20,
        };
        assert_eq!(
            m.args(),
            vec![
                "member",
                "00000000000000000001",
                "5",
                "0",
                "1700000000000000",
                "10",
                "20"
            ]
        );
        assert!(SCRIPT.contains("'doc'") && SCRIPT.contains("'member'"));
        let (keys, args) = marks_call(
            &Keys::new("ps").unwrap(),
            &[("t#0".into(), Mark::Rebuilding(5))],
        );
        assert_eq!(keys, vec!["ps:meta:{meta}:offsets"]);
        assert_eq!(args, vec!["marks", "t#0", "r5"]);
    }

    #[test]
    fn views_serialise_money_as_strings_and_times_with_micros() {
        let v = PurchaseView {
            id: 1,
            user_id: 2,
            package_id: 3,
            quantity: 4,
            amount: "59.90".parse().unwrap(),
            currency: "EUR".into(),
            status: PurchaseStatus::Paid,
            created_at: DateTime::parse_from_rfc3339("2025-01-01T00:00:00.5Z")
                .unwrap()
                .with_timezone(&Utc),
            updated_at: DateTime::parse_from_rfc3339("2025-01-02T00:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
            version: 2,
        };
        let j = serde_json::to_value(&v).unwrap();
        assert_eq!(j["amount"], "59.90");
        assert_eq!(j["status"], "paid");
        assert_eq!(j["created_at"], "2025-01-01T00:00:00.500000Z");
        assert_eq!(j["updated_at"], "2025-01-02T00:00:00.000000Z");
        let back: PurchaseView = serde_json::from_value(j).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn marks_and_model_status() {
        assert_eq!(Mark::parse("12"), Some(Mark::Live(12)));
        assert_eq!(Mark::parse("r0"), Some(Mark::Rebuilding(0)));
        assert_eq!(Mark::parse("x"), None);
        assert_eq!(Mark::Rebuilding(7).encode(), "r7");
        let mut f = BTreeMap::new();
        assert_eq!(model_status(&f, &["t"]), ModelStatus::Unknown);
        f.insert(partition_count_field("t"), "2".to_string());
        f.insert(mark_field("t", 0), "5".to_string());
        assert_eq!(model_status(&f, &["t"]), ModelStatus::Rebuilding);
        f.insert(mark_field("t", 1), "r3".to_string());
        assert_eq!(model_status(&f, &["t"]), ModelStatus::Rebuilding);
        f.insert(mark_field("t", 1), "9".to_string());
        assert_eq!(model_status(&f, &["t"]), ModelStatus::Complete);
        assert_eq!(model_status(&f, &["t", "u"]), ModelStatus::Rebuilding);
    }

    #[test]
    fn cursors_round_trip_and_order() {
        let c = Cursor {
            score: 1_714_780_799_999_999,
            id: 42,
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("not base64!"), None);
        assert!(c.is_before(c.score, 41), "same time, smaller id comes next");
        assert!(!c.is_before(c.score, 42));
        assert!(!c.is_before(c.score + 1, 0), "newer items came before");
        assert!(c.is_before(c.score - 1, u64::MAX));
    }
}
