//! Each client's status and lockdown, held in memory so that a data request does not wait for
//! a database round trip (the profile showed that round trip, with its thread hand-offs, as
//! the largest cost of a request).
//!
//! Staleness is bounded, and fails closed:
//! - Any change to `clients` or `lockdowns` bumps the `clients` replica signal (triggers, so
//!   a hand-written UPDATE counts too). Every replica polls the signals four times a second and
//!   drops the whole cache when it moved; the replica that made the change drops it at once.
//! - The cache is used only while the poll is current: each successful poll vouches for it for
//!   one second. A replica that cannot read the signals goes back to asking the database on
//!   every request (and answers 503 if that fails too).

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crate::storage::{
    Db, StorageError,
    clients::{self, ClientRecord},
};

/// How long one successful poll vouches for the cache.
pub const VOUCH: Duration = Duration::from_secs(1);

/// Bound on cached clients; past it the cache starts over.
const MAX: usize = 50_000;

pub struct StatusCache {
    entries: Mutex<HashMap<String, (ClientRecord, bool)>>,
    /// Bumped by every invalidation, so that a read that raced one is not cached.
    generation: AtomicU64,
    /// Until when (nanoseconds since `epoch`) the last poll vouches for the cache.
    vouched_until: AtomicU64,
    epoch: Instant,
}

impl Default for StatusCache {
    fn default() -> Self {
        Self {
            entries: Mutex::default(),
            generation: AtomicU64::new(0),
            vouched_until: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }
}

impl StatusCache {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// A poll of the replica signals succeeded (after acting on them).
    pub fn vouch(&self) {
        self.vouched_until
            .store(self.now() + VOUCH.as_nanos() as u64, Ordering::Release);
    }

    /// Something about clients or lockdowns changed: forget everything.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    fn vouched(&self) -> bool {
        self.now() < self.vouched_until.load(Ordering::Acquire)
    }

    /// The cached entry, if the cache may be trusted now.
    pub fn lookup(&self, id: &str) -> Option<(ClientRecord, bool)> {
        if !self.vouched() {
            return None;
        }
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// The client and whether a lockdown covers it: from the cache while it is vouched for,
    /// else from the database (and then remembered, unless an invalidation came meanwhile).
    pub async fn get(
        &self,
        db: &Db,
        id: &str,
    ) -> Result<Option<(ClientRecord, bool)>, StorageError> {
        if let Some(hit) = self.lookup(id) {
            return Ok(Some(hit));
        }
        let generation = self.generation.load(Ordering::Acquire);
        let found = clients::get_with_lockdown(db, id).await?;
        if let Some(entry) = &found {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            if self.generation.load(Ordering::Acquire) == generation {
                if entries.len() >= MAX {
                    entries.clear();
                }
                entries.insert(id.to_string(), entry.clone());
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::clients::ClientStatus;

    fn record(id: &str) -> ClientRecord {
        ClientRecord {
            id: id.into(),
            name: "n".into(),
            org: "o".into(),
            role: "regulator".into(),
            region: None,
            status: ClientStatus::Active,
            created_at: 0,
            tls_thumbprint: None,
        }
    }

    #[test]
    fn the_cache_is_trusted_only_while_a_recent_poll_vouches_for_it() {
        let cache = StatusCache::default();
        cache
            .entries
            .lock()
            .unwrap()
            .insert("cg_1".into(), (record("cg_1"), false));
        assert!(cache.lookup("cg_1").is_none(), "never vouched for: unused");
        cache.vouch();
        assert!(cache.lookup("cg_1").is_some());
        // Pretend the last poll was longer ago than the vouch lasts.
        cache.vouched_until.store(cache.now(), Ordering::Release);
        assert!(
            cache.lookup("cg_1").is_none(),
            "a stalled poll means asking the database"
        );
        cache.vouch();
        cache.invalidate();
        assert!(cache.lookup("cg_1").is_none(), "an invalidation forgets");
    }
}
