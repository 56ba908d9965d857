//! Findings of the hostile review of stop 23, each written as a test first and seen failing:
//! a self-query dropped the deletion requests retention asks for, officers' searches of the
//! log kept no trace of whom they searched for, a lockdown took any text as its reason and any
//! string as a client, a filter with NUL broke an export after its 200, and a header the
//! caller named hop-by-hop still reached the store.

use credgate::domain::SubjectType;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem};

async fn deletion_requests(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE id LIKE 'del_%'")
        .fetch_one(app.state.db.pool())
        .await
        .unwrap()
}

/// A subject reading their own record is a read like any other: the records past retention it
/// withholds are asked to be deleted, exactly as when a regulator reads the same entities.
/// (The self-query also counts itself, a change of its own: the deletions were dropped for it.)
#[tokio::test]
async fn a_self_query_asks_for_the_deletions_a_regulators_read_asks_for() {
    let by_subject = TestApp::spawn().await;
    let by_regulator = TestApp::spawn().await;
    let (_, regulator) = by_regulator.token("regulator").await;
    let entities: Vec<String> = by_subject.sample().entities[..60]
        .iter()
        .map(|e| e["uscc"].as_str().unwrap().to_string())
        .collect();
    for uscc in &entities {
        let me = by_subject.subject_token(uscc, SubjectType::Legal);
        let res = by_subject
            .http
            .get(format!("{}/subject/record", by_subject.url))
            .bearer_auth(&me)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{uscc}");
        let res = by_regulator
            .data(&regulator, &format!("/v1/stores/power/entities/{uscc}"))
            .await;
        assert_eq!(res.status(), 200, "{uscc}");
    }
    let (subject, regulator) = (
        deletion_requests(&by_subject).await,
        deletion_requests(&by_regulator).await,
    );
    assert!(regulator > 0, "the sample holds no record past retention");
    assert_eq!(subject, regulator, "self-queries asked for fewer deletions");
}

/// An officer's look at a person's history is recorded with what was searched: the query, and
/// the subject, so that the auditor's search by that subject finds who looked them up.
#[tokio::test]
async fn an_officers_search_of_the_log_records_whom_it_searched_for() {
    let app = TestApp::spawn().await;
    let (_, officer) = app.token("security_officer").await;
    let (_, auditor) = app.token("auditor").await;
    let person = "150102199302210057";
    for path in [
        format!("/admin/audit?subject={person}&decision=allow"),
        format!("/admin/audit/export?format=csv&subject={person}"),
    ] {
        let res = app
            .http
            .get(format!("{}{path}", app.url))
            .bearer_auth(&officer)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let id = res.headers()["x-audit-id"].to_str().unwrap().to_string();
        let _ = res.bytes().await;
        let r = app.record(&id).await;
        assert_eq!(r.path, path, "the record keeps the query");
        assert_eq!(r.subjects, vec![person.to_string()]);
    }
    let found = app.audit(&auditor, &format!("subject={person}")).await;
    let paths: Vec<&str> = found["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.iter().any(|p| p.starts_with("/admin/audit?subject=")),
        "{paths:?}"
    );
    // A control character in the searched subject is refused, never stored.
    let res = app
        .http
        .get(format!("{}/admin/audit?subject=a%00b", app.url))
        .bearer_auth(&officer)
        .send()
        .await
        .unwrap();
    assert_problem(res, 400).await;
}

/// NUL, a right-to-left override or a zero-width space in a lockdown's reason, a client id with
/// hidden characters, or one that names no registered client: refused, with a problem, and no
/// lockdown stored (on PostgreSQL the NUL used to fail the audit commit and raise a false
/// audit-write alarm).
#[tokio::test]
async fn a_lockdown_takes_a_clean_reason_and_a_registered_client() {
    let app = TestApp::spawn().await;
    let (_, officer) = app.token("security_officer").await;
    let (bank, _) = app
        .add_client_in("financial_institution", "bank-q", None)
        .await;
    let lock = |body: Value| {
        app.http
            .post(format!("{}/admin/lockdown", app.url))
            .bearer_auth(&officer)
            .json(&body)
            .send()
    };
    for (case, body, status) in [
        ("nul", json!({"client_id": bank, "reason": "a\u{0}b"}), 400),
        (
            "bidi",
            json!({"client_id": bank, "reason": "fine\u{202e}enif"}),
            400,
        ),
        (
            "escape",
            json!({"org": "bank-q", "reason": "x\u{1b}[31m"}),
            400,
        ),
        (
            "zero-width id",
            json!({"client_id": format!("{bank}\u{200b}"), "reason": "x"}),
            400,
        ),
        (
            "markup id",
            json!({"client_id": "<b>x</b>\u{1}", "reason": "x"}),
            400,
        ),
        (
            "unknown id",
            json!({"client_id": "cg_00000000000000000000000000000001", "reason": "x"}),
            404,
        ),
    ] {
        let res = lock(body).await.unwrap();
        assert_eq!(res.status(), status, "{case}");
        assert_problem(res, status).await;
    }
    let list: Value = app
        .http
        .get(format!("{}/admin/lockdown", app.url))
        .bearer_auth(&officer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().map(Vec::len), Some(0), "{list}");
    // A multi-line reason is a reason.
    let res = lock(json!({"client_id": bank, "reason": "complaint 42\nsee ticket"}))
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
}

/// An export's headers leave before its first page: a filter the database would refuse must be
/// refused first (400), not break the download off after a 200. The report queue takes
/// `status` like the other queues, and refuses what it cannot answer.
#[tokio::test]
async fn filters_are_checked_before_an_answer_starts() {
    let app = TestApp::spawn().await;
    let (_, officer) = app.token("security_officer").await;
    for q in ["org=a%00", "client=%01", "store=x%7F", "subject=%1b"] {
        let res = app
            .http
            .get(format!("{}/admin/audit/export?format=csv&{q}", app.url))
            .bearer_auth(&officer)
            .send()
            .await
            .unwrap();
        assert_problem(res, 400).await;
    }
    let (_, handler) = app.token("objection_handler").await;
    let filed = app
        .http
        .post(format!("{}/public/reports", app.url))
        .json(&json!({"about": "bank-x", "category": "other", "description": "they read files"}))
        .send()
        .await
        .unwrap();
    assert_eq!(filed.status(), 201);
    let list = |q: &'static str| {
        app.http
            .get(format!("{}/admin/reports{q}", app.url))
            .bearer_auth(&handler)
            .send()
    };
    for q in ["?status=%00", "?status=nonsense", "?overdue=true"] {
        assert_problem(list(q).await.unwrap(), 400).await;
    }
    let all: Value = list("").await.unwrap().json().await.unwrap();
    let status = all["items"][0]["status"].as_str().unwrap().to_string();
    let same: Value = app
        .http
        .get(format!("{}/admin/reports?status={status}", app.url))
        .bearer_auth(&handler)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(same["items"].as_array().unwrap().len(), 1);
    let other = if status == "closed" {
        "received"
    } else {
        "closed"
    };
    let none: Value = app
        .http
        .get(format!("{}/admin/reports?status={other}", app.url))
        .bearer_auth(&handler)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(none["items"].as_array().unwrap().len(), 0, "{none}");
}

/// A header the caller names in `Connection` ends at the gateway (RFC 9110 7.6.1), even one the
/// allow-list passes; and the store is not told a scheme the gateway does not know.
#[tokio::test]
async fn headers_the_caller_names_hop_by_hop_stop_at_the_gateway() {
    let app = TestApp::spawn().await;
    let (_, bank) = app.token("financial_institution").await;
    let res = app
        .http
        .get(format!("{}/v1/stores/fake/doc/91350100M000100Y43", app.url))
        .bearer_auth(&bank)
        .header("X-Purpose", "risk_control")
        .header("Accept-Language", "zh-CN")
        .header("Accept", "application/json")
        .header("Connection", "keep-alive, Accept-Language")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let seen = app.fake.headers();
    assert!(seen.get("accept-language").is_none(), "{seen:?}");
    assert_eq!(seen["accept"], "application/json", "the others still pass");
    assert!(seen.get("x-forwarded-proto").is_none(), "{seen:?}");
}

/// A change whose value the database cannot store (PostgreSQL refuses NUL in text) is the
/// caller's bad input: refused as such, with no audit-write failure counted and the writer still
/// healthy (it used to raise a false integrity alarm and mark the log unwritable). On SQLite the
/// same value is stored.
#[tokio::test]
async fn a_change_the_database_cannot_store_is_bad_input_not_an_audit_failure() {
    use credgate::audit::{AuditRecord, Deferred, Refusal, Refused};
    let app = TestApp::spawn().await;
    let record = AuditRecord {
        id: format!("au_{}", uuid::Uuid::now_v7().simple()),
        time_us: credgate::storage::now_micros(),
        request_id: "req-unstorable".into(),
        kind: "admin".into(),
        method: "POST".into(),
        path: "/admin/test".into(),
        decision: "allow".into(),
        status: 200,
        client_addr: "127.0.0.1".into(),
        ..Default::default()
    };
    let change = Deferred::new(|conn| {
        Box::pin(async move {
            sqlx::query("SELECT $1")
                .bind("a\u{0}b")
                .fetch_all(&mut *conn)
                .await?;
            Ok(())
        })
    });
    let outcome = app.state.audit.append_with(record, change.change()).await;
    if app.state.db.backend() == credgate::storage::Backend::Postgres {
        assert!(
            matches!(outcome, Err(Refusal::Change(Refused::Unstorable(_)))),
            "{outcome:?}"
        );
    } else {
        assert!(outcome.is_ok(), "{outcome:?}");
    }
    assert!(
        app.state.audit.is_healthy(),
        "the writer counts bad input as a failure"
    );
}
