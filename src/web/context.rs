//! The outermost layer: gives every request an id, puts it on every response, and makes sure
//! every error a client sees (ours or the framework's) is a problem document carrying that id.

use axum::{
    body::{Body, to_bytes},
    extract::Request,
    middleware::Next,
    response::Response,
};
use http::{HeaderValue, StatusCode, header};

use super::error::Problem;

pub const REQUEST_ID: &str = "x-request-id";

/// The gateway's own id for a request, on every response and in every log line and record. A
/// caller-supplied `X-Request-Id` never replaces it and is never echoed: when well formed it is
/// kept beside ours in the audit record as `caller_request_id` (`proxy::trace`), so the ids in
/// the logs stay ours, unique and free of injected text.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

pub async fn request_context(mut req: Request, next: Next) -> Response {
    let id = uuid::Uuid::now_v7().to_string();
    req.extensions_mut().insert(RequestId(id.clone()));
    // OAuth endpoints answer errors in RFC 6749 form, not as problems.
    let oauth = req.uri().path().starts_with("/oauth/");
    let private = carries_private_data(req.uri().path());
    let mut res = next.run(req).await;
    if private {
        // Personal and audit data must not rest in a browser's or a proxy's cache, whatever
        // the store behind us said.
        res.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if let Some(mut problem) = res.extensions_mut().remove::<Problem>() {
        problem.request_id = Some(id.clone());
        let (mut parts, _) = res.into_parts();
        parts.headers.remove(header::CONTENT_LENGTH);
        res = Response::from_parts(
            parts,
            Body::from(serde_json::to_vec(&problem).expect("a problem serialises")),
        );
    } else if !oauth
        && !is_page(&res)
        && (res.status().is_client_error() || res.status().is_server_error())
    {
        res = framework_error_as_problem(res, &id).await;
    }
    res.headers_mut().insert(
        REQUEST_ID,
        HeaderValue::from_str(&id).expect("a uuid is a valid header value"),
    );
    res
}

/// A page drawn by `web::pages` (its own error pages included) stays a page.
fn is_page(res: &Response) -> bool {
    res.headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/html"))
}

/// The route groups whose answers carry personal or audit data (or refusals about them).
fn carries_private_data(path: &str) -> bool {
    ["/v1/", "/public/", "/subject/", "/admin/"]
        .iter()
        .any(|p| path.starts_with(p))
}

/// axum's own rejections (unknown path, wrong method, body too large, bad JSON) come as plain
/// text; re-express them as problems. Client-error text from the framework is kept as the detail
/// (it names the bad field); server-error text is not.
async fn framework_error_as_problem(res: Response, id: &str) -> Response {
    let status = res.status();
    let (parts, body) = res.into_parts();
    let detail = if status.is_client_error() {
        to_bytes(body, 4096)
            .await
            .ok()
            .and_then(|b| String::from_utf8(b.to_vec()).ok())
            .filter(|s| !s.is_empty())
    } else {
        None
    };
    let (slug, detail) = match status {
        StatusCode::NOT_FOUND => ("not-found", "no such resource".to_string()),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method-not-allowed",
            "this method is not allowed here".to_string(),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => {
            ("payload-too-large", "request body too large".to_string())
        }
        s if s.is_server_error() => (
            "internal",
            "an internal error occurred; quote the request id".to_string(),
        ),
        _ => (
            "bad-request",
            detail.unwrap_or_else(|| "the request could not be processed".into()),
        ),
    };
    let mut problem = Problem::new(
        status,
        slug,
        status.canonical_reason().unwrap_or("Error"),
        detail,
    );
    problem.request_id = Some(id.to_string());
    let mut res = problem.into_response_with(|_| {});
    res.extensions_mut().remove::<Problem>();
    // Keep framework headers that matter to clients (Allow on 405).
    if let Some(allow) = parts.headers.get(header::ALLOW) {
        res.headers_mut().insert(header::ALLOW, allow.clone());
    }
    res
}
