//! What keeps several replicas on one database in step. Consents are read from the database on
//! every use. Four things are held in memory for speed: the policy set, the signing keys, the
//! index of contested records and clients' status with their lockdowns. A change to one of them
//! bumps its topic in `replica_signals`; every replica polls that table four times a second and
//! refreshes what moved, so a change is in force everywhere within a quarter second (plus the
//! time to reload), and at once on the replica that made it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::{
    auth::keyring::{KeyringError, Purpose},
    http::AppState,
    policy::PolicyError,
    storage::{
        StorageError,
        signals::{self, Signal},
    },
};

/// How often each replica reads the signals.
pub const POLL: Duration = Duration::from_millis(250);

/// The signal versions this replica has acted on, and whether its policy files disagree with
/// the set another replica reloaded.
#[derive(Debug, Default)]
pub struct Seen {
    versions: Mutex<HashMap<String, i64>>,
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
            diverged: Mutex::new(None),
        }
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
pub fn spawn(state: AppState) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = sync_once(&state).await {
                tracing::warn!(error = %e, "reading replica signals failed; will retry");
            }
        }
    });
}

/// One poll: acts on every topic whose version moved since this replica last acted on it.
pub async fn sync_once(state: &AppState) -> Result<(), StorageError> {
    let now = signals::read(&state.db).await?;
    for (topic, signal) in &now {
        if !state.seen.take_if_new(topic, signal.version) {
            if topic == signals::POLICIES && state.seen.policy_divergence().is_some() {
                // Files may arrive on this machine after the reload elsewhere: keep trying.
                follow_policy_reload(state, signal.detail.as_deref()).await;
            }
            continue;
        }
        match topic.as_str() {
            signals::KEYS => {
                if let Err(e) = refresh_keys(state).await {
                    tracing::error!(error = %e, "a key rotation was signalled but the keys do not load");
                }
            }
            signals::POLICIES => follow_policy_reload(state, signal.detail.as_deref()).await,
            signals::OBJECTIONS => state.marks.reload_all(&state.db).await?,
            signals::CLIENTS => state.client_status.invalidate(),
            _ => {}
        }
    }
    state.client_status.vouch();
    Ok(())
}

/// Rereads the token-signing keys: after a rotation, or when a token names a kid we lack.
pub async fn refresh_keys(state: &AppState) -> Result<(), KeyringError> {
    let keys = state.keyring.load(&state.db, Purpose::TokenSigning).await?;
    state
        .tokens
        .replace_keys(&keys)
        .map_err(|_| KeyringError::Corrupt {
            kid: "-".into(),
            purpose: Purpose::TokenSigning.as_str(),
        })?;
    tracing::info!(signing_kid = %state.tokens.signing_kid(), generations = keys.len(), "signing keys refreshed");
    Ok(())
}

/// Reloads the policy files here and tells every replica to do the same. The set is refused
/// whole if it does not load; the old set keeps serving and nothing is signalled.
pub async fn reload_policies(state: &AppState) -> Result<String, PolicyError> {
    state.reload_policies()?;
    let digest = state.policies().digest().to_string();
    state.seen.set_divergence(None);
    match signals::bump(state.db.pool(), signals::POLICIES, Some(&digest)).await {
        Ok(version) => state.seen.mark(signals::POLICIES, version),
        Err(e) => {
            // In force here; the others keep their set until the next reload reaches them.
            tracing::error!(error = %e, "policies reloaded here, but the other replicas could not be told");
        }
    }
    Ok(digest)
}

/// Another replica reloaded: load our own files, and swap only if they give the set it loaded.
/// If they differ (a file not yet deployed here), keep serving the old set, report not ready and
/// raise an alert once, and try again on every poll.
async fn follow_policy_reload(state: &AppState, published: Option<&str>) {
    let set = match crate::http::load_policies(&state.config, &state.stores) {
        Ok(set) => set,
        Err(e) => {
            tracing::error!(error = %e, "another replica reloaded policies, but this replica's files do not load; the previous set stays in force");
            note_divergence(state, published.unwrap_or("-")).await;
            return;
        }
    };
    if published.is_some_and(|d| d != set.digest()) {
        note_divergence(state, published.unwrap_or("-")).await;
        return;
    }
    state.swap_policies(set);
    state.seen.set_divergence(None);
    tracing::info!(digest = %state.policies().digest(), "policies reloaded: another replica signalled a reload");
}

async fn note_divergence(state: &AppState, published: &str) {
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
