//! The one clock of the core: wall-clock time plus an offset. Production never moves the
//! offset; tests move it forward, so that deadlines of days, token lifetimes of seconds and
//! outbox claims and retries can be tested by moving time instead of sleeping through it (a
//! sleep races the boundary it waits for on a loaded machine).

use std::{
    sync::atomic::{AtomicI64, Ordering},
    time::Duration,
};

/// Held once by `services::Core`; everything that compares against "now" for a deadline, a
/// token's `exp`/`iat` or an outbox claim reads it here.
#[derive(Debug, Default)]
pub struct Clock {
    offset_us: AtomicI64,
}

impl Clock {
    /// Unix microseconds.
    pub fn now(&self) -> i64 {
        crate::storage::now_micros() + self.offset_us.load(Ordering::Relaxed)
    }

    /// Unix seconds, as JWT time claims count them.
    pub fn now_secs(&self) -> u64 {
        u64::try_from(self.now() / 1_000_000).unwrap_or(0)
    }

    /// Moves the clock forward (tests only: a gateway in service never calls it).
    pub fn advance(&self, by: Duration) {
        let us = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
        self.offset_us.fetch_add(us, Ordering::Relaxed);
    }

    pub fn advance_days(&self, days: i64) {
        self.offset_us
            .fetch_add(days * 86_400 * 1_000_000, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_moves_now_and_seconds_together() {
        let c = Clock::default();
        let before = c.now();
        c.advance(Duration::from_secs(10));
        assert!(c.now() - before >= 10_000_000);
        assert!(c.now_secs() as i64 >= before / 1_000_000 + 10);
        c.advance_days(1);
        assert!(c.now() - before >= 86_400 * 1_000_000);
    }
}
