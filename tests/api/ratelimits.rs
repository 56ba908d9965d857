//! Rate limits of known callers (issue 16 item 6): every answer charged to a client's, a
//! person's or a data subject's bucket says its policy and what is left
//! (draft-ietf-httpapi-ratelimit-headers -08 and later: `RateLimit-Policy` and `RateLimit`), and
//! each 429 carries `Retry-After` equal to the `t=` of its `RateLimit`. The anonymous doors'
//! headers are tested in `hostile/edge.rs`.

use credgate::{config::Config, domain::SubjectType};
use credgate_demo_idp::{Alg, DemoIdp, Options};
use serde_json::Value;

use crate::helpers::{TestApp, assert_problem};

/// The `RateLimit-Policy` and `RateLimit` values of an answer (empty when absent).
fn rate_headers(res: &reqwest::Response) -> (String, String) {
    let get = |name: &str| {
        res.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    (get("ratelimit-policy"), get("ratelimit"))
}

/// The 429's `Retry-After` seconds, checked against its `RateLimit` (`"name";r=0;t=N`).
fn retry_after_agrees(res: &reqwest::Response, name: &str) -> u64 {
    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1, "{retry}");
    let (_, state) = rate_headers(res);
    assert_eq!(state, format!("\"{name}\";r=0;t={retry}"));
    retry
}

#[tokio::test]
async fn a_clients_answers_say_its_rate_and_its_429_when_to_retry() {
    let app = TestApp::spawn_with(|c| c.rate_limits.per_client_per_minute = 3).await;
    let (_, token) = app.token("regulator").await;
    let mut left = vec![];
    for _ in 0..3 {
        let res = app.data(&token, "/v1/stores/power/lists/red").await;
        assert_eq!(res.status(), 200);
        let (policy, state) = rate_headers(&res);
        assert_eq!(policy, "\"client\";q=3;w=60");
        left.push(state);
    }
    assert!(left[0].starts_with("\"client\";r=2;t="), "{left:?}");
    assert!(left[1].starts_with("\"client\";r=1;t="), "{left:?}");
    assert!(left[2].starts_with("\"client\";r=0;t="), "{left:?}");
    let last = app.data(&token, "/v1/stores/power/lists/red").await;
    retry_after_agrees(&last, "client");
    assert_eq!(rate_headers(&last).0, "\"client\";q=3;w=60");
    assert_problem(last, 429).await;
    // Another client is not charged for the first one's requests.
    let (_, other) = app.token("regulator").await;
    let res = app.data(&other, "/v1/stores/power/lists/red").await;
    assert_eq!(res.status(), 200);
    assert!(rate_headers(&res).1.starts_with("\"client\";r=2;"));
}

#[tokio::test]
async fn a_data_subjects_answers_say_its_rate_and_its_429_when_to_retry() {
    let app = TestApp::spawn_with(|c| {
        c.subject_limits.per_minute = 2;
        c.subject_limits.burst = 2;
    })
    .await;
    let token = app.subject_token("91350100M000100Y43", SubjectType::Legal);
    let me = || {
        app.http
            .get(format!("{}/subject/me", app.url))
            .bearer_auth(&token)
            .send()
    };
    let first = me().await.unwrap();
    assert_eq!(first.status(), 200);
    let (policy, state) = rate_headers(&first);
    assert_eq!(policy, "\"subject\";q=2;w=60");
    assert!(state.starts_with("\"subject\";r=1;t="), "{state}");
    assert_eq!(me().await.unwrap().status(), 200);
    let last = me().await.unwrap();
    retry_after_agrees(&last, "subject");
    assert_problem(last, 429).await;
    // A person with the same bucket size is another subject.
    let other = app.subject_token("11010519491231002x", SubjectType::Natural);
    let res = app
        .http
        .get(format!("{}/subject/me", app.url))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

const CONSOLE: &str = "credgate-console";

/// A staff person over their rate is refused alone: the 429 names them in the audit record,
/// says when to retry, and neither another person nor a machine client of the same role is
/// charged for it.
#[tokio::test]
async fn a_staff_person_has_a_rate_of_their_own() {
    let idp = DemoIdp::start(Options {
        audience: CONSOLE.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let text = format!(
        r#"
[[identity_providers]]
issuer = "{}"
kind = "staff"
audience = "{CONSOLE}"
role_map = {{ security_officer = "security_officer", auditor = "auditor" }}
"#,
        idp.issuer()
    );
    let providers = Config::parse(&text, "ratelimits")
        .unwrap()
        .identity_providers;
    let app = TestApp::spawn_with(|c| {
        c.identity_providers.extend(providers);
        c.rate_limits.per_client_per_minute = 2;
    })
    .await;
    let person = |user: &str| {
        let claims = idp.claims_for(user, &["pwd", "otp"]).unwrap();
        idp.mint(Alg::EdDSA, &claims).unwrap()
    };
    let officer = person("officer");
    let alerts = |token: String| {
        app.http
            .get(format!("{}/admin/alerts", app.url))
            .bearer_auth(token)
            .send()
    };
    for left in [1, 0] {
        let res = alerts(officer.clone()).await.unwrap();
        assert_eq!(res.status(), 200);
        let (policy, state) = rate_headers(&res);
        assert_eq!(policy, "\"person\";q=2;w=60");
        assert!(
            state.starts_with(&format!("\"person\";r={left};t=")),
            "{state}"
        );
    }
    let last = alerts(officer.clone()).await.unwrap();
    retry_after_agrees(&last, "person");
    let id = last.headers()["x-audit-id"].to_str().unwrap().to_string();
    let record = app.record(&id).await;
    assert_eq!(record.status, 429);
    assert_eq!(record.rule.as_deref(), Some("rate-limited"));
    assert!(record.actor.is_some(), "the refused person is named");
    assert_eq!(record.client_id, None);
    // Another person, and a machine client of the officer's role, have buckets of their own.
    let auditor = alerts(person("auditor")).await.unwrap();
    assert_eq!(auditor.status(), 200, "another person is not limited");
    assert!(rate_headers(&auditor).1.starts_with("\"person\";r=1;"));
    let (_, machine) = app.token("security_officer").await;
    let res = alerts(machine).await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(rate_headers(&res).1.starts_with("\"client\";r=1;"));
    let _: Value = res.json().await.unwrap();
}
