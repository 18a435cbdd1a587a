//! The paystream CDC producer: reads a MariaDB/MySQL binlog as a replica and
//! publishes every committed row change to Kafka exactly once.
//!
//! The crate is a pure core in a thin I/O shell. Pure modules turn bytes and
//! rows into values: [`gtid`] (positions), [`mariadb_events`] (MariaDB's GTID
//! events and checksums), [`schema`] (table layouts), [`ddl`] (what a DDL statement changes), [`decode`] and
//! [`snapshot_values`] (row values to JSON), [`records`] (envelopes and keys),
//! [`txn`] (transaction framing), [`position`] (checkpoint arithmetic) and
//! [`filter`]. The I/O modules only move data: [`source`] and [`reader`]
//! (the binlog), [`snapshot`] (the initial read), [`topics`],
//! [`checkpoint_store`] and [`publisher`] (Kafka). [`pipeline`] runs them.

pub mod checkpoint_store;
pub mod config;
pub mod ddl;
pub mod decode;
pub mod filter;
pub mod gtid;
pub mod mariadb_events;
pub mod metrics;
pub mod pipeline;
pub mod position;
pub mod publisher;
pub mod reader;
pub mod records;
pub mod schema;
pub mod snapshot;
pub mod snapshot_values;
pub mod source;
pub mod topics;
pub mod txn;
