//! `GET /openapi.json`: OpenAPI 3.1, generated from the route table (`super::route_table`), so
//! that a mounted route is a described route. Each row gets its operation from its coverage
//! (who may call it, which headers it takes, which problems it answers) plus the one-line
//! summary and body schemas below; a row without a summary still appears, with a generic one.

use std::sync::OnceLock;

use axum::{
    Json,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use http::Method;
use serde_json::{Map, Value, json};

use super::routes::{AuditKind, Coverage, RouteEntry};

/// The methods an `any` route is documented under.
const ANY_METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

pub async fn openapi() -> Response {
    static DOC: OnceLock<Value> = OnceLock::new();
    let doc = DOC.get_or_init(|| document(&super::route_table()));
    let mut res = Json(doc.clone()).into_response();
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    res
}

/// The whole document for `table`.
pub fn document(table: &[RouteEntry]) -> Value {
    let mut paths = Map::new();
    for row in table {
        let path = openapi_path(row.path);
        let item = paths
            .entry(path)
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("path items are objects");
        let methods = row
            .method
            .clone()
            .map_or_else(|| ANY_METHODS.to_vec(), |m| vec![m]);
        for m in methods {
            item.insert(m.as_str().to_ascii_lowercase(), operation(row, &m));
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "credgate",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Privacy and security gateway for credit-information access. Errors \
                other than OAuth's are application/problem+json (RFC 9457).",
        },
        "paths": paths,
        "components": components(),
    })
}

/// axum's `{*rest}` is OpenAPI's `{rest}` (a parameter that may span segments).
fn openapi_path(template: &str) -> String {
    template.replace("{*", "{")
}

fn params(template: &str) -> Vec<&str> {
    template
        .split('/')
        .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        .map(|s| s.trim_start_matches('*'))
        .collect()
}

/// One operation: summary, parameters, security, body and responses from the row's coverage.
fn operation(row: &RouteEntry, method: &Method) -> Value {
    let mut parameters: Vec<Value> = params(row.path)
        .into_iter()
        .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    let kind = match row.coverage {
        Coverage::Audited(k) => Some(k),
        Coverage::Unaudited(_) => None,
    };
    if matches!(kind, Some(AuditKind::Data | AuditKind::Profile)) {
        parameters.push(json!({"$ref": "#/components/parameters/XPurpose"}));
        parameters.push(json!({"$ref": "#/components/parameters/XConsent"}));
    }
    if kind == Some(AuditKind::Public) {
        parameters.push(json!({"$ref": "#/components/parameters/XPurpose"}));
    }
    let mut op = json!({
        "operationId": operation_id(method, row.path),
        "summary": summary(method, row.path).unwrap_or("See the route table"),
        "tags": [tag(row)],
        "parameters": parameters,
        "responses": responses(row, method),
        "x-audited": kind.map(AuditKind::as_str),
    });
    op["security"] = security(kind);
    if let Some(body) = request_body(method, row.path) {
        op["requestBody"] = body;
    }
    op
}

fn operation_id(method: &Method, path: &str) -> String {
    let mut id = method.as_str().to_ascii_lowercase();
    for part in path.split(|c: char| !c.is_ascii_alphanumeric()) {
        if let Some(first) = part.chars().next() {
            id.push(first.to_ascii_uppercase());
            id.push_str(&part[first.len_utf8()..]);
        }
    }
    id
}

fn tag(row: &RouteEntry) -> &'static str {
    match row.coverage {
        Coverage::Audited(k) => k.as_str(),
        Coverage::Unaudited(_) => "operations",
    }
}

/// Who may call: gateway-issued tokens for institutions and staff, identity providers' tokens
/// for subjects, client credentials at the token endpoint, nobody for the open doors.
fn security(kind: Option<AuditKind>) -> Value {
    match kind {
        Some(AuditKind::Data | AuditKind::Profile | AuditKind::Admin) => {
            json!([{"oauth2": []}, {"bearer": []}])
        }
        Some(AuditKind::Subject) => json!([{"subjectBearer": []}]),
        Some(AuditKind::Token) => json!([{"clientSecretBasic": []}, {}]),
        Some(AuditKind::Public) | None => json!([]),
    }
}

fn responses(row: &RouteEntry, method: &Method) -> Value {
    let problem = |d: &str| json!({"description": d, "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}});
    if row.path == "/oauth/token" {
        return json!({
            "200": {"description": "An access token", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TokenResponse"}}}},
            "400": {"description": "RFC 6749 5.2 error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/OAuthError"}}}},
            "401": {"description": "RFC 6749 5.2 error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/OAuthError"}}}},
            "429": problem("Too many attempts"),
        });
    }
    let mut r = json!({
        "200": {"description": "Success", "content": {"application/json": {"schema": success_schema(row.path)}}},
        "default": problem("An RFC 9457 problem"),
    });
    if *method == Method::POST {
        r["201"] = json!({"description": "Created", "content": {"application/json": {"schema": {"type": "object"}}}});
    }
    if row.coverage != Coverage::Unaudited(super::routes::Unaudited::Health) {
        r["429"] = problem("Rate limited (RateLimit and RateLimit-Policy headers)");
        r["429"]["headers"] = rate_limit_headers();
    }
    if matches!(row.coverage, Coverage::Audited(k) if k != AuditKind::Public) {
        r["401"] = problem("Missing, invalid or unbound token");
        r["403"] = problem("Denied by policy (the rule is named)");
    }
    r
}

/// The headers of a 429 (and, but for `Retry-After`, of every answer a bucket was charged
/// for): draft-ietf-httpapi-ratelimit-headers -08 and later.
fn rate_limit_headers() -> Value {
    let text = |d: &str| json!({"description": d, "schema": {"type": "string"}});
    json!({
        "Retry-After": {"description": "Seconds until a request may succeed", "schema": {"type": "integer"}},
        "RateLimit-Policy": text("The bucket's policy: `\"name\";q=QUOTA;w=60`"),
        "RateLimit": text("What is left and when it refills: `\"name\";r=LEFT;t=SECONDS`"),
    })
}

fn success_schema(path: &str) -> Value {
    match path {
        "/healthz" | "/readyz" => json!({"$ref": "#/components/schemas/Status"}),
        "/.well-known/jwks.json" => json!({"$ref": "#/components/schemas/Jwks"}),
        "/admin/audit" => json!({"$ref": "#/components/schemas/AuditPage"}),
        "/.well-known/oauth-authorization-server" => {
            json!({"$ref": "#/components/schemas/AuthorizationServerMetadata"})
        }
        _ => json!({"type": ["object", "array"]}),
    }
}

fn request_body(method: &Method, path: &str) -> Option<Value> {
    if path == "/oauth/token" {
        return Some(json!({"required": true, "content": {
            "application/x-www-form-urlencoded": {"schema": {"$ref": "#/components/schemas/TokenRequest"}}}}));
    }
    let body =
        matches!(*method, Method::POST | Method::PUT | Method::PATCH) && !path.ends_with("/reload");
    body.then(|| json!({"content": {"application/json": {"schema": {"type": "object"}}}}))
}

/// The one-line summaries; a route missing here still appears in the document.
fn summary(method: &Method, path: &str) -> Option<&'static str> {
    let s = match (method.as_str(), path) {
        ("GET", "/healthz") => "Liveness",
        ("GET", "/readyz") => "Readiness: storage, audit log and policies",
        ("POST", "/oauth/token") => "Client credentials grant (RFC 6749 4.4)",
        ("GET", "/.well-known/jwks.json") => "The gateway's public signing keys",
        ("GET", "/.well-known/oauth-authorization-server") => {
            "Authorization server metadata (RFC 8414)"
        }
        ("GET", "/openapi.json") => "This document",
        (_, "/v1/stores/{store}/{*path}") => "Forward to a store's route, under policy",
        (_, "/public/stores/{store}/{*path}") => "Public-tier data, without a token",
        ("GET", "/v1/subjects/{id}/profile") => "One-stop profile of a data subject",
        (_, p) if p.starts_with("/subject/") => "The data subject's own view",
        (_, p) if p.starts_with("/admin/") => "Staff operation",
        (_, p) if p.starts_with("/public/reports") => "Whistleblower reports",
        _ => return None,
    };
    Some(s)
}

fn components() -> Value {
    json!({
        "securitySchemes": {
            "oauth2": {"type": "oauth2", "flows": {"clientCredentials": {
                "tokenUrl": "/oauth/token", "scopes": {}}}},
            "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT (EdDSA), from /oauth/token"},
            "subjectBearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT from a configured identity provider"},
            "clientSecretBasic": {"type": "http", "scheme": "basic"},
        },
        "parameters": {
            "XPurpose": {"name": "X-Purpose", "in": "header", "required": true,
                "description": "The purpose code the access is for (policies/purposes.toml)",
                "schema": {"type": "string"}},
            "XConsent": {"name": "X-Consent", "in": "header", "required": false,
                "description": "The subject's consent id, where the purpose needs consent",
                "schema": {"type": "string"}},
        },
        "schemas": {
            "Problem": {"type": "object", "required": ["type", "title", "status"], "properties": {
                "type": {"type": "string"}, "title": {"type": "string"},
                "status": {"type": "integer"}, "detail": {"type": "string"},
                "request_id": {"type": "string"}}},
            "TokenRequest": {"type": "object", "required": ["grant_type"], "properties": {
                "grant_type": {"const": "client_credentials"},
                "client_id": {"type": "string"}, "client_secret": {"type": "string"}}},
            "TokenResponse": {"type": "object", "required": ["access_token", "token_type", "expires_in"], "properties": {
                "access_token": {"type": "string"}, "token_type": {"const": "Bearer"},
                "expires_in": {"type": "integer"}}},
            "OAuthError": {"type": "object", "required": ["error"], "properties": {
                "error": {"type": "string"}, "error_description": {"type": "string"}}},
            "Status": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
            "Jwks": {"type": "object", "required": ["keys"], "properties": {"keys": {"type": "array", "items": {"type": "object"}}}},
            "AuthorizationServerMetadata": {"type": "object", "required": ["issuer", "token_endpoint", "jwks_uri"]},
            "AuditPage": {"type": "object", "required": ["items", "next_cursor", "indexed_through"], "properties": {
                "items": {"type": "array", "items": {"type": "object"}},
                "next_cursor": {"type": ["string", "null"],
                    "description": "Pass as `cursor` for the next (older) page; null on the last"},
                "indexed_through": {"type": "string", "format": "date-time",
                    "description": "Every record committed before this time is in the search index. \
                        Answers are exact either way: a subject's search also reads the records not yet indexed"}}},
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_and_ids() {
        assert_eq!(
            openapi_path("/v1/stores/{store}/{*path}"),
            "/v1/stores/{store}/{path}"
        );
        assert_eq!(params("/v1/stores/{store}/{*path}"), ["store", "path"]);
        assert_eq!(
            operation_id(&Method::POST, "/admin/clients/{id}/disable"),
            "postAdminClientsIdDisable"
        );
    }
}
