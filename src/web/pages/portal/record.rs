//! `My record` and `Who accessed my data`. Reading the record is a self-query: it counts
//! against the year's free number (征信业管理条例 art. 17 by default) and is recorded as a
//! `profile` read, so it is a button (a POST with the CSRF token), never a page view: a GET
//! would be spent by a refresh, a prefetch or a link preview, and another site could spend it
//! (no CSRF token on a GET). The POST reads, keeps the answer for this subject for a short
//! while under a random name, and redirects (303) to `/portal/record?reading=<name>`, which
//! draws it: a refresh or Back draws the same reading again and counts nothing
//! (post/redirect/get). A reading that expired (or another subject's name) draws the page
//! with its button and says so.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::{LazyLock, Mutex},
};

use axum::{
    Extension, Json,
    body::Bytes,
    extract::{ConnectInfo, Query, State, rejection::QueryRejection},
    response::Response,
};
use http::{HeaderMap, StatusCode};
use minijinja::context;
use ring::rand::SecureRandom as _;
use serde_json::{Value, json};

use super::{Form, form, see_other, show, take_json};
use crate::{
    audit::AuditSlot,
    proxy::self_query,
    storage::statements as statement_store,
    web::{
        AppState, Error, RequestId,
        extract::Subject,
        pages::{Lang, chart, dates, labels, labels::Step, session::SubjectPage},
        subject as api,
    },
    workflows::objections,
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

/// How long a reading stays drawable after its POST: long enough for a refresh or Back, short
/// enough that a record read on a shared computer does not linger (sign-in's idle timeout is
/// longer). Readings live in this process only: behind a balancer without sticky sessions a
/// refresh may land on another replica and say the reading expired (nothing is counted).
const READING_TTL_MICROS: i64 = 10 * 60 * 1_000_000;
/// At most this many readings are kept; the oldest go first. Each subject has a few free
/// self-queries a year, so this bounds memory, not anyone's use.
const MAX_READINGS: usize = 256;

struct Reading {
    subject: String,
    at: i64,
    doc: Value,
}

static READINGS: LazyLock<Mutex<HashMap<String, Reading>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Keeps a reading; its name: 128 random bits, hex.
fn keep(subject: &str, now: i64, doc: Value) -> Option<String> {
    let mut raw = [0u8; 16];
    ring::rand::SystemRandom::new().fill(&mut raw).ok()?;
    let name = hex::encode(raw);
    let mut all = READINGS.lock().unwrap_or_else(|p| p.into_inner());
    all.retain(|_, r| now - r.at < READING_TTL_MICROS && r.at <= now);
    while all.len() >= MAX_READINGS {
        let oldest = all
            .iter()
            .min_by_key(|(_, r)| r.at)
            .map(|(k, _)| k.clone())?;
        all.remove(&oldest);
    }
    let subject = subject.to_owned();
    all.insert(
        name.clone(),
        Reading {
            subject,
            at: now,
            doc,
        },
    );
    Some(name)
}

/// The reading of this name, if it is this subject's and still fresh.
fn reading(name: &str, subject: &str, now: i64) -> Option<Value> {
    let all = READINGS.lock().unwrap_or_else(|p| p.into_inner());
    let r = all.get(name)?;
    (r.subject == subject && now - r.at < READING_TTL_MICROS && r.at <= now).then(|| r.doc.clone())
}

#[derive(serde::Deserialize)]
pub struct Shown {
    reading: Option<String>,
}

/// The record page: the count and the button, or a reading drawn (`?reading=`).
pub async fn view(
    State(state): State<AppState>,
    who: SubjectPage,
    Query(q): Query<Shown>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let subject = who.subject.id.as_str();
    if let Some(doc) = q
        .reading
        .as_deref()
        .and_then(|n| reading(n, subject, state.clock.now()))
    {
        return drawn(&state, &who, &headers, doc).await;
    }
    let count = count(&state, &who).await?;
    let limited = count["left"].as_i64() == Some(0);
    let Json(statements) =
        api::list_statements(State(state.clone()), Subject(who.subject.clone())).await?;
    let ctx = context! {
        count, limited, statements => statements["items"].clone(), who => subject,
        expired => q.reading.is_some(),
    };
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
/// as a `profile` read); its answer is kept and the browser sent to see it.
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
        // A refusal, not a change: drawn at once with its own status (so the audit record says
        // 429), the button gone; sending it again changes nothing either.
        let count = count(&state, &who).await?;
        let ctx = context! { count, limited => true, who => who.subject.id.as_str() };
        return Ok(show_record(&state, &headers, status, ctx));
    }
    let now = state.clock.now();
    let name = keep(who.subject.id.as_str(), now, doc)
        .ok_or(Error::NotReady("no random name for the reading"))?;
    Ok(see_other(&format!("/portal/record?reading={name}"), change))
}

/// A kept reading drawn: each section's fields by their catalog labels, each field with the
/// objections I filed about it and their answers, and the marks other readers see.
async fn drawn(
    state: &AppState,
    who: &SubjectPage,
    headers: &HeaderMap,
    doc: Value,
) -> Result<Response, Error> {
    let lang = Lang::choose(headers);
    let now = state.clock.now();
    let mine: Vec<Value> = objections::list_for_subject(&state.db, &who.subject.id)
        .await?
        .iter()
        .map(|o| o.view(now))
        .collect();
    let policies = state.policies();
    let sections: Vec<Value> = doc["sections"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(name, v)| section(lang, &policies, name, v, &mine))
                .collect()
        })
        .unwrap_or_default();
    let ctx = context! {
        record => true,
        sections,
        who => who.subject.id.as_str(),
        denied => doc["denied"].clone(),
        failed => doc["failed"].clone(),
        statements => doc["statements"].clone(),
        count => json!({"year": doc["self_queries"]["year"], "used": doc["self_queries"]["count"],
                        "free": doc["self_queries"]["free_per_year"],
                        "source": doc["self_queries"]["source"]}),
    };
    Ok(show_record(state, headers, StatusCode::OK, ctx))
}

/// The most rows one section shows; a longer record says it was cut.
const MAX_ROWS: usize = 2000;

/// One section (`store.dataset`): its fields as rows of (label, value, my objections on that
/// field), the marks on the record (`_objections`) and the statements (`_statements`) apart,
/// and my objections about the record as a whole.
fn section(
    lang: Lang,
    policies: &crate::policy::PolicySet,
    name: &str,
    doc: &Value,
    mine: &[Value],
) -> Value {
    let (store, dataset) = name.split_once('.').unwrap_or((name, ""));
    let ds = policies.dataset(dataset);
    let about: Vec<&Value> = mine
        .iter()
        .filter(|o| o["store"] == store && o["dataset"] == dataset)
        .collect();
    let mut rows: Vec<(Vec<Step>, String)> = labels::flatten(doc, MAX_ROWS)
        .into_iter()
        .map(|(steps, v)| (steps, labels::cell(lang, &v)))
        .collect();
    let cut = rows.len() > MAX_ROWS;
    rows.truncate(MAX_ROWS);
    let mut fields = Vec::new();
    let (mut marks, mut statements) = (Vec::new(), Vec::new());
    for (steps, value) in rows {
        match steps.first() {
            Some(Step::Key(k)) if k == "_objections" => marks.push((steps, value)),
            Some(Step::Key(k)) if k == "_statements" => statements.push(value),
            _ => {
                let path = labels::catalog_path(&steps);
                let on: Vec<Value> = about
                    .iter()
                    .filter(|o| o["field"].as_str() == Some(path.as_str()))
                    .map(|o| objection_mark(o))
                    .collect();
                let label = labels::record_field(lang, ds, &steps);
                fields.push(json!({"label": label, "value": value, "objections": on}));
            }
        }
    }
    let whole: Vec<Value> = about
        .iter()
        .filter(|o| o["field"].is_null())
        .map(|o| objection_mark(o))
        .collect();
    let marked = fields
        .iter()
        .any(|f| f["objections"].as_array().is_some_and(|a| !a.is_empty()));
    json!({
        "name": name,
        "title": labels::dataset(lang, ds, dataset),
        "store": store,
        "fields": fields,
        "marks": annotation(lang, ds, &marks),
        "statements": statements,
        "marked": marked,
        "whole": whole,
        "cut": cut,
    })
}

/// What the page says of one of my objections on a field: status, the store's answer, the
/// correction made.
fn objection_mark(o: &Value) -> Value {
    json!({"id": o["id"], "status": o["status"], "outcome": o["outcome"],
           "finding": o["store_finding"], "correction": o["correction"]})
}

/// The marks other readers see on this record (`_objections`: open objections and requests,
/// unresolved statements with the store's finding), one per entry, with the field named.
fn annotation(
    lang: Lang,
    ds: Option<&crate::policy::Dataset>,
    rows: &[(Vec<Step>, String)],
) -> Vec<Value> {
    let mut by: BTreeMap<usize, Value> = BTreeMap::new();
    for (steps, value) in rows {
        let (Some(Step::Index(i)), Some(Step::Key(k))) = (steps.get(1), steps.get(2)) else {
            continue;
        };
        let e = by.entry(*i).or_insert_with(|| json!({}));
        e[k.as_str()] = if k == "field" {
            labels::field(lang, ds, value).into()
        } else {
            value.clone().into()
        };
    }
    by.into_values().collect()
}

/// Who read my records: the API's access log, as a table and a chart by month and org.
/// A page at a time, as the API gives it; "older records" follows its cursor.
pub async fn access(
    State(state): State<AppState>,
    who: SubjectPage,
    Extension(slot): Extension<AuditSlot>,
    q: Result<Query<api::AccessPageQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    // A page reached through a cursor that shows no one does not say "no one ever" (rev4 R1).
    let older_page = q.as_ref().is_ok_and(|q| q.cursor.is_some());
    let Json(log) = api::access_log(
        State(state.clone()),
        Subject(who.subject.clone()),
        Extension(slot),
        q,
    )
    .await?;
    let lang = Lang::choose(&headers);
    let items: Vec<Value> = log["items"].as_array().cloned().unwrap_or_default();
    let mut by: BTreeMap<(String, String), u64> = BTreeMap::new();
    for r in &items {
        let at = r["time"].as_str().unwrap_or("");
        // Sorted by the month's number, drawn by its name in the reader's language.
        let sort: String = at.chars().take(7).collect();
        let month = dates::month(lang, at).unwrap_or_else(|| sort.clone());
        // My own self-queries carry no org: they are mine.
        let org = match (r["role"].as_str(), r["org"].as_str()) {
            (Some("subject"), _) => lang.t("portal.case.by_you"),
            (_, org) => org.unwrap_or("—"),
        };
        *by.entry((sort, format!("{month} · {org}"))).or_default() += 1;
    }
    let data: Vec<(String, u64)> = by.into_iter().map(|((_, k), n)| (k, n)).collect();
    let chart = (!data.is_empty()).then(|| {
        minijinja::Value::from_safe_string(chart::bars(lang.t("portal.access.chart"), &data))
    });
    // Only digits ever come back from the API, so the link needs no escaping beyond the page's.
    let next = log["next_cursor"].as_str().map(|c| format!("cursor={c}"));
    let ctx = context! { items, chart, next, older_page, who => who.subject.id.as_str() };
    let here = ("portal/access.html", "/portal/access");
    Ok(show(&state, &headers, StatusCode::OK, here, ctx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_section_keeps_marks_and_statements_apart_from_fields() {
        let doc = json!({"name": "甲", "n": 3,
                         "_objections": [{"status": "submitted", "field": "name"}],
                         "_statements": ["mine"]});
        let mine = vec![json!({"id": "ob_1", "store": "power", "dataset": "entity",
                               "field": "name", "status": "corrected", "correction": "乙"})];
        let set = crate::policy::PolicySet::default();
        let s = section(Lang::En, &set, "power.entity", &doc, &mine);
        assert_eq!(s["fields"].as_array().unwrap().len(), 2, "{s}");
        assert_eq!(s["fields"][0]["label"], "n", "no catalog: the path");
        assert_eq!(s["fields"][1]["objections"][0]["correction"], "乙");
        assert_eq!(s["marked"], true);
        assert_eq!(s["marks"][0]["status"], "submitted");
        assert_eq!(s["marks"][0]["field"], "name");
        assert_eq!(s["statements"][0], "mine");
        assert_eq!(s["title"], "entity");
    }

    #[test]
    fn a_reading_is_drawn_only_for_its_subject_and_while_fresh() {
        let name = keep("S1", 1_000, json!({"x": 1})).unwrap();
        assert_eq!(name.len(), 32);
        assert!(reading(&name, "S1", 2_000).is_some());
        assert!(reading(&name, "S2", 2_000).is_none(), "another subject");
        assert!(
            reading(&name, "S1", 1_000 + READING_TTL_MICROS).is_none(),
            "expired"
        );
        assert!(reading("00", "S1", 2_000).is_none(), "a made-up name");
    }
}
