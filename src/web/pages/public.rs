//! The public's pages: look an entity up by USCC, browse the red and black lists. Both go
//! through the data path itself (`web::data::handle`, the `public` role, audited as Public in
//! this request's own record), so the page shows exactly what `/public/stores/...` releases.

use std::net::SocketAddr;

use axum::{
    Extension,
    body::{Body, to_bytes},
    extract::{ConnectInfo, Query, Request, State},
    response::Response,
};
use http::{HeaderMap, Method, StatusCode};
use minijinja::context;
use serde_json::Value;

use super::{Lang, page};
use crate::{
    audit::AuditSlot,
    auth::Principal,
    domain::SubjectType,
    proxy::upstream::SubjectLocator,
    web::{AppState, Error, RequestId, data},
};

/// The public role's one purpose (policies/roles.toml, `[roles.public]`).
const PUBLIC_PURPOSE: &str = "public_disclosure";
/// The most a page reads of a released document; the store's own cap applies first.
const MAX_DOC: usize = 4 * 1024 * 1024;
const PAGE_SIZE: usize = 20;

/// Who a page request is, for the data path.
pub struct Caller {
    pub peer: SocketAddr,
    pub request_id: RequestId,
    pub slot: AuditSlot,
}

/// The first configured store (in config order, which the operator controls) with a GET route
/// for `dataset`: the store, the route's template, and whether the route takes `page` and
/// `page_size`. `legal` asks for a USCC path placeholder.
fn find_route(state: &AppState, dataset: &str, legal: bool) -> Option<(String, String, bool)> {
    state.config.stores.iter().find_map(|sc| {
        let store = state.stores.get(&sc.name)?;
        store.routes.iter().find_map(|r| {
            let fits = r.dataset == dataset
                && r.method == Method::GET
                && matches!(
                    (&r.subject, legal),
                    (Some((SubjectLocator::Path(_), SubjectType::Legal)), true) | (None, false)
                );
            let pages = r.allows_query("page") && r.allows_query("page_size");
            fits.then(|| (store.name.clone(), r.template.clone(), pages))
        })
    })
}

/// Runs one GET through the public data path and returns the released document.
async fn fetch(
    state: &AppState,
    who: &Caller,
    store: &str,
    path_and_query: &str,
) -> Result<(Value, u64), Error> {
    let uri = format!("/public/stores/{store}{path_and_query}");
    let mut req = Request::builder()
        .method(Method::GET)
        .uri(uri)
        .header("x-purpose", PUBLIC_PURPOSE)
        .body(Body::empty())
        .map_err(|_| Error::BadRequest("the request could not be formed".into()))?;
    req.extensions_mut().insert(who.slot.clone());
    let res = data::handle(
        state.clone(),
        who.peer,
        who.request_id.clone(),
        Principal::Public,
        "/public/stores/",
        req,
    )
    .await?;
    if !res.status().is_success() {
        return Err(Error::BadGateway("the store did not answer as expected"));
    }
    let masked = res
        .headers()
        .get("x-masked-fields")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(0);
    let bytes = to_bytes(res.into_body(), MAX_DOC)
        .await
        .map_err(|_| Error::BadGateway("the store's answer could not be read"))?;
    let doc = serde_json::from_slice(&bytes)
        .map_err(|_| Error::BadGateway("the store's answer could not be read"))?;
    Ok((doc, masked))
}

#[derive(serde::Deserialize)]
pub struct LookupQuery {
    uscc: Option<String>,
}

/// `/` and `/?uscc=...`: the form, and the entity's public tier when a USCC was given. A USCC
/// that is malformed or fails its check character is a 400 page with the form, not a crash.
pub async fn lookup(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(request_id): Extension<RequestId>,
    Extension(slot): Extension<AuditSlot>,
    headers: HeaderMap,
    Query(q): Query<LookupQuery>,
) -> Result<Response, Error> {
    let lang = Lang::choose(&headers);
    let uscc = q.uscc.unwrap_or_default().trim().to_ascii_uppercase();
    let show = |status, message: &str, rows: Vec<Value>, masked: u64| {
        let ctx = context! { uscc => &uscc, message, rows, masked };
        Ok(page(lang, status, "lookup.html", "/", ctx))
    };
    if uscc.is_empty() {
        return show(StatusCode::OK, "", vec![], 0);
    }
    if uscc.len() > 64 || !uscc.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return show(StatusCode::BAD_REQUEST, "lookup.invalid", vec![], 0);
    }
    let (store, template, _) = find_route(&state, "entity", true)
        .ok_or_else(|| Error::NotFound("no store serves entities".into()))?;
    let path = fill_placeholder(&template, &uscc);
    let who = Caller {
        peer,
        request_id,
        slot,
    };
    match fetch(&state, &who, &store, &path).await {
        Ok((doc, masked)) => {
            let policies = state.policies();
            let rows = super::labels::table(lang, policies.dataset("entity"), &doc, 500);
            show(StatusCode::OK, "", rows, masked)
        }
        Err(Error::InvalidSubjectId(_)) => {
            show(StatusCode::BAD_REQUEST, "lookup.invalid", vec![], 0)
        }
        Err(Error::NotFound(_)) => show(StatusCode::NOT_FOUND, "lookup.not_found", vec![], 0),
        Err(e) => Err(e),
    }
}

/// The route template with its one placeholder replaced by the (already alphanumeric) USCC.
fn fill_placeholder(template: &str, value: &str) -> String {
    match (template.find('{'), template.find('}')) {
        (Some(a), Some(b)) if a < b => format!("{}{value}{}", &template[..a], &template[b + 1..]),
        _ => template.to_owned(),
    }
}

#[derive(serde::Deserialize)]
pub struct ListQuery {
    page: Option<u32>,
}

pub async fn red_list(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(request_id): Extension<RequestId>,
    Extension(slot): Extension<AuditSlot>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Response, Error> {
    let who = Caller {
        peer,
        request_id,
        slot,
    };
    list(&state, &who, &headers, "red", q.page.unwrap_or(1)).await
}

pub async fn black_list(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(request_id): Extension<RequestId>,
    Extension(slot): Extension<AuditSlot>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Response, Error> {
    let who = Caller {
        peer,
        request_id,
        slot,
    };
    list(&state, &who, &headers, "black", q.page.unwrap_or(1)).await
}

const COLUMNS: &[&str] = &[
    "uscc",
    "name",
    "sector",
    "region",
    "reason",
    "listed_at",
    "valid_until",
];

/// One page of a list, as the policies release it to the public (current entries only).
async fn list(
    state: &AppState,
    who: &Caller,
    headers: &HeaderMap,
    which: &str,
    page_no: u32,
) -> Result<Response, Error> {
    let lang = Lang::choose(headers);
    let (store, template, pages) = find_route(state, &format!("{which}_list"), false)
        .ok_or_else(|| Error::NotFound("no store serves this list".into()))?;
    // A route that takes no paging parameters is shown as its one page.
    let page_no = if pages { page_no.clamp(1, 100_000) } else { 1 };
    let query = if pages {
        format!("{template}?page={page_no}&page_size={PAGE_SIZE}")
    } else {
        template
    };
    let (doc, _) = fetch(state, who, &store, &query).await?;
    let rows: Vec<&Value> = doc["items"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let items: Vec<Vec<String>> = rows
        .iter()
        .map(|r| COLUMNS.iter().map(|c| cell(&r[*c])).collect())
        .collect();
    let here = format!("/lists/{which}");
    let total = doc["total"].as_u64();
    // `total` counts the store's entries before the policies drop lapsed ones, so a later
    // page may be short or empty; it never shows more than the policies release.
    let more = pages
        && match total {
            Some(t) => u64::from(page_no) * (PAGE_SIZE as u64) < t,
            None => rows.len() == PAGE_SIZE,
        };
    let chart =
        (!items.is_empty()).then(|| super::chart::bars(lang.t("list.chart"), &by_sector(&rows)));
    let ctx = context! {
        title => format!("list.{which}.title"),
        columns => COLUMNS,
        items,
        chart,
        page => page_no,
        prev => (page_no > 1).then(|| format!("{here}?page={}", page_no - 1)),
        next => more.then(|| format!("{here}?page={}", page_no + 1)),
    };
    Ok(page(lang, StatusCode::OK, "list.html", &here, ctx))
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn by_sector(rows: &[&Value]) -> Vec<(String, u64)> {
    let mut counts = std::collections::BTreeMap::<String, u64>::new();
    for r in rows {
        *counts.entry(cell(&r["sector"])).or_default() += 1;
    }
    counts.into_iter().collect()
}
