//! The staff console `/console/`: every page takes a `StaffPage` (a staff session), so a
//! subject's session or none never reaches a handler here. Audited as `admin` records that
//! name the person, as `/admin` calls with a staff token are; every view of audit or personal
//! data is therefore itself recorded.
//!
//! Nothing here decides anything of its own: reads call the same core functions the `/admin`
//! handlers call, and every change calls the `/admin` handler itself (as the person, with the
//! role the page needs), so validation, the deferred change and its audit record are the API's.
//! What a role may not do is not offered, and refused (403) if forced.

mod audit;
mod dashboard;
mod officer;
mod queues;

use std::collections::HashMap;

use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use minijinja::{Value, context};

use super::super::{
    AppState, Error,
    routes::{AuditKind, Group, audited, get},
};
use super::{Lang, csrf::Csrf, page, session::StaffPage};
use crate::{
    auth,
    web::extract::{AUDITOR, OBJECTION_HANDLER, SECURITY_OFFICER, SYSTEM_ADMIN},
};

/// This area's navigation in the page header: the dashboard only. The sections are listed by
/// `layout.html` under it, only those the reader's roles may use (what a role may not do is
/// not offered), with the same catalog keys and English names (`Audit log`, `Alerts`, ...).
pub const NAV: &[(&str, &str)] = &[("console.nav.dashboard", "/console/")];

macro_rules! templates {
    ($($name:literal),* $(,)?) => {
        &[$((concat!("console/", $name), include_str!(concat!("../templates/console/", $name)))),*]
    };
}

/// This area's templates (name, source), registered with the page environment. The sign-in
/// pages' templates live here too: they are drawn for staff and subjects alike.
pub const TEMPLATES: &[(&str, &str)] = templates!(
    "signin_failed.html",
    "signout.html",
    "layout.html",
    "dashboard.html",
    "audit.html",
    "record.html",
    "verify.html",
    "table.html",
    "item.html",
);

pub fn routes() -> Vec<Group> {
    let mut routes = vec![
        get("/console", dashboard::to_home),
        get("/console/", dashboard::view),
    ];
    routes.extend(audit::routes());
    routes.extend(officer::routes());
    routes.extend(queues::routes());
    vec![audited(AuditKind::Admin, routes)]
}

/// Refuses a person none of whose roles is in `roles`: the page or action is not for them.
fn require(who: &StaffPage, roles: &[&str]) -> Result<(), Error> {
    if roles.iter().any(|r| who.has(r)) {
        return Ok(());
    }
    Err(Error::Forbidden {
        rule: "console-role".into(),
        detail: format!("this page is for the {} role", roles.join(" or ")),
    })
}

/// The person as the `/admin` handlers see a staff token's bearer: their id as `client_id`,
/// and the one role this action is taken under.
fn acting(who: &StaffPage, role: &str) -> Result<auth::Institution, Error> {
    require(who, &[role])?;
    Ok(auth::Institution {
        client_id: who.actor.clone(),
        org: who.org.clone(),
        role: role.into(),
        region: None,
    })
}

/// The console's sections, each with the roles that may use it.
const SECTIONS: &[(&str, &str, &[&str])] = &[
    (
        "console.nav.audit",
        "/console/audit",
        &[SECURITY_OFFICER, AUDITOR],
    ),
    (
        "console.nav.alerts",
        "/console/alerts",
        &[SECURITY_OFFICER, AUDITOR],
    ),
    (
        "console.nav.lockdowns",
        "/console/lockdowns",
        &[SECURITY_OFFICER],
    ),
    ("console.nav.clients", "/console/clients", &[SYSTEM_ADMIN]),
    (
        "console.nav.objections",
        "/console/objections",
        &[OBJECTION_HANDLER],
    ),
    (
        "console.nav.complaints",
        "/console/complaints",
        &[OBJECTION_HANDLER],
    ),
    (
        "console.nav.reports",
        "/console/reports",
        &[OBJECTION_HANDLER],
    ),
    (
        "console.nav.requests",
        "/console/requests",
        &[OBJECTION_HANDLER],
    ),
];

/// The sections this person may use: the only ones the layout links to.
fn sections(who: &StaffPage) -> Vec<(&'static str, &'static str)> {
    SECTIONS
        .iter()
        .filter(|(_, _, roles)| roles.iter().any(|r| who.has(r)))
        .map(|(key, href, _)| (*key, *href))
        .collect()
}

/// What the templates may offer this person.
fn can(who: &StaffPage) -> Value {
    context! {
        audit => who.has(SECURITY_OFFICER) || who.has(AUDITOR),
        officer => who.has(SECURITY_OFFICER),
        handler => who.has(OBJECTION_HANDLER),
        admin => who.has(SYSTEM_ADMIN),
    }
}

/// A form's fields (first value of each), after its CSRF token is checked.
struct Form(HashMap<String, String>);

impl Form {
    fn read(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<Self, Error> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
            .map_err(|_| Error::BadRequest("send the form's fields".into()))?;
        let mut map = HashMap::new();
        for (k, v) in pairs {
            map.entry(k).or_insert(v);
        }
        let form = Self(map);
        if !super::csrf::verify(state, headers, form.get("csrf")) {
            return Err(Error::Forbidden {
                rule: "csrf".into(),
                detail: "the form's token is missing or does not match; reload the page".into(),
            });
        }
        Ok(form)
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    /// A field, trimmed; empty is none.
    fn text(&self, k: &str) -> Option<String> {
        self.get(k)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    }
}

/// A console page with the reader's CSRF token, their name and what they may do.
fn show(
    state: &AppState,
    headers: &HeaderMap,
    who: &StaffPage,
    template: &str,
    here: &str,
    ctx: Value,
) -> Response {
    let csrf = Csrf::of(state, headers);
    let ctx = context! {
        csrf => csrf.token(state),
        who => who.name.clone(),
        can => can(who),
        sections => sections(who),
        ..ctx
    };
    let mut res = page(Lang::choose(headers), StatusCode::OK, template, here, ctx);
    if let Some(c) = csrf.set_cookie(state) {
        res.headers_mut().append(header::SET_COOKIE, c);
    }
    res
}

/// After an action: a success goes back to `to` (303, so a reload does not repeat it), keeping
/// the response's extensions, which carry the deferred change the audit layer commits with
/// the record; a refusal is answered as it is (drawn as an error page).
fn done(result: Result<Response, Error>, to: &str) -> Response {
    let res = match result {
        Ok(res) => res,
        Err(e) => return e.into_response(),
    };
    if !res.status().is_success() {
        return res;
    }
    let (mut parts, _) = res.into_parts();
    parts.status = StatusCode::SEE_OTHER;
    parts.headers.clear();
    if let Ok(loc) = HeaderValue::from_str(to) {
        parts.headers.insert(header::LOCATION, loc);
    }
    Response::from_parts(parts, axum::body::Body::empty())
}

/// A JSON value as a reader sees it: strings bare, nothing as empty.
fn audit_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A local path to go back to after an action: only inside the console.
fn back(form: &Form, default: &str) -> String {
    form.get("back")
        .filter(|b| b.starts_with("/console/") && !b.contains("//") && !b.contains('\\'))
        .filter(|b| !b.chars().any(char::is_control))
        .unwrap_or(default)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_console_template_renders_in_both_languages() {
        for lang in [Lang::En, Lang::ZhCn] {
            for (name, _) in TEMPLATES {
                let ctx = context! {
                    message => "signin.failed.again", who => "W", csrf => "c",
                    can => context! { audit => true, officer => true, handler => true, admin => true },
                    sections => vec![("console.nav.audit", "/console/audit")],
                    title => "console.nav.alerts", heads => vec!["console.col.id"],
                    rows => Vec::<Value>::new(), fields => Vec::<Value>::new(),
                    verdict => context! { ok => true, records => 1 }, kind => "objections",
                    form => context! { org => "", client => "", subject => "", decision => "", from => "", to => "" },
                };
                let html = super::super::render_str(lang, name, "/console/", "/console/", ctx)
                    .unwrap_or_else(|e| panic!("{name}: {e:#}"));
                assert!(
                    !html.contains("??"),
                    "{name} in {lang:?} names a missing key"
                );
            }
        }
    }
}
