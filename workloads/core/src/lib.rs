//! The paystream shared library.
//!
//! Everything that more than one deployable must agree on lives here and only
//! here: the payment domain model ([`model`]) that the database schema, the
//! read model and the API describe; the change-event envelope ([`envelope`])
//! that the producer writes to Kafka and every consumer reads; and the Redis
//! read model ([`readmodel`]: keys, documents, version guard, Lua script) that
//! the consumer writes and the API serves.
//! The crate is pure: no I/O, no async runtime, so every rule in it is covered
//! by plain unit tests.

pub mod checkpoint;
pub mod envelope;
pub mod model;
pub mod readmodel;
