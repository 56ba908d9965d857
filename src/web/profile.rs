//! `GET /v1/subjects/{id}/profile`: the one-stop query. Every route declared as a profile
//! section for the subject's type is asked concurrently; each answer is decided and masked by
//! its own dataset's plan; denied and failed sections are listed, never silently left out.

use std::net::SocketAddr;

use axum::response::IntoResponse;
use axum::{
    Extension, Json,
    extract::{ConnectInfo, Path, Query, State},
    http::HeaderMap,
};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{AppState, Error, RequestId, extract::Institution};
use crate::{
    audit::{AuditInfo, AuditSlot},
    auth::Principal,
    domain::{ResidentId, SubjectId, SubjectType, Uscc},
    policy::ConsentState,
    proxy::{
        self,
        decide::consent_state,
        declared_purpose, release,
        upstream::{Outbound, Route, Store, SubjectLocator},
    },
};

#[derive(Deserialize)]
pub struct ProfileQuery {
    #[serde(rename = "type")]
    subject_type: Option<SubjectType>,
}

/// A USCC and a resident ID number are both 18 characters; the check characters tell them
/// apart, and `?type=` settles the rare number that passes both.
fn parse_subject(id: &str, kind: Option<SubjectType>) -> Result<SubjectId, Error> {
    if let Some(kind) = kind {
        return Ok(SubjectId::parse(kind, id)?);
    }
    match (Uscc::parse(id), ResidentId::parse(id)) {
        (Ok(u), Err(_)) => Ok(SubjectId::Legal(u)),
        (Err(_), Ok(r)) => Ok(SubjectId::Natural(r)),
        (Ok(_), Ok(_)) => Err(Error::BadRequest(
            "this id is valid both as a USCC and as a resident ID number; add ?type=legal or ?type=natural".into(),
        )),
        (Err(e), Err(_)) => Err(Error::InvalidSubjectId(e)),
    }
}

enum Section {
    /// The masked section, its outcome, and whether it carries an open objection.
    Released(Value, crate::policy::Outcome, bool),
    Denied {
        rule: String,
    },
    Failed {
        status: u16,
        detail: String,
    },
}

pub async fn profile(
    State(state): State<AppState>,
    Institution(who): Institution,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(request_id): Extension<RequestId>,
    (Path(id), Query(q)): (Path<String>, Query<ProfileQuery>),
    Extension(slot): Extension<AuditSlot>,
    headers: HeaderMap,
) -> Result<axum::response::Response, Error> {
    let who = Principal::Institution(who);
    let purpose = declared_purpose(&state, &headers)?;
    slot.update(|a| {
        a.purpose = Some(purpose.clone());
        a.consent_id = proxy::consent_header(&headers);
    });
    let subject = parse_subject(&id, q.subject_type)?;
    slot.update(|a| a.subjects = vec![subject.as_str().to_string()]);
    let sections = state.stores.profile_sections(subject.subject_type());
    let consent = consent_state(&state, &who, &purpose, Some(&subject), &headers).await?;
    let ctx = SectionCtx {
        state: &state,
        who: &who,
        purpose: &purpose,
        subject: &subject,
        consent,
        headers: &headers,
        request_id: &request_id.0,
        peer,
    };
    let answers = futures_util::future::join_all(
        sections
            .iter()
            .map(|(store, route)| ctx.section(store, route)),
    )
    .await;

    let (released, denied, failed, contested) = gather(&sections, answers, &slot);
    if !denied.is_empty() && denied.len() == sections.len() {
        return Err(all_denied(&denied));
    }
    tracing::info!(client_id = %who.client_id(), role = %who.role(), %purpose,
        sections = released.len(), denied = denied.len(), failed = failed.len(), "profile served");
    let mut res = Json(json!({
        "subject": subject.as_str(),
        "subject_type": subject.subject_type(),
        "sections": released,
        "denied": denied,
        "failed": failed,
    }))
    .into_response();
    if contested {
        res.headers_mut().insert(
            "x-objection",
            axum::http::HeaderValue::from_static("pending"),
        );
    }
    Ok(res)
}

type Gathered = (Map<String, Value>, Vec<Value>, Vec<Value>, bool);

/// Sorts the answers into released, denied and failed sections, noting each section's decision
/// (`store.dataset=allow|deny:rule|error:status`) in the audit record's `dataset`.
fn gather(sections: &[(&Store, &Route)], answers: Vec<Section>, slot: &AuditSlot) -> Gathered {
    let mut released = Map::new();
    let mut contested = false;
    let (mut denied, mut failed) = (Vec::new(), Vec::new());
    let mut decisions = Vec::with_capacity(sections.len());
    for ((store, route), answer) in sections.iter().zip(answers) {
        let name = format!("{}.{}", store.name, route.dataset);
        match answer {
            Section::Released(v, outcome, open) => {
                contested |= open;
                decisions.push(format!("{name}=allow"));
                slot.update(|a| merge_outcome(a, &outcome));
                released.insert(name, v);
            }
            Section::Denied { rule } => {
                decisions.push(format!("{name}=deny:{rule}"));
                denied.push(json!({"section": name, "rule": rule}));
            }
            Section::Failed { status, detail } => {
                decisions.push(format!("{name}=error:{status}"));
                failed.push(
                    json!({"section": name, "store": store.name, "status": status, "detail": detail}),
                );
            }
        }
    }
    slot.update(|a| a.dataset = Some(decisions.join(",")));
    (released, denied, failed, contested)
}

/// What one released section adds to the profile's audit record: its masked classes, T4, and
/// every subject it touched.
fn merge_outcome(a: &mut AuditInfo, outcome: &crate::policy::Outcome) {
    let mut part = AuditInfo::default();
    proxy::note_outcome(&mut part, outcome);
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

/// A profile whose every section was denied released nothing: it is a denial, recorded as one.
fn all_denied(denied: &[Value]) -> Error {
    let list: Vec<String> = denied
        .iter()
        .map(|d| {
            format!(
                "{} ({})",
                d["section"].as_str().unwrap_or(""),
                d["rule"].as_str().unwrap_or("")
            )
        })
        .collect();
    Error::Forbidden {
        rule: "all-sections-denied".into(),
        detail: format!(
            "every section of this profile was denied: {}",
            list.join(", ")
        ),
    }
}

struct SectionCtx<'a> {
    state: &'a AppState,
    who: &'a Principal,
    purpose: &'a str,
    subject: &'a SubjectId,
    consent: ConsentState,
    headers: &'a HeaderMap,
    request_id: &'a str,
    peer: SocketAddr,
}

impl SectionCtx<'_> {
    async fn section(&self, store: &Store, route: &Route) -> Section {
        let decided = self
            .state
            .policies()
            .decide(self.who.role(), self.purpose, &route.dataset)
            .and_then(|plan| {
                plan.check_scope(self.who.region())?;
                plan.check_consent(self.consent)?;
                Ok(plan)
            });
        let plan = match decided {
            Ok(plan) => plan,
            Err(d) => {
                return Section::Denied {
                    rule: d.rule.into(),
                };
            }
        };
        let Some((SubjectLocator::Path(param), _)) = &route.subject else {
            return Section::Failed {
                status: 500,
                detail: "not a profile route".into(),
            };
        };
        let Some(segs) = route
            .pattern
            .fill(|p| (p == param).then(|| self.subject.as_str().to_string()))
        else {
            return Section::Failed {
                status: 500,
                detail: "not a profile route".into(),
            };
        };
        let path = proxy::route::encode_segments(&segs);
        // No store read whose record could not be kept (see `data::handle`).
        if self.state.db.usable().is_err() {
            return Section::Failed {
                status: 503,
                detail: "storage unavailable".into(),
            };
        }
        let answer = store
            .forward(Outbound {
                method: &route.method,
                path: &path,
                query: None,
                body: Bytes::new(),
                caller_headers: self.headers,
                request_id: self.request_id,
                client_ip: self.peer.ip(),
                purpose: self.purpose,
            })
            .await
            .and_then(|up| release(self.state, &plan, self.who, &store.name, up));
        match answer {
            Ok((_, doc, outcome, open)) => Section::Released(doc, outcome, open),
            Err(e) => {
                let e = Error::from(e);
                let status = e.status().as_u16();
                Section::Failed {
                    status,
                    detail: e.public_detail(),
                }
            }
        }
    }
}
