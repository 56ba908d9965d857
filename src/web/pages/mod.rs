//! The pages people use in a browser: rendered on the server with minijinja, in English and
//! Simplified Chinese, assets compiled into the binary, a strict CSP on every response, and a
//! signed double-submit CSRF token on every form. The public pages (`/`, `/lists/...`,
//! `/report`) live in `public` and `report`; the console and the portal will mount beside them.
//!
//! minijinja rather than askama: templates are plain files included at build time (so still in
//! the binary), the build stays free of another proc-macro crate on a shared two-core machine,
//! and auto-escaping for `.html` is on by default; the tests render every page and parse it.

mod assets;
pub mod chart;
mod console;
mod csrf;
pub(crate) mod dates;
mod i18n;
mod labels;
mod portal;
mod public;
mod report;
pub mod session;

use std::sync::LazyLock;

use axum::{
    body::{Body, to_bytes},
    extract::Request,
    middleware::Next,
    response::{IntoResponse, Response},
};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use minijinja::{Environment, State as TplState, Value, context};

pub use i18n::Lang;

use super::routes::{AuditKind, Group, Unaudited, audited, get, post, unaudited};

/// Every page route: assets unaudited (they carry nothing), every page audited as Public,
/// whether it shows data (look-ups, lists, a report's status) or only a form.
pub fn routes() -> Vec<Group> {
    let mut groups = vec![
        unaudited(
            Unaudited::StaticAssets,
            vec![get("/assets/{file}", assets::serve)],
        ),
        audited(
            AuditKind::Public,
            vec![
                get("/", public::lookup),
                get("/lists/red", public::red_list),
                get("/lists/black", public::black_list),
                get("/report", report::form),
                post("/report", report::file),
                post("/report/status", report::status),
                get("/lang/{code}", switch_language),
            ],
        ),
    ];
    groups.extend(session::routes());
    groups.extend(console::routes());
    groups.extend(portal::routes());
    groups
}

pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
    script-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The paths the pages answer (and whose errors are drawn as pages, not problem documents).
pub fn is_page_path(path: &str) -> bool {
    path == "/"
        || path == "/report"
        || path.starts_with("/report/")
        || path.starts_with("/lists/")
        || path.starts_with("/lang/")
        || path.starts_with("/assets/")
        || ["/console", "/portal", "/signin", "/signout"]
            .iter()
            .any(|area| {
                path.strip_prefix(area)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
}

/// The outermost layer for page paths: every response gets the security headers, and any
/// error that became a problem document further in (rate limits, the audit layer's 503,
/// framework rejections) is drawn as an error page in the reader's language instead.
pub async fn finish(req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    if !is_page_path(&path) {
        return next.run(req).await;
    }
    let lang = Lang::choose(req.headers());
    let mut res = next.run(req).await;
    let problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if problem {
        res = problem_as_page(res, lang, &path).await;
    }
    let h = res.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    if !path.starts_with("/assets/") {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// Re-draws a problem document as a page: the status and the request id are kept, the detail
/// is not (it is English and may name internals); the page says what the status means.
async fn problem_as_page(res: Response, lang: Lang, path: &str) -> Response {
    let (mut parts, body) = res.into_parts();
    let doc: serde_json::Value = to_bytes(body, 16 * 1024)
        .await
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let request_id = doc["request_id"].as_str().unwrap_or_default().to_owned();
    let mut html = error_html(lang, parts.status, &request_id, path);
    // A refusal whose reason the reader can act on says that reason (the rule's name is ours,
    // never data; the problem's English detail is still not shown).
    if let Some(rule) = doc["rule"].as_str().filter(|r| REFUSALS.contains(r)) {
        html = refusal_html(lang, parts.status, &request_id, path, rule);
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    Response::from_parts(parts, Body::from(html))
}

/// An error page in the area it happened in: that area's navigation, and a way back to the
/// area's first page (the console's, the portal's or the public one), so the reader is never
/// left on a dead end.
fn error_html(lang: Lang, status: StatusCode, request_id: &str, path: &str) -> String {
    let message = match status.as_u16() {
        s @ (400 | 403 | 404 | 405 | 413 | 429 | 503) => format!("error.{s}"),
        _ => "error.other".to_owned(),
    };
    refusal_html(lang, status, request_id, path, &message)
}

/// The refusals the pages explain by their rule (`error.rule.<rule>` in the catalogs): a
/// session of the other kind, a role without the page, a stale form.
const REFUSALS: &[&str] = &[
    "staff-session-only",
    "subject-session-only",
    "console-role",
    "csrf",
];

fn refusal_html(
    lang: Lang,
    status: StatusCode,
    request_id: &str,
    path: &str,
    rule_or_message: &str,
) -> String {
    let message = if REFUSALS.contains(&rule_or_message) {
        format!("error.rule.{rule_or_message}")
    } else {
        rule_or_message.to_owned()
    };
    // A session of the other kind is sent where it belongs (its sign-out button is there).
    let to_console = rule_or_message == "subject-session-only"
        || (path.starts_with("/console") && rule_or_message != "staff-session-only");
    let (home, home_label) = if to_console {
        ("/console/", "error.home.console")
    } else if rule_or_message == "staff-session-only" || path.starts_with("/portal") {
        ("/portal/record", "error.home.portal")
    } else {
        ("/", "error.home")
    };
    let ctx = context! { status => status.as_u16(), message, request_id, home, home_label };
    render_str(lang, "error.html", home, "", ctx)
        .unwrap_or_else(|_| "<!doctype html><title>Error</title><p>Error</p>".into())
}

/// One navigation entry of the public pages: the catalog key of its label and where it goes.
const NAV: &[(&str, &str)] = &[
    ("nav.lookup", "/"),
    ("nav.red", "/lists/red"),
    ("nav.black", "/lists/black"),
    ("nav.report", "/report"),
];

static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    for (name, src) in [
        ("base.html", include_str!("templates/base.html")),
        ("lookup.html", include_str!("templates/lookup.html")),
        ("list.html", include_str!("templates/list.html")),
        ("report.html", include_str!("templates/report.html")),
        ("error.html", include_str!("templates/error.html")),
    ]
    .into_iter()
    .chain(console::TEMPLATES.iter().copied())
    .chain(portal::TEMPLATES.iter().copied())
    {
        env.add_template(name, src)
            .expect("the built-in templates parse (tests render each)");
    }
    env.add_function("t", translate);
    env.add_filter("when", dates::filter);
    env.add_function("tr", translate_code);
    env
});

/// `t("key")` in a template: the message in the page's language (`lang` in the context).
fn translate(state: &TplState, key: &str) -> String {
    let lang = state
        .lookup("lang")
        .and_then(|v| v.as_str().and_then(Lang::parse))
        .unwrap_or(Lang::En);
    lang.t(key).to_owned()
}

/// `tr("purpose", code)` in a template: the catalog's name for a code the policies define (a
/// purpose, a role), or the code itself where the catalogs have none (a purpose added to the
/// policy files later is shown, not hidden).
fn translate_code(state: &TplState, family: &str, code: Option<&str>) -> String {
    let Some(code) = code.filter(|c| !c.is_empty()) else {
        return "—".to_owned();
    };
    match translate(state, &format!("{family}.{code}")) {
        t if t == "??" => code.to_owned(),
        t => t,
    }
}

/// Renders a page with the layout's common context: language, asset names, navigation
/// (`here` is the current path, for `aria-current` and the language switch's way back).
pub fn render_str(
    lang: Lang,
    template: &str,
    here: &str,
    current: &str,
    ctx: Value,
) -> Result<String, minijinja::Error> {
    let nav: Vec<Value> = nav_of(here)
        .iter()
        .map(|(key, href)| context! { key, href, current => *href == current })
        .collect();
    let full = context! {
        lang => lang.code(),
        css => assets::CSS.url(),
        js => assets::JS.url(),
        nav,
        here,
        ..ctx
    };
    ENV.get_template(template)?.render(full)
}

/// The navigation of the area a path is in: the console's, the portal's, or the public one.
fn nav_of(here: &str) -> &'static [(&'static str, &'static str)] {
    if here.starts_with("/console") {
        console::NAV
    } else if here.starts_with("/portal") {
        portal::NAV
    } else {
        NAV
    }
}

/// A rendered page as a response; a template failure is logged and drawn as a plain error
/// page, never shown.
pub fn page(lang: Lang, status: StatusCode, template: &str, here: &str, ctx: Value) -> Response {
    match render_str(lang, template, here, here, ctx) {
        Ok(html) => html_response(status, html),
        Err(e) => {
            tracing::error!(error = %e, template, "a page template failed");
            let status = StatusCode::SERVICE_UNAVAILABLE;
            html_response(status, error_html(lang, status, "", here))
        }
    }
}

fn html_response(status: StatusCode, html: String) -> Response {
    let mut res = (status, html).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    res
}

/// A cookie's value by name, from every `Cookie` header.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// Whether browsers reach the gateway over HTTPS: the listener speaks it (`[tls]`), or TLS
/// ends at a load balancer in front and `[sessions] public_url` says `https://`. Then every
/// cookie is `Secure` and the session, sign-in and CSRF cookies `__Host-` (bound to this host
/// and path, unsettable by a sibling subdomain), so that none travels over plain http.
pub fn over_tls(state: &super::AppState) -> bool {
    state.config.tls.is_some()
        || state
            .config
            .sessions
            .public_url
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
}

#[derive(serde::Deserialize)]
struct Back {
    back: Option<String>,
}

/// The language switch: a plain link that sets the `lang` cookie for a year and goes back to
/// the page it came from (a local path only, never another site).
async fn switch_language(
    axum::extract::State(state): axum::extract::State<super::AppState>,
    axum::extract::Path(code): axum::extract::Path<String>,
    axum::extract::Query(q): axum::extract::Query<Back>,
) -> Response {
    let Some(lang) = Lang::parse(&code) else {
        return super::Error::NotFound("no such language".into()).into_response();
    };
    let back = q
        .back
        .filter(|b| b.starts_with('/') && !b.starts_with("//") && !b.contains('\\'))
        .filter(|b| is_page_path(b.split('?').next().unwrap_or("")))
        .unwrap_or_else(|| "/".into());
    let secure = if over_tls(&state) { "; Secure" } else { "" };
    let cookie = format!(
        "lang={}; Path=/; Max-Age=31536000; SameSite=Lax; HttpOnly{secure}",
        lang.code()
    );
    let mut res = StatusCode::SEE_OTHER.into_response();
    let h = res.headers_mut();
    if let (Ok(loc), Ok(c)) = (HeaderValue::from_str(&back), HeaderValue::from_str(&cookie)) {
        h.insert(header::LOCATION, loc);
        h.insert(header::SET_COOKIE, c);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_renders_in_both_languages() {
        for lang in [Lang::En, Lang::ZhCn] {
            for t in ["lookup.html", "list.html", "report.html", "error.html"] {
                let form = context! { about => "", category => "", description => "" };
                let ctx = context! {
                    message => "error.404", title => "list.red.title", form,
                    status => (t == "error.html").then_some(404),
                };
                let html =
                    render_str(lang, t, "/", "/", ctx).unwrap_or_else(|e| panic!("{t}: {e:#}"));
                assert!(!html.contains("??"), "{t} in {lang:?} names a missing key");
            }
        }
    }
}
