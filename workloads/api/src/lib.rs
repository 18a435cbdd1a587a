//! The paystream payment API: users buy packages and pay for them over HTTP.
//!
//! The crate is a pure core in a thin I/O shell. Pure modules decide:
//! [`params`] (ids, cursors, versions and keys from URLs and headers),
//! [`auth`] (bearer tokens to callers), [`writes`] (what a write must
//! satisfy), [`provider`] (the payment provider stub), [`document`] (response
//! bytes), [`problem`] (RFC 9457 errors), [`coalesce`] (single-flight
//! loads) and [`hints`] (lock-free package guesses). The I/O modules only move data: [`cache`] (the Redis read model),
//! [`link`] (connections to any Redis deployment), [`near`] (the optional
//! in-process near cache), [`store`] (MySQL) and
//! [`reads`] (the read path over them). [`routes`], [`extract`] and [`app`]
//! are the HTTP layer; [`config`] and [`metrics`] the usual shell.
//! `docs/api.md` describes the endpoints, errors and read-your-writes.

pub mod app;
pub mod auth;
pub mod cache;
pub mod coalesce;
pub mod config;
pub mod document;
pub mod extract;
pub mod hints;
pub mod link;
pub mod metrics;
pub mod near;
pub mod params;
pub mod problem;
pub mod provider;
pub mod reads;
pub mod routes;
pub mod store;
pub mod writes;
