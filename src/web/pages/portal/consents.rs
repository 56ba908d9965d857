//! Consents: grant one to an org for a purpose and a scope until a date, with the notice text
//! shown beside the form and its version and SHA-256 recorded in the consent; download the
//! signed receipt; revoke. Granting and revoking go through the API's own handlers.

use axum::{
    Json,
    body::Bytes,
    extract::{Path, State},
    response::{IntoResponse, Response},
};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use minijinja::context;
use serde_json::{Value, json};

use super::{form, see_other, show, take_json};
use crate::{
    domain::SubjectType,
    policy::LegalBasis,
    storage::consents,
    web::{
        AppState, Error,
        extract::Subject,
        pages::{Lang, session::SubjectPage},
        subject as api,
    },
};

/// The notice's version, per language; the text itself is the catalog's `portal.consent.notice`
/// in that language, and its SHA-256 goes into the consent as evidence of what was shown.
const NOTICE_VERSIONS: &[(&str, Lang)] = &[
    ("portal-consent-1.en", Lang::En),
    ("portal-consent-1.zh-CN", Lang::ZhCn),
];

fn notice_version(lang: Lang) -> &'static str {
    NOTICE_VERSIONS
        .iter()
        .find(|(_, l)| *l == lang)
        .map_or(NOTICE_VERSIONS[0].0, |(v, _)| v)
}

fn notice_sha256(lang: Lang) -> String {
    let text = lang.t("portal.consent.notice");
    hex::encode(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()).as_ref())
}

/// What the grant form offers: the purposes whose legal basis is consent, and the datasets
/// about this type of subject.
fn choices(state: &AppState, kind: SubjectType) -> (Vec<String>, Vec<String>) {
    let policies = state.policies();
    let purposes = policies
        .purpose_codes()
        .into_iter()
        .filter(|p| {
            policies
                .purpose(p)
                .is_some_and(|p| p.legal_basis == LegalBasis::Consent)
        })
        .map(str::to_owned)
        .collect();
    let mut datasets: Vec<String> = state
        .stores
        .datasets()
        .map(|(_, d)| d)
        .filter(|d| policies.dataset(d).and_then(|d| d.subject_type) == Some(kind))
        .map(str::to_owned)
        .collect();
    datasets.sort();
    datasets.dedup();
    (purposes, datasets)
}

/// The consents page: the list and the grant form (with what was typed, after an error).
async fn draw(
    state: &AppState,
    who: &SubjectPage,
    headers: &HeaderMap,
    (status, typed, message): (StatusCode, Value, Option<&str>),
) -> Result<Response, Error> {
    let lang = Lang::choose(headers);
    let Json(list) = api::list_consents(State(state.clone()), Subject(who.subject.clone())).await?;
    let items = list["items"].clone();
    let (purposes, datasets) = choices(state, who.subject.id.subject_type());
    // Each dataset by the catalog's name for it in the reader's language.
    let policies = state.policies();
    let dataset_names: std::collections::BTreeMap<String, String> = datasets
        .iter()
        .map(|d| {
            (
                d.clone(),
                super::super::labels::dataset(lang, policies.dataset(d), d),
            )
        })
        .collect();
    let ctx = context! {
        items, purposes, datasets, dataset_names, typed, message,
        who => who.subject.id.as_str(),
        notice_version => notice_version(lang),
        notice_sha256 => notice_sha256(lang),
    };
    let here = ("portal/consents.html", "/portal/consents");
    Ok(show(state, headers, status, here, ctx))
}

pub async fn list(
    State(state): State<AppState>,
    who: SubjectPage,
    headers: HeaderMap,
) -> Result<Response, Error> {
    draw(&state, &who, &headers, (StatusCode::OK, json!({}), None)).await
}

/// The API's grant body from the form: the date is a day (the consent ends at its last
/// second, UTC), the notice is the one in the version the form showed.
fn grant_body(f: &super::Form) -> Option<Value> {
    let day = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(f.get("expires"), &day).ok()?;
    let lang = NOTICE_VERSIONS
        .iter()
        .find(|(v, _)| *v == f.get("notice_version"))
        .map(|(_, l)| *l)?;
    if f.get("agree") != "yes" {
        return None;
    }
    let scope = f.all("scope");
    Some(json!({
        "grantee_org": f.get("org").trim(),
        "purpose": f.get("purpose"),
        "expires_at": format!("{date}T23:59:59Z"),
        "scope": (!scope.is_empty()).then_some(scope),
        "notice_version": notice_version(lang),
        "notice_sha256": notice_sha256(lang),
        "separate": f.get("separate") == "yes",
        "ends_with": if f.get("ends_with") == "business_relationship" { "business_relationship" } else { "expiry" },
    }))
}

pub async fn grant(
    State(state): State<AppState>,
    who: SubjectPage,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Error> {
    let f = form(&state, &headers, &body)?;
    let typed = json!({"org": f.get("org"), "purpose": f.get("purpose"),
                       "expires": f.get("expires"), "scope": f.all("scope")});
    let req = grant_body(&f).and_then(|b| serde_json::from_value(b).ok());
    let answer = match req {
        Some(req) => {
            api::grant_consent(
                State(state.clone()),
                Subject(who.subject.clone()),
                Ok(Json(req)),
            )
            .await
        }
        None => Err(Error::BadRequest(String::new())),
    };
    match answer {
        Ok(res) => {
            let (_, _, change) = take_json(res).await?;
            Ok(see_other("/portal/consents", change))
        }
        Err(Error::BadRequest(_)) => {
            let bad = (StatusCode::BAD_REQUEST, typed, Some("portal.invalid"));
            draw(&state, &who, &headers, bad).await
        }
        Err(e) => Err(e),
    }
}

/// The signed receipt of one of my consents, as the JSON document the API returns in
/// `receipt`: it verifies offline against `/subject/consents/receipt-key`.
pub async fn receipt(
    State(state): State<AppState>,
    who: SubjectPage,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    let receipt = consents::get(&state.db, super::item_id(&id)?)
        .await?
        .filter(|c| c.is_for(&who.subject.id))
        .and_then(|c| c.receipt)
        .ok_or_else(|| Error::NotFound("no such consent".into()))?;
    let mut res = receipt.into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"consent-receipt.json\""),
    );
    Ok(res)
}

pub async fn revoke(
    State(state): State<AppState>,
    who: SubjectPage,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Error> {
    form(&state, &headers, &body)?;
    super::item_id(&id)?;
    let res = api::revoke_consent(State(state.clone()), Subject(who.subject), Path(id)).await?;
    let (_, _, change) = take_json(res).await?;
    Ok(see_other("/portal/consents", change))
}
