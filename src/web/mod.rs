//! HTTP assembly: the shared state, the router of every route group, and the layers that every
//! request passes (request id and problem rendering, panic catching, tracing).

pub mod admin;
pub mod audit_layer;
pub mod complaints;
mod context;
pub mod data;
pub mod edge;
mod error;
pub mod extract;
pub mod limits;
pub mod metrics;
pub mod oauth;
pub mod objections;
pub mod openapi;
pub mod ops;
pub mod pages;
pub mod profile;
pub mod reports;
pub mod requests;
pub mod routes;
mod serve;
pub mod subject;
mod tasks;
mod workers;

use std::net::SocketAddr;

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
pub use tasks::Tasks;

/// Hands a deferred change (`crate::audit::Deferred`) to the audit layer with a response: the
/// change happens only with the response's audit record.
pub trait AttachChange {
    fn attach(self, res: impl axum::response::IntoResponse) -> axum::response::Response;
}

impl AttachChange for crate::audit::Deferred {
    fn attach(self, res: impl axum::response::IntoResponse) -> axum::response::Response {
        let mut res = res.into_response();
        res.extensions_mut().insert(self);
        res
    }
}

use crate::config::Config;
/// The state every handler and layer takes: the core services, as the web layer names them.
pub use crate::services::Core as AppState;

/// Every route group, each with its declared audit coverage: the one route table. `router`
/// mounts exactly these, and the audit layer takes each route's kind from here.
fn route_groups() -> Vec<routes::Group> {
    [
        ops::routes(),
        oauth::routes(),
        subject::routes(),
        admin::routes(),
        objections::routes(),
        complaints::routes(),
        reports::routes(),
        requests::routes(),
        data::routes(),
        pages::routes(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Every (method, template, coverage) the router answers, from the same table.
pub fn route_table() -> Vec<routes::RouteEntry> {
    routes::entries(&route_groups())
}

pub fn router(state: AppState) -> Router {
    let body_limit = state.config.limits.max_request_bytes;
    let (mounted, declared) = routes::mount(route_groups());
    let declared = std::sync::Arc::new(declared);
    mounted
        .fallback(|| async { Error::NotFound("no such resource".into()) })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(
            ServiceBuilder::new()
                .layer(axum::middleware::from_fn(context::request_context))
                .layer(axum::middleware::from_fn(metrics::track))
                .layer(axum::middleware::from_fn_with_state(
                    (state.clone(), declared),
                    audit_layer::audit,
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
        .layer(axum::middleware::from_fn(pages::finish))
        .with_state(state)
}

/// How long shutdown waits for the audit writer to commit what is queued.
const AUDIT_DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A bound, ready-to-run gateway.
pub struct App {
    listener: TcpListener,
    /// TLS and trusted proxies, loaded at build so that a bad certificate stops the start.
    edge: edge::Edge,
    /// `/metrics`, on its own address (`metrics_listen`), or `None` when off.
    metrics: Option<TcpListener>,
    state: AppState,
    /// Every background task the web layer started; stopped by `run_until` on shutdown.
    tasks: Tasks,
}

impl App {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let listen = config.listen;
        // The Prometheus recorder first, so that nothing built below records into the void.
        metrics::handle();
        let state = AppState::build(config).await?;
        let mut tasks = Tasks::default();
        let alerts = state.config.alerts.clone();
        tasks.keep("alerts", crate::audit::alerts::spawn(state.clone(), alerts));
        tasks.keep(
            "audit indexer",
            crate::audit::indexer::spawn(
                state.db.clone(),
                state.audit.writer_id().into(),
                state.audit.wake(),
                state.config.audit.indexer,
            ),
        );
        tasks.keep("outbox", crate::workflows::outbox::spawn(state.clone()));
        tasks.keep("replicas", crate::replicas::spawn(state.clone()));
        tasks.keep("metrics upkeep", metrics::spawn_upkeep());
        tasks.keep("identity providers", state.spawn_providers());
        tasks.keep("storage probe", state.db.spawn_probe());
        tasks.keep("audit shipping", crate::audit::ship::spawn(&state)?);
        let edge = edge::Edge::from_config(&state.config)?;
        let metrics = metrics::bind(&state.config).await?;
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen} (listen)"))?;
        Ok(Self {
            listener,
            edge,
            metrics,
            state,
            tasks,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The metrics listener's address, when it is on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Whether the listener speaks HTTPS.
    pub fn is_tls(&self) -> bool {
        self.edge.tls.is_some()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` on `io_threads` threads (`workers`), then stops in order: no
    /// new connections and the open ones drained, the 429 windows summarised, the audit queue
    /// committed, every background task stopped and awaited, the queue committed again for what
    /// those tasks queued while stopping, and last the serving threads' event loops.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            listener,
            edge,
            metrics: metrics_listener,
            state,
            mut tasks,
        } = self;
        // First: failing here must not leave the tasks below running.
        let name = format!("cg-io-{}", listener.local_addr()?.port());
        let workers = workers::start(state.config.io_threads(), &name)
            .context("starting the serving threads")?;
        if let Some(l) = metrics_listener {
            tasks.keep("metrics listener", metrics::spawn_listener(l));
        }
        if let Some(tls) = edge.tls.clone() {
            tasks.keep("TLS reload", edge::spawn_reload(tls));
        }
        let summaries = tokio::spawn(append_rate_limit_summaries(state.clone()));
        let limits = state.config.limits.clone();
        let router = router(state.clone());
        serve::serve(listener, router, &limits, edge, &workers, shutdown).await;
        // Records of callers who hung up are committed in tasks of their own.
        workers.settle(AUDIT_DRAIN_LIMIT).await;
        summaries.abort();
        tasks.keep("429 summaries", summaries);
        // Windows still open at shutdown are summarised now rather than lost.
        for record in state.limits.flood.close(state.clock.now(), true) {
            if let Err(e) = state.audit.append(record).await {
                tracing::error!(error = %e, "a 429 summary could not be recorded at shutdown");
            }
        }
        drain_audit(&state).await;
        tasks.stop().await;
        drain_audit(&state).await;
        workers.release().await;
        tracing::info!("shut down: connections drained, audit queue committed, tasks stopped");
        Ok(())
    }
}

/// Waits for the audit writer to commit what is queued; a writer stuck past the limit is
/// logged, not waited on forever (its senders were already told, or are gone).
async fn drain_audit(state: &AppState) {
    if !state.audit.drain(AUDIT_DRAIN_LIMIT).await {
        tracing::error!("the audit queue did not drain before shutdown");
    }
}

/// Appends the summary of each closed 429 window (see `crate::audit::flood`), once a second.
async fn append_rate_limit_summaries(state: AppState) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        for record in state.limits.flood.close(state.clock.now(), false) {
            if let Err(e) = state.audit.append(record).await {
                tracing::error!(error = %e, "a 429 summary could not be recorded");
            }
        }
    }
}
