//! The route table: every route is audited or on DESIGN.md's short list of unaudited
//! operations, and each route behaves as its table row declares (a record of the declared kind,
//! or none).

use credgate::web::{
    route_table,
    routes::{Coverage, RouteEntry, Unaudited},
};
use http::Method;

use crate::helpers::TestApp;

/// DESIGN.md, "Unaudited by design": `/healthz`, `/readyz`, the metrics listener, JWKS,
/// discovery documents, static assets. Read-only (GET), at these paths only; everything else
/// leaves an audit record.
fn on_the_short_list(reason: Unaudited, method: Option<&Method>, path: &str) -> bool {
    if method != Some(&Method::GET) {
        return false;
    }
    match reason {
        Unaudited::Health => path == "/healthz",
        Unaudited::Readiness => path == "/readyz",
        Unaudited::Metrics => path == "/metrics",
        Unaudited::Jwks => path == "/.well-known/jwks.json",
        Unaudited::Discovery => {
            path == "/.well-known/oauth-authorization-server"
                || path == "/openapi.json"
                || path == "/subject/consents/receipt-key"
        }
        Unaudited::StaticAssets => path.starts_with("/assets/"),
    }
}

fn label(e: &RouteEntry) -> String {
    let method = e.method.as_ref().map_or("ANY", |m| m.as_str());
    format!("{method} {}", e.path)
}

#[test]
fn every_route_is_audited_or_on_the_short_list() {
    let table = route_table();
    assert!(table.len() >= 35, "the whole table: {} rows", table.len());
    let outside: Vec<String> = table
        .iter()
        .filter(|e| match e.coverage {
            Coverage::Audited(_) => false,
            Coverage::Unaudited(reason) => !on_the_short_list(reason, e.method.as_ref(), e.path),
        })
        .map(label)
        .collect();
    assert!(
        outside.is_empty(),
        "unaudited routes outside DESIGN.md's short list: {outside:?}"
    );
    let mut seen = std::collections::HashSet::new();
    for e in &table {
        assert!(seen.insert(label(e)), "declared twice: {}", label(e));
    }
}

/// The template with every placeholder filled, so the route (and no other) matches.
fn probe_path(template: &str) -> String {
    template
        .split('/')
        .map(|seg| if seg.starts_with('{') { "x" } else { seg })
        .collect::<Vec<_>>()
        .join("/")
}

/// One unauthenticated request per row: an audited route answers with `X-Audit-Id` naming a
/// record of the declared kind, an unaudited one without it. A route mounted outside the table
/// would be audited as "undeclared" and a declaration that does not match the router fails here.
#[tokio::test]
async fn each_route_answers_as_declared() {
    let app = TestApp::spawn().await;
    let mut wrong = Vec::new();
    for e in route_table() {
        let method = e.method.clone().unwrap_or(Method::GET);
        let url = format!("{}{}", app.url, probe_path(e.path));
        let res = app.http.request(method, &url).send().await.unwrap();
        let status = res.status().as_u16();
        let audit_id = res
            .headers()
            .get("x-audit-id")
            .map(|v| v.to_str().unwrap().to_string());
        match (e.coverage, audit_id) {
            (Coverage::Audited(kind), Some(id)) => {
                let record = app.record(&id).await;
                if record.kind != kind.as_str() {
                    wrong.push(format!("{}: recorded as {}", label(&e), record.kind));
                }
            }
            (Coverage::Audited(_), None) => {
                wrong.push(format!("{}: {status} without a record", label(&e)))
            }
            (Coverage::Unaudited(_), Some(_)) => {
                wrong.push(format!("{}: {status} recorded", label(&e)))
            }
            (Coverage::Unaudited(_), None) => {}
        }
    }
    assert!(wrong.is_empty(), "routes not as declared: {wrong:#?}");
}

/// A path no route matches keeps today's rule: a 404 under an audited prefix is recorded (a
/// probe leaves a trace), elsewhere it is not.
#[tokio::test]
async fn unmatched_paths_keep_the_prefix_rule() {
    let app = TestApp::spawn().await;
    for (path, kind) in [
        ("/v1/nowhere", Some("data")),
        ("/v1/subjects/x", Some("profile")),
        ("/admin/nowhere", Some("admin")),
        ("/subject/nowhere", Some("subject")),
        ("/public/nowhere", Some("public")),
        ("/oauth/nowhere", Some("token")),
        ("/nowhere", None),
    ] {
        let res = app
            .http
            .get(format!("{}{path}", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404, "{path}");
        let id = res
            .headers()
            .get("x-audit-id")
            .map(|v| v.to_str().unwrap().to_string());
        match (kind, id) {
            (Some(kind), Some(id)) => assert_eq!(app.record(&id).await.kind, kind, "{path}"),
            (None, None) => {}
            (kind, id) => panic!("{path}: expected kind {kind:?}, audit id {id:?}"),
        }
    }
}
