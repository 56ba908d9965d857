//! Each alert rule fires on a scripted pattern, names the rule, the client and the audit ids
//! behind it, and stays quiet on normal traffic.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::Executor;

use crate::helpers::{TestApp, assert_problem, wait_until};

fn always_working(c: &mut credgate::config::Config) {
    c.alerts.work_start_hour = 0;
    c.alerts.work_end_hour = 24;
    c.alerts.work_days = vec![1, 2, 3, 4, 5, 6, 7];
}

/// Polls the open alerts until one with `rule` (for `client`, if given) appears.
async fn wait_for(app: &TestApp, officer: &str, rule: &str, client: Option<&str>) -> Value {
    let found = std::sync::Mutex::new(Value::Null);
    wait_until(
        &format!("a {rule} alert"),
        Duration::from_secs(30),
        || async {
            let res = app
                .http
                .get(format!("{}/admin/alerts", app.url))
                .bearer_auth(officer)
                .send()
                .await
                .unwrap();
            let body: Value = res.json().await.unwrap();
            if let Some(a) = body["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["rule"] == rule && client.is_none_or(|c| a["client_id"] == c))
            {
                *found.lock().unwrap() = a.clone();
                return true;
            }
            false
        },
    )
    .await;
    found.into_inner().unwrap()
}

#[tokio::test]
async fn repeated_denials_and_many_subjects_fire_naming_client_and_audit_ids() {
    let app = TestApp::spawn_with(|c| {
        always_working(c);
        c.alerts.denials = 3;
        c.alerts.scrape_subjects = 5;
    })
    .await;
    let (bank_id, secret) = app.add_client("financial_institution").await;
    let token: Value = app.token_for(&bank_id, &secret).await.json().await.unwrap();
    let token = token["access_token"].as_str().unwrap().to_string();
    let (_, officer) = app.token("security_officer").await;
    let data = app.sample();
    let mut denied_ids = vec![];
    for i in 0..3 {
        let res = app
            .http
            .get(format!(
                "{}/v1/stores/power/entities/{}",
                app.url,
                data.entities[i]["uscc"].as_str().unwrap()
            ))
            .bearer_auth(&token)
            .header("X-Purpose", "supervision")
            .send()
            .await
            .unwrap();
        denied_ids.push(res.headers()["x-audit-id"].to_str().unwrap().to_string());
    }
    let a = wait_for(&app, &officer, "repeated-denials", Some(&bank_id)).await;
    let ids: Vec<String> = serde_json::from_value(a["audit_ids"].clone()).unwrap();
    for id in &denied_ids {
        assert!(ids.contains(id), "{a}");
    }
    for i in 0..5 {
        app.data(
            &token,
            &format!(
                "/v1/stores/power/entities/{}",
                data.entities[10 + i]["uscc"].as_str().unwrap()
            ),
        )
        .await;
    }
    let a = wait_for(&app, &officer, "many-subjects", Some(&bank_id)).await;
    assert!(a["detail"].as_str().unwrap().contains("distinct subjects"));
}

#[tokio::test]
async fn a_burst_far_above_the_clients_baseline_fires() {
    let app = TestApp::spawn_with(|c| {
        always_working(c);
        c.alerts.rate_min = 8;
        c.alerts.rate_factor = 5.0;
    })
    .await;
    let (bank_id, secret) = app.add_client("financial_institution").await;
    let token: Value = app.token_for(&bank_id, &secret).await.json().await.unwrap();
    let token = token["access_token"].as_str().unwrap().to_string();
    let (_, officer) = app.token("security_officer").await;
    for _ in 0..12 {
        app.data(&token, "/v1/stores/power/lists/red").await;
    }
    let a = wait_for(&app, &officer, "rate-above-baseline", Some(&bank_id)).await;
    assert!(!a["audit_ids"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn an_audit_write_failure_raises_an_alert_once_the_log_is_back() {
    let app = TestApp::spawn_with(always_working).await;
    let (_, token) = app.token("regulator").await;
    let (_, officer) = app.token("security_officer").await;
    app.state
        .db
        .pool()
        .execute("ALTER TABLE audit_log RENAME TO audit_log_gone")
        .await
        .unwrap();
    assert_eq!(
        app.data(&token, "/v1/stores/power/lists/red")
            .await
            .status(),
        503
    );
    app.state
        .db
        .pool()
        .execute("ALTER TABLE audit_log_gone RENAME TO audit_log")
        .await
        .unwrap();
    let a = wait_for(&app, &officer, "audit-write-failure", None).await;
    assert!(a["detail"].as_str().unwrap().contains("503"));
}

#[tokio::test]
async fn normal_traffic_raises_nothing_and_an_alert_can_be_acknowledged() {
    let app = TestApp::spawn_with(|c| {
        always_working(c);
        c.alerts.denials = 3;
    })
    .await;
    let (_, bank) = app.token("financial_institution").await;
    let (_, regulator) = app.token("regulator").await;
    let (_, officer) = app.token("security_officer").await;
    let data = app.sample();
    for i in 0..4 {
        app.data(
            &bank,
            &format!(
                "/v1/stores/power/entities/{}",
                data.entities[i]["uscc"].as_str().unwrap()
            ),
        )
        .await;
        app.data(&regulator, "/v1/stores/power/lists/black").await;
    }
    // "Quiet on normal traffic" is checked once the denials below have fired: the analyzer
    // judges records in commit order, so by then it has judged all of the normal traffic.
    for _ in 0..3 {
        app.http
            .get(format!("{}/v1/stores/power/lists/red", app.url))
            .bearer_auth(&bank)
            .header("X-Purpose", "supervision")
            .send()
            .await
            .unwrap();
    }
    let a = wait_for(&app, &officer, "repeated-denials", None).await;
    let id = a["id"].as_str().unwrap();
    let body: Value = app
        .http
        .get(format!("{}/admin/alerts", app.url))
        .bearer_auth(&officer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["items"], json!([a]), "quiet on normal traffic");
    let res = app
        .http
        .post(format!("{}/admin/alerts/{id}/ack", app.url))
        .bearer_auth(&officer)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = app
        .http
        .get(format!("{}/admin/alerts", app.url))
        .bearer_auth(&officer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["id"] != id)
    );
    let all: Value = app
        .http
        .get(format!("{}/admin/alerts?status=all", app.url))
        .bearer_auth(&officer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        all["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["id"] == id && x["acked_by"].is_string())
    );
    let res = app
        .http
        .post(format!("{}/admin/alerts/{id}/ack", app.url))
        .bearer_auth(&officer)
        .send()
        .await
        .unwrap();
    assert_problem(res, 404).await;
}
