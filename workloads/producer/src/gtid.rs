//! Binlog positions as global transaction identifiers, for both flavours.
//!
//! MariaDB names a transaction `domain-server-seq` ([`MariaGtid`]) and a
//! replica's position is one GTID per replication domain ([`MariaGtidList`],
//! the format of `@@gtid_slave_pos` and `@slave_connect_state`). MySQL names a
//! transaction `uuid:n` and a position is the set of every transaction applied
//! so far ([`MySqlGtidSet`], the format of `@@gtid_executed`), kept as merged,
//! sorted intervals. [`GtidPosition`] is either one; it is what the checkpoint
//! stores, serialised as `{"flavor":"mariadb","gtid":"0-1-42"}` or
//! `{"flavor":"mysql","gtid":"<uuid>:1-5"}` so the JSON stays readable and the
//! `gtid` string can be pasted into the server as it is. Everything here is
//! pure: parse, print, compare and advance.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A position or GTID string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GtidError {
    /// A MariaDB GTID is not `domain-server-seq` with decimal numbers.
    #[error("invalid MariaDB GTID {0:?}: expected domain-server-seq, e.g. 0-1-42")]
    InvalidMariaGtid(String),
    /// A MariaDB GTID list names the same domain twice.
    #[error("MariaDB GTID list {list:?} names domain {domain} more than once")]
    DuplicateDomain {
        /// The whole list as given.
        list: String,
        /// The repeated domain.
        domain: u32,
    },
    /// A server UUID is not 32 hex digits in the 8-4-4-4-12 layout.
    #[error("invalid server UUID {0:?}")]
    InvalidUuid(String),
    /// A MySQL GTID set element is malformed.
    #[error("invalid MySQL GTID set element {element:?}: {reason}")]
    InvalidMySqlGtidSet {
        /// The offending `uuid:intervals` element.
        element: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// One MariaDB transaction: `domain-server-seq`, e.g. `0-1-42`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MariaGtid {
    /// Replication domain (`gtid_domain_id` of the writing server).
    pub domain: u32,
    /// `server_id` of the server that wrote the transaction.
    pub server_id: u32,
    /// Sequence number within the domain.
    pub seq: u64,
}

impl fmt::Display for MariaGtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server_id, self.seq)
    }
}

impl FromStr for MariaGtid {
    type Err = GtidError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || GtidError::InvalidMariaGtid(s.to_string());
        let mut parts = s.trim().split('-');
        let (Some(domain), Some(server_id), Some(seq), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        Ok(Self {
            domain: parse_decimal(domain).ok_or_else(bad)?,
            server_id: parse_decimal(server_id).ok_or_else(bad)?,
            seq: parse_decimal(seq).ok_or_else(bad)?,
        })
    }
}

/// Parses plain decimal digits only: no sign, no spaces, no `+`.
fn parse_decimal<T: FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A MariaDB GTID position: the last transaction of each replication domain,
/// e.g. `0-1-42,1-2-7`. Empty means "from the beginning of the binlogs".
///
/// It is printed in domain order so equal positions print equally.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct MariaGtidList {
    by_domain: BTreeMap<u32, MariaGtid>,
}

impl MariaGtidList {
    /// An empty position.
    pub fn new() -> Self {
        Self::default()
    }

    /// Advances the position past a committed transaction: the GTID replaces
    /// whatever its domain held. Sequence numbers are not compared, because
    /// after a failover a domain may legitimately continue from another
    /// server; the binlog order is the truth.
    pub fn apply(&mut self, gtid: MariaGtid) {
        self.by_domain.insert(gtid.domain, gtid);
    }

    /// The last transaction of `domain`, if any.
    pub fn get(&self, domain: u32) -> Option<MariaGtid> {
        self.by_domain.get(&domain).copied()
    }

    /// The GTIDs in domain order.
    pub fn iter(&self) -> impl Iterator<Item = MariaGtid> + '_ {
        self.by_domain.values().copied()
    }

    /// Number of domains.
    pub fn len(&self) -> usize {
        self.by_domain.len()
    }

    /// Whether no domain has a position.
    pub fn is_empty(&self) -> bool {
        self.by_domain.is_empty()
    }
}

impl FromIterator<MariaGtid> for MariaGtidList {
    /// Later GTIDs of a domain win, as with [`MariaGtidList::apply`].
    fn from_iter<I: IntoIterator<Item = MariaGtid>>(iter: I) -> Self {
        let mut list = Self::new();
        for gtid in iter {
            list.apply(gtid);
        }
        list
    }
}

impl fmt::Display for MariaGtidList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, gtid) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{gtid}")?;
        }
        Ok(())
    }
}

impl FromStr for MariaGtidList {
    type Err = GtidError;

    /// Parses `0-1-42,1-2-7`; whitespace around elements and an empty string
    /// are accepted (the server prints an empty position as `''`). A domain
    /// named twice is an error: the server would refuse such a position.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut list = Self::new();
        for element in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let gtid: MariaGtid = element.parse()?;
            if list.by_domain.insert(gtid.domain, gtid).is_some() {
                return Err(GtidError::DuplicateDomain {
                    list: s.to_string(),
                    domain: gtid.domain,
                });
            }
        }
        Ok(list)
    }
}

/// A MySQL server UUID (`source_id` of a GTID), printed in lowercase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerUuid(pub [u8; 16]);

impl ServerUuid {
    /// The UUID from its 16 raw bytes, as `GtidEvent::sid()` returns them.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }
}

impl fmt::Display for ServerUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl FromStr for ServerUuid {
    type Err = GtidError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || GtidError::InvalidUuid(s.to_string());
        let s = s.trim();
        let groups: Vec<&str> = s.split('-').collect();
        let lengths: Vec<usize> = groups.iter().map(|g| g.len()).collect();
        if lengths != [8, 4, 4, 4, 12] {
            return Err(bad());
        }
        let hex: String = groups.concat();
        let mut bytes = [0u8; 16];
        for (i, byte) in bytes.iter_mut().enumerate() {
            let pair = hex.get(2 * i..2 * i + 2).ok_or_else(bad)?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
        }
        Ok(Self(bytes))
    }
}

/// A MySQL GTID set, e.g. `3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:7-9`.
///
/// Intervals are kept merged and sorted, so the printed form is normalised:
/// UUIDs in ascending order, each with ascending, non-adjacent intervals.
/// Tagged GTIDs (MySQL 8.3+, `uuid:tag:n`) are not supported and are refused
/// when parsing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct MySqlGtidSet {
    /// Per UUID, inclusive `(start, end)` intervals, sorted and merged.
    sets: BTreeMap<ServerUuid, Vec<(u64, u64)>>,
}

impl MySqlGtidSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds transaction `txn_no` (1 or more) of `uuid`.
    pub fn add(&mut self, uuid: ServerUuid, txn_no: u64) {
        self.add_interval(uuid, txn_no, txn_no);
    }

    /// Whether transaction `txn_no` of `uuid` is in the set.
    pub fn contains(&self, uuid: ServerUuid, txn_no: u64) -> bool {
        self.sets.get(&uuid).is_some_and(|intervals| {
            intervals
                .iter()
                .any(|&(start, end)| start <= txn_no && txn_no <= end)
        })
    }

    /// Whether the set holds no transaction.
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// The UUIDs in the set, in ascending order.
    pub fn uuids(&self) -> impl Iterator<Item = ServerUuid> + '_ {
        self.sets.keys().copied()
    }

    /// The inclusive intervals of `uuid`, sorted and merged.
    pub fn intervals(&self, uuid: ServerUuid) -> &[(u64, u64)] {
        self.sets.get(&uuid).map(Vec::as_slice).unwrap_or(&[])
    }

    fn add_interval(&mut self, uuid: ServerUuid, start: u64, end: u64) {
        let intervals = self.sets.entry(uuid).or_default();
        intervals.push((start, end));
        intervals.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(intervals.len());
        for &(s, e) in intervals.iter() {
            match merged.last_mut() {
                // Overlapping or adjacent (`1-3` and `4-5` become `1-5`).
                Some(last) if s <= last.1.saturating_add(1) => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        *intervals = merged;
    }
}

impl fmt::Display for MySqlGtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (uuid, intervals)) in self.sets.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{uuid}")?;
            for &(start, end) in intervals {
                if start == end {
                    write!(f, ":{start}")?;
                } else {
                    write!(f, ":{start}-{end}")?;
                }
            }
        }
        Ok(())
    }
}

impl FromStr for MySqlGtidSet {
    type Err = GtidError;

    /// Parses `uuid:1-5:7,uuid2:3`. Whitespace and newlines around elements
    /// are accepted (`@@gtid_executed` prints `,\n` between UUIDs); the same
    /// UUID may appear more than once and its intervals are merged.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut set = Self::new();
        for element in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let bad = |reason| GtidError::InvalidMySqlGtidSet {
                element: element.to_string(),
                reason,
            };
            let mut parts = element.split(':');
            let uuid: ServerUuid = parts.next().unwrap_or_default().parse()?;
            let mut any = false;
            for interval in parts {
                any = true;
                let interval = interval.trim();
                let (start, end) = match interval.split_once('-') {
                    Some((a, b)) => (a, b),
                    None => (interval, interval),
                };
                let (Some(start), Some(end)) =
                    (parse_decimal::<u64>(start), parse_decimal::<u64>(end))
                else {
                    return Err(if interval.chars().any(|c| c.is_ascii_alphabetic()) {
                        bad("tagged GTIDs are not supported")
                    } else {
                        bad("an interval is not n or n-m")
                    });
                };
                if start == 0 || end < start {
                    return Err(bad("an interval must satisfy 1 <= start <= end"));
                }
                set.add_interval(uuid, start, end);
            }
            if !any {
                return Err(bad("a UUID without any interval"));
            }
        }
        Ok(set)
    }
}

/// The database flavour of a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    /// MariaDB: domain-server-seq GTIDs.
    MariaDb,
    /// MySQL: uuid:n GTIDs.
    MySql,
}

/// A binlog position as a GTID position of either flavour: what a checkpoint
/// stores and what the reader resumes from.
///
/// Serialised as `{"flavor":"mariadb","gtid":"0-1-42,1-2-7"}` or
/// `{"flavor":"mysql","gtid":"<uuid>:1-5"}`; deserialising parses and
/// normalises the `gtid` string, so a corrupt checkpoint fails loudly.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "PositionRepr", try_from = "PositionRepr")]
pub enum GtidPosition {
    /// A MariaDB GTID list.
    MariaDb(MariaGtidList),
    /// A MySQL GTID set.
    MySql(MySqlGtidSet),
}

impl GtidPosition {
    /// The flavour of this position.
    pub fn flavor(&self) -> Flavor {
        match self {
            Self::MariaDb(_) => Flavor::MariaDb,
            Self::MySql(_) => Flavor::MySql,
        }
    }

    /// The bare GTID string, as the server spells it (no flavour prefix).
    pub fn gtid_string(&self) -> String {
        match self {
            Self::MariaDb(list) => list.to_string(),
            Self::MySql(set) => set.to_string(),
        }
    }

    /// Parses a bare GTID string of the given flavour.
    pub fn parse(flavor: Flavor, gtid: &str) -> Result<Self, GtidError> {
        Ok(match flavor {
            Flavor::MariaDb => Self::MariaDb(gtid.parse()?),
            Flavor::MySql => Self::MySql(gtid.parse()?),
        })
    }
}

impl fmt::Display for GtidPosition {
    /// `mariadb:0-1-42` or `mysql:<uuid>:1-5`, for logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MariaDb(list) => write!(f, "mariadb:{list}"),
            Self::MySql(set) => write!(f, "mysql:{set}"),
        }
    }
}

/// The serialised shape of [`GtidPosition`].
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PositionRepr {
    flavor: Flavor,
    gtid: String,
}

impl From<GtidPosition> for PositionRepr {
    fn from(position: GtidPosition) -> Self {
        Self {
            flavor: position.flavor(),
            gtid: position.gtid_string(),
        }
    }
}

impl TryFrom<PositionRepr> for GtidPosition {
    type Error = GtidError;

    fn try_from(repr: PositionRepr) -> Result<Self, Self::Error> {
        Self::parse(repr.flavor, &repr.gtid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const U1: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
    const U2: &str = "4e11fa47-71ca-11e1-9e33-c80aa9429562";

    fn uuid(s: &str) -> ServerUuid {
        s.parse().unwrap()
    }

    #[test]
    fn maria_gtid_round_trips() {
        let g: MariaGtid = "0-1-42".parse().unwrap();
        assert_eq!(
            g,
            MariaGtid {
                domain: 0,
                server_id: 1,
                seq: 42
            }
        );
        assert_eq!(g.to_string(), "0-1-42");
        let big: MariaGtid = "4294967295-4294967295-18446744073709551615"
            .parse()
            .unwrap();
        assert_eq!(big.seq, u64::MAX);
        assert_eq!(
            big.to_string(),
            "4294967295-4294967295-18446744073709551615"
        );
    }

    #[test]
    fn maria_gtid_rejects_garbage() {
        for bad in [
            "",
            "0-1",
            "0-1-2-3",
            "a-1-2",
            "0--2",
            "-1-2-3",
            "0-1-+2",
            "0-1-2 x",
            "4294967296-1-1",
            "0-1-18446744073709551616",
        ] {
            assert!(bad.parse::<MariaGtid>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn maria_list_parses_sorts_and_applies() {
        let mut list: MariaGtidList = " 1-2-7 , 0-1-42".parse().unwrap();
        assert_eq!(list.to_string(), "0-1-42,1-2-7");
        assert_eq!(list.len(), 2);
        list.apply("0-3-43".parse().unwrap());
        list.apply("5-1-1".parse().unwrap());
        assert_eq!(list.to_string(), "0-3-43,1-2-7,5-1-1");
        assert_eq!(list.get(1).unwrap().seq, 7);
        assert_eq!(list.get(9), None);
    }

    #[test]
    fn maria_list_accepts_empty_and_refuses_duplicate_domains() {
        let empty: MariaGtidList = "".parse().unwrap();
        assert!(empty.is_empty());
        assert_eq!(empty.to_string(), "");
        assert_eq!(" , ".parse::<MariaGtidList>().unwrap(), empty);
        let err = "0-1-1,0-2-5".parse::<MariaGtidList>().unwrap_err();
        assert!(
            matches!(err, GtidError::DuplicateDomain { domain: 0, .. }),
            "{err}"
        );
        assert!("0-1-1,x".parse::<MariaGtidList>().is_err());
    }

    #[test]
    fn maria_list_from_iter_keeps_the_last_per_domain() {
        let list: MariaGtidList = ["0-1-1", "1-1-1", "0-1-2"]
            .into_iter()
            .map(|s| s.parse::<MariaGtid>().unwrap())
            .collect();
        assert_eq!(list.to_string(), "0-1-2,1-1-1");
    }

    #[test]
    fn uuid_round_trips_lowercase() {
        let u: ServerUuid = "3E11FA47-71CA-11E1-9E33-C80AA9429562".parse().unwrap();
        assert_eq!(u.to_string(), U1);
        assert_eq!(ServerUuid::from_bytes(u.0), u);
        for bad in [
            "",
            "3e11fa4771ca11e19e33c80aa9429562",
            "3e11fa47-71ca-11e1-9e33-c80aa942956",
            "3e11fa47-71ca-11e1-9e33-c80aa942956g",
            "3e11fa47-71ca-11e1-9e3-3c80aa9429562",
        ] {
            assert!(bad.parse::<ServerUuid>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn mysql_set_normalises_on_parse() {
        let s: MySqlGtidSet = format!("{U2}:3,\n{U1}:7-9:1-5:6, {U2}:1-2:10")
            .parse()
            .unwrap();
        assert_eq!(s.to_string(), format!("{U1}:1-9,{U2}:1-3:10"));
        assert_eq!(s.intervals(uuid(U1)), &[(1, 9)]);
        assert!(s.contains(uuid(U2), 10));
        assert!(!s.contains(uuid(U2), 4));
        assert!(!s.contains(uuid("00000000-0000-0000-0000-000000000000"), 1));
        assert_eq!(s.uuids().collect::<Vec<_>>(), [uuid(U1), uuid(U2)]);
    }

    #[test]
    fn mysql_set_add_merges_adjacent_and_fills_gaps() {
        let mut s = MySqlGtidSet::new();
        assert!(s.is_empty());
        for n in [1, 2, 3, 5, 7] {
            s.add(uuid(U1), n);
        }
        assert_eq!(s.to_string(), format!("{U1}:1-3:5:7"));
        s.add(uuid(U1), 6);
        assert_eq!(s.to_string(), format!("{U1}:1-3:5-7"));
        s.add(uuid(U1), 4);
        assert_eq!(s.to_string(), format!("{U1}:1-7"));
        s.add(uuid(U1), 3);
        assert_eq!(s.to_string(), format!("{U1}:1-7"));
        s.add(uuid(U1), u64::MAX);
        s.add(uuid(U1), u64::MAX - 1);
        assert_eq!(
            s.to_string(),
            format!("{U1}:1-7:{}-{}", u64::MAX - 1, u64::MAX)
        );
    }

    #[test]
    fn mysql_set_rejects_bad_elements() {
        for bad in [
            U1.to_string(),
            format!("{U1}:"),
            format!("{U1}:0-3"),
            format!("{U1}:5-3"),
            format!("{U1}:1-x"),
            format!("{U1}:tag:1-3"),
            "nonsense:1".to_string(),
        ] {
            assert!(bad.parse::<MySqlGtidSet>().is_err(), "{bad:?} parsed");
        }
        let err = format!("{U1}:tag:1").parse::<MySqlGtidSet>().unwrap_err();
        assert!(err.to_string().contains("tagged"), "{err}");
        assert!("".parse::<MySqlGtidSet>().unwrap().is_empty());
    }

    #[test]
    fn position_serialises_as_flavor_and_gtid() {
        let maria = GtidPosition::MariaDb("1-2-7,0-1-42".parse().unwrap());
        let json = serde_json::to_string(&maria).unwrap();
        assert_eq!(json, r#"{"flavor":"mariadb","gtid":"0-1-42,1-2-7"}"#);
        assert_eq!(serde_json::from_str::<GtidPosition>(&json).unwrap(), maria);
        assert_eq!(maria.to_string(), "mariadb:0-1-42,1-2-7");

        let mysql = GtidPosition::MySql(format!("{U1}:1-5").parse().unwrap());
        let json = serde_json::to_string(&mysql).unwrap();
        assert_eq!(json, format!(r#"{{"flavor":"mysql","gtid":"{U1}:1-5"}}"#));
        assert_eq!(serde_json::from_str::<GtidPosition>(&json).unwrap(), mysql);
        assert_eq!(mysql.flavor(), Flavor::MySql);

        let empty = GtidPosition::MariaDb(MariaGtidList::new());
        let json = serde_json::to_string(&empty).unwrap();
        assert_eq!(json, r#"{"flavor":"mariadb","gtid":""}"#);
        assert_eq!(serde_json::from_str::<GtidPosition>(&json).unwrap(), empty);
    }

    #[test]
    fn position_refuses_corrupt_checkpoints() {
        for bad in [
            r#"{"flavor":"mariadb","gtid":"0-1"}"#,
            r#"{"flavor":"postgres","gtid":"0-1-1"}"#,
            r#"{"flavor":"mysql","gtid":"0-1-1"}"#,
            r#"{"flavor":"mariadb"}"#,
            r#"{"flavor":"mariadb","gtid":"0-1-1","extra":1}"#,
        ] {
            assert!(
                serde_json::from_str::<GtidPosition>(bad).is_err(),
                "{bad} accepted"
            );
        }
    }
}
