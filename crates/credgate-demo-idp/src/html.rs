//! The provider's pages: server-rendered, every input labelled, no script at all, and a
//! Content-Security-Policy that would refuse one anyway.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Response},
};

const CSP: &str = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'";

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

pub fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{t} - credgate demo sign-in</title></head>\
         <body><main><h1>{t}</h1>\n{body}\n</main></body></html>\n",
        t = escape(title)
    );
    let mut resp = (status, Html(html)).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

fn notice(message: Option<&str>) -> String {
    message
        .map(|m| format!("<p role=\"alert\">{}</p>\n", escape(m)))
        .unwrap_or_default()
}

/// The first step: `Username`, `Password`, `Sign in`.
pub fn login(status: StatusCode, flow: &str, message: Option<&str>) -> Response {
    let body = format!(
        "{}<form method=\"post\" action=\"/login\">\n\
         <input type=\"hidden\" name=\"flow\" value=\"{}\">\n\
         <p><label for=\"username\">Username</label>\n\
         <input id=\"username\" name=\"username\" autocomplete=\"username\" required></p>\n\
         <p><label for=\"password\">Password</label>\n\
         <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required></p>\n\
         <p><button type=\"submit\">Sign in</button></p>\n</form>",
        notice(message),
        escape(flow)
    );
    page(status, "Sign in", &body)
}

/// The second step for users with a TOTP secret: `One-time code`.
pub fn one_time_code(status: StatusCode, step: &str, message: Option<&str>) -> Response {
    let body = format!(
        "{}<form method=\"post\" action=\"/login/otp\">\n\
         <input type=\"hidden\" name=\"step\" value=\"{}\">\n\
         <p><label for=\"otp\">One-time code</label>\n\
         <input id=\"otp\" name=\"otp\" inputmode=\"numeric\" autocomplete=\"one-time-code\" \
         pattern=\"[0-9]{{6}}\" maxlength=\"6\" required></p>\n\
         <p><button type=\"submit\">Sign in</button></p>\n</form>",
        notice(message),
        escape(step)
    );
    page(status, "One-time code", &body)
}

pub fn error(status: StatusCode, message: &str) -> Response {
    page(
        status,
        "Sign-in request refused",
        &format!("<p>{}</p>", escape(message)),
    )
}
