//! Data-subject endpoints. Every one acts on the token's own subject only: another subject's
//! item answers 404, exactly as a missing one does.

use std::net::SocketAddr;

use axum::{
    Extension, Json,
    extract::{ConnectInfo, Path, Query, State, rejection::QueryRejection},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    AppState, AttachChange as _, Error, Problem, RequestId,
    extract::Subject,
    routes::{self as r, AuditKind, Group, Unaudited, audited, unaudited},
};
use crate::{
    audit::{AuditSlot, ChangeError, Deferred, Refused, store as audit_store},
    config::is_name,
    domain::SubjectId,
    proxy::self_query,
    storage::{
        consents::{self, ConsentRecord, EndsWith},
        statements::{self as statement_store},
    },
    workflows::{objections, statements},
};

/// The receipt key is a discovery document (like JWKS): public, anonymous, unaudited, served
/// from memory, so that a flood of calls neither grows the log nor unwraps a private key.
pub fn routes() -> Vec<Group> {
    vec![
        unaudited(
            Unaudited::Discovery,
            vec![r::get("/subject/consents/receipt-key", receipt_key)],
        ),
        audited(
            AuditKind::Subject,
            vec![
                r::get("/subject/me", me),
                r::get("/subject/consents", list_consents),
                r::post("/subject/consents", grant_consent),
                r::delete("/subject/consents/{id}", revoke_consent),
                r::get("/subject/access-log", access_log),
                r::get("/subject/record", own_record),
                r::get("/subject/statements", list_statements),
                r::post("/subject/statements", file_statement),
                r::delete("/subject/statements/{id}", withdraw_statement),
            ],
        ),
    ]
}

/// Who the gateway takes the caller to be: lets a subject check their token before filing.
async fn me(
    State(_state): State<AppState>,
    Subject(subject): Subject,
) -> Result<Json<Value>, Error> {
    Ok(Json(json!({
        "subject": subject.id.as_str(),
        "subject_type": subject.id.subject_type(),
        "issuer": subject.issuer,
    })))
}

/// Longest consent a subject may grant in one go.
const MAX_CONSENT_SECS: i64 = 5 * 366 * 24 * 3600;
/// Most datasets one consent may name in its scope.
const MAX_SCOPE: usize = 16;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GrantRequest {
    grantee_org: String,
    purpose: String,
    /// RFC 3339.
    expires_at: String,
    /// Datasets covered; absent: every dataset the purpose reads.
    #[serde(default)]
    scope: Option<Vec<String>>,
    #[serde(default)]
    notice_version: Option<String>,
    /// Hex SHA-256 of the notice text the person agreed to.
    #[serde(default)]
    notice_sha256: Option<String>,
    /// Separate consent (单独同意).
    #[serde(default)]
    separate: bool,
    #[serde(default)]
    ends_with: Option<EndsWith>,
}

/// What the consent records as evidence, checked: known datasets (sorted, once each), a plain
/// notice version, a SHA-256 in hex (lower case), and no hash without the version it hashes.
type Evidence = (Option<Vec<String>>, Option<String>, Option<String>);

fn evidence(req: &GrantRequest, policies: &crate::policy::PolicySet) -> Result<Evidence, Error> {
    let scope = match &req.scope {
        None => None,
        Some(list) if list.is_empty() || list.len() > MAX_SCOPE => {
            return Err(Error::BadRequest(format!(
                "scope names 1-{MAX_SCOPE} datasets"
            )));
        }
        Some(list) => {
            if let Some(d) = list.iter().find(|d| policies.dataset(d).is_none()) {
                let shown: String = d.chars().take(64).collect();
                return Err(Error::BadRequest(format!(
                    "unknown dataset `{shown}` in scope"
                )));
            }
            let mut list = list.clone();
            list.sort();
            list.dedup();
            Some(list)
        }
    };
    let version_ok = |v: &String| {
        (1..=64).contains(&v.len())
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    };
    if req.notice_version.as_ref().is_some_and(|v| !version_ok(v)) {
        return Err(Error::BadRequest(
            "notice_version is 1-64 letters, digits, `.`, `-` or `_`".into(),
        ));
    }
    let hash = req.notice_sha256.as_ref().map(|h| h.to_ascii_lowercase());
    if hash
        .as_ref()
        .is_some_and(|h| h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(Error::BadRequest(
            "notice_sha256 is 64 hexadecimal digits".into(),
        ));
    }
    if hash.is_some() && req.notice_version.is_none() {
        return Err(Error::BadRequest(
            "notice_sha256 needs the notice_version it hashes".into(),
        ));
    }
    Ok((scope, req.notice_version.clone(), hash))
}

/// The expiry as unix microseconds: in the future, at most five years away.
fn expiry(expires_at: &str, now: i64) -> Result<i64, Error> {
    let expires =
        time::OffsetDateTime::parse(expires_at, &time::format_description::well_known::Rfc3339)
            .map_err(|_| Error::BadRequest("expires_at must be an RFC 3339 time".into()))?;
    let expires_at = (expires.unix_timestamp_nanos() / 1000) as i64;
    if expires_at <= now {
        return Err(Error::BadRequest("expires_at must be in the future".into()));
    }
    if expires_at - now > MAX_CONSENT_SECS * 1_000_000 {
        return Err(Error::BadRequest(
            "a consent may last at most five years".into(),
        ));
    }
    Ok(expires_at)
}

/// The key that signs consent receipts: the audit signing key (Ed25519, never rotated, so a
/// receipt verifies for as long as the log does). Read when a consent is granted, which is rare.
async fn receipt_signer(state: &AppState) -> Result<crate::auth::keys::Ed25519Key, Error> {
    let keys = state
        .keyring
        .load(&state.db, crate::auth::keyring::KeyUse::AuditSigning)
        .await
        .map_err(|e| Error::Internal(anyhow::anyhow!("receipt key: {e}")))?;
    keys.last()
        .and_then(|k| k.ed25519())
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("receipt key missing")))
}

pub(crate) async fn grant_consent(
    State(state): State<AppState>,
    Subject(subject): Subject,
    body: Result<Json<GrantRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Error> {
    let Json(req) = body.map_err(|e| Error::BadRequest(e.body_text()))?;
    if !is_name(&req.grantee_org) {
        return Err(Error::BadRequest("grantee_org is not an org id".into()));
    }
    let policies = state.policies();
    if policies.purpose(&req.purpose).is_none() {
        return Err(Error::BadRequest(format!(
            "unknown purpose `{}`",
            req.purpose
        )));
    }
    let (scope, notice_version, notice_sha256) = evidence(&req, &policies)?;
    let now = state.clock.now();
    let mut record = ConsentRecord {
        id: format!("cs_{}", uuid::Uuid::new_v4().simple()),
        subject_id: subject.id.as_str().into(),
        subject_type: subject.id.subject_type().as_str().into(),
        grantee_org: req.grantee_org,
        purpose: req.purpose,
        created_at: now,
        expires_at: expiry(&req.expires_at, now)?,
        revoked_at: None,
        scope,
        notice_version,
        notice_sha256,
        separate_consent: req.separate,
        ends_with: req.ends_with.unwrap_or(EndsWith::Expiry),
        revoked_by: None,
        receipt: None,
    };
    let key = receipt_signer(&state).await?;
    let receipt = consents::sign_receipt(
        &key.key_pair(),
        &key.kid,
        &record,
        &state.config.auth.issuer,
    );
    record.receipt = Some(receipt.to_string());
    let view = record.view(now);
    let record = std::sync::Arc::new(record);
    let change = Deferred::new(move |conn| {
        let record = record.clone();
        Box::pin(async move { Ok(consents::insert_in(conn, &record).await?) })
    });
    Ok(change.attach((StatusCode::CREATED, Json(view))))
}

/// The public key that verifies consent receipts, for anyone holding one (no token needed: it
/// is public, and a verifier need not be the subject). The key this process loaded at start.
async fn receipt_key(State(state): State<AppState>) -> Json<Value> {
    use base64::Engine as _;
    let public = state.audit_public_key.as_slice();
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(public);
    let kid = crate::auth::keys::kid_of(public);
    Json(json!({
        "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": kid, "x": x,
        "receipt_domain": String::from_utf8_lossy(consents::RECEIPT_DOMAIN),
    }))
}

pub(crate) async fn list_consents(
    State(state): State<AppState>,
    Subject(subject): Subject,
) -> Result<Json<Value>, Error> {
    let now = state.clock.now();
    let items: Vec<_> = consents::list_for_subject(&state.db, &subject.id)
        .await?
        .iter()
        .map(|c| c.view(now))
        .collect();
    Ok(Json(json!({ "items": items })))
}

pub(crate) async fn revoke_consent(
    State(state): State<AppState>,
    Subject(subject): Subject,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    let owned = consents::get(&state.db, &id)
        .await?
        .is_some_and(|c| c.is_for(&subject.id));
    if !owned {
        return Err(Error::NotFound("no such consent".into()));
    }
    // Revoked in the record's transaction, still the subject's own there.
    let now = state.clock.now();
    let change = Deferred::new(move |conn| {
        let (subject, id) = (subject.id.clone(), id.clone());
        Box::pin(async move {
            match consents::revoke_in(conn, &subject, &id, now).await? {
                true => Ok(()),
                false => Err(ChangeError::Refused(Refused::NotFound(
                    "no such consent".into(),
                ))),
            }
        })
    });
    Ok(change.attach(StatusCode::NO_CONTENT))
}

/// Whether a record that names this subject's id string was about this subject, type included.
/// Records name subjects by id alone; only an id valid as both a USCC and a resident ID number
/// is ambiguous, and for such an id a record counts only when its dataset is declared to be
/// about this type of subject. Fail closed: an ambiguous record (a profile, a dataset of no
/// declared type) is shown to neither, rather than to the wrong one.
fn is_about(
    subject: &SubjectId,
    record: &crate::audit::AuditRecord,
    policies: &crate::policy::PolicySet,
) -> bool {
    if !subject.is_ambiguous() {
        return true;
    }
    // The record names the id; its dataset's declared type completes who it is about.
    record
        .dataset
        .as_deref()
        .and_then(|d| policies.dataset(d))
        .and_then(|d| d.subject_type)
        .is_some_and(|kind| subject.is(subject.as_str(), kind))
}

/// A page of the access log: `limit` records (1 to 500, 100 when absent) below `cursor`, the
/// `next_cursor` of the page before. Unknown parameters are refused, not ignored.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct AccessPageQuery {
    pub(crate) limit: Option<i64>,
    pub(crate) cursor: Option<String>,
}

/// Most records one access-log page holds: each carries its record's whole subject list.
const MAX_ACCESS_PAGE: i64 = 500;

impl AccessPageQuery {
    /// `(before, limit)`, or why the query is not one this endpoint takes.
    fn bounds(&self) -> Result<(Option<i64>, i64), Error> {
        let limit = self.limit.unwrap_or(100);
        if !(1..=MAX_ACCESS_PAGE).contains(&limit) {
            return Err(Error::BadRequest("`limit` is 1 to 500".into()));
        }
        let before = match self.cursor.as_deref() {
            None => None,
            Some(c) => Some(c.parse::<i64>().ok().filter(|v| *v > 0).ok_or_else(|| {
                Error::BadRequest("`cursor` is not one this endpoint gave".into())
            })?),
        };
        Ok((before, limit))
    }
}

/// Who accessed my records: institutions' and the public's requests that touched this subject,
/// allowed or denied, newest first, a page at a time. Only the caller's own.
pub(crate) async fn access_log(
    State(state): State<AppState>,
    Subject(subject): Subject,
    Extension(_slot): Extension<AuditSlot>,
    q: Result<Query<AccessPageQuery>, QueryRejection>,
) -> Result<Json<Value>, Error> {
    let Query(q) = q.map_err(|e| Error::BadRequest(e.body_text()))?;
    let policies = state.policies();
    let page =
        audit_store::access_log(&state.db, subject.id.as_str(), q.bounds()?, &policies).await?;
    let items: Vec<Value> = page
        .records
        .iter()
        .filter(|r| is_about(&subject.id, r, &policies))
        .map(|r| {
            json!({
                "time": crate::storage::micros_to_rfc3339(r.time_us),
                "org": r.org, "role": r.role, "purpose": r.purpose,
                "legal_basis": legal_basis_of(r, &policies),
                "store": r.store, "dataset": r.dataset, "decision": r.decision,
            })
        })
        .collect();
    let next = page.next.map(|seq| seq.to_string());
    Ok(Json(json!({ "items": items, "next_cursor": next })))
}

/// The legal basis the record itself names (covered by its hash); for a record written before
/// records carried one, the basis its purpose has in the policies now.
fn legal_basis_of(
    r: &crate::audit::AuditRecord,
    policies: &crate::policy::PolicySet,
) -> Option<String> {
    r.legal_basis.clone().or_else(|| {
        r.purpose
            .as_deref()
            .and_then(|p| policies.purpose(p))
            .map(|p| p.legal_basis.code().to_string())
    })
}

/// The calendar year (UTC) of a time in unix microseconds, and when the next one begins.
pub(crate) fn year_of(us: i64) -> (i32, i64) {
    let year = time::OffsetDateTime::from_unix_timestamp(us.div_euclid(1_000_000))
        .map(|t| t.year())
        .unwrap_or(1970);
    let next = time::Date::from_calendar_date(year + 1, time::Month::January, 1)
        .map(|d| d.midnight().assume_utc().unix_timestamp() * 1_000_000)
        .unwrap_or(i64::MAX);
    (year, next)
}

/// The 429 past the free self-queries: names the limit, its source, and when it resets.
fn self_query_limit(
    slot: &AuditSlot,
    limit: &self_query::FreeLimit,
    (year, used): (i32, i64),
    now: i64,
    next: i64,
) -> Response {
    let rule = "self-query-free-per-year";
    slot.update(|a| a.rule = Some(rule.into()));
    let mut problem = Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "self-query-limit",
        "Self-query limit reached",
        format!(
            "you have read your own record {used} times in {year}; the limit is {} a year \
             ({}); the next query is possible from {}",
            limit.per_year,
            limit.source,
            crate::storage::micros_to_rfc3339(next)
        ),
    );
    problem.rule = Some(rule.into());
    let retry = ((next - now) / 1_000_000).max(1);
    problem.into_response_with(|res| {
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry));
    })
}

/// Counts the self-query with its audit record, only while under the year's limit: two
/// concurrent queries cannot both take the last free one.
fn count_self_query(subject: &SubjectId, year: i32, limit: self_query::FreeLimit) -> Deferred {
    let (id, kind) = (
        std::sync::Arc::new(subject.as_str().to_string()),
        subject.subject_type().as_str(),
    );
    let limit = std::sync::Arc::new(limit);
    Deferred::new(move |conn| {
        let (id, limit) = (id.clone(), limit.clone());
        Box::pin(async move {
            let n = limit.per_year;
            if statement_store::count_self_query_in(conn, &id, kind, year.into(), n).await? {
                Ok(())
            } else {
                Err(ChangeError::Refused(Refused::Conflict(format!(
                    "the {n} free self-queries of {year} were used meanwhile ({})",
                    limit.source
                ))))
            }
        })
    })
}

/// `GET /subject/record`: the subject's own record from every store, with their statements and
/// the open objections on it, and this year's self-query count. Recorded as a `profile` read
/// touching the subject, so it appears in their own access log.
pub(crate) async fn own_record(
    State(state): State<AppState>,
    Subject(subject): Subject,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(request_id): Extension<RequestId>,
    Extension(slot): Extension<AuditSlot>,
) -> Result<Response, Error> {
    slot.update(|a| {
        a.kind = Some("profile");
        a.purpose = Some(self_query::PURPOSE.into());
        a.subjects = vec![subject.id.as_str().to_string()];
    });
    let now = state.clock.now();
    let (year, next) = year_of(now);
    let used = statement_store::self_queries(&state.db, &subject.id, year.into()).await?;
    let limit = self_query::free_limit(&state);
    if used >= limit.per_year {
        return Ok(self_query_limit(&slot, &limit, (year, used), now, next));
    }
    let found = self_query::run(&state, &subject.id, &request_id.0, peer.ip()).await;
    slot.update(|a| {
        a.masked = found.audit.masked.clone();
        a.dataset = found.audit.dataset.clone();
        a.t4_released = found.audit.t4_released;
        // What the read withheld past retention: the audit layer asks for its deletion with
        // this record, as after any other read.
        a.expired = found.audit.expired.clone();
        let extra = found.audit.subjects.iter().filter(|s| **s != a.subjects[0]);
        a.subjects.extend(extra.cloned().collect::<Vec<_>>());
    });
    if found.sections.is_empty() && !found.denied.is_empty() && found.failed.is_empty() {
        return Err(Error::Forbidden {
            rule: "self-query-not-configured".into(),
            detail: "the policy lets no dataset of your type be read by its subject".into(),
        });
    }
    if found.sections.is_empty() && !found.failed.is_empty() {
        // Nothing was read: the subject is not charged one of their free queries for it.
        return Err(Error::BadGateway(
            "every section of your record failed; this query was not counted",
        ));
    }
    let res = answer(&state, &subject.id, found, (year, used, &limit), now).await?;
    Ok(count_self_query(&subject.id, year, limit).attach(res))
}

/// The self-query's answer: the sections, the subject's active statements and open objections,
/// and the year's count including this query.
async fn answer(
    state: &AppState,
    subject: &SubjectId,
    found: self_query::SelfRecord,
    (year, used, limit): (i32, i64, &self_query::FreeLimit),
    now: i64,
) -> Result<Response, Error> {
    let mine: Vec<Value> = statement_store::list_for_subject(&state.db, subject)
        .await?
        .iter()
        .filter(|s| s.withdrawn_at.is_none())
        .map(|s| json!(s.view()))
        .collect();
    let open: Vec<Value> = objections::list_for_subject(&state.db, subject)
        .await?
        .iter()
        .filter(|o| o.status.is_open())
        .map(|o| o.view(now))
        .collect();
    let mut res = Json(json!({
        "subject": subject.as_str(),
        "subject_type": subject.subject_type(),
        "purpose": self_query::PURPOSE,
        "sections": found.sections,
        "denied": found.denied,
        "failed": found.failed,
        "statements": mine,
        "objections": open,
        "self_queries": {"year": year, "count": used + 1,
                         "free_per_year": limit.per_year,
                         "source": limit.source},
    }))
    .into_response();
    if found.contested {
        res.headers_mut()
            .insert("x-objection", HeaderValue::from_static("pending"));
    }
    Ok(res)
}

/// The subject's statements, withdrawn ones included (marked as such).
pub(crate) async fn list_statements(
    State(state): State<AppState>,
    Subject(subject): Subject,
) -> Result<Json<Value>, Error> {
    let items: Vec<Value> = statement_store::list_for_subject(&state.db, &subject.id)
        .await?
        .iter()
        .map(|s| json!(s.view()))
        .collect();
    Ok(Json(json!({ "items": items })))
}

/// Files a statement on one of the subject's own records (checked as objections are).
async fn file_statement(
    State(state): State<AppState>,
    Subject(subject): Subject,
    Extension(slot): Extension<AuditSlot>,
    body: Result<Json<statements::Submission>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Error> {
    let Json(req) = body.map_err(|e| Error::BadRequest(e.body_text()))?;
    let statement = statements::prepare(&state, &subject.id, req)?;
    slot.update(|a| {
        a.store = Some(statement.store.clone());
        a.dataset = Some(statement.dataset.clone());
        a.subjects = vec![subject.id.as_str().to_string()];
    });
    let view = statement.view();
    let change = statements::filing(&state, statement);
    Ok(change.attach((StatusCode::CREATED, Json(view))))
}

/// Withdraws the subject's own statement: from then on no answer carries it.
async fn withdraw_statement(
    State(state): State<AppState>,
    Subject(subject): Subject,
    Extension(slot): Extension<AuditSlot>,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    let owned = statement_store::get(&state.db, &id).await?.filter(|s| {
        subject.id.is_named(&s.subject_id, &s.subject_type) && s.withdrawn_at.is_none()
    });
    let Some(statement) = owned else {
        return Err(Error::NotFound("no such statement".into()));
    };
    slot.update(|a| {
        a.store = Some(statement.store.clone());
        a.dataset = Some(statement.dataset.clone());
        a.subjects = vec![subject.id.as_str().to_string()];
    });
    let change = statements::withdrawal(&state, subject.id.clone(), statement);
    Ok(change.attach(StatusCode::NO_CONTENT))
}
