//! The data path: routing, deny-by-default, path tricks, header hygiene and store failures.

use serde_json::Value;

use crate::helpers::{STORE_TOKEN, TestApp, assert_problem};

const USCC: &str = "91350100M000100Y43";

#[tokio::test]
async fn an_allowed_request_reaches_the_sample_store_and_returns_its_json() {
    let app = TestApp::spawn().await;
    let (_, token) = app.token("financial_institution").await;
    let data = app.sample();
    let uscc = data.entities[3]["uscc"].as_str().unwrap();
    let res = app
        .data(&token, &format!("/v1/stores/power/entities/{uscc}"))
        .await;
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("x-request-id"));
    assert_eq!(res.headers()["content-type"], "application/json");
    assert_eq!(res.headers()["cache-control"], "no-store");
    let masked: usize = res.headers()["x-masked-fields"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body: Value = res.json().await.unwrap();
    let clear = &data.entities[3];
    // A bank (T3) gets the record with trade secrets removed and the ID and phone partial.
    assert_eq!(body["uscc"], clear["uscc"]);
    assert_eq!(body["name"], clear["name"]);
    assert_eq!(body["registered_capital"], clear["registered_capital"]);
    for hidden in ["annual_revenue", "major_customers", "contract_prices"] {
        assert!(body.get(hidden).is_none(), "{hidden} released to a bank");
    }
    let id = clear["legal_representative"]["id_number"].as_str().unwrap();
    let shown = body["legal_representative"]["id_number"].as_str().unwrap();
    assert_eq!(shown, format!("{}********{}", &id[..6], &id[14..]));
    assert!(masked >= 5, "masked {masked}");

    let res = app
        .data(&token, "/v1/stores/power/entities?sector=coal&page_size=5")
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let items = body["items"].as_array().unwrap();
    assert!(!items.is_empty() && items.len() <= 5);
    assert!(
        items.iter().all(|r| r["sector"] == "coal"),
        "the query reached the store"
    );
}

#[tokio::test]
async fn a_role_the_policy_does_not_admit_is_denied_naming_the_rule_and_the_store_is_untouched() {
    let app = TestApp::spawn().await;
    let (_, token) = app.token("security_officer").await;
    let res = app
        .data(&token, &format!("/v1/stores/fake/entities/{USCC}"))
        .await;
    let body = assert_problem(res, 403).await;
    assert_eq!(body["rule"], "dataset-not-allowed");
    let (_, token) = app.token("internal_auditor").await;
    let body = assert_problem(
        app.data(&token, &format!("/v1/stores/fake/entities/{USCC}"))
            .await,
        403,
    )
    .await;
    assert_eq!(body["rule"], "unknown-role");
    let (_, bank) = app.token("financial_institution").await;
    let res = app
        .http
        .get(format!("{}/v1/stores/fake/entities/{USCC}", app.url))
        .bearer_auth(&bank)
        .header("X-Purpose", "supervision")
        .send()
        .await
        .unwrap();
    let body = assert_problem(res, 403).await;
    assert_eq!(body["rule"], "purpose-not-allowed");
    assert_eq!(app.fake.hits(), 0);
}

#[tokio::test]
async fn unrouted_paths_and_stores_are_404_without_upstream_contact() {
    let app = TestApp::spawn().await;
    let (_, token) = app.token("regulator").await;
    for path in [
        "/v1/stores/fake/admin/dump",
        "/v1/stores/fake/entities",
        "/v1/stores/fake/entities/91350100M000100Y43/extra",
        "/v1/stores/nosuch/entities/91350100M000100Y43",
    ] {
        assert_problem(app.data(&token, path).await, 404).await;
    }
    let res = app
        .http
        .delete(format!("{}/v1/stores/fake/entities/{USCC}", app.url))
        .bearer_auth(&token)
        .header("X-Purpose", "lending")
        .send()
        .await
        .unwrap();
    assert_problem(res, 404).await;
    assert_eq!(app.fake.hits(), 0);
}

#[tokio::test]
async fn path_tricks_are_refused_before_routing() {
    let app = TestApp::spawn().await;
    let (_, token) = app.token("regulator").await;
    for path in [
        "/v1/stores/fake/entities/../admin",
        "/v1/stores/fake/./entities/91350100M000100Y43",
        "/v1/stores/fake/entities/%2e%2e/admin",
        "/v1/stores/fake/entities%2F91350100M000100Y43",
        "/v1/stores/fake/entities/%2F..%2Fadmin",
        "/v1/stores/fake/entities/91350100M000100Y43%00",
        "/v1/stores/fake/entities/%252e%252e",
        "/v1/stores/fake//entities/91350100M000100Y43",
        "/v1/stores/fake/entities\\..\\admin",
    ] {
        let (status, text) = app.raw_get(path, &token).await;
        assert_eq!(status, 400, "{path}: {text}");
        assert!(text.contains("application/problem+json"), "{path}");
    }
    assert_eq!(app.fake.hits(), 0);
}

#[tokio::test]
async fn invalid_subject_ids_are_400_not_lookups() {
    let app = TestApp::spawn().await;
    let (_, token) = app.token("regulator").await;
    for bad in [
        "91350100M000100Y44",
        "913501",
        "' OR '1'='1",
        "91350100M000100Y4I",
    ] {
        let path = format!("/v1/stores/fake/entities/{}", urlencode(bad));
        let body = assert_problem(app.data(&token, &path).await, 400).await;
        assert_eq!(
            body["type"], "urn:credgate:problem:invalid-subject-id",
            "{bad}"
        );
    }
    let res = app
        .data(&token, "/v1/stores/power/persons/110105194912310021")
        .await;
    assert_problem(res, 400).await;
    let res = app
        .data(&token, "/v1/stores/power/persons/11010519490231002X")
        .await;
    assert_problem(res, 400).await;
    // A subject named in the query is checked too, and may be given only once.
    let res = app
        .data(&token, "/v1/stores/fake/records?uscc=91350100M000100Y44")
        .await;
    assert_problem(res, 400).await;
    let res = app
        .data(
            &token,
            &format!("/v1/stores/fake/records?uscc={USCC}&uscc=91350100M000100Y44"),
        )
        .await;
    assert_problem(res, 400).await;
    assert_eq!(app.fake.hits(), 0);
    let res = app
        .data(&token, &format!("/v1/stores/fake/records?uscc={USCC}"))
        .await;
    assert_eq!(res.status(), 200);
}

fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[tokio::test]
async fn purpose_is_required_and_must_be_known() {
    let app = TestApp::spawn().await;
    let (_, token) = app.token("regulator").await;
    let url = format!("{}/v1/stores/fake/entities/{USCC}", app.url);
    let res = app.http.get(&url).bearer_auth(&token).send().await.unwrap();
    let body = assert_problem(res, 400).await;
    assert!(body["detail"].as_str().unwrap().contains("X-Purpose"));
    let res = app
        .http
        .get(&url)
        .bearer_auth(&token)
        .header("X-Purpose", "curiosity")
        .send()
        .await
        .unwrap();
    assert_problem(res, 400).await;
    assert_eq!(app.fake.hits(), 0);
}

#[tokio::test]
async fn the_store_sees_credgates_credential_and_never_the_callers() {
    let app = TestApp::spawn().await;
    let (_, token) = app.token("regulator").await;
    let res = app
        .http
        .get(format!("{}/v1/stores/fake/entities/{USCC}?x=1", app.url))
        .bearer_auth(&token)
        .header("X-Purpose", "supervision")
        .header("X-Consent", "cs_whatever")
        .header("Cookie", "session=caller-cookie")
        .header("X-Forwarded-For", "6.6.6.6")
        .header("X-Forwarded-Host", "evil.example")
        .header("Forwarded", "for=6.6.6.6")
        .header("X-Real-IP", "6.6.6.6")
        .header("Proxy-Authorization", "Basic eA==")
        .header("Connection", "X-Secret-Hop")
        .header("X-Secret-Hop", "1")
        .header("TE", "trailers")
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let h = app.fake.headers();
    assert_eq!(h["x-store-key"], "fake-store-key");
    assert!(
        h.get("authorization").is_none(),
        "the caller's token stays with us"
    );
    assert!(h.get("cookie").is_none());
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert!(h.get("x-forwarded-host").is_none() && h.get("forwarded").is_none());
    assert!(h.get("x-real-ip").is_none() && h.get("proxy-authorization").is_none());
    assert!(h.get("x-secret-hop").is_none() && h.get("te").is_none());
    assert!(h.get("x-consent").is_none());
    assert_eq!(h["host"].to_str().unwrap(), app.fake_host());
    assert_eq!(h["x-purpose"], "supervision");
    assert_eq!(h["accept"], "application/json");
    assert_eq!(
        res.headers()["x-request-id"],
        h["x-request-id"].to_str().unwrap()
    );
    assert_eq!(app.fake.uri(), format!("/entities/{USCC}?x=1"));
}

#[tokio::test]
async fn the_sample_store_refuses_callers_without_credgates_credential() {
    let app = TestApp::spawn().await;
    let uscc = app.sample().entities[0]["uscc"]
        .as_str()
        .unwrap()
        .to_string();
    let direct = format!("http://{}/entities/{uscc}", app.sample_store);
    assert_eq!(app.http.get(&direct).send().await.unwrap().status(), 401);
    let ok = app
        .http
        .get(&direct)
        .bearer_auth(STORE_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn store_down_is_502_and_slow_is_504() {
    let app = TestApp::spawn().await;
    let (_, token) = app.token("regulator").await;
    let body = assert_problem(
        app.data(&token, &format!("/v1/stores/down/entities/{USCC}"))
            .await,
        502,
    )
    .await;
    assert!(
        !body["detail"].as_str().unwrap().contains("127.0.0.1"),
        "no internals: {body}"
    );
    let started = std::time::Instant::now();
    assert_problem(app.data(&token, "/v1/stores/fake/slow").await, 504).await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "the deadline cut it short"
    );
}

#[tokio::test]
async fn too_large_answers_are_refused_never_truncated() {
    let app = TestApp::spawn().await;
    let (_, token) = app.token("regulator").await;
    for path in ["/v1/stores/fake/huge", "/v1/stores/fake/huge-chunked"] {
        let res = app.data(&token, path).await;
        let text = res.headers()["content-type"].to_str().unwrap().to_string();
        assert_eq!(text, "application/problem+json", "{path}");
        let body = assert_problem(res, 502).await;
        assert!(
            !body.to_string().contains("xxxxxxxx"),
            "{path}: no partial body"
        );
    }
}

#[tokio::test]
async fn store_errors_and_non_json_become_502_without_store_internals() {
    let app = TestApp::spawn().await;
    let (_, token) = app.token("regulator").await;
    let body = assert_problem(app.data(&token, "/v1/stores/fake/boom").await, 502).await;
    assert!(!body.to_string().contains("hunter2") && !body.to_string().contains("store.rs"));
    assert_problem(app.data(&token, "/v1/stores/fake/html").await, 502).await;
    let body = assert_problem(app.data(&token, "/v1/stores/fake/reserved-key").await, 502).await;
    assert!(!body.to_string().contains("91350100M000100Y43"), "{body}");
}

#[tokio::test]
async fn request_bodies_over_the_store_cap_are_413() {
    let app = TestApp::spawn().await;
    let (_, token) = app.token("regulator").await;
    let url = format!("{}/v1/stores/fake/echo", app.url);
    let send = |n: usize| {
        app.http
            .post(&url)
            .bearer_auth(&token)
            .header("X-Purpose", "supervision")
            .header("content-type", "application/json")
            .body(format!("\"{}\"", "a".repeat(n)))
            .send()
    };
    let ok = send(100).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(
        app.fake
            .last_body_len
            .load(std::sync::atomic::Ordering::SeqCst),
        102
    );
    let hits = app.fake.hits();
    assert_problem(send(5000).await.unwrap(), 413).await;
    assert_eq!(app.fake.hits(), hits);
}

impl TestApp {
    fn fake_host(&self) -> String {
        let cfg = self
            .state
            .config
            .stores
            .iter()
            .find(|s| s.name == "fake")
            .unwrap();
        cfg.upstream.trim_start_matches("http://").to_string()
    }
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// One request to the fake store with these extra headers: the answer's status and request
/// id, the headers the store saw and the audit record.
async fn traced(
    app: &TestApp,
    token: &str,
    extra: &[(&str, &[u8])],
) -> (u16, String, http::HeaderMap, credgate::audit::AuditRecord) {
    let mut req = app
        .http
        .get(format!("{}/v1/stores/fake/entities/{USCC}", app.url))
        .bearer_auth(token)
        .header("X-Purpose", "supervision");
    for (k, v) in extra {
        req = req.header(*k, http::HeaderValue::from_bytes(v).unwrap());
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let rid = res.headers()["x-request-id"].to_str().unwrap().to_string();
    let audit_id = res.headers()["x-audit-id"].to_str().unwrap().to_string();
    let body = res.text().await.unwrap();
    for (_, v) in extra {
        let v = String::from_utf8_lossy(v);
        assert!(v.len() < 4 || !body.contains(&*v), "echoed: {v}");
    }
    (status, rid, app.fake.headers(), app.record(&audit_id).await)
}

/// The caller's X-Request-Id and traceparent, attacked: an invalid value is ignored (not
/// recorded, not forwarded), the request is still served, and nothing is echoed.
#[tokio::test]
async fn hostile_request_ids_and_traceparents_are_ignored_and_the_request_served() {
    let app = TestApp::spawn().await;
    let (_, token) = app.token("regulator").await;
    let long_id = "r".repeat(129);
    let long_tp = format!("{TRACEPARENT}{}", "0".repeat(4000));
    let upper = TRACEPARENT.to_uppercase();
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("x-request-id", long_id.into_bytes()),
        ("x-request-id", "请求-7".as_bytes().to_vec()),
        ("x-request-id", b"a\tb".to_vec()),
        ("x-request-id", b"a b".to_vec()),
        ("traceparent", long_tp.into_bytes()),
        ("traceparent", format!("{TRACEPARENT}é").into_bytes()),
        (
            "traceparent",
            TRACEPARENT.replacen("-01", "-\t01", 1).into_bytes(),
        ),
        (
            "traceparent",
            TRACEPARENT.replacen("00", "ff", 1).into_bytes(),
        ),
        (
            "traceparent",
            TRACEPARENT.replace(TRACE, &"0".repeat(32)).into_bytes(),
        ),
        (
            "traceparent",
            TRACEPARENT
                .replace("00f067aa0ba902b7", &"0".repeat(16))
                .into_bytes(),
        ),
        ("traceparent", upper.into_bytes()),
    ];
    for (name, value) in &bad {
        let (status, rid, seen, record) = traced(&app, &token, &[(name, value)]).await;
        let what = String::from_utf8_lossy(value);
        assert_eq!(status, 200, "{name}: {what}");
        assert_eq!(record.caller_request_id, None, "{name}: {what}");
        assert_eq!(record.trace_id, None, "{name}: {what}");
        assert_eq!(
            record.request_id, rid,
            "the gateway's id stays the response's"
        );
        assert!(
            seen.get("traceparent").is_none(),
            "{name}: {what} forwarded"
        );
        assert!(seen.get("tracestate").is_none());
        assert_eq!(seen["x-request-id"].to_str().unwrap(), rid);
        assert!(credgate::audit::chain::verifies(&record));
    }
    // CR/LF cannot even be sent as one header; sent raw, the request line is refused or the
    // value never reaches the gateway as a header (hyper's parser).
    assert!(http::HeaderValue::from_bytes(b"a\r\nx-injected: 1").is_err());
    // Several headers, each valid alone.
    let two: &[(&str, &[u8])] = &[
        ("x-request-id", b"bank-1"),
        ("x-request-id", b"bank-2"),
        ("traceparent", TRACEPARENT.as_bytes()),
        ("traceparent", TRACEPARENT.as_bytes()),
    ];
    let (status, _, seen, record) = traced(&app, &token, two).await;
    assert_eq!(status, 200);
    assert_eq!((record.caller_request_id, record.trace_id), (None, None));
    assert!(seen.get("traceparent").is_none());
    // An invalid tracestate is dropped, the valid traceparent still goes on.
    let (_, _, seen, record) = traced(
        &app,
        &token,
        &[
            ("traceparent", TRACEPARENT.as_bytes()),
            ("tracestate", b"Bad Key=1"),
        ],
    )
    .await;
    assert_eq!(record.trace_id.as_deref(), Some(TRACE));
    assert!(seen.get("tracestate").is_none());
    assert!(seen.get("traceparent").is_some());
}

/// Valid ids: the caller's id is recorded beside ours (the response keeps ours), the trace id
/// is recorded, and the store gets the same trace under a new parent, with the tracestate.
#[tokio::test]
async fn a_callers_ids_are_recorded_and_the_trace_goes_on_to_the_store() {
    let app = TestApp::spawn().await;
    let (_, token) = app.token("regulator").await;
    let (status, rid, seen, record) = traced(
        &app,
        &token,
        &[
            ("x-request-id", b"bank-req-7"),
            ("traceparent", TRACEPARENT.as_bytes()),
            ("tracestate", b"congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert_ne!(rid, "bank-req-7");
    assert_eq!(record.request_id, rid);
    assert_eq!(record.caller_request_id.as_deref(), Some("bank-req-7"));
    assert_eq!(record.trace_id.as_deref(), Some(TRACE));
    assert!(record.hash.starts_with("v4:"), "{}", record.hash);
    assert!(credgate::audit::chain::verifies(&record));
    let tp = seen["traceparent"].to_str().unwrap();
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    assert_eq!((parts[0], parts[1], parts[3]), ("00", TRACE, "01"));
    assert_ne!(
        parts[2], "00f067aa0ba902b7",
        "the gateway's span is the parent"
    );
    assert_ne!(parts[2], "0000000000000000");
    assert_eq!(
        seen["tracestate"],
        "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
    );
    assert_eq!(seen["x-request-id"].to_str().unwrap(), rid);
    // The officer's view names them too.
    let (_, officer) = app.token("security_officer").await;
    let log = app.audit(&officer, "limit=5").await;
    let mine = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["request_id"] == rid.as_str())
        .expect("the record is in the officer's view");
    assert_eq!(mine["caller_request_id"], "bank-req-7");
    assert_eq!(mine["trace_id"], TRACE);
    assert_eq!(mine["legal_basis"], "legal_duty");
}
