//! The paystream cache consumer: keeps the Redis read model of users'
//! purchases in step with MySQL through the change topics the producer
//! writes.
//!
//! The crate is a pure core in a thin I/O shell. Pure modules decide:
//! [`decode`] (a record to a change or a rejection), [`plan`] (a batch to
//! version-guarded Redis writes, dead letters and offsets), [`progress`]
//! (where each partition starts and when a replay is done) and
//! [`deadletter`]. The I/O modules only move data: [`source`] (Kafka),
//! [`sink`] and [`redis_client`] (Redis), [`dlq`] (the dead-letter topic).
//! [`pipeline`] runs them; the key layout and the Lua guard live in
//! `paystream_core::readmodel`, shared with the API.

pub mod config;
pub mod deadletter;
pub mod decode;
pub mod dlq;
pub mod metrics;
pub mod pipeline;
pub mod plan;
pub mod progress;
pub mod redis_client;
pub mod sink;
pub mod source;
