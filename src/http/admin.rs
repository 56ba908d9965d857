//! Officers' endpoints. Only the `security_officer` role may call them.

use axum::{Json, Router, extract::State, http::HeaderMap, routing::post};
use serde_json::{Value, json};

use super::{AppState, Error};
use crate::auth::{self, Institution};

pub fn router() -> Router<AppState> {
    Router::new().route("/admin/policies/reload", post(reload_policies))
}

pub const SECURITY_OFFICER: &str = "security_officer";

async fn officer(state: &AppState, headers: &HeaderMap) -> Result<Institution, Error> {
    let who = auth::authenticate_institution(state, headers).await?;
    if who.role != SECURITY_OFFICER {
        return Err(Error::Forbidden {
            rule: "officer-only".into(),
            detail: "this endpoint is for security officers".into(),
        });
    }
    Ok(who)
}

/// Swaps the whole policy set, or refuses a bad one and keeps the old set serving.
async fn reload_policies(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, Error> {
    let who = officer(&state, &headers).await?;
    match state.reload_policies() {
        Ok(()) => {
            tracing::info!(client_id = %who.client_id, "policies reloaded");
            let p = state.policies();
            Ok(Json(
                json!({"status": "reloaded", "roles": p.role_names(), "purposes": p.purpose_codes()}),
            ))
        }
        Err(e) => {
            tracing::warn!(client_id = %who.client_id, error = %e, "policy reload refused");
            Err(Error::Unprocessable(format!(
                "policy set refused, the previous set stays in force: {e}"
            )))
        }
    }
}
