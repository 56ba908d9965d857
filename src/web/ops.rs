//! Liveness and readiness for load balancers and orchestrators.

use axum::{Json, extract::State};
use serde_json::{Value, json};

use super::{
    AppState, Error,
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

/// Ready means able to enforce and account: storage answers, a policy set is loaded, and it is
/// the set the other replicas enforce.
async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, Error> {
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
    Ok(Json(
        json!({"status": "ready", "policy_digest": policies.digest()}),
    ))
}
