//! HTTP assembly: the shared state, the router of every route group, and the layers that every
//! request passes (request id and problem rendering, panic catching, tracing).

pub mod admin;
mod context;
mod error;
pub mod limits;
pub mod metrics;
pub mod oauth;
pub mod ops;
mod serve;
pub mod subject;

use std::{
    net::SocketAddr,
    sync::{Arc, RwLock},
};

use anyhow::Context as _;
use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request},
};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::{
    catch_panic::CatchPanicLayer,
    trace::{DefaultOnResponse, TraceLayer},
};

pub use context::{REQUEST_ID, RequestId};
pub use error::{Error, Problem};

use crate::{
    auth::{keyring::Keyring, subject::SubjectVerifier, tokens::TokenService},
    config::Config,
    policy::PolicySet,
    proxy::upstream::Stores,
    storage::Db,
};

/// Everything a handler needs, built once at start and shared by reference. Every layer and
/// handler takes a clone per request, so it is one `Arc`: one atomic increment, not one per
/// field (the profile showed cloning and dropping the fields at about 4% of a request).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
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
    /// The workflows' clock (tests move it forward).
    pub clock: Arc<crate::workflows::Clock>,
    /// Seals whistleblowers' contacts (AES-256-GCM, the reports key from the keyring).
    pub report_sealer: Arc<crate::workflows::reports::Sealer>,
    /// Contested records, for marking answers.
    pub marks: Arc<crate::workflows::marks::Marks>,
    pub limits: limits::RateLimits,
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
    policies: Arc<RwLock<Arc<PolicySet>>>,
}

impl AppState {
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

    /// Builds the state: storage (migrated), keys, policies, store clients. Any failure stops
    /// the start: a gateway that cannot enforce does not serve.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        metrics::handle();
        let db = Db::open(&config.storage_url)
            .await
            .with_context(|| "opening storage (storage_url)")?;
        let keyring = Keyring::open(&config.key_dir)?;
        let keys = keyring
            .gateway_keys(&db)
            .await
            .with_context(|| "loading the gateway's keys")?;
        let tokens = TokenService::new(&keys.token_signing, &config.auth)?;
        let subjects = SubjectVerifier::from_config(&config)?;
        let audit = crate::audit::AuditLog::start(
            db.clone(),
            keys.audit_signing.key_pair(),
            keys.audit_signing.kid.clone(),
            config.audit.clone(),
        )
        .await?;
        let seen = crate::replicas::Seen::new(&crate::storage::signals::read(&db).await?);
        let stores = Stores::build(&config.stores)?;
        let policies = load_policies(&config, &stores)?;
        let limits = limits::RateLimits::new(&config.rate_limits);
        let marks = Arc::new(crate::workflows::marks::Marks::load(&db).await?);
        let report_sealer = Arc::new(crate::workflows::reports::Sealer::new(&keys.reports));
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
            clock: Arc::new(crate::workflows::Clock::default()),
            marks,
            report_sealer,
            limits,
            audit_public_key: Arc::new(keys.audit_signing.public.clone()),
            keyring: Arc::new(keyring),
            seen: Arc::new(seen),
            client_status: Arc::default(),
            replica: crate::replicas::replica_name(),
            policies: Arc::new(RwLock::new(Arc::new(policies))),
        })))
    }
}

/// The policy set, checked against the routes: every dataset a route names must be decidable.
pub(crate) fn load_policies(
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

pub fn router(state: AppState) -> Router {
    let body_limit = state.config.limits.max_request_bytes;
    Router::new()
        .merge(ops::router())
        .route("/metrics", axum::routing::get(metrics::render))
        .merge(oauth::router())
        .merge(subject::router())
        .merge(admin::router())
        .merge(crate::workflows::objections::router())
        .merge(crate::workflows::complaints::router())
        .merge(crate::workflows::reports::router())
        .merge(crate::proxy::router())
        .fallback(|| async { Error::NotFound("no such resource".into()) })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(
            ServiceBuilder::new()
                .layer(axum::middleware::from_fn(context::request_context))
                .layer(axum::middleware::from_fn(metrics::track))
                .layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    crate::audit::layer::audit,
                ))
                .layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    limits::limit,
                ))
                .layer(CatchPanicLayer::new())
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(|req: &Request| {
                            // The route template, never the raw path: paths carry subject ids.
                            let route = req
                                .extensions()
                                .get::<MatchedPath>()
                                .map(|m| m.as_str().to_owned())
                                .unwrap_or_else(|| "unmatched".into());
                            let id = req
                                .extensions()
                                .get::<RequestId>()
                                .map(|r| r.0.clone())
                                .unwrap_or_default();
                            tracing::info_span!("request", request_id = %id, method = %req.method(), %route)
                        })
                        .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
                ),
        )
        .with_state(state)
}

/// A bound, ready-to-run gateway.
pub struct App {
    listener: TcpListener,
    state: AppState,
}

impl App {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let listen = config.listen;
        let state = AppState::build(config).await?;
        crate::audit::alerts::spawn(state.clone(), state.config.alerts.clone());
        crate::workflows::outbox::spawn(state.clone());
        crate::replicas::spawn(state.clone());
        metrics::spawn_upkeep();
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen} (listen)"))?;
        Ok(Self { listener, state })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let state = self.state;
        let summaries = tokio::spawn(append_rate_limit_summaries(state.clone()));
        let limits = state.config.limits.clone();
        serve::serve(self.listener, router(state.clone()), &limits, shutdown).await;
        summaries.abort();
        // Windows still open at shutdown are summarised now rather than lost.
        for record in state.limits.flood.close(crate::storage::now_micros(), true) {
            if let Err(e) = state.audit.append(record).await {
                tracing::error!(error = %e, "a 429 summary could not be recorded at shutdown");
            }
        }
        Ok(())
    }
}

/// Appends the summary of each closed 429 window (see `crate::audit::flood`), once a second.
async fn append_rate_limit_summaries(state: AppState) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        for record in state
            .limits
            .flood
            .close(crate::storage::now_micros(), false)
        {
            if let Err(e) = state.audit.append(record).await {
                tracing::error!(error = %e, "a 429 summary could not be recorded");
            }
        }
    }
}
