//! The `[queue]` section: which backend holds the queues, how long a
//! worker's lease lasts, and how failures are retried.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// Where queued items live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum QueueBackend {
    /// A table in the kernel's database: durable, and a push can join the
    /// caller's transaction.
    Postgres,
    /// Sorted sets and hashes in Redis: faster, as durable as the Redis
    /// server's persistence.
    Redis,
}

/// The `[queue]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
#[command(next_help_heading = "Queues")]
pub struct QueueSettings {
    /// Queue backend: `postgres` or `redis`.
    #[arg(
        id = "queue.backend",
        long = "queue-backend",
        env = "TROVATO_QUEUE_BACKEND",
        value_enum
    )]
    pub backend: QueueBackend,
    /// Seconds a worker holds an item it took; an item whose worker died becomes available again after it. Must exceed the longest job (plugins: `plugin.background_deadline_secs`).
    #[arg(
        id = "queue.lease_secs",
        long = "queue-lease",
        env = "TROVATO_QUEUE_LEASE",
        value_name = "SECS"
    )]
    pub lease_secs: u64,
    /// Attempts an item gets before it goes to the dead letter list (a job may carry its own).
    #[arg(
        id = "queue.max_attempts",
        long = "queue-max-attempts",
        env = "TROVATO_QUEUE_MAX_ATTEMPTS",
        value_name = "N"
    )]
    pub max_attempts: u32,
    /// Milliseconds before the first retry; each further retry waits twice as long, with jitter.
    #[arg(
        id = "queue.backoff_base_ms",
        long = "queue-backoff-base-ms",
        env = "TROVATO_QUEUE_BACKOFF_BASE_MS",
        value_name = "MS"
    )]
    pub backoff_base_ms: u64,
    /// Longest wait before a retry, in seconds.
    #[arg(
        id = "queue.backoff_max_secs",
        long = "queue-backoff-max",
        env = "TROVATO_QUEUE_BACKOFF_MAX",
        value_name = "SECS"
    )]
    pub backoff_max_secs: u64,
    /// Longest pause, in milliseconds, of an idle worker between looks at an empty queue.
    #[arg(
        id = "queue.idle_poll_ms",
        long = "queue-idle-poll-ms",
        env = "TROVATO_QUEUE_IDLE_POLL_MS",
        value_name = "MS"
    )]
    pub idle_poll_ms: u64,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            backend: QueueBackend::Postgres,
            lease_secs: 300,
            max_attempts: 5,
            backoff_base_ms: 1_000,
            backoff_max_secs: 3_600,
            idle_poll_ms: 1_000,
        }
    }
}

/// The most attempts an item may be given.
pub const MAX_ATTEMPTS: u32 = 1_000;

impl QueueSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.lease_secs == 0 {
            return Err(ConfigError::invalid::<Self>(
                "queue.lease_secs",
                "must be at least 1 second",
            ));
        }
        if !(1..=MAX_ATTEMPTS).contains(&self.max_attempts) {
            return Err(ConfigError::invalid::<Self>(
                "queue.max_attempts",
                format!("must be between 1 and {MAX_ATTEMPTS}"),
            ));
        }
        if self.backoff_base_ms == 0 {
            return Err(ConfigError::invalid::<Self>(
                "queue.backoff_base_ms",
                "must be at least 1 ms",
            ));
        }
        if self.backoff_max_secs == 0 {
            return Err(ConfigError::invalid::<Self>(
                "queue.backoff_max_secs",
                "must be at least 1 second",
            ));
        }
        if !(10..=60_000).contains(&self.idle_poll_ms) {
            return Err(ConfigError::invalid::<Self>(
                "queue.idle_poll_ms",
                "must be between 10 and 60000 ms",
            ));
        }
        Ok(())
    }

    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs)
    }

    /// The wait before retry number `attempt` (1 = after the first
    /// failure): base × 2^(attempt-1), capped, with ±25 % jitter so
    /// items that failed together do not come back together.
    pub fn backoff(&self, attempt: u32, jitter: f64) -> Duration {
        let exp = attempt.saturating_sub(1).min(40);
        let base = self.backoff_base_ms as f64 * 2f64.powi(exp as i32);
        let capped = base.min(self.backoff_max_secs as f64 * 1000.0);
        let jittered = capped * (0.75 + 0.5 * jitter.clamp(0.0, 1.0));
        Duration::from_millis(jittered as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_is_capped_and_jittered() {
        let s = QueueSettings {
            backoff_base_ms: 1000,
            backoff_max_secs: 10,
            ..QueueSettings::default()
        };
        assert_eq!(s.backoff(1, 0.5), Duration::from_millis(1000));
        assert_eq!(s.backoff(2, 0.5), Duration::from_millis(2000));
        assert_eq!(s.backoff(3, 0.5), Duration::from_millis(4000));
        assert_eq!(s.backoff(30, 0.5), Duration::from_millis(10_000));
        assert_eq!(s.backoff(1, 0.0), Duration::from_millis(750));
        assert_eq!(s.backoff(1, 1.0), Duration::from_millis(1250));
    }
}
