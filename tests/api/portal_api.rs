//! The subject's own record (`GET /subject/record`), their statements (本人声明) shown with their
//! records to every reader, and consent as evidence (signed receipts that verify offline).
//! Hostile first: another subject's records and ids, forged receipts, oversized and invisible
//! text, unknown fields, the yearly self-query limit.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use credgate::{domain::SubjectType, storage::consents};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem};

fn uscc(app: &TestApp, i: usize) -> String {
    app.sample().entities[i]["uscc"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn post(app: &TestApp, token: &str, path: &str, body: Value) -> reqwest::Response {
    app.http
        .post(format!("{}{path}", app.url))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn get(app: &TestApp, token: &str, path: &str) -> reqwest::Response {
    app.http
        .get(format!("{}{path}", app.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn delete(app: &TestApp, token: &str, path: &str) -> reqwest::Response {
    app.http
        .delete(format!("{}{path}", app.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

fn statement(record_ref: &str, text: &str) -> Value {
    json!({"store": "power", "dataset": "entity", "record_ref": record_ref, "text": text})
}

/// The record as a reader above the public tier sees it (statements are not shown to the
/// public, which reads the disclosure minimum only).
async fn reader_entity(app: &TestApp, uscc: &str) -> Value {
    let (_, regulator) = app.token("regulator").await;
    let res = app
        .data(&regulator, &format!("/v1/stores/power/entities/{uscc}"))
        .await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

async fn public_entity(app: &TestApp, uscc: &str) -> Value {
    let res = app
        .http
        .get(format!("{}/public/stores/power/entities/{uscc}", app.url))
        .header("X-Purpose", "public_disclosure")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

#[tokio::test]
async fn a_statement_is_shown_with_the_record_to_every_reader_until_withdrawn() {
    let app = TestApp::spawn().await;
    let (mine, theirs) = (uscc(&app, 0), uscc(&app, 1));
    let me = app.subject_token(&mine, SubjectType::Legal);
    let text = "该处罚已于2025年整改完毕，详见整改报告。";
    let res = post(&app, &me, "/subject/statements", statement(&mine, text)).await;
    assert_eq!(res.status(), 201);
    let filed: Value = res.json().await.unwrap();
    let id = filed["id"].as_str().unwrap().to_string();
    assert_eq!(filed["status"], "active");

    // The public tier does not see it; a regulator and a bank each see it on my record, on
    // mine only.
    let public = public_entity(&app, &mine).await;
    assert!(public.get("_statements").is_none(), "{public}");
    assert!(!public.to_string().contains(text), "{public}");
    let doc = reader_entity(&app, &mine).await;
    assert_eq!(doc["_statements"][0]["text"], text, "{doc}");
    assert_eq!(doc["_statements"][0]["id"], id.as_str());
    assert!(doc.get("_objections").is_none(), "{doc}");
    assert!(
        public_entity(&app, &theirs)
            .await
            .get("_statements")
            .is_none()
    );
    let (_, bank) = app.token("financial_institution").await;
    let doc: Value = app
        .data(&bank, &format!("/v1/stores/power/entities/{mine}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(doc["_statements"][0]["text"], text);
    let list: Value = app
        .data(&bank, "/v1/stores/power/entities?page_size=100")
        .await
        .json()
        .await
        .unwrap();
    // Filed on `entity`, it is not on the list dataset's rows (see the test below).
    let rows = list["items"].as_array().unwrap();
    assert!(rows.iter().all(|r| r.get("_statements").is_none()));

    let listed: Value = get(&app, &me, "/subject/statements")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"][0]["id"], id.as_str());

    // Another subject cannot withdraw it; I can, once.
    let them = app.subject_token(&theirs, SubjectType::Legal);
    let path = format!("/subject/statements/{id}");
    assert_problem(delete(&app, &them, &path).await, 404).await;
    assert_eq!(
        reader_entity(&app, &mine).await["_statements"][0]["id"],
        id.as_str()
    );
    assert_eq!(delete(&app, &me, &path).await.status(), 204);
    assert_problem(delete(&app, &me, &path).await, 404).await;
    let doc = reader_entity(&app, &mine).await;
    assert!(doc.get("_statements").is_none(), "withdrawn: {doc}");
    let listed: Value = get(&app, &me, "/subject/statements")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"][0]["status"], "withdrawn");
}

#[tokio::test]
async fn statements_only_on_my_own_records_with_bounded_plain_text() {
    let app = TestApp::spawn().await;
    let (mine, theirs) = (uscc(&app, 0), uscc(&app, 1));
    let me = app.subject_token(&mine, SubjectType::Legal);
    let person_id = app.sample().persons[0]["id_number"]
        .as_str()
        .unwrap()
        .to_string();
    let person = app.subject_token(&person_id, SubjectType::Natural);
    let bad = [
        (&me, statement(&theirs, "not mine")),
        (
            &me,
            json!({"store": "power", "dataset": "person", "record_ref": mine, "text": "x"}),
        ),
        (
            &me,
            json!({"store": "nope", "dataset": "entity", "record_ref": mine, "text": "x"}),
        ),
        (
            &me,
            json!({"store": "power", "dataset": "entity", "record_ref": mine, "text": "x",
                     "status": "active"}),
        ),
        (&me, statement(&mine, &"长".repeat(1001))),
        (&me, statement(&mine, "")),
        (&me, statement(&mine, "a\u{0}b")),
        (&me, statement(&mine, "paid \u{202E}diap")),
        (&me, statement(&mine, "zero\u{200B}width")),
        (
            &person,
            statement(&person_id, "a person's id on a company dataset"),
        ),
        (&person, statement(&mine, "a company's record")),
    ];
    for (token, body) in bad {
        let res = post(&app, token, "/subject/statements", body.clone()).await;
        assert_problem(res, 400).await;
    }
    assert!(
        public_entity(&app, &theirs)
            .await
            .get("_statements")
            .is_none()
    );
    let (_, bank) = app.token("financial_institution").await;
    let res = post(&app, &bank, "/subject/statements", statement(&mine, "x")).await;
    assert_problem(res, 401).await;

    // Bounded: at most three active statements on one record, the longest allowed accepted.
    for i in 0..3 {
        let text = format!("{i}{}", "长".repeat(999));
        let res = post(&app, &me, "/subject/statements", statement(&mine, &text)).await;
        assert_eq!(res.status(), 201);
    }
    let res = post(
        &app,
        &me,
        "/subject/statements",
        statement(&mine, "a fourth"),
    )
    .await;
    assert_problem(res, 409).await;
    let doc = reader_entity(&app, &mine).await;
    let size = doc["_statements"].to_string().len();
    assert!(size <= 8192 + 64, "the annotation is bounded: {size} bytes");
    assert!(
        doc["_statements"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s.get("truncated").is_some())
    );
}

async fn own_record(app: &TestApp, token: &str) -> reqwest::Response {
    get(app, token, "/subject/record").await
}

#[tokio::test]
async fn my_record_is_my_full_record_with_my_statements_and_open_objections() {
    let app = TestApp::spawn().await;
    let mine = uscc(&app, 0);
    let me = app.subject_token(&mine, SubjectType::Legal);
    let sample = app.sample().entities[0].clone();
    post(
        &app,
        &me,
        "/subject/statements",
        statement(&mine, "我的声明"),
    )
    .await;
    let res = post(
        &app,
        &me,
        "/subject/objections",
        json!({"store": "power", "dataset": "entity",
        "record_ref": mine, "field": "registered_capital", "reason": "注册资本已变更"}),
    )
    .await;
    assert_eq!(res.status(), 201);

    let res = own_record(&app, &me).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-objection"], "pending");
    let body: Value = res.json().await.unwrap();
    let entity = &body["sections"]["power.entity"];
    assert_eq!(entity["uscc"], mine.as_str());
    assert_eq!(
        entity["annual_revenue"], sample["annual_revenue"],
        "my own trade secret, clear"
    );
    let rep_id = entity["legal_representative"]["id_number"]
        .as_str()
        .unwrap();
    assert!(
        rep_id.contains('*'),
        "another person's ID number stays masked: {rep_id}"
    );
    assert_eq!(entity["_statements"][0]["text"], "我的声明");
    assert_eq!(entity["_objections"][0]["status"], "submitted");
    assert_eq!(body["statements"][0]["text"], "我的声明");
    assert_eq!(body["objections"][0]["status"], "submitted");
    assert_eq!(
        body["failed"][0]["section"], "down.entity",
        "a failed store is listed"
    );
    assert_eq!(body["self_queries"]["count"], 1);
    assert_eq!(body["self_queries"]["free_per_year"], 2);

    // In my access log, as a self-query; audited with me as actor and as touched subject.
    let log: Value = get(&app, &me, "/subject/access-log")
        .await
        .json()
        .await
        .unwrap();
    let mine_read = log["items"].as_array().unwrap();
    assert!(
        mine_read
            .iter()
            .any(|i| i["purpose"] == "self_query" && i["decision"] == "allow"),
        "{log}"
    );
    let records = credgate::audit::store::page_after(&app.state.db, 0, 100_000)
        .await
        .unwrap();
    let r = records
        .iter()
        .find(|r| r.path == "/subject/record")
        .unwrap();
    assert_eq!(r.actor_subject.as_deref(), Some(mine.as_str()));
    assert!(r.subjects.contains(&mine));
    // Another company's access log does not show my self-query.
    let them = app.subject_token(&uscc(&app, 1), SubjectType::Legal);
    let log: Value = get(&app, &them, "/subject/access-log")
        .await
        .json()
        .await
        .unwrap();
    assert!(
        log["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["purpose"] != "self_query")
    );
    // Only a subject token reads a record as its own.
    let (_, bank) = app.token("financial_institution").await;
    assert_problem(own_record(&app, &bank).await, 401).await;
}

#[tokio::test]
async fn a_person_reads_their_own_id_number_and_phone() {
    let app = TestApp::spawn().await;
    let p = app.sample().persons[1].clone();
    let id = p["id_number"].as_str().unwrap();
    let me = app.subject_token(id, SubjectType::Natural);
    let body: Value = own_record(&app, &me).await.json().await.unwrap();
    let person = &body["sections"]["power.person"];
    assert_eq!(person["id_number"], id, "{body}");
    assert_eq!(person["phone"], p["phone"]);
    assert_eq!(person["records"], p["records"]);
    assert!(body["sections"].get("power.entity").is_none());
}

#[tokio::test]
async fn self_queries_are_counted_per_year_and_past_the_free_number_answer_429() {
    let app = TestApp::spawn().await;
    let mine = uscc(&app, 0);
    let me = app.subject_token(&mine, SubjectType::Legal);
    for n in 1..=2 {
        let body: Value = own_record(&app, &me).await.json().await.unwrap();
        assert_eq!(body["self_queries"]["count"], n);
    }
    let res = own_record(&app, &me).await;
    assert!(res.headers().get("retry-after").is_some());
    let problem = assert_problem(res, 429).await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("2 times") && detail.contains("limit is 2"),
        "{detail}"
    );
    assert!(
        detail.contains("征信业管理条例"),
        "names its source: {detail}"
    );
    assert_eq!(problem["rule"], "self-query-free-per-year");
    // Refused queries are not counted; another subject has their own count.
    assert_problem(own_record(&app, &me).await, 429).await;
    let them = app.subject_token(&uscc(&app, 1), SubjectType::Legal);
    assert_eq!(own_record(&app, &them).await.status(), 200);
    // The refused query is in my access log too, as denied.
    let log: Value = get(&app, &me, "/subject/access-log")
        .await
        .json()
        .await
        .unwrap();
    let denied = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["purpose"] == "self_query" && i["decision"] == "deny")
        .count();
    assert_eq!(denied, 2, "{log}");
    // A new calendar year, a new count.
    app.state.clock.advance_days(366);
    let body: Value = own_record(&app, &me).await.json().await.unwrap();
    assert_eq!(body["self_queries"]["count"], 1, "{body}");
}

fn in_days(d: i64) -> String {
    (time::OffsetDateTime::now_utc() + time::Duration::days(d))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

const NOTICE_SHA256: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

#[tokio::test]
async fn a_consent_receipt_verifies_offline_and_any_changed_byte_fails() {
    let app = TestApp::spawn().await;
    let id = app.sample().persons[1]["id_number"]
        .as_str()
        .unwrap()
        .to_string();
    let me = app.subject_token(&id, SubjectType::Natural);
    let res = post(
        &app,
        &me,
        "/subject/consents",
        json!({"grantee_org": "demo-bank",
        "purpose": "lending", "expires_at": in_days(30), "scope": ["person"],
        "notice_version": "2026.1", "notice_sha256": NOTICE_SHA256.to_uppercase(),
        "separate": true, "ends_with": "business_relationship"}),
    )
    .await;
    assert_eq!(res.status(), 201);
    let c: Value = res.json().await.unwrap();
    assert_eq!(c["scope"], json!(["person"]));
    assert_eq!(c["notice_sha256"], NOTICE_SHA256);
    assert_eq!(c["separate_consent"], true);
    assert_eq!(c["ends_with"], "business_relationship");
    let receipt = c["receipt"].clone();

    // Only the published key: fetched without a token, then no gateway at all. It is a
    // discovery document: anonymous calls write no audit record (no `X-Audit-Id`).
    let res = app
        .http
        .get(format!("{}/subject/consents/receipt-key", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("x-audit-id").is_none(), "unaudited");
    let key: Value = res.json().await.unwrap();
    let public = URL_SAFE_NO_PAD.decode(key["x"].as_str().unwrap()).unwrap();
    assert_eq!(key["kid"], receipt["kid"]);
    let signed = consents::verify_receipt(&receipt, &public).unwrap();
    assert_eq!(signed["id"], c["id"]);
    assert_eq!(signed["subject_id"], id.as_str());
    assert_eq!(signed["notice_sha256"], NOTICE_SHA256);
    assert_eq!(signed["separate_consent"], true);
    // The same check with ring alone, as the procedure in SECURITY.md describes it.
    let mut msg = b"credgate-consent-receipt/v1\n".to_vec();
    msg.extend_from_slice(receipt["payload"].as_str().unwrap().as_bytes());
    let sig = URL_SAFE_NO_PAD
        .decode(receipt["signature"].as_str().unwrap())
        .unwrap();
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &public)
        .verify(&msg, &sig)
        .unwrap();

    // One byte changed anywhere: the payload, the signature, or another key.
    let payload = receipt["payload"].as_str().unwrap();
    let mut r = receipt.clone();
    r["payload"] = json!(payload.replacen("demo-bank", "demo-banl", 1));
    assert_eq!(
        consents::verify_receipt(&r, &public),
        Err(consents::ReceiptError::BadSignature)
    );
    let mut sig2 = sig.clone();
    sig2[10] ^= 1;
    let mut r = receipt.clone();
    r["signature"] = json!(URL_SAFE_NO_PAD.encode(&sig2));
    assert_eq!(
        consents::verify_receipt(&r, &public),
        Err(consents::ReceiptError::BadSignature)
    );
    let stranger = credgate::auth::keys::Ed25519Key::generate().unwrap();
    assert!(consents::verify_receipt(&receipt, &stranger.public).is_err());
    let mut r = receipt.clone();
    r["alg"] = json!("none");
    assert_eq!(
        consents::verify_receipt(&r, &public),
        Err(consents::ReceiptError::Malformed)
    );

    // The receipt stays with the consent; revocation is recorded with who and when.
    let cid = c["id"].as_str().unwrap();
    assert_eq!(
        delete(&app, &me, &format!("/subject/consents/{cid}"))
            .await
            .status(),
        204
    );
    let list: Value = get(&app, &me, "/subject/consents")
        .await
        .json()
        .await
        .unwrap();
    let item = &list["items"][0];
    assert_eq!(item["status"], "revoked");
    assert!(item["revoked_at"].is_string());
    assert_eq!(item["revoked_by"], format!("subject:{id}"));
    assert_eq!(item["receipt"], receipt);
}

#[tokio::test]
async fn consent_evidence_is_validated_and_old_requests_still_work() {
    let app = TestApp::spawn().await;
    let me = app.subject_token("11010519491231002X", SubjectType::Natural);
    let base = json!({"grantee_org": "demo-bank", "purpose": "lending", "expires_at": in_days(30)});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    for body in [
        with("scope", json!(["no_such_dataset"])),
        with("scope", json!([])),
        with("notice_sha256", json!(NOTICE_SHA256)),
        with("notice_version", json!("v1; DROP TABLE")),
        with("ends_with", json!("forever")),
        with("separate", json!("yes")),
        with("receipt", json!("mine")),
        with("revoked_by", json!("someone")),
    ] {
        assert_problem(post(&app, &me, "/subject/consents", body).await, 400).await;
    }
    let mut bad_hash = with("notice_version", json!("1"));
    bad_hash["notice_sha256"] = json!("abc");
    assert_problem(post(&app, &me, "/subject/consents", bad_hash).await, 400).await;
    // The request DESIGN.md names still grants, with a receipt.
    let res = post(&app, &me, "/subject/consents", base).await;
    assert_eq!(res.status(), 201);
    let c: Value = res.json().await.unwrap();
    assert!(c["receipt"]["signature"].is_string());
    assert_eq!(c["ends_with"], "expiry");
    assert_eq!(c["scope"], Value::Null);
}

#[tokio::test]
async fn a_consent_reaches_only_the_datasets_in_its_scope() {
    let app = TestApp::spawn().await;
    let id = app.sample().persons[1]["id_number"]
        .as_str()
        .unwrap()
        .to_string();
    let me = app.subject_token(&id, SubjectType::Natural);
    let bank = app
        .token_in("financial_institution", "demo-bank", None)
        .await;
    let read = |consent: String| {
        let (app, bank, id) = (&app, bank.clone(), id.clone());
        async move {
            app.http
                .get(format!("{}/v1/stores/power/persons/{id}", app.url))
                .bearer_auth(&bank)
                .header("X-Purpose", "lending")
                .header("X-Consent", consent)
                .send()
                .await
                .unwrap()
        }
    };
    let grant = |scope: Value| {
        let body = json!({"grantee_org": "demo-bank", "purpose": "lending",
                          "expires_at": in_days(30), "scope": scope, "separate": true});
        let (app, me) = (&app, me.clone());
        async move {
            let c: Value = post(app, &me, "/subject/consents", body)
                .await
                .json()
                .await
                .unwrap();
            c["id"].as_str().unwrap().to_string()
        }
    };
    let elsewhere = grant(json!(["entity"])).await;
    let body = assert_problem(read(elsewhere).await, 403).await;
    assert_eq!(body["rule"], "consent-invalid");
    let covering = grant(json!(["person", "entity"])).await;
    assert_eq!(read(covering).await.status(), 200);
}

#[tokio::test]
async fn a_statement_filed_on_one_replica_is_shown_by_the_other_within_a_second() {
    let app = TestApp::spawn().await;
    let other = app.sibling().await;
    let mine = uscc(&app, 0);
    let me = app.subject_token(&mine, SubjectType::Legal);
    let res = post(
        &app,
        &me,
        "/subject/statements",
        statement(&mine, "on replica one"),
    )
    .await;
    assert_eq!(res.status(), 201);
    // Read by a regulator: the public tier is not shown statements.
    let (_, regulator) = app.token("regulator").await;
    let url = format!("{}/v1/stores/power/entities/{mine}", other.url);
    let started = std::time::Instant::now();
    loop {
        let doc: Value = app
            .http
            .get(&url)
            .bearer_auth(&regulator)
            .header("X-Purpose", "supervision")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if doc["_statements"][0]["text"] == "on replica one" {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(3),
            "not shown: {doc}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The free number is a policy value with its source beside it: a policy that allows one a
/// year, from its own rule, is what the count and the 429 say after a reload.
#[tokio::test]
async fn the_free_self_query_number_and_its_source_come_from_the_policy() {
    let app = TestApp::spawn().await;
    let purposes = app.dir.path().join("policies/purposes.toml");
    let text = std::fs::read_to_string(&purposes)
        .unwrap()
        .replace("free_per_year = 2", "free_per_year = 1")
        .replace(
            "free_per_year_source = \"征信业管理条例 art. 17\"",
            "free_per_year_source = \"a regional rule, art. 9\"",
        );
    assert!(text.contains("regional rule"));
    std::fs::write(&purposes, text).unwrap();
    let (_, admin) = app.token("system_admin").await;
    let res = app
        .http
        .post(format!("{}/admin/policies/reload", app.url))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    let me = app.subject_token(&uscc(&app, 0), SubjectType::Legal);
    let body: Value = own_record(&app, &me).await.json().await.unwrap();
    assert_eq!(body["self_queries"]["free_per_year"], 1, "{body}");
    assert_eq!(body["self_queries"]["source"], "a regional rule, art. 9");
    let problem = assert_problem(own_record(&app, &me).await, 429).await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("limit is 1") && detail.contains("a regional rule, art. 9"),
        "{detail}"
    );
}

#[tokio::test]
async fn a_statement_naming_someone_else_is_refused_and_shows_only_on_its_dataset() {
    let app = TestApp::spawn().await;
    let (mine, theirs) = (uscc(&app, 0), uscc(&app, 1));
    let me = app.subject_token(&mine, SubjectType::Legal);
    let person_id = app.sample().persons[0]["id_number"]
        .as_str()
        .unwrap()
        .to_string();
    let lower = person_id.to_lowercase();
    for text in [
        format!("法定代表人身份证{person_id}"),
        format!("id:{lower}"),
        "联系电话13812345678".to_string(),
        "call 138 1234 5678".to_string(),
        "call 138-1234-5678".to_string(),
        "电话１３８１２３４５６７８".to_string(),
        format!("与{theirs}有关"),
    ] {
        let res = post(&app, &me, "/subject/statements", statement(&mine, &text)).await;
        let body = assert_problem(res, 400).await;
        let why = body["detail"].as_str().unwrap();
        assert!(
            why.contains("ID number") || why.contains("phone") || why.contains("USCC"),
            "{text}: {body}"
        );
    }
    // Its own USCC may be named.
    let text = format!("本公司{mine}已整改");
    let res = post(&app, &me, "/subject/statements", statement(&mine, &text)).await;
    assert_eq!(res.status(), 201);
    assert_eq!(
        reader_entity(&app, &mine).await["_statements"][0]["text"],
        text
    );
    // Filed on `entity`: not shown on the list dataset's rows.
    let (_, bank) = app.token("financial_institution").await;
    let list: Value = app
        .data(&bank, "/v1/stores/power/entities?page_size=100")
        .await
        .json()
        .await
        .unwrap();
    let rows = list["items"].as_array().unwrap();
    let row = rows.iter().find(|r| r["uscc"] == mine.as_str()).unwrap();
    assert!(row.get("_statements").is_none(), "{row}");
}

/// A self-query whose every section failed answers 502 and uses none of the free queries.
#[tokio::test]
async fn a_self_query_whose_every_section_failed_is_502_and_not_counted() {
    let dead = crate::helpers::dead_addr();
    let app = TestApp::spawn_with(|c| {
        for s in &mut c.stores {
            s.upstream = format!("http://{dead}");
        }
    })
    .await;
    let me = app.subject_token("91350100M000100Y43", SubjectType::Legal);
    for _ in 0..3 {
        assert_problem(own_record(&app, &me).await, 502).await;
    }
    let used = credgate::storage::statements::self_queries(
        &app.state.db,
        &credgate::domain::SubjectId::parse(SubjectType::Legal, "91350100M000100Y43").unwrap(),
        time::OffsetDateTime::now_utc().year().into(),
    )
    .await
    .unwrap();
    assert_eq!(used, 0);
}
