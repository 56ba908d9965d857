//! Who is signed in to a page. STUB: the sign-in work replaces this file's body (OpenID Connect
//! authorization code with PKCE, a server-side session behind an HttpOnly cookie, idle
//! timeout, sign-out) and keeps its public interface: the two extractors below, which the
//! console and the portal take in their handlers' signatures.
//!
//! Until then `SubjectPage` accepts a subject's bearer token, so that the portal can be built
//! and tested, and `StaffPage` refuses everyone.

use axum::extract::FromRequestParts;
use http::request::Parts;

use super::super::{AppState, Error, extract};
use credgate_core::auth::DataSubject;

/// The routes of signing in and out (`/signin/...`, `/signout`).
pub fn routes() -> Vec<super::super::routes::Group> {
    Vec::new()
}

/// A data subject signed in through a subject provider. Refused (a redirect to sign-in, or
/// 401 page) for a staff session or none.
pub struct SubjectPage {
    pub subject: DataSubject,
}

impl FromRequestParts<AppState> for SubjectPage {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let extract::Subject(subject) = extract::Subject::from_request_parts(parts, state).await?;
        Ok(Self { subject })
    }
}

/// A person signed in through a staff provider, with the credgate roles the role map gave.
pub struct StaffPage {
    pub actor: String,
    pub org: String,
    pub name: String,
    pub roles: Vec<String>,
}

impl FromRequestParts<AppState> for StaffPage {
    type Rejection = Error;

    async fn from_request_parts(_: &mut Parts, _: &AppState) -> Result<Self, Error> {
        Err(Error::Unauthorized("sign in first"))
    }
}
