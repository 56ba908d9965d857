use serde_json::Value;

use crate::helpers::{TestApp, assert_problem};

#[tokio::test]
async fn healthz_and_readyz_answer_with_a_request_id() {
    let app = TestApp::spawn().await;
    let res = app
        .http
        .get(format!("{}/healthz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("x-request-id"));
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "ok");
    let res = app
        .http
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn readyz_is_503_and_data_is_withheld_when_storage_is_gone() {
    let app = TestApp::spawn().await;
    let (_, token) = app.token("regulator").await;
    let uscc = app.sample().entities[0]["uscc"]
        .as_str()
        .unwrap()
        .to_string();
    app.state.db.pool().close().await;

    let res = app
        .http
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .unwrap();
    assert_problem(res, 503).await;
    // The client's status cannot be checked, so nothing is released.
    let before = app.fake.hits();
    let res = app
        .data(&token, &format!("/v1/stores/power/entities/{uscc}"))
        .await;
    let body = assert_problem(res, 503).await;
    assert!(!body.to_string().contains("sqlx"), "no internals: {body}");
    assert_eq!(app.fake.hits(), before);
}

#[tokio::test]
async fn caller_supplied_request_ids_are_replaced() {
    let app = TestApp::spawn().await;
    let res = app
        .http
        .get(format!("{}/healthz", app.url))
        .header("X-Request-Id", "forged-id")
        .send()
        .await
        .unwrap();
    let id = res.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    assert_ne!(id, "forged-id");
}

#[tokio::test]
async fn unknown_paths_and_methods_are_problems() {
    let app = TestApp::spawn().await;
    let res = app
        .http
        .get(format!("{}/nope", app.url))
        .send()
        .await
        .unwrap();
    assert_problem(res, 404).await;
    let res = app
        .http
        .delete(format!("{}/healthz", app.url))
        .send()
        .await
        .unwrap();
    assert_problem(res, 405).await;
}
