//! The audit log in the console: search with `/admin/audit`'s filters (and its bounds: only an
//! auditor sees staff actions), a page at a time below a cursor; a record's detail; export of
//! the current filter through `/admin/audit/export` itself; `Verify chain`.

use axum::{
    extract::{Path, Query, State},
    response::{IntoResponse, Response},
};
use http::HeaderMap;
use minijinja::{Value, context};
use serde::Deserialize;

use super::{Form, StaffPage, acting, show};
use crate::{
    audit::{
        AuditRecord,
        store::{self as audit_store, Filter},
        verify,
    },
    storage::micros_to_rfc3339,
    web::{
        AppState, Error, admin,
        extract::{AUDITOR, AuditReader, SECURITY_OFFICER},
        routes::{Route, get, post},
    },
};

const PAGE: i64 = 50;

pub fn routes() -> Vec<Route> {
    vec![
        get("/console/audit", search),
        get("/console/audit/export", export),
        get("/console/audit/records/{seq}", record),
        post("/console/audit/verify", verify_chain),
    ]
}

/// The reader as `/admin/audit` sees them: the auditor role when they hold it (it shows staff
/// actions), else the officer's.
fn reader(who: &StaffPage) -> Result<AuditReader, Error> {
    let role = if who.has(AUDITOR) {
        AUDITOR
    } else {
        SECURITY_OFFICER
    };
    acting(who, role).map(AuditReader)
}

/// The search form's fields, as typed: dates from a date input become RFC 3339.
#[derive(Debug, Default, Deserialize, serde::Serialize)]
pub struct Search {
    #[serde(default)]
    org: String,
    #[serde(default)]
    client: String,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    decision: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default, skip_serializing)]
    cursor: Option<String>,
}

impl Search {
    fn filter(&self) -> Filter {
        let some = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        let time = |s: &str| {
            some(s).map(|t| {
                if t.len() == 10 {
                    format!("{t}T00:00:00Z")
                } else {
                    t
                }
            })
        };
        Filter {
            org: some(&self.org),
            client: some(&self.client),
            subject: some(&self.subject),
            decision: some(&self.decision),
            from: time(&self.from),
            to: time(&self.to),
            ..Filter::default()
        }
    }

    /// The filter as a query string, for the export links and the next page.
    fn query(&self) -> String {
        serde_urlencoded::to_string(self).unwrap_or_default()
    }
}

fn row(r: &AuditRecord) -> Value {
    context! {
        seq => r.seq, id => r.id.clone(), time => micros_to_rfc3339(r.time_us),
        kind => r.kind.clone(), org => r.org.clone().or(r.actor_org.clone()),
        who => r.actor.clone().or(r.client_id.clone()).or(r.actor_subject.clone()),
        decision => r.decision.clone(), status => r.status, method => r.method.clone(),
        path => r.path.clone(),
    }
}

async fn search(
    State(state): State<AppState>,
    who: StaffPage,
    headers: HeaderMap,
    q: Result<Query<Search>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Error> {
    let Query(q) = q.map_err(|_| Error::BadRequest("unreadable search".into()))?;
    let reader = reader(&who)?;
    let bounds = admin::bounds(&q.filter(), &reader)?;
    let before =
        match q.cursor.as_deref() {
            None | Some("") => None,
            Some(c) => Some(c.parse::<i64>().ok().filter(|v| *v > 0).ok_or_else(|| {
                Error::BadRequest("the page link is not one this page gave".into())
            })?),
        };
    // As `GET /admin/audit` says it: read before the search.
    let indexed_through = crate::audit::index_store::indexed_through(&state.db).await?;
    let items = audit_store::search(&state.db, &bounds, before, PAGE, None).await?;
    let next = (items.len() as i64 == PAGE)
        .then(|| {
            items
                .last()
                .map(|r| format!("{}&cursor={}", q.query(), r.seq))
        })
        .flatten();
    let ctx = context! {
        form => Value::from_serialize(&q),
        rows => items.iter().map(row).collect::<Vec<_>>(),
        next, query => q.query(), first_page => before.is_none(),
        indexed_through => micros_to_rfc3339(indexed_through),
    };
    Ok(show(
        &state,
        &headers,
        &who,
        "console/audit.html",
        "/console/audit",
        ctx,
    ))
}

/// `/admin/audit/export` with the same filter, as this person: the same stream, the same
/// bounds, a file named for download.
async fn export(
    State(state): State<AppState>,
    who: StaffPage,
    q: Result<Query<Search>, axum::extract::rejection::QueryRejection>,
    Query(fmt): Query<Format>,
) -> Result<Response, Error> {
    let Query(q) = q.map_err(|_| Error::BadRequest("unreadable search".into()))?;
    let mut f = q.filter();
    f.format = Some(fmt.format.unwrap_or_else(|| "csv".into()));
    admin::export_log(State(state), reader(&who)?, Ok(Query(f))).await
}

#[derive(Deserialize)]
struct Format {
    format: Option<String>,
}

/// One record in full. Found through the same search and bounds as the list (so an officer
/// cannot open a staff action's record by guessing its number).
async fn record(
    State(state): State<AppState>,
    who: StaffPage,
    headers: HeaderMap,
    Path(seq): Path<i64>,
) -> Result<Response, Error> {
    let bounds = admin::bounds(&Filter::default(), &reader(&who)?)?;
    let found = audit_store::search(&state.db, &bounds, Some(seq.saturating_add(1)), 1, None)
        .await?
        .into_iter()
        .find(|r| r.seq == seq)
        .ok_or_else(|| Error::NotFound("no such record".into()))?;
    let mut full = serde_json::to_value(&found).unwrap_or_default();
    full["time"] = micros_to_rfc3339(found.time_us).into();
    let fields: Vec<(String, String)> = full
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), super::audit_text(v)))
        .collect();
    let ctx = context! { id => found.id, fields };
    Ok(show(
        &state,
        &headers,
        &who,
        "console/record.html",
        "/console/audit",
        ctx,
    ))
}

/// `Verify chain`: the whole chain and its signed checkpoints, as `/admin/audit/verify` checks
/// them (a POST: it is work, and it is recorded).
async fn verify_chain(
    State(state): State<AppState>,
    who: StaffPage,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let run = async {
        Form::read(&state, &headers, &body)?;
        reader(&who)?;
        let verdict = verify::verify(&state.db, &state.audit_public_key).await?;
        let last = verdict.last_checkpoint.as_ref().map(|w| {
            context! { seq => w.seq, time => micros_to_rfc3339(w.time_us) }
        });
        let ctx = context! { verdict => Value::from_serialize(&verdict), last };
        Ok::<_, Error>(show(
            &state,
            &headers,
            &who,
            "console/verify.html",
            "/console/audit",
            ctx,
        ))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}
