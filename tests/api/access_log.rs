//! A subject's access log (`GET /subject/access-log`) a page at a time. Hostile first: every
//! malformed `limit` and `cursor`, unknown parameters, a cursor walked by another subject. Then
//! the walk: pages newest first, none repeated or skipped, reads made meanwhile never shifting
//! a page, and only the caller's own records on any page.

use std::collections::BTreeSet;

use credgate::domain::SubjectType;
use serde_json::Value;

use crate::helpers::{TestApp, assert_problem};

fn uscc(app: &TestApp, i: usize) -> String {
    app.sample().entities[i]["uscc"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn log(app: &TestApp, token: &str, query: &str) -> reqwest::Response {
    app.http
        .get(format!("{}/subject/access-log{query}", app.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// `n` reads of this company's entity record by a new bank; the audit ids, oldest first.
async fn read(app: &TestApp, org: &str, of: &str, n: usize) -> Vec<String> {
    let bank = app.token_in("financial_institution", org, None).await;
    let mut ids = Vec::new();
    for _ in 0..n {
        let res = app
            .data(&bank, &format!("/v1/stores/power/entities/{of}"))
            .await;
        assert_eq!(res.status(), 200);
        ids.push(res.headers()["x-audit-id"].to_str().unwrap().to_owned());
    }
    ids
}

#[tokio::test]
async fn malformed_limits_and_cursors_and_unknown_parameters_are_refused() {
    let app = TestApp::spawn().await;
    let me = app.subject_token(&uscc(&app, 0), SubjectType::Legal);
    for q in [
        "?limit=0",
        "?limit=501",
        "?limit=-1",
        "?limit=abc",
        "?limit=1e2",
        "?limit=99999999999999999999",
        "?cursor=",
        "?cursor=0",
        "?cursor=-5",
        "?cursor=abc",
        "?cursor=1%20OR%201=1",
        "?cursor=%00",
        "?cursor=1&cursor=2",
        "?limit=5&subject=91350100M000100Y43",
        "?before=5",
    ] {
        let body = assert_problem(log(&app, &me, q).await, 400).await;
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(!detail.contains("SELECT"), "{q}: {detail}");
    }
    // The bounds themselves are taken.
    for q in ["?limit=1", "?limit=500", "?cursor=9223372036854775807"] {
        assert_eq!(log(&app, &me, q).await.status(), 200, "{q}");
    }
}

#[tokio::test]
async fn pages_walk_the_whole_log_newest_first_and_show_only_my_records() {
    let app = TestApp::spawn().await;
    let (mine, theirs) = (uscc(&app, 0), uscc(&app, 1));
    let mut reads = read(&app, "bank-one", &mine, 4).await;
    read(&app, "bank-other", &theirs, 3).await;
    reads.extend(read(&app, "bank-two", &mine, 3).await);
    let me = app.subject_token(&mine, SubjectType::Legal);

    let mut cursor = String::new();
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let res = log(&app, &me, &format!("?limit=3{cursor}")).await;
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        let items = body["items"].as_array().unwrap();
        assert!(items.len() <= 3);
        seen.extend(items.iter().cloned());
        pages += 1;
        if pages == 1 {
            // Reads made between pages land above the first page, not on the next ones.
            read(&app, "bank-late", &mine, 2).await;
        }
        match body["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
        assert!(pages < 10, "the walk ends");
    }
    assert_eq!(seen.len(), reads.len(), "every read once: {seen:?}");
    let orgs: Vec<&str> = seen.iter().map(|i| i["org"].as_str().unwrap()).collect();
    assert_eq!(
        orgs,
        [["bank-two"; 3].as_slice(), &["bank-one"; 4]].concat(),
        "newest first, none of another company's"
    );
    let times: Vec<&str> = seen.iter().map(|i| i["time"].as_str().unwrap()).collect();
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, sorted);
    // Without a cursor: the newest page, now with the late reads on it.
    let first: Value = log(&app, &me, "?limit=2").await.json().await.unwrap();
    let orgs: BTreeSet<&str> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["org"].as_str().unwrap())
        .collect();
    assert_eq!(orgs, BTreeSet::from(["bank-late"]));
}

#[tokio::test]
async fn another_subjects_cursor_shows_nothing_of_theirs() {
    let app = TestApp::spawn().await;
    let (mine, theirs) = (uscc(&app, 0), uscc(&app, 1));
    read(&app, "bank-mine", &mine, 2).await;
    read(&app, "bank-theirs", &theirs, 3).await;
    let them = app.subject_token(&theirs, SubjectType::Legal);
    let page: Value = log(&app, &them, "?limit=1").await.json().await.unwrap();
    let their_cursor = page["next_cursor"].as_str().unwrap().to_owned();
    // My walk from their cursor: my records below that place, never theirs.
    let me = app.subject_token(&mine, SubjectType::Legal);
    let mut q = format!("?limit=500&cursor={their_cursor}");
    let body: Value = log(&app, &me, &q).await.json().await.unwrap();
    let orgs: BTreeSet<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["org"].as_str().unwrap())
        .collect();
    assert_eq!(orgs, BTreeSet::from(["bank-mine"]));
    assert!(body["next_cursor"].is_null(), "{body}");
    // A cursor above every record is the whole log, as no cursor is.
    q = "?cursor=9223372036854775807".into();
    let all: Value = log(&app, &me, &q).await.json().await.unwrap();
    assert_eq!(all["items"].as_array().unwrap().len(), 2, "{all}");
}
