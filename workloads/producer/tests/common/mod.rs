//! The producer tests' view of the shared CDC harness in
//! `paystream_testkit::cdc`: a scratch database, this crate's own producer
//! binary as a child process, and a stock `read_committed` reader.

#![allow(dead_code, unused_imports)] // each test file uses a different part

use std::path::Path;
use std::time::Duration;

pub use paystream_testkit::cdc::{Rec, Scratch, admin, by_key, read_for, read_until};
pub use paystream_testkit::process::Service as Producer;

/// How long a producer may take to become ready.
pub const READY: Duration = Duration::from_secs(60);

/// Starts this crate's producer binary for a scratch database.
pub trait SpawnProducer {
    /// `extra` flags come last and win over the defaults.
    fn producer(&self, extra: &[&str]) -> Producer;
}

impl SpawnProducer for Scratch {
    fn producer(&self, extra: &[&str]) -> Producer {
        self.producer_with(Path::new(env!("CARGO_BIN_EXE_paystream-producer")), extra)
    }
}
