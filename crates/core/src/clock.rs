//! The injected clock: production reads the system time, tests pin it so snapshots are stable.

use std::time::{SystemTime, UNIX_EPOCH};

/// A source of "now", in microseconds since the Unix epoch (UTC).
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now_micros(&self) -> i64;
}

/// Reads the operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_micros(&self) -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(elapsed) => i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX),
            // A clock set before 1970 is a broken host; report the epoch rather than fail.
            Err(_) => 0,
        }
    }
}

/// Always answers the same instant.
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub i64);

impl Clock for FixedClock {
    fn now_micros(&self) -> i64 {
        self.0
    }
}
