//! `/console/`: the dashboard.

use axum::{
    extract::State,
    response::{IntoResponse, Redirect, Response},
};
use http::{HeaderMap, StatusCode, header};
use minijinja::context;

use crate::web::{
    AppState,
    pages::{Lang, csrf::Csrf, page, session::StaffPage},
};

pub async fn to_home() -> Response {
    Redirect::to("/console/").into_response()
}

pub async fn show(State(state): State<AppState>, who: StaffPage, headers: HeaderMap) -> Response {
    let csrf = Csrf::of(&state, &headers);
    let ctx = context! { who => who.name, csrf => csrf.token(&state) };
    let mut res = page(
        Lang::choose(&headers),
        StatusCode::OK,
        "console/dashboard.html",
        "/console/",
        ctx,
    );
    if let Some(c) = csrf.set_cookie(&state) {
        res.headers_mut().append(header::SET_COOKIE, c);
    }
    res
}
