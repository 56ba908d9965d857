//! The subject portal `/portal/`: a data subject's own record, who accessed it, their consents,
//! objections, requests and complaints, as pages. Every page is a view of what the subject API
//! (`/subject/...`) answers: the handlers here call the same core workflows (objections,
//! requests, complaints) or, where the logic lives in the API handler itself (consents, the
//! self-query, the access log), that handler, so the page can never show or allow more than
//! the API does. Every route is audited as `subject` (the self-query as the `profile` read it
//! is); every form carries the CSRF token and is refused without it; an item of another
//! subject answers 404, exactly as a missing one.

mod cases;
mod consents;
mod record;

use axum::{
    body::{Bytes, to_bytes},
    response::{IntoResponse, Response},
};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use minijinja::{Value, context};

use super::super::{
    AppState, Error,
    routes::{AuditKind, Group, audited, get, post},
};
use super::{Lang, csrf::Csrf, page};
use crate::audit::Deferred;

/// This area's navigation: the catalog key of each label and where it goes. The English labels
/// are a contract (DESIGN.md, "Web pages"); `Sign out` is a form on every page (a POST with the
/// CSRF token, `console/signout.html`), not a link.
pub const NAV: &[(&str, &str)] = &[
    ("portal.nav.record", "/portal/record"),
    ("portal.nav.access", "/portal/access"),
    ("portal.nav.consents", "/portal/consents"),
    ("portal.nav.objections", "/portal/objections"),
    ("portal.nav.requests", "/portal/requests"),
    ("portal.nav.complaints", "/portal/complaints"),
];

/// This area's templates (name, source), registered with the page environment.
pub const TEMPLATES: &[(&str, &str)] = &[
    (
        "portal/record.html",
        include_str!("../templates/portal/record.html"),
    ),
    (
        "portal/access.html",
        include_str!("../templates/portal/access.html"),
    ),
    (
        "portal/consents.html",
        include_str!("../templates/portal/consents.html"),
    ),
    (
        "portal/objections.html",
        include_str!("../templates/portal/objections.html"),
    ),
    (
        "portal/requests.html",
        include_str!("../templates/portal/requests.html"),
    ),
    (
        "portal/complaints.html",
        include_str!("../templates/portal/complaints.html"),
    ),
    (
        "portal/case.html",
        include_str!("../templates/portal/case.html"),
    ),
    (
        "portal/mark.html",
        include_str!("../templates/portal/mark.html"),
    ),
];

/// Every portal route shows or changes the subject's own data: all audited as `subject`.
pub fn routes() -> Vec<Group> {
    vec![audited(
        AuditKind::Subject,
        vec![
            get("/portal", record::home),
            get("/portal/", record::home),
            get("/portal/record", record::view),
            post("/portal/record", record::read),
            get("/portal/access", record::access),
            get("/portal/consents", consents::list),
            post("/portal/consents", consents::grant),
            get("/portal/consents/{id}/receipt", consents::receipt),
            post("/portal/consents/{id}/revoke", consents::revoke),
            get("/portal/objections", cases::objections),
            post("/portal/objections", cases::file_objection),
            get("/portal/objections/{id}", cases::objection),
            post(
                "/portal/objections/{id}/withdraw",
                cases::withdraw_objection,
            ),
            get("/portal/requests", cases::requests),
            post("/portal/requests", cases::file_request),
            get("/portal/requests/{id}", cases::request),
            get("/portal/complaints", cases::complaints),
            post("/portal/complaints", cases::file_complaint),
            get("/portal/complaints/{id}", cases::complaint),
        ],
    )]
}

/// The largest form body the portal reads: its longest field (a complaint's 4,000 characters)
/// percent-encoded as UTF-8 is 36 KiB; anything beyond is not a form of ours.
const MAX_FORM_BYTES: usize = 48 * 1024;

/// A posted form, read by hand: a repeated field keeps its first value (checkboxes read all),
/// unknown fields are ignored, no parser message echoes what was sent.
pub(super) struct Form(Vec<(String, String)>);

impl Form {
    /// The field's first value, or "" when absent.
    fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// Every value of a repeated field (checkboxes).
    fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// A value a form may leave blank: blank counts as absent.
    fn opt(&self, name: &str) -> Option<String> {
        Some(self.get(name).to_owned()).filter(|v| !v.trim().is_empty())
    }
}

/// The form, if it is small enough, parses, and carries this reader's CSRF token.
fn form(state: &AppState, headers: &HeaderMap, body: &Bytes) -> Result<Form, Error> {
    if body.len() > MAX_FORM_BYTES {
        return Err(Error::PayloadTooLarge(MAX_FORM_BYTES));
    }
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
        .map_err(|_| Error::BadRequest("send the form's fields".into()))?;
    let f = Form(pairs);
    if !super::csrf::verify(state, headers, Some(f.get("csrf"))) {
        return Err(Error::Forbidden {
            rule: "csrf".into(),
            detail: "the form's token is missing or does not match; reload the page".into(),
        });
    }
    Ok(f)
}

/// Draws a portal page with the reader's CSRF token (and its cookie when new).
fn show(
    state: &AppState,
    headers: &HeaderMap,
    status: StatusCode,
    (template, here): (&str, &str),
    ctx: Value,
) -> Response {
    let csrf = Csrf::of(state, headers);
    let lang = Lang::choose(headers);
    let ctx = context! { csrf => csrf.token(state), ..ctx };
    let mut res = page(lang, status, template, here, ctx);
    if let Some(c) = csrf.set_cookie(state) {
        res.headers_mut().append(header::SET_COOKIE, c);
    }
    res
}

/// After a change: back to a page by GET (post/redirect/get), the change riding along so it
/// commits with this request's audit record.
fn see_other(to: &str, change: Option<Deferred>) -> Response {
    let mut res = StatusCode::SEE_OTHER.into_response();
    if let Ok(loc) = HeaderValue::from_str(to) {
        res.headers_mut().insert(header::LOCATION, loc);
    }
    if let Some(d) = change {
        res.extensions_mut().insert(d);
    }
    res
}

/// An item id from a URL, as the workflows mint them (`ob_`, `rq_`, `cp_`, `cs_` and hex): any
/// other text names nothing and answers 404 before it reaches the database (PostgreSQL refuses
/// a NUL in a string, which would otherwise surface as a 503).
fn item_id(id: &str) -> Result<&str, Error> {
    let plain = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if plain {
        Ok(id)
    } else {
        Err(Error::NotFound("no such item".into()))
    }
}

/// The JSON body of an API handler's answer, and the change it carries (the page takes both
/// over). Its bodies are small documents the gateway itself wrote.
async fn take_json(
    res: Response,
) -> Result<(StatusCode, serde_json::Value, Option<Deferred>), Error> {
    let (mut parts, body) = res.into_parts();
    let change = parts.extensions.remove::<Deferred>();
    let bytes = to_bytes(body, 8 * 1024 * 1024)
        .await
        .map_err(|_| Error::BadGateway("the answer could not be read"))?;
    let doc = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|_| Error::BadGateway("the answer could not be read"))?
    };
    Ok((parts.status, doc, change))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_item_ids_reach_the_database() {
        assert!(item_id("ob_01a22c1eae2f75678a8c385c53f598c9").is_ok());
        for bad in ["", "ob_1\0", "<script>", "a/b", &"9".repeat(65), "cs_é"] {
            assert!(item_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_form_keeps_the_first_value_and_reads_every_checkbox() {
        let f = Form(vec![
            ("a".into(), "1".into()),
            ("a".into(), "2".into()),
            ("b".into(), " ".into()),
        ]);
        assert_eq!(f.get("a"), "1");
        assert_eq!(f.all("a"), vec!["1", "2"]);
        assert_eq!(f.opt("b"), None);
        assert_eq!(f.get("zz"), "");
    }
}
