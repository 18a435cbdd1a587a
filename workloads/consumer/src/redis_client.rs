//! The consumer's Redis flags: where Redis is ([`RedisTarget`], shared with
//! the API through `paystream_runtime::redis_client`) and how long a write
//! may take. The consumer waits longer than the API: a slow write is retried,
//! never skipped.

use std::ops::{Deref, DerefMut};
use std::time::Duration;

pub use paystream_runtime::redis_client::{ConnectError, RedisConn, RedisMode, RedisTarget};

/// Where Redis is, and the consumer's timeout.
#[derive(Debug, Clone, clap::Args)]
pub struct RedisArgs {
    /// Where Redis is and how to log in.
    #[command(flatten)]
    pub target: RedisTarget,
    /// Connect and response timeout, milliseconds.
    #[arg(long, env = "PAYSTREAM_REDIS_TIMEOUT_MS", default_value_t = 5000)]
    pub redis_timeout_ms: u64,
}

impl RedisArgs {
    /// Flags for a standalone server at `url` (tests and tools).
    pub fn standalone(url: &str) -> Self {
        Self {
            target: RedisTarget::standalone(url),
            redis_timeout_ms: 5000,
        }
    }

    /// Connect and response timeout (at least 100 ms).
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms.max(100))
    }

    /// Opens a connection.
    pub async fn connect(&self) -> Result<RedisConn, ConnectError> {
        self.target.connect(self.timeout()).await
    }
}

impl Deref for RedisArgs {
    type Target = RedisTarget;
    fn deref(&self) -> &RedisTarget {
        &self.target
    }
}

impl DerefMut for RedisArgs {
    fn deref_mut(&mut self) -> &mut RedisTarget {
        &mut self.target
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        redis: RedisArgs,
    }

    #[test]
    fn the_timeout_has_a_floor_and_the_target_its_flags() {
        let c = Cli::try_parse_from(["x", "--redis-timeout-ms", "5", "--redis-mode", "sentinel"])
            .unwrap();
        assert_eq!(c.redis.timeout(), Duration::from_millis(100));
        assert_eq!(c.redis.redis_mode, RedisMode::Sentinel);
        assert!(c.redis.validate().is_err());
    }
}
