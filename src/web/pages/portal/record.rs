//! `My record` and `Who accessed my data`. Reading the record is a self-query: it counts
//! against the year's free number (征信业管理条例 art. 17 by default), so it is a button
//! (a POST with the CSRF token), never a page view; the page itself shows the count.

use std::{collections::BTreeMap, net::SocketAddr};

use axum::{
    Extension, Json,
    body::Bytes,
    extract::{ConnectInfo, State},
    response::Response,
};
use http::{HeaderMap, StatusCode};
use minijinja::context;
use serde_json::{Value, json};

use super::{Form, dated, form, see_other, show, take_json};
use crate::{
    audit::AuditSlot,
    proxy::self_query,
    storage::statements as statement_store,
    web::{
        AppState, AttachChange as _, Error, RequestId,
        extract::Subject,
        pages::{Lang, chart, session::SubjectPage},
        subject as api,
    },
};

/// `/portal/`: the record page is the portal's first page.
pub async fn home(_: SubjectPage) -> Response {
    see_other("/portal/record", None)
}

/// The year's self-queries so far and the free number, for the page and its button.
async fn count(state: &AppState, who: &SubjectPage) -> Result<Value, Error> {
    let (year, _) = api::year_of(state.clock.now());
    let used = statement_store::self_queries(&state.db, &who.subject.id, year.into()).await?;
    let limit = self_query::free_limit(state);
    Ok(json!({"year": year, "used": used, "free": limit.per_year,
              "left": (limit.per_year - used).max(0), "source": limit.source}))
}

pub async fn view(
    State(state): State<AppState>,
    who: SubjectPage,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let count = count(&state, &who).await?;
    let Json(statements) =
        api::list_statements(State(state.clone()), Subject(who.subject.clone())).await?;
    let ctx = context! { count, statements => statements["items"].clone(), who => who.subject.id.as_str() };
    Ok(show_record(&state, &headers, StatusCode::OK, ctx))
}

fn show_record(
    state: &AppState,
    headers: &HeaderMap,
    status: StatusCode,
    ctx: minijinja::Value,
) -> Response {
    let here = ("portal/record.html", "/portal/record");
    show(state, headers, status, here, ctx)
}

/// The self-query, through the API's own handler (its limit, its counting, its audit record
/// as a `profile` read), drawn as sections of field and value.
pub async fn read(
    State(state): State<AppState>,
    who: SubjectPage,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(request_id): Extension<RequestId>,
    Extension(slot): Extension<AuditSlot>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Error> {
    let _: Form = form(&state, &headers, &body)?;
    let res = api::own_record(
        State(state.clone()),
        Subject(who.subject.clone()),
        ConnectInfo(peer),
        Extension(request_id),
        Extension(slot),
    )
    .await?;
    let (status, doc, change) = take_json(res).await?;
    if status == StatusCode::TOO_MANY_REQUESTS {
        let count = count(&state, &who).await?;
        let ctx = context! { count, limited => true, who => who.subject.id.as_str() };
        return Ok(show_record(&state, &headers, status, ctx));
    }
    let lang = Lang::choose(&headers);
    let sections: Vec<Value> = doc["sections"]
        .as_object()
        .map(|m| m.iter().map(|(name, v)| section(name, v)).collect())
        .unwrap_or_default();
    let objections: Vec<Value> = doc["objections"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|o| dated(lang, o.clone(), &["due_at"]))
                .collect()
        })
        .unwrap_or_default();
    let ctx = context! {
        record => true,
        sections,
        objections,
        who => who.subject.id.as_str(),
        denied => doc["denied"].clone(),
        failed => doc["failed"].clone(),
        statements => doc["statements"].clone(),
        count => json!({"year": doc["self_queries"]["year"], "used": doc["self_queries"]["count"],
                        "free": doc["self_queries"]["free_per_year"],
                        "source": doc["self_queries"]["source"]}),
    };
    let page = show_record(&state, &headers, StatusCode::OK, ctx);
    Ok(match change {
        Some(c) => c.attach(page),
        None => page,
    })
}

/// The most rows one section shows; a longer record says it was cut.
const MAX_ROWS: usize = 2000;

/// One section: its fields as (path, value) rows, with the marks on the record (open
/// objections and requests, `_objections`) and the statements (`_statements`) apart.
fn section(name: &str, doc: &Value) -> Value {
    let mut rows = Vec::new();
    flatten("", doc, &mut rows);
    let cut = rows.len() > MAX_ROWS;
    rows.truncate(MAX_ROWS);
    let (marks, rest): (Vec<_>, Vec<_>) = rows
        .into_iter()
        .partition(|(p, _)| p.contains("_objections"));
    let (statements, fields): (Vec<_>, Vec<_>) = rest
        .into_iter()
        .partition(|(p, _)| p.contains("_statements"));
    json!({"name": name, "fields": fields, "marks": marks, "statements": statements, "cut": cut})
}

fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    if out.len() > MAX_ROWS {
        return;
    }
    let join = |k: &str| {
        if prefix.is_empty() {
            k.to_owned()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        Value::Object(m) => m.iter().for_each(|(k, v)| flatten(&join(k), v, out)),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, v)| flatten(&join(&i.to_string()), v, out)),
        Value::String(s) => out.push((prefix.to_owned(), s.clone())),
        Value::Null => out.push((prefix.to_owned(), "—".into())),
        other => out.push((prefix.to_owned(), other.to_string())),
    }
}

/// Who read my records: the API's access log, as a table and a chart by month and org.
pub async fn access(
    State(state): State<AppState>,
    who: SubjectPage,
    Extension(slot): Extension<AuditSlot>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let Json(log) = api::access_log(
        State(state.clone()),
        Subject(who.subject.clone()),
        Extension(slot),
        headers.clone(),
    )
    .await?;
    let lang = Lang::choose(&headers);
    let items: Vec<Value> = log["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| dated(lang, r.clone(), &["time"]))
                .collect()
        })
        .unwrap_or_default();
    let mut by: BTreeMap<String, u64> = BTreeMap::new();
    for r in &items {
        let month: String = r["time"].as_str().unwrap_or("").chars().take(7).collect();
        // My own self-queries carry no org: they are mine.
        let org = match (r["role"].as_str(), r["org"].as_str()) {
            (Some("subject"), _) => lang.t("portal.case.by_you"),
            (_, org) => org.unwrap_or("—"),
        };
        *by.entry(format!("{month} · {org}")).or_default() += 1;
    }
    let data: Vec<(String, u64)> = by.into_iter().collect();
    let chart = (!data.is_empty()).then(|| {
        minijinja::Value::from_safe_string(chart::bars(lang.t("portal.access.chart"), &data))
    });
    let ctx = context! { items, chart, who => who.subject.id.as_str() };
    let here = ("portal/access.html", "/portal/access");
    Ok(show(&state, &headers, StatusCode::OK, here, ctx))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_section_keeps_marks_and_statements_apart_from_fields() {
        let doc = serde_json::json!({"name": "甲", "n": 3, "_objections": [{"status": "submitted"}],
                                     "_statements": ["mine"]});
        let s = super::section("power.entity", &doc);
        assert_eq!(s["fields"].as_array().unwrap().len(), 2, "{s}");
        assert_eq!(s["marks"][0][0], "_objections.0.status");
        assert_eq!(s["statements"][0][1], "mine");
    }
}
