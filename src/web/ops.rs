//! Liveness and readiness for load balancers and orchestrators.

use axum::{
    Json,
    extract::State,
    response::{IntoResponse, Response},
};
use http::StatusCode;
use serde_json::{Value, json};

use crate::storage::health::Condition;

use super::{
    AppState, Error,
    error::Problem,
    routes::{self as r, Group, Unaudited, unaudited},
};

pub fn routes() -> Vec<Group> {
    vec![
        unaudited(Unaudited::Health, vec![r::get("/healthz", healthz)]),
        unaudited(Unaudited::Readiness, vec![r::get("/readyz", readyz)]),
    ]
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Ready means able to enforce, account and know who calls: storage answers, a policy set is
/// loaded and is the set the other replicas enforce, and every configured identity provider has
/// keys. A provider without keys is named (its issuer, from the config); why it has none (an
/// address, a connection error) goes to the log only.
async fn readyz(State(state): State<AppState>) -> Response {
    match ready(&state).await {
        Ok(body) => body.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn ready(state: &AppState) -> Result<Response, Error> {
    let digest = enforcing(state).await?;
    let providers = state.providers().status();
    // One issuer may serve two kinds (staff and subjects): name it once.
    let mut waiting: Vec<&str> = providers
        .iter()
        .filter(|p| !p.keys_loaded)
        .map(|p| p.issuer.as_str())
        .collect();
    waiting.sort_unstable();
    waiting.dedup();
    let listed: Vec<Value> = providers
        .iter()
        .map(|p| json!({"issuer": p.issuer, "kind": p.kind, "keys_loaded": p.keys_loaded, "keys": p.keys}))
        .collect();
    if !waiting.is_empty() {
        let detail = format!(
            "identity provider(s) without keys (unreachable or answering badly; retried): {}",
            waiting.join(", ")
        );
        let problem = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-ready",
            "Not ready",
            detail,
        );
        return Ok(problem.into_response_with(|_| {}));
    }
    let mut body =
        json!({"status": "ready", "policy_digest": digest, "identity_providers": listed});
    // A sink that is down leaves the gateway ready (`audit::ship`): it is reported, not fatal.
    // Anyone may read /readyz, so it says up, a coarse lag state, chains behind and a corrupt
    // place only (`SinkReport`'s serialised fields); exact places are in the metrics.
    if let Some(shipping) = state.shipping.report() {
        body["audit_shipping"] = json!(shipping);
    }
    Ok(Json(body).into_response())
}

/// Storage, the audit log and the policies; the digest of the set in force.
async fn enforcing(state: &AppState) -> Result<String, Error> {
    // What the background probe knows comes first: it names the cause, where a failed ping
    // below could only say that storage did not answer.
    match state.db.condition() {
        Condition::Up => {}
        Condition::Unreachable => {
            return Err(Error::NotReady(
                "database: unreachable (probed in the background; requests fail fast until it answers)",
            ));
        }
        Condition::DiskFull => {
            return Err(Error::NotReady(
                "audit: disk full (under 1 MiB free where the database is; requests fail fast until there is room)",
            ));
        }
        Condition::FileReplaced => {
            return Err(Error::NotReady(
                "database: the SQLite file was deleted or replaced under the running gateway (requests fail until the gateway is restarted)",
            ));
        }
    }
    state.db.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness: storage unreachable");
        Error::NotReady("storage unreachable")
    })?;
    if !state.audit.is_healthy() {
        return Err(Error::NotReady("the audit log cannot be written"));
    }
    let policies = state.policies();
    if policies.purpose_codes().is_empty() {
        return Err(Error::NotReady("no policies loaded"));
    }
    if state.seen.policy_divergence().is_some() {
        return Err(Error::NotReady(
            "this replica's policy files differ from the set reloaded on another replica",
        ));
    }
    // The digest lets operators compare replicas; it says nothing of the files' content.
    Ok(policies.digest().to_string())
}
