//! The core services: everything a request, a workflow or a background task needs, built once
//! at start and shared by reference. Below the web layer: no axum, no HTTP types of its own.

use std::sync::{Arc, RwLock};

use anyhow::Context as _;

use crate::{
    auth::{keyring::Keyring, oidc::Providers, subject::SubjectVerifier, tokens::TokenService},
    config::Config,
    policy::PolicySet,
    proxy::upstream::Stores,
    storage::Db,
};

/// Everything a handler needs, built once at start and shared by reference. Every layer and
/// handler takes a clone per request, so it is one `Arc`: one atomic increment, not one per
/// field (the profile showed cloning and dropping the fields at about 4% of a request).
#[derive(Clone)]
pub struct Core(Arc<Shared>);

impl std::ops::Deref for Core {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub config: Arc<Config>,
    pub db: Db,
    pub tokens: Arc<TokenService>,
    pub subjects: Arc<SubjectVerifier>,
    pub stores: Arc<Stores>,
    pub audit: crate::audit::AuditLog,
    /// The one clock of the core: workflow deadlines, token times, outbox claims and retries
    /// (tests move it forward instead of sleeping).
    pub clock: Arc<crate::clock::Clock>,
    /// Seals whistleblowers' contacts (AES-256-GCM, the reports key from the keyring).
    pub report_sealer: Arc<crate::auth::sealer::Sealer>,
    /// Seals the page sign-ins under way into their `cg_signin` cookie (a key derived from the
    /// reports key): no row per started sign-in, so starting them cannot fill a table.
    pub signin_sealer: Arc<crate::auth::sealer::Sealer>,
    /// Contested records, for marking answers.
    pub marks: Arc<crate::workflows::marks::Marks>,
    /// Records carrying their subject's statements, for annotating answers.
    pub statements: Arc<crate::workflows::statements::Statements>,
    /// Retention deletions this replica queued lately, so that reads of an expired record do
    /// not each write its (idempotent) request again.
    pub deletions: Arc<crate::workflows::outbox::RecentDeletions>,
    pub limits: crate::limits::RateLimits,
    /// Raw public key of the audit checkpoint signer, for verification.
    pub audit_public_key: Arc<Vec<u8>>,
    /// HMAC key of the pseudonym mask: from the keyring, the same on every replica.
    pub pseudonym_key: Arc<ring::hmac::Key>,
    /// The master key that opens the stored keys (rereading them after a rotation).
    pub keyring: Arc<Keyring>,
    /// Clients' status and lockdowns, kept current by the replica signals.
    pub client_status: Arc<crate::auth::status::StatusCache>,
    /// The replica signals this process has acted on (see `crate::replicas`).
    pub seen: Arc<crate::replicas::Seen>,
    /// This process's name among the replicas (outbox claims, alerts).
    pub replica: Arc<str>,
    /// The audit shipper's state (`[audit.ship]`), for `/readyz`; empty when not shipping.
    pub shipping: crate::audit::ship::Status,
    policies: Arc<RwLock<Arc<PolicySet>>>,
    /// The OpenID Connect providers in force: swapped whole on SIGHUP, so one request checks a
    /// token against one consistent registry.
    providers: Arc<RwLock<Arc<Providers>>>,
    /// Tells the refresher task (`spawn_providers`) that the registry was swapped.
    providers_swapped: Arc<tokio::sync::Notify>,
}

impl Core {
    /// The policy set in force now. Cloning the `Arc` keeps one request on one consistent set
    /// even if a reload swaps it meanwhile.
    pub fn policies(&self) -> Arc<PolicySet> {
        self.policies
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Swaps a loaded, validated set in (see `crate::replicas::Reload`: only after its audit
    /// record committed).
    pub fn swap_policies(&self, set: PolicySet) {
        *self.policies.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
    }

    /// The identity providers in force now.
    pub fn providers(&self) -> Arc<Providers> {
        self.providers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts a freshly built registry in force and restarts the refresher on it.
    pub fn swap_providers(&self, next: Arc<Providers>) {
        *self.providers.write().unwrap_or_else(|p| p.into_inner()) = next;
        self.providers_swapped.notify_one();
    }

    /// The providers' background refresher, kept by the web layer's supervisor: runs the
    /// registry in force, and starts again on the new one whenever it is swapped.
    pub fn spawn_providers(&self) -> tokio::task::JoinHandle<()> {
        let core = self.clone();
        tokio::spawn(async move {
            loop {
                let current = core.providers();
                tokio::select! {
                    _ = current.run() => {}
                    _ = core.providers_swapped.notified() => {
                        tracing::info!("identity providers swapped; refresher restarted");
                    }
                }
            }
        })
    }

    /// Builds the state: storage (migrated), keys, policies, store clients. Any failure stops
    /// the start: a gateway that cannot enforce does not serve.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let db = Db::open(&config.storage_url)
            .await
            .with_context(|| "opening storage (storage_url)")?;
        let keyring = Keyring::open(&config.key_dir)?;
        let keys = keyring
            .gateway_keys(&db)
            .await
            .with_context(|| "loading the gateway's keys")?;
        let clock = Arc::new(crate::clock::Clock::default());
        let tokens = TokenService::new(&keys.token_signing, &config.auth, clock.clone())?;
        let subjects = SubjectVerifier::from_config(&config);
        let providers = Providers::from_config(&config)?;
        // One bounded first attempt, so that a reachable provider has its keys before the first
        // request; one that is down is retried in the background and `/readyz` names it.
        let _ = tokio::time::timeout(PROVIDER_START_WAIT, providers.refresh_all()).await;
        let audit = crate::audit::AuditLog::start(
            db.clone(),
            keys.audit_signing.key_pair(),
            keys.audit_signing.kid.clone(),
            config.audit.clone().for_listener(config.listen),
            clock.clone(),
        )
        .await?;
        // Token lifetimes run on the clock that never goes back, from no earlier than this
        // replica's newest record: a host whose clock went back while it was down does not
        // revive the tokens that had expired by then.
        if let Some(newest) = crate::audit::store::newest_time(&db, audit.writer_id()).await? {
            // Ahead of the host's clock: either the clock went back (what the seed is for) or
            // the record was stamped during a forward glitch since corrected; tokens are
            // post-dated by that much until the clock catches up, so the operator is told.
            let ahead_s = (newest - clock.now()) / 1_000_000;
            if ahead_s > config.auth.leeway_secs as i64 {
                tracing::warn!(
                    ahead_s,
                    "this replica's newest audit record is ahead of the host clock; its tokens \
                     are issued on the record's time until the clock catches up (check the \
                     host's time source)"
                );
            }
            clock.seed(newest);
        }
        let seen = crate::replicas::Seen::new(&crate::storage::signals::read(&db).await?);
        let stores = Stores::build(&config.stores)?;
        let policies = load_policies(&config, &stores)?;
        let limits = crate::limits::RateLimits::new(&config.rate_limits);
        let marks = Arc::new(crate::workflows::marks::Marks::load(&db).await?);
        let statements = Arc::new(crate::workflows::statements::Statements::load(&db).await?);
        let report_sealer = Arc::new(crate::auth::sealer::Sealer::new(&keys.reports));
        let signin_sealer = Arc::new(crate::auth::sealer::Sealer::derive(
            &keys.reports,
            b"page sign-in state v1",
        ));
        let shipping = crate::audit::ship::Status::new(config.audit.ship.as_ref());
        Ok(Self(Arc::new(Shared {
            config: Arc::new(config),
            db,
            tokens,
            subjects,
            stores: Arc::new(stores),
            pseudonym_key: Arc::new(ring::hmac::Key::new(
                ring::hmac::HMAC_SHA256,
                &keys.pseudonym,
            )),
            audit,
            clock,
            marks,
            statements,
            deletions: Arc::default(),
            report_sealer,
            signin_sealer,
            limits,
            audit_public_key: Arc::new(keys.audit_signing.public.clone()),
            keyring: Arc::new(keyring),
            seen: Arc::new(seen),
            client_status: Arc::default(),
            replica: crate::replicas::replica_name(),
            shipping,
            policies: Arc::new(RwLock::new(Arc::new(policies))),
            providers: Arc::new(RwLock::new(providers)),
            providers_swapped: Arc::default(),
        })))
    }
}

/// How long start-up waits for the identity providers' first answer.
const PROVIDER_START_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// The policy set, checked against the routes: every dataset a route names must be decidable.
pub fn load_policies(
    config: &Config,
    stores: &Stores,
) -> Result<PolicySet, crate::policy::PolicyError> {
    let set = PolicySet::load(&config.policy_dir)?;
    if let Some((store, dataset)) = stores.datasets().find(|(_, d)| set.dataset(d).is_none()) {
        return Err(crate::policy::PolicyError {
            file: config.policy_dir.join("catalog.toml").display().to_string(),
            line: None,
            message: format!(
                "store `{store}` routes to dataset `{dataset}`, which the catalog does not declare; add it or fix the route"
            ),
        });
    }
    Ok(set)
}
