//! `GET /metrics` in Prometheus text: requests by route, decision and status, latency
//! histograms, audit queue depth and batch sizes, upstream errors, unclassified fields.

use std::{sync::OnceLock, time::Instant};

use axum::{
    extract::{MatchedPath, Request},
    http::{HeaderValue, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// The decision the audit layer recorded, for the request counter.
#[derive(Debug, Clone, Copy)]
pub struct Decision(pub &'static str);

/// One recorder per process (the `metrics` facade is global).
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Suffix("_seconds".into()),
                &[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ],
            )
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("credgate_audit_batch_size".into()),
                    &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0],
                )
            })
            .expect("bucket lists are not empty")
            .build_recorder();
        let handle = recorder.handle();
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Folds the histogram samples recorded since the last time into their buckets. The recorder
/// keeps every raw sample until this runs (or until a scrape): a gateway nobody scrapes would
/// grow by 8 bytes a request, about 150 KB a second at 20k req/s, without end.
pub fn spawn_upkeep() -> tokio::task::JoinHandle<()> {
    tokio::spawn(async {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            every.tick().await;
            handle().run_upkeep();
        }
    })
}

pub async fn render() -> Response {
    let mut res = handle().render().into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    res
}

pub async fn track(req: Request, next: Next) -> Response {
    // A per-route series would timestamp each whistleblower report (a counter that moves when
    // nothing else does): the reports doors are not measured at all.
    if req.uri().path().starts_with("/public/reports") {
        return next.run(req).await;
    }
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let started = Instant::now();
    let res = next.run(req).await;
    let decision = res
        .extensions()
        .get::<Decision>()
        .map(|d| d.0)
        .unwrap_or("none");
    let status = res.status().as_u16().to_string();
    metrics::counter!("credgate_requests_total", "route" => route.clone(), "decision" => decision, "status" => status).increment(1);
    metrics::histogram!("credgate_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    res
}

/// Binds `metrics_listen` (DESIGN.md, "Transport": its own address, loopback by default), or
/// nothing when it is `off`. A taken port stops the start: a scraper silently reading another
/// process's numbers would be worse than no metrics.
pub async fn bind(
    config: &crate::config::Config,
) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    use anyhow::Context as _;
    let Some(addr) = config.metrics_addr() else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr} (metrics_listen; \"off\" turns it off)"))?;
    Ok(Some(listener))
}

/// Serves `GET /metrics` and nothing else on the metrics listener. Unaudited (DESIGN.md lists
/// the metrics listener so), plain HTTP, meant for a scraper on a private network.
pub fn spawn_listener(listener: tokio::net::TcpListener) -> tokio::task::JoinHandle<()> {
    let router = axum::Router::new()
        .route("/metrics", axum::routing::get(render))
        .fallback(|| async { http::StatusCode::NOT_FOUND });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "the metrics listener stopped");
        }
    })
}
