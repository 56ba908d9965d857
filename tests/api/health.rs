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
    // The fake store counts what reaches it: first see that this request does reach it (with
    // another client, whose status is then cached; `token`'s is not).
    let path = format!("/v1/stores/fake/entities/{uscc}");
    let before = app.fake.hits();
    let (_, control) = app.token("regulator").await;
    assert_eq!(app.data(&control, &path).await.status(), 200);
    assert_eq!(
        app.fake.hits(),
        before + 1,
        "the request reaches the counting store"
    );
    app.state.db.pool().close().await;

    let res = app
        .http
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .unwrap();
    assert_problem(res, 503).await;
    // The client's status cannot be checked, so nothing is released, nor even asked for.
    let before = app.fake.hits();
    let res = app.data(&token, &path).await;
    let body = assert_problem(res, 503).await;
    assert!(!body.to_string().contains("sqlx"), "no internals: {body}");
    assert_eq!(app.fake.hits(), before, "the store was not contacted");
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

/// `credgate sample-store --listen 127.0.0.1:0` binds a free port and says which on stdout, so a
/// test (or a script) reads it instead of picking a port and racing another process for it.
#[tokio::test]
async fn the_sample_store_process_reports_the_port_it_bound() {
    crate::helpers::serially().await;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_credgate"))
        .args(["sample-store", "--listen", "127.0.0.1:0", "--entities", "5"])
        .env("CREDGATE_SAMPLE_STORE_TOKEN", "t")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr = crate::helpers::listening_addr(child.stdout.take().unwrap());
    let addr = tokio::time::timeout(crate::helpers::START_BOUND, addr).await;
    let answer = match addr {
        Ok(Ok(addr)) => {
            assert_ne!(addr.port(), 0);
            reqwest::Client::builder()
                .no_proxy()
                .build()
                .unwrap()
                .get(format!("http://{addr}/lists/red"))
                .bearer_auth("t")
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
        other => {
            let _ = child.kill();
            panic!("no `listening on ADDR` line: {other:?}");
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(answer.unwrap(), 200);
}
