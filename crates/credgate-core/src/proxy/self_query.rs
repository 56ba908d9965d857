//! The data subject's self-query (`GET /subject/record`, issue 15 item 7): their own records from
//! every store that declares a profile section for their type, through the same phases as the
//! profile fan-out (decide, forward, release with its annotations), decided as the subject's
//! policy role for the purpose `self_query`. That role sees its own record clear except what
//! even the subject may not see (another person's identifiers in a company's record: the
//! shipped policy masks them for `data_subject_legal`).

use std::net::IpAddr;

use bytes::Bytes;
use http::HeaderMap;
use serde_json::{Map, Value, json};

use super::{
    DataError, note_outcome, release_in,
    upstream::{Outbound, Route, Store, SubjectLocator},
};
use crate::{
    audit::AuditInfo,
    domain::{SubjectId, SubjectType},
    services::Core,
};

/// The purpose a self-query is decided and recorded under.
pub const PURPOSE: &str = "self_query";

/// Free self-queries per subject and calendar year (UTC), and the law that sets the number: a
/// policy value (`free_per_year` on the `self_query` purpose; the shipped default is
/// 征信业管理条例 art. 17, free twice a year), so a region's rule is a policy change. The
/// gateway charges nothing, so past the free number it refuses (429) until the next year.
#[derive(Debug, Clone)]
pub struct FreeLimit {
    pub per_year: i64,
    pub source: String,
}

/// The limit in force. A policy without the purpose (or the number) allows no self-query at
/// all: fail closed, and the 429 says the policy sets no number.
pub fn free_limit(state: &Core) -> FreeLimit {
    match state
        .policies()
        .purpose(PURPOSE)
        .and_then(|p| p.free_per_year.clone())
    {
        Some((n, source)) => FreeLimit {
            per_year: n.into(),
            source,
        },
        None => FreeLimit {
            per_year: 0,
            source: "the policy sets no free number for `self_query`".into(),
        },
    }
}

/// The policy role a subject of this type reads their own record as.
pub fn role_of(kind: SubjectType) -> &'static str {
    match kind {
        SubjectType::Legal => "data_subject_legal",
        SubjectType::Natural => "data_subject_natural",
    }
}

/// What the fan-out found: released sections by `store.dataset`, denied and failed ones
/// listed, whether a released record is under open objection, and what the audit record
/// takes of the releases (masked classes, touched subjects, T4).
#[derive(Debug, Default)]
pub struct SelfRecord {
    pub sections: Map<String, Value>,
    pub denied: Vec<Value>,
    pub failed: Vec<Value>,
    pub contested: bool,
    pub audit: AuditInfo,
}

/// Runs the self-query. Every section is decided on its own; a section the policy denies or a
/// store fails is listed, never silently left out.
pub async fn run(
    state: &Core,
    subject: &SubjectId,
    request_id: &str,
    client_ip: IpAddr,
) -> SelfRecord {
    let sections = state.stores.profile_sections(subject.subject_type());
    let answers = futures_util::future::join_all(
        sections
            .iter()
            .map(|(store, route)| section(state, subject, store, route, request_id, client_ip)),
    )
    .await;
    let mut out = SelfRecord::default();
    let mut decisions = Vec::with_capacity(sections.len());
    for ((store, route), answer) in sections.iter().zip(answers) {
        let name = format!("{}.{}", store.name, route.dataset);
        match answer {
            Ok((doc, outcome, open)) => {
                out.contested |= open;
                decisions.push(format!("{name}=allow"));
                merge(&mut out.audit, &outcome);
                out.sections.insert(name, doc);
            }
            Err(DataError::Denied(d)) => {
                decisions.push(format!("{name}=deny:{}", d.rule));
                out.denied.push(json!({"section": name, "rule": d.rule}));
            }
            Err(e) => {
                let status = status_of(&e);
                decisions.push(format!("{name}=error:{status}"));
                out.failed.push(json!({"section": name, "store": store.name,
                                       "status": status, "detail": public_detail(&e)}));
            }
        }
    }
    out.audit.dataset = Some(decisions.join(","));
    out
}

type Released = (Value, crate::policy::Outcome, bool);

async fn section(
    state: &Core,
    subject: &SubjectId,
    store: &Store,
    route: &Route,
    request_id: &str,
    client_ip: IpAddr,
) -> Result<Released, DataError> {
    let plan = state
        .policies()
        .decide(role_of(subject.subject_type()), PURPOSE, &route.dataset)?;
    // The subject's roles carry no row scope and need no consent: it is their own record.
    plan.check_scope(None)?;
    let not_profile = || DataError::BadGateway("not a profile route");
    let Some((SubjectLocator::Path(param), _)) = &route.subject else {
        return Err(not_profile());
    };
    let segs = route
        .pattern
        .fill(|p| (p == param).then(|| subject.as_str().to_string()))
        .ok_or_else(not_profile)?;
    let path = super::route::encode_segments(&segs);
    // No store read whose record could not be kept (the probe knows the database down).
    state.db.usable()?;
    // Nothing of the subject's request (their token above all) travels to the store.
    let none = HeaderMap::new();
    let up = store
        .forward(Outbound {
            method: &route.method,
            path: &path,
            query: None,
            body: Bytes::new(),
            caller_headers: &none,
            request_id,
            client_ip,
            purpose: PURPOSE,
        })
        .await?;
    let (_, doc, outcome, open) = release_in(state, &plan, None, &store.name, up)?;
    Ok((doc, outcome, open))
}

/// What one released section adds to the audit record.
fn merge(a: &mut AuditInfo, outcome: &crate::policy::Outcome) {
    let mut part = AuditInfo::default();
    note_outcome(&mut part, outcome);
    for (k, n) in part.masked {
        *a.masked.entry(k).or_default() += n;
    }
    for s in part.subjects {
        if !a.subjects.contains(&s) {
            a.subjects.push(s);
        }
    }
    a.t4_released |= part.t4_released;
    a.expired.extend(part.expired);
}

/// The status a failed section is listed with (the web layer's mapping, for the listing only).
fn status_of(e: &DataError) -> u16 {
    match e {
        DataError::BadRequest(_) | DataError::InvalidSubjectId(_) => 400,
        DataError::NotFound(_) => 404,
        DataError::Denied(_) => 403,
        DataError::BadGateway(_) => 502,
        DataError::Timeout => 504,
        // As the web layer answers a storage error: 503, unavailable for now.
        DataError::Storage(_) => 503,
        DataError::Internal(_) => 500,
    }
}

/// What the subject may read of a failure: never an internal cause.
fn public_detail(e: &DataError) -> String {
    match e {
        DataError::Storage(_) | DataError::Internal(_) => "the section could not be read".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{StorageError, health::Condition};

    #[test]
    fn a_section_failed_on_storage_is_listed_503_without_its_cause() {
        let e = DataError::Storage(StorageError::KnownDown(Condition::FileReplaced));
        assert_eq!(status_of(&e), 503, "as the web layer answers it");
        assert_eq!(public_detail(&e), "the section could not be read");
    }
}
