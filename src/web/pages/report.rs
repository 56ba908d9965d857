//! `/report`: file a whistleblower report through `crate::workflows::reports` (the same
//! preparation, sealing and deferred filing as `POST /public/reports`), show its receipt once,
//! and look a receipt's status up. Nothing here notes who the reporter is: the audit record
//! carries no subject, and the contact is sealed before it is stored.

use axum::{body::Bytes, extract::State, response::Response};
use http::{HeaderMap, StatusCode, header};
use minijinja::{Value, context};

use super::{Lang, csrf::Csrf, page};
use crate::{
    web::{AppState, AttachChange as _, Error},
    workflows::{WorkflowError, reports},
};

#[derive(Default, serde::Serialize)]
struct Fields {
    about: String,
    category: String,
    description: String,
    contact: String,
    receipt: String,
    csrf: String,
}

/// The form body, read by hand: unknown fields are ignored, a repeated field keeps its first
/// value, and no parser message echoes what was sent.
fn fields(body: &[u8]) -> Result<Fields, Error> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
        .map_err(|_| Error::BadRequest("send the form's fields".into()))?;
    let mut f = Fields::default();
    for (k, v) in pairs.into_iter().rev() {
        match k.as_str() {
            "about" => f.about = v,
            "category" => f.category = v,
            "description" => f.description = v,
            "contact" => f.contact = v,
            "receipt" => f.receipt = v,
            "csrf" => f.csrf = v,
            _ => {}
        }
    }
    Ok(f)
}

fn checked(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<Fields, Error> {
    let f = fields(body)?;
    if !super::csrf::verify(state, headers, Some(&f.csrf)) {
        return Err(Error::Forbidden {
            rule: "csrf".into(),
            detail: "the form's token is missing or does not match; reload the page".into(),
        });
    }
    Ok(f)
}

/// Draws the report page with the reader's CSRF token (and its cookie when new).
fn show(state: &AppState, headers: &HeaderMap, status: StatusCode, ctx: Value) -> Response {
    let csrf = Csrf::of(state, headers);
    let ctx = context! {
        csrf => csrf.token(state),
        categories => reports::CATEGORIES,
        ..ctx
    };
    let mut res = page(Lang::choose(headers), status, "report.html", "/report", ctx);
    if let Some(c) = csrf.set_cookie(state) {
        res.headers_mut().append(header::SET_COOKIE, c);
    }
    res
}

pub async fn form(State(state): State<AppState>, headers: HeaderMap) -> Response {
    show(
        &state,
        &headers,
        StatusCode::OK,
        context! { form => Fields::default() },
    )
}

pub async fn file(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Error> {
    let f = checked(&state, &headers, &body)?;
    let filing = reports::Filing {
        about: f.about.clone(),
        category: f.category.clone(),
        description: f.description.clone(),
        reporter_contact: Some(f.contact.trim().to_owned()).filter(|c| !c.is_empty()),
    };
    match reports::prepare(&state, filing) {
        Ok((report, receipt)) => {
            let change = reports::filing(report, &receipt);
            let res = show(&state, &headers, StatusCode::CREATED, context! { receipt });
            Ok(change.attach(res))
        }
        Err(WorkflowError::BadRequest(_)) => {
            // What was typed comes back so nothing is lost; the contact is not echoed.
            let form = Fields {
                contact: String::new(),
                csrf: String::new(),
                ..f
            };
            let ctx = context! { form, message => "report.invalid" };
            Ok(show(&state, &headers, StatusCode::BAD_REQUEST, ctx))
        }
        Err(e) => Err(e.into()),
    }
}

/// A receipt's status. POSTed (with the CSRF token) so the receipt stays out of URLs,
/// histories and logs.
pub async fn status(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Error> {
    let f = checked(&state, &headers, &body)?;
    let receipt = f.receipt.trim();
    let found = if receipt.is_empty() || receipt.len() > 128 {
        Err(WorkflowError::NotFound(
            "no report with that receipt".into(),
        ))
    } else {
        reports::by_receipt(&state.db, receipt).await
    };
    let form = Fields::default();
    match found {
        Ok(r) => {
            let v = r.follow_view();
            let ctx = context! { form, status => v["status"].as_str(), updated_at => v["updated_at"].as_str() };
            Ok(show(&state, &headers, StatusCode::OK, ctx))
        }
        Err(WorkflowError::NotFound(_)) => {
            let ctx = context! { form, status_message => "report.unknown_receipt" };
            Ok(show(&state, &headers, StatusCode::NOT_FOUND, ctx))
        }
        Err(e) => Err(e.into()),
    }
}
