//! What keeps several replicas on one database in step. Consents are read from the database on
//! every use. Four things are held in memory for speed: the policy set, the signing keys, the
//! index of contested records and clients' status with their lockdowns. A change to one of them
//! bumps its topic in `replica_signals`; every replica polls that table four times a second and
//! refreshes what moved, so a change is in force everywhere within a quarter second (plus the
//! time to reload), and at once on the replica that made it.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, Ordering},
    },
    time::{Duration, Instant},
};

use crate::{
    auth::keyring::{KeyUse, KeyringError},
    policy::PolicyError,
    services::Core,
    storage::{
        StorageError,
        signals::{self, Signal},
    },
};

/// How often each replica reads the signals.
pub const POLL: Duration = Duration::from_millis(250);

/// The longest wait between two retries of a failed refresh.
pub const MAX_RETRY: Duration = Duration::from_secs(4);

/// A refresh that failed: tried again after a wait that doubles from `POLL` up to `MAX_RETRY`.
#[derive(Debug, Clone, Copy)]
struct Retry {
    failures: u32,
    next: Instant,
}

/// The signal versions this replica has acted on, the refreshes that failed and wait to be
/// tried again, and whether its policy files disagree with the set another replica reloaded.
#[derive(Debug, Default)]
pub struct Seen {
    versions: Mutex<HashMap<String, i64>>,
    retries: Mutex<HashMap<String, Retry>>,
    /// The digest another replica published that this replica's files do not produce.
    diverged: Mutex<Option<String>>,
}

impl Seen {
    pub fn new(signals: &HashMap<String, Signal>) -> Self {
        Self {
            versions: Mutex::new(
                signals
                    .iter()
                    .map(|(t, s)| (t.clone(), s.version))
                    .collect(),
            ),
            retries: Mutex::default(),
            diverged: Mutex::new(None),
        }
    }

    /// A failed refresh of `topic` whose wait is over.
    fn retry_due(&self, topic: &str) -> bool {
        let r = self.retries.lock().unwrap_or_else(|p| p.into_inner());
        r.get(topic).is_some_and(|r| Instant::now() >= r.next)
    }

    /// Records how acting on `topic` went: a success forgets any failure, a failure schedules
    /// the next try with backoff (a broken policy directory is not reread four times a second).
    fn settle(&self, topic: &str, ok: bool) {
        let mut r = self.retries.lock().unwrap_or_else(|p| p.into_inner());
        if ok {
            r.remove(topic);
            return;
        }
        let failures = r.get(topic).map_or(0, |r| r.failures) + 1;
        let wait = POLL
            .saturating_mul(1 << failures.saturating_sub(1).min(8))
            .min(MAX_RETRY);
        r.insert(
            topic.to_string(),
            Retry {
                failures,
                next: Instant::now() + wait,
            },
        );
    }

    /// Failed refreshes of `topic` in a row (0 once one works): a test waits on it.
    pub fn failures(&self, topic: &str) -> u32 {
        let r = self.retries.lock().unwrap_or_else(|p| p.into_inner());
        r.get(topic).map_or(0, |r| r.failures)
    }

    fn take_if_new(&self, topic: &str, version: i64) -> bool {
        let mut v = self.versions.lock().unwrap_or_else(|p| p.into_inner());
        let seen = v.entry(topic.to_string()).or_insert(0);
        if version > *seen {
            *seen = version;
            true
        } else {
            false
        }
    }

    fn mark(&self, topic: &str, version: i64) {
        let mut v = self.versions.lock().unwrap_or_else(|p| p.into_inner());
        let seen = v.entry(topic.to_string()).or_insert(0);
        *seen = (*seen).max(version);
    }

    /// The published policy digest this replica could not reproduce from its files, if any.
    /// Such a replica is not ready: it would enforce another set than its peers.
    pub fn policy_divergence(&self) -> Option<String> {
        self.diverged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_divergence(&self, digest: Option<String>) {
        *self.diverged.lock().unwrap_or_else(|p| p.into_inner()) = digest;
    }
}

/// Polls the signals for as long as the gateway runs.
pub fn spawn(state: Core) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = sync_once(&state).await {
                tracing::warn!(error = %e, "reading replica signals failed; will retry");
            }
        }
    })
}

/// One poll: acts on every topic whose version moved since this replica last acted on it, and
/// tries again every refresh that failed once its wait is over. A failure on one topic neither
/// stops the others nor is forgotten: the version is taken, but the retry stays scheduled.
pub async fn sync_once(state: &Core) -> Result<(), StorageError> {
    let now = signals::read(&state.db).await?;
    for (topic, signal) in &now {
        let fresh = state.seen.take_if_new(topic, signal.version);
        if !fresh && !state.seen.retry_due(topic) {
            continue;
        }
        let ok = act_on(state, topic, signal).await;
        if !ok {
            tracing::warn!(topic, "refresh failed; it will be tried again");
        }
        state.seen.settle(topic, ok);
    }
    state.client_status.vouch();
    Ok(())
}

/// Refreshes what `topic` covers; false when it could not, so that it is tried again.
async fn act_on(state: &Core, topic: &str, signal: &Signal) -> bool {
    match topic {
        signals::KEYS => match refresh_keys(state).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "a key rotation was signalled but the keys do not load");
                false
            }
        },
        signals::POLICIES => follow_policy_reload(state, signal.detail.as_deref()).await,
        // The subject's statements share the objections' topic (`workflows::statements`).
        signals::OBJECTIONS => match state
            .marks
            .reload_all(&state.db)
            .await
            .and(state.statements.reload_all(&state.db).await)
        {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "objections changed but their marks do not load");
                false
            }
        },
        signals::CLIENTS => {
            state.client_status.invalidate();
            true
        }
        _ => true,
    }
}

/// Rereads the token-signing keys: after a rotation, or when a token names a kid we lack.
pub async fn refresh_keys(state: &Core) -> Result<(), KeyringError> {
    let keys = state.keyring.load(&state.db, KeyUse::TokenSigning).await?;
    state
        .tokens
        .replace_keys(&keys)
        .map_err(|_| KeyringError::Corrupt {
            kid: "-".into(),
            purpose: KeyUse::TokenSigning.as_str(),
        })?;
    tracing::info!(signing_kid = %state.tokens.signing_kid(), generations = keys.len(), "signing keys refreshed");
    Ok(())
}

/// A loaded, validated policy set waiting for its reload's audit record to commit: only then
/// is it swapped in and the other replicas told (the signal is written in that record's
/// transaction by `signal_in`).
pub struct Reload {
    /// Taken once, by `adopt`.
    set: Mutex<Option<crate::policy::PolicySet>>,
    digest: String,
    /// The signal's version as the committed transaction left it (set by `signal_in`).
    version: AtomicI64,
}

impl Reload {
    /// Loads and validates the policy directory; swaps nothing and tells no one.
    pub fn prepare(state: &Core) -> Result<Self, PolicyError> {
        let set = crate::services::load_policies(&state.config, &state.stores)?;
        Ok(Self {
            digest: set.digest().to_string(),
            set: Mutex::new(Some(set)),
            version: AtomicI64::new(0),
        })
    }

    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The new set's role names and purpose codes, for the answer (empty once adopted).
    pub fn names(&self) -> (Vec<String>, Vec<String>) {
        let set = self.set.lock().unwrap_or_else(|p| p.into_inner());
        let own = |v: Vec<&str>| v.into_iter().map(String::from).collect();
        set.as_ref().map_or_else(Default::default, |s| {
            (own(s.role_names()), own(s.purpose_codes()))
        })
    }

    /// Bumps the policy signal inside the caller's transaction (the reload's audit record's).
    /// It may run more than once if that transaction is retried; the last run is the one kept.
    pub async fn signal_in(&self, conn: &mut sqlx::AnyConnection) -> Result<(), StorageError> {
        let v = signals::bump(conn, signals::POLICIES, Some(&self.digest)).await?;
        self.version.store(v, Ordering::SeqCst);
        Ok(())
    }

    /// After the commit: the set goes into force here, and this replica's poller does not
    /// reload again for its own signal.
    pub fn adopt(&self, state: &Core) {
        let Some(set) = self.set.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        state.swap_policies(set);
        state.seen.set_divergence(None);
        state.seen.settle(signals::POLICIES, true);
        state
            .seen
            .mark(signals::POLICIES, self.version.load(Ordering::SeqCst));
    }
}

/// SIGHUP's reload: the same fail-closed path as `POST /admin/policies/reload`. The host's
/// signal is a staff action too, so it leaves an `admin` record (actor `host-signal`), and the
/// set goes into force here and on the other replicas only with that record committed. A set
/// that does not load, or a record that cannot be written, changes nothing anywhere.
pub async fn reload_on_signal(state: &Core) -> anyhow::Result<String> {
    // The providers first and on their own: a policy set that does not load must not keep a
    // rotated provider key out, nor the other way round.
    let config = state.config.clone();
    if let Err(e) = reload_providers(state, &config).await {
        tracing::error!(error = %e, "identity providers not reloaded; the previous ones stay in force");
    }
    let reload = match Reload::prepare(state) {
        Ok(r) => Arc::new(r),
        Err(e) => {
            let refused = signal_record(POLICY_RELOAD, 422, "deny", Some("policy-invalid"));
            state.audit.append(refused).await?;
            return Err(e.into());
        }
    };
    let change = {
        let reload = reload.clone();
        crate::audit::Deferred::new(move |conn| {
            let reload = reload.clone();
            Box::pin(async move { Ok(reload.signal_in(conn).await?) })
        })
        .change()
    };
    match state
        .audit
        .append_with(signal_record(POLICY_RELOAD, 200, "allow", None), change)
        .await
    {
        Ok(_) => {
            reload.adopt(state);
            Ok(reload.digest().to_string())
        }
        Err(crate::audit::Refusal::Audit(e)) => Err(e.into()),
        Err(crate::audit::Refusal::Change(_)) => {
            anyhow::bail!("the replica signal could not be written; nothing changed")
        }
    }
}

/// SIGHUP's identity-provider reload: a new registry from `config` (static `jwks_file`s read
/// again, every discovery provider fetched afresh, one bounded attempt), swapped in only once
/// its `admin` record committed, and its refresher restarted (`Core::spawn_providers`). A
/// registry that does not build (an unreadable `jwks_file`) changes nothing and is recorded
/// as refused. The provider list itself is the config's: changing it needs a restart.
pub async fn reload_providers(state: &Core, config: &crate::config::Config) -> anyhow::Result<()> {
    let next = match crate::auth::oidc::Providers::from_config(config) {
        Ok(next) => next,
        Err(e) => {
            let refused = signal_record(
                PROVIDER_RELOAD,
                422,
                "deny",
                Some("identity-providers-invalid"),
            );
            state.audit.append(refused).await?;
            return Err(e.into());
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), next.refresh_all()).await;
    state
        .audit
        .append(signal_record(PROVIDER_RELOAD, 200, "allow", None))
        .await?;
    let waiting: Vec<String> = next
        .status()
        .into_iter()
        .filter(|p| !p.keys_loaded)
        .map(|p| p.issuer)
        .collect();
    state.swap_providers(next);
    tracing::info!(?waiting, "identity providers reloaded on SIGHUP");
    Ok(())
}

const POLICY_RELOAD: &str = "/admin/policies/reload";
const PROVIDER_RELOAD: &str = "/admin/identity-providers/reload";

/// The record of a reload asked for by the host's SIGHUP.
fn signal_record(
    path: &str,
    status: u16,
    decision: &str,
    rule: Option<&str>,
) -> crate::audit::AuditRecord {
    crate::audit::AuditRecord {
        id: format!("au_{}", uuid::Uuid::now_v7().simple()),
        time_us: crate::storage::now_micros(),
        kind: "admin".into(),
        client_id: Some("host-signal".into()),
        method: "SIGHUP".into(),
        path: path.into(),
        decision: decision.into(),
        rule: rule.map(str::to_string),
        status,
        client_addr: "local".into(),
        ..Default::default()
    }
}

/// Another replica reloaded: load our own files, and swap only if they give the set it loaded.
/// If they differ (a file not yet deployed here) or do not load, keep serving the old set, report
/// not ready and raise an alert once; false, so that the caller tries again later.
async fn follow_policy_reload(state: &Core, published: Option<&str>) -> bool {
    let set = match crate::services::load_policies(&state.config, &state.stores) {
        Ok(set) => set,
        Err(e) => {
            tracing::error!(error = %e, "another replica reloaded policies, but this replica's files do not load; the previous set stays in force");
            note_divergence(state, published.unwrap_or("-")).await;
            return false;
        }
    };
    if published.is_some_and(|d| d != set.digest()) {
        note_divergence(state, published.unwrap_or("-")).await;
        return false;
    }
    state.swap_policies(set);
    state.seen.set_divergence(None);
    tracing::info!(digest = %state.policies().digest(), "policies reloaded: another replica signalled a reload");
    true
}

async fn note_divergence(state: &Core, published: &str) {
    if state.seen.policy_divergence().as_deref() == Some(published) {
        return;
    }
    let detail = format!(
        "replica {} cannot load the policy set {published} that another replica reloaded; it keeps its previous set and reports not ready",
        state.replica
    );
    tracing::error!("{detail}");
    // The alert first: an officer who sees this replica not ready finds the reason recorded.
    if let Err(e) =
        crate::audit::alerts::insert(&state.db, "policy-divergence", None, &detail, &[]).await
    {
        tracing::warn!(error = %e, "could not record the policy-divergence alert");
    }
    state.seen.set_divergence(Some(published.to_string()));
}

/// A short random name for this process, kept in outbox claims and alerts.
pub fn replica_name() -> Arc<str> {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let name = if host.is_empty() {
        id[..12].to_string()
    } else {
        format!("{host}-{}", &id[..8])
    };
    name.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_refresh_is_retried_with_a_doubling_wait_up_to_the_cap() {
        let seen = Seen::default();
        assert!(!seen.retry_due("objections"), "nothing failed yet");
        let mut waits = Vec::new();
        for _ in 0..8 {
            seen.settle("objections", false);
            let next = seen.retries.lock().unwrap()["objections"].next;
            waits.push((next - Instant::now()).as_millis().div_ceil(50) * 50);
        }
        assert_eq!(waits, [250, 500, 1000, 2000, 4000, 4000, 4000, 4000]);
        assert!(!seen.retry_due("objections"), "not before the wait is over");
        seen.retries
            .lock()
            .unwrap()
            .get_mut("objections")
            .unwrap()
            .next = Instant::now();
        assert!(seen.retry_due("objections"));
        seen.settle("objections", true);
        assert!(
            !seen.retry_due("objections"),
            "a success forgets the failures"
        );
    }
}
