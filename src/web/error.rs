//! The one error type of every non-OAuth endpoint. It maps itself to a status and an RFC 9457
//! problem document and never lets an internal message (SQL, upstream body, panic) through:
//! those are logged with the request id and replaced by a generic sentence.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

use crate::{
    audit::Refused, auth::AuthError, domain::IdError, policy::Denial, proxy::DataError,
    storage::StorageError, workflows::WorkflowError,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    BadRequest(String),
    #[error("invalid data-subject id: {0}")]
    InvalidSubjectId(#[from] IdError),
    #[error("{0}")]
    Unauthorized(&'static str),
    /// A policy denial: names the rule, never the data.
    #[error("denied by rule `{rule}`: {detail}")]
    Forbidden { rule: String, detail: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unprocessable(String),
    /// An illegal state transition: nothing changed.
    #[error("{0}")]
    Conflict(String),
    #[error("request body exceeds {0} bytes")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    BadGateway(&'static str),
    #[error("the store did not answer in time")]
    GatewayTimeout,
    #[error("storage unavailable")]
    StorageUnavailable(#[source] StorageError),
    /// Seconds until a retry may succeed.
    #[error("rate limit reached; retry in {0} s")]
    RateLimited(u64),
    #[error("the audit log is unavailable; nothing was released")]
    AuditUnavailable,
    /// The reason is one of ours, written for the operator; never an internal error's text.
    #[error("not ready: {0}")]
    NotReady(&'static str),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl Error {
    pub fn storage(e: StorageError) -> Self {
        Self::StorageUnavailable(e)
    }

    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        use StatusCode as S;
        match self {
            Error::BadRequest(_) => (S::BAD_REQUEST, "bad-request", "Bad request"),
            Error::InvalidSubjectId(_) => (
                S::BAD_REQUEST,
                "invalid-subject-id",
                "Invalid data-subject identifier",
            ),
            Error::Unauthorized(_) => (S::UNAUTHORIZED, "unauthorized", "Authentication required"),
            Error::Forbidden { .. } => (S::FORBIDDEN, "policy-denied", "Denied by policy"),
            Error::NotFound(_) => (S::NOT_FOUND, "not-found", "Not found"),
            Error::Conflict(_) => (S::CONFLICT, "conflict", "Conflict"),
            Error::Unprocessable(_) => (
                S::UNPROCESSABLE_ENTITY,
                "unprocessable",
                "Unprocessable request",
            ),
            Error::PayloadTooLarge(_) => (
                S::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Request body too large",
            ),
            Error::BadGateway(_) => (S::BAD_GATEWAY, "upstream-failed", "Store failed"),
            Error::GatewayTimeout => (S::GATEWAY_TIMEOUT, "upstream-timeout", "Store timed out"),
            Error::StorageUnavailable(_) => (
                S::SERVICE_UNAVAILABLE,
                "storage-unavailable",
                "Service unavailable",
            ),
            Error::NotReady(_) => (S::SERVICE_UNAVAILABLE, "not-ready", "Not ready"),
            Error::RateLimited(_) => (S::TOO_MANY_REQUESTS, "rate-limited", "Too many requests"),
            Error::AuditUnavailable => (
                S::SERVICE_UNAVAILABLE,
                "audit-unavailable",
                "Service unavailable",
            ),
            Error::Internal(_) => (S::INTERNAL_SERVER_ERROR, "internal", "Internal error"),
        }
    }

    /// What the caller may read. Internal causes are replaced, not echoed.
    pub fn public_detail(&self) -> String {
        match self {
            Error::StorageUnavailable(_) => {
                "the gateway's storage is unavailable; no data was released".into()
            }
            Error::Internal(_) => "an internal error occurred; quote the request id".into(),
            other => other.to_string(),
        }
    }
}

// How each layer's errors become problems: here and nowhere else, so that a status or a
// problem type is decided in one file.

impl From<StorageError> for Error {
    fn from(e: StorageError) -> Self {
        if e.is_unstorable_input() {
            return Error::BadRequest("the request holds a character that cannot be stored".into());
        }
        Error::StorageUnavailable(e)
    }
}

impl From<Denial> for Error {
    fn from(d: Denial) -> Self {
        Error::Forbidden {
            rule: d.rule.into(),
            detail: d.detail,
        }
    }
}

impl From<DataError> for Error {
    fn from(e: DataError) -> Self {
        match e {
            DataError::BadRequest(why) => Error::BadRequest(why),
            DataError::InvalidSubjectId(e) => Error::InvalidSubjectId(e),
            DataError::NotFound(why) => Error::NotFound(why),
            DataError::Denied(d) => d.into(),
            DataError::BadGateway(why) => Error::BadGateway(why),
            DataError::Timeout => Error::GatewayTimeout,
            DataError::Storage(e) => Error::from(e),
            DataError::Internal(e) => Error::Internal(e),
        }
    }
}

impl From<WorkflowError> for Error {
    fn from(e: WorkflowError) -> Self {
        match e {
            WorkflowError::BadRequest(why) => Error::BadRequest(why),
            WorkflowError::NotFound(why) => Error::NotFound(why),
            WorkflowError::Conflict(why) => Error::Conflict(why),
            WorkflowError::Storage(e) => Error::from(e),
        }
    }
}

impl From<Refused> for Error {
    fn from(e: Refused) -> Self {
        match e {
            Refused::Conflict(why) => Error::Conflict(why),
            Refused::NotFound(why) => Error::NotFound(why),
            Refused::Unstorable(why) => Error::BadRequest(why),
        }
    }
}

impl From<AuthError> for Error {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Unauthorized(why) => Error::Unauthorized(why),
            AuthError::LockedDown => Error::Forbidden {
                rule: "lockdown".into(),
                detail: AuthError::LockedDown.to_string(),
            },
            AuthError::RateLimited(secs) => Error::RateLimited(secs),
            AuthError::Storage(e) => Error::from(e),
        }
    }
}

/// An RFC 9457 problem document. `request_id` is filled in by the request-context middleware,
/// which is the one place that knows it.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// For policy denials: the rule that decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

impl Problem {
    pub fn new(status: StatusCode, slug: &str, title: &str, detail: impl Into<String>) -> Self {
        Self {
            type_: format!("urn:credgate:problem:{slug}"),
            title: title.into(),
            status: status.as_u16(),
            detail: detail.into(),
            request_id: None,
            rule: None,
        }
    }

    pub fn into_response_with(self, extra: impl FnOnce(&mut Response)) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).expect("a problem serialises");
        let mut res = (status, body).into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        extra(&mut res);
        res.extensions_mut().insert(self);
        res
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, slug, title) = self.parts();
        match &self {
            Error::StorageUnavailable(e) => tracing::error!(error = %e, "storage failure"),
            Error::Internal(e) => tracing::error!(error = ?e, "internal error"),
            _ => {}
        }
        let mut problem = Problem::new(status, slug, title, self.public_detail());
        if let Error::Forbidden { rule, .. } = &self {
            problem.rule = Some(rule.clone());
        }
        let retry = if let Error::RateLimited(secs) = &self {
            Some(*secs)
        } else {
            None
        };
        problem.into_response_with(|res| {
            if let Some(secs) = retry {
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            if status == StatusCode::UNAUTHORIZED {
                res.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"credgate\", error=\"invalid_token\""),
                );
            }
        })
    }
}
