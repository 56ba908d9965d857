//! Data-subject endpoints. Every one of them acts on the token's own subject only.

use axum::{Json, Router, extract::State, http::HeaderMap, routing::get};
use serde_json::{Value, json};

use super::{AppState, Error};
use crate::auth;

pub fn router() -> Router<AppState> {
    Router::new().route("/subject/me", get(me))
}

/// Who the gateway takes the caller to be: lets a subject check their token before filing.
async fn me(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<Value>, Error> {
    let subject = auth::authenticate_subject(&state, &headers)?;
    Ok(Json(json!({
        "subject": subject.id.as_str(),
        "subject_type": subject.id.subject_type(),
        "issuer": subject.issuer,
    })))
}
