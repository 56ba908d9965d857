//! The data path as a sequence of small phases:
//! authenticate -> route -> purpose -> decide -> forward -> filter (mask) -> log.
//! Each phase either hands the next one what it needs or ends the request with an error.
//!
//! `/v1/stores/{store}/{path}` is for institutions (a token is required);
//! `/public/stores/{store}/{path}` is the public's, decided as the policy's `public` role.

//!
//! The phases live here, below the web layer; the axum handlers that run them in order are
//! `crate::web::data` and `crate::web::profile`.

mod annotate;
pub mod decide;
pub mod query;
pub mod self_query;
pub mod trace;
pub use crate::domain::route;
pub mod upstream;

use http::{HeaderMap, StatusCode, request::Parts};

use self::upstream::{Route, Store, SubjectLocator, UpstreamResponse};
use crate::{
    audit::AuditInfo,
    auth::Principal,
    domain::{IdError, SubjectId},
    policy::{ApplyCtx, Denial, Outcome, Plan},
    services::Core,
    storage::StorageError,
};

/// Why a data request ends before anything is released. The web layer maps each to its
/// problem (`web::error`); the texts are the ones callers have always seen.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{0}")]
    BadRequest(String),
    #[error("invalid data-subject id: {0}")]
    InvalidSubjectId(#[from] IdError),
    #[error("{0}")]
    NotFound(String),
    /// A policy denial: names the rule, never the data.
    #[error("denied by rule `{}`: {}", .0.rule, .0.detail)]
    Denied(Denial),
    #[error("{0}")]
    BadGateway(&'static str),
    #[error("the store did not answer in time")]
    Timeout,
    #[error("storage unavailable")]
    Storage(#[from] StorageError),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl From<Denial> for DataError {
    fn from(d: Denial) -> Self {
        DataError::Denied(d)
    }
}

// The phases below name their errors as `Error`, as they did when they returned the web type.
use DataError as Error;

/// A request that has been routed: the store, the route, and who it is about.
pub struct Target<'s> {
    pub store: &'s Store,
    pub route: &'s Route,
    /// The normalised, re-encoded path sent to the store.
    pub path: String,
    /// The validated, re-serialised query sent to the store.
    pub query: Option<String>,
    pub subject: Option<SubjectId>,
}

impl Target<'_> {
    /// The gateway path as decided: what the audit record holds instead of the raw target.
    pub fn canonical(&self, prefix: &str) -> String {
        let q = self.query.as_deref().map_or(0, |q| q.len() + 1);
        let mut s =
            String::with_capacity(prefix.len() + self.store.name.len() + self.path.len() + q);
        s.push_str(prefix);
        s.push_str(&self.store.name);
        s.push_str(&self.path);
        if let Some(q) = &self.query {
            s.push('?');
            s.push_str(q);
        }
        s
    }
}

/// Who asked, for the audit record.
pub fn note_principal(a: &mut AuditInfo, who: &Principal) {
    if let Principal::Institution(i) = who {
        a.client_id = Some(i.client_id.clone());
        a.org = Some(i.org.clone());
    }
    a.role = Some(who.role().to_string());
}

/// What was released, for the audit record: masked classes, the subjects of released rows.
pub fn note_outcome(a: &mut AuditInfo, outcome: &Outcome) {
    a.masked = outcome
        .by_class
        .iter()
        .map(|(k, v)| (k.to_string(), *v as u64))
        .collect();
    if outcome.unclassified > 0 {
        a.masked
            .insert("(unclassified)".into(), outcome.unclassified as u64);
    }
    // `outcome.subjects` is unique already (the engine notes each once), so only the ids the
    // route named before (at most one) need checking: scanning the growing list was
    // quadratic, 11% of a 100-row list's instructions.
    let named = a.subjects.len();
    for s in &outcome.subjects {
        if !a.subjects[..named].contains(s) {
            a.subjects.push(s.clone());
        }
    }
    a.t4_released |= outcome.released_t4 > 0;
    a.expired.extend(outcome.expired.iter().cloned());
}

pub fn consent_header(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-consent")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(128).collect())
}

/// Phase 2: normalise the path, find the store and a configured route, and parse the data
/// subject's id. No route, no upstream contact.
pub fn route<'s>(state: &'s Core, parts: &Parts, prefix: &str) -> Result<Target<'s>, Error> {
    let raw = parts
        .uri
        .path()
        .strip_prefix(prefix)
        .ok_or_else(|| Error::NotFound("no such route".into()))?;
    let (store_name, rest) = raw.split_once('/').unwrap_or((raw, ""));
    let mut segs =
        route::normalise(rest).map_err(|e| Error::BadRequest(format!("path refused: {e}")))?;
    let no_route = || Error::NotFound("no configured route matches this request".into());
    let store = state.stores.get(store_name).ok_or_else(no_route)?;
    let route = store
        .find_route(&parts.method, &segs)
        .ok_or_else(no_route)?;
    let decided = query::decide(parts.uri.query(), route)?;
    let mut subject = decided.subject;
    if let Some((SubjectLocator::Path(name), kind)) = &route.subject {
        let at = route
            .pattern
            .position(name)
            .expect("config validation ties subject_path to a placeholder");
        let id = SubjectId::parse(*kind, &segs[at])?;
        // What was decided is what is forwarded: the canonical id, never the spelling sent.
        segs[at] = id.as_str().to_string();
        subject = Some(id);
    }
    Ok(Target {
        store,
        route,
        path: route::encode_segments(&segs),
        query: decided.forwarded,
        subject,
    })
}

/// Every data request declares a purpose from the policy catalog.
pub fn declared_purpose(state: &Core, headers: &HeaderMap) -> Result<String, Error> {
    let value = headers
        .get("x-purpose")
        .ok_or_else(|| Error::BadRequest("the X-Purpose header is required".into()))?
        .to_str()
        .map_err(|_| Error::BadRequest("X-Purpose is not a purpose code".into()))?;
    let policies = state.policies();
    let purpose = policies.purpose(value).ok_or_else(|| {
        Error::BadRequest(format!(
            "unknown purpose; declare one of: {}",
            policies.purpose_codes().join(", ")
        ))
    })?;
    Ok(purpose.code.clone())
}

/// The one answer for a record that is missing and for one outside the caller's region: a
/// regional role must not tell "elsewhere" from "nowhere".
pub fn no_such_record() -> Error {
    Error::NotFound("no such record".into())
}

/// Phase 5: only a successful JSON answer passes, masked by the plan and re-emitted with our
/// own headers, each record under objection or carrying its subject's statements annotated
/// (looked up by its subject id before masking; `true` when an objection is still open). A store's error pages, redirects and headers never
/// reach the caller.
pub fn release(
    state: &Core,
    plan: &Plan,
    who: &Principal,
    store: &str,
    up: UpstreamResponse,
) -> Result<(StatusCode, serde_json::Value, Outcome, bool), Error> {
    release_in(state, plan, who.region(), store, up)
}

/// `release` for a reader known by their row scope alone (a data subject's self-query).
pub fn release_in(
    state: &Core,
    plan: &Plan,
    region: Option<&str>,
    store: &str,
    up: UpstreamResponse,
) -> Result<(StatusCode, serde_json::Value, Outcome, bool), Error> {
    match up.status {
        s if s.is_success() => {
            let is_json = up
                .content_type
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .map(|v| {
                    let mime = v.split(';').next().unwrap_or("").trim();
                    mime == "application/json" || mime.ends_with("+json")
                })
                .unwrap_or(false);
            // The body is checked as UTF-8 once, then parsed as text: `from_slice` checks each
            // string on its own, 4% of a 100-row list's instructions (callgrind). Outside its
            // strings JSON is ASCII, so the two accept the same bodies. `json::parse` answers
            // as `serde_json::from_str` does, building each object at once. The check is
            // simdutf8's (the same bodies as std's, a property test says so): std's took
            // 4.3% of a 100-row list's CPU on its mostly Chinese rows (perf).
            let parsed = Some(&up.body[..])
                .filter(|_| is_json)
                .and_then(|body| simdutf8::basic::from_utf8(body).ok())
                .map(crate::policy::json::parse);
            let mut doc: serde_json::Value = match parsed {
                Some(Ok(doc)) => doc,
                _ => {
                    return Err(Error::BadGateway(
                        "the store answered with something other than JSON",
                    ));
                }
            };
            let ctx = ApplyCtx {
                region,
                // The core's clock, as every deadline and consent expiry reads it.
                today: time::OffsetDateTime::from_unix_timestamp(state.clock.now() / 1_000_000)
                    .map_or_else(|_| time::OffsetDateTime::now_utc().date(), |t| t.date()),
                pseudonym_key: &state.pseudonym_key,
            };
            let (mut outcome, pending) = annotate::apply(state, plan, store, &mut doc, &ctx);
            // Deletion requests are queued with the read's audit record (`note_outcome`, the
            // audit layer), never before it.
            for e in &mut outcome.expired {
                e.store = Some(store.to_string());
            }
            if outcome.out_of_scope {
                return Err(no_such_record());
            }
            if outcome.unknown_values > 0 {
                metrics::counter!("credgate_unknown_list_values_total", "dataset" => plan.dataset.to_string())
                    .increment(outcome.unknown_values as u64);
                tracing::warn!(dataset = %plan.dataset, count = outcome.unknown_values,
                    "records carry a list value no rule declares; judged adverse");
            }
            if outcome.unclassified > 0 {
                metrics::counter!("credgate_unclassified_fields_total", "dataset" => plan.dataset.to_string())
                    .increment(outcome.unclassified as u64);
                tracing::warn!(dataset = %plan.dataset, paths = ?outcome.unclassified_paths,
                    count = outcome.unclassified, "fields not in the catalog were removed");
            }
            Ok((s, doc, outcome, pending))
        }
        StatusCode::NOT_FOUND => Err(no_such_record()),
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => Err(Error::BadRequest(
            "the store refused the request's parameters".into(),
        )),
        other => {
            tracing::warn!(
                status = other.as_u16(),
                "store answered with an error status"
            );
            Err(Error::BadGateway("the store answered with an error"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_subjects_join_the_routed_one_once_each_in_order() {
        let mut a = AuditInfo {
            subjects: vec!["A".into()],
            ..AuditInfo::default()
        };
        let outcome = Outcome {
            subjects: vec!["B".into(), "A".into(), "C".into()],
            ..Outcome::default()
        };
        note_outcome(&mut a, &outcome);
        assert_eq!(a.subjects, ["A", "B", "C"]);
    }

    /// simdutf8 accepts exactly the bodies std accepts: byte strings built from valid
    /// characters of every width, stray continuation bytes, overlong and surrogate encodings,
    /// bytes never valid, and truncated characters, at lengths around its 64-byte blocks.
    #[test]
    fn the_body_check_accepts_what_std_accepts() {
        const PIECES: &[&[u8]] = &[
            b"a",
            b"{\"k\":",
            b"\xc3\xa9",
            "名".as_bytes(),
            "🙂".as_bytes(),
            b"\x80",
            b"\xbf",
            b"\xc0\x80",
            b"\xc1\xbf",
            b"\xe0\x80\x80",
            b"\xed\xa0\x80",
            b"\xed\x9f\xbf",
            b"\xf0\x8f\xbf\xbf",
            b"\xf4\x90\x80\x80",
            b"\xf4\x8f\xbf\xbf",
            b"\xf5",
            b"\xff",
            b"\xe5",
            b"\xe5\x90",
            b"\xf0\x9f\x99",
            b"\x00",
            b"\x7f",
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut valid, mut invalid) = (0, 0);
        for _ in 0..50_000 {
            let mut body = Vec::new();
            let target = (next() % 200) as usize;
            // Mostly valid pieces, so that one bad byte lands at every place of a block.
            let bad_odds = 1 + next() % 64;
            while body.len() < target {
                let i = if next() % bad_odds == 0 {
                    (next() % PIECES.len() as u64) as usize
                } else {
                    (next() % 5) as usize
                };
                body.extend_from_slice(PIECES[i]);
            }
            let std_ok = std::str::from_utf8(&body).is_ok();
            assert_eq!(
                simdutf8::basic::from_utf8(&body).is_ok(),
                std_ok,
                "{body:x?}"
            );
            if std_ok { valid += 1 } else { invalid += 1 }
        }
        assert!(
            valid > 10_000 && invalid > 10_000,
            "{valid} valid, {invalid} invalid"
        );
    }
}
