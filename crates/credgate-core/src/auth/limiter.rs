//! One keyed GCRA limiter (governor) for every per-key rate in the gateway: institutions,
//! anonymous doors by address, data subjects. Here, below the web layer, so that `auth` and
//! `http` share it without `auth` importing `http`.

use std::{
    hash::Hash,
    num::NonZeroU32,
    sync::{Arc, Weak},
    time::Duration,
};

use governor::{
    Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    middleware::StateInformationMiddleware,
    state::keyed::DefaultKeyedStateStore,
};

/// How often idle keys are forgotten, so the tables stay small without any request paying.
const CLEANUP_EVERY: Duration = Duration::from_secs(60);

pub struct KeyedLimiter<K: Hash + Eq + Clone> {
    inner: RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock, StateInformationMiddleware>,
}

/// `per_minute` requests a minute (at least one), with a burst of `burst` (at least one).
pub fn quota(per_minute: u32, burst: u32) -> Quota {
    let nz = |n: u32| NonZeroU32::new(n.max(1)).expect("at least one");
    Quota::per_minute(nz(per_minute)).allow_burst(nz(burst))
}

impl<K: Hash + Eq + Clone + Send + Sync + 'static> KeyedLimiter<K> {
    /// A limiter whose idle keys a background task forgets every minute, for as long as the
    /// limiter lives (the task holds only a weak reference). Needs a tokio runtime.
    pub fn new(quota: Quota) -> Arc<Self> {
        let limiter = Arc::new(Self {
            inner: RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>(),
        });
        let weak: Weak<Self> = Arc::downgrade(&limiter);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(CLEANUP_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(limiter) = weak.upgrade() else {
                    return;
                };
                limiter.inner.retain_recent();
            }
        });
        limiter
    }

    /// Takes one request of `key`: the burst capacity left, or the whole seconds to wait
    /// (rounded up, at least one) before a request would be allowed.
    pub fn check(&self, key: &K) -> Result<u32, u64> {
        self.inner
            .check_key(key)
            .map(|snapshot| snapshot.remaining_burst_capacity())
            .map_err(|n| n.wait_time_from(DefaultClock::default().now()).as_secs() + 1)
    }

    /// Keys the limiter holds (idle ones included until the next cleanup).
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_over_its_burst_waits_and_other_keys_do_not() {
        let l = KeyedLimiter::new(quota(60, 2));
        assert_eq!(l.check(&("a", 1)), Ok(1));
        assert_eq!(l.check(&("a", 1)), Ok(0));
        assert!(matches!(l.check(&("a", 1)), Err(s) if (1..=2).contains(&s)));
        assert_eq!(l.check(&("a", 2)), Ok(1));
        assert_eq!(l.len(), 2);
    }
}
