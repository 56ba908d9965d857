//! Whistleblower reports: no token, a receipt to follow, the contact sealed at rest and readable
//! only by handlers, and never in a log line, an audit record or an error message.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{GatewayProcess, TestApp, assert_problem, dead_addr};

const CONTACT: &str = "whistle-7731@example.cn";

#[tokio::test]
async fn a_report_is_filed_without_a_token_followed_by_receipt_and_its_contact_is_sealed() {
    let app = TestApp::spawn().await;
    let url = &app.url;
    // The reporter's client sends ids of its own, which could link the report to its other
    // traffic: they must not be kept.
    let res = app.http.post(format!("{url}/public/reports"))
        .header("X-Request-Id", "reporter-laptop-4411")
        .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .json(&json!({"about": "某电厂", "category": "false_records", "description": "报送数据造假", "reporter_contact": CONTACT}))
        .send().await.unwrap();
    assert_eq!(res.status(), 201);
    let audit_id = res.headers()["x-audit-id"].to_str().unwrap().to_string();
    let r: Value = res.json().await.unwrap();
    let (id, receipt) = (
        r["id"].as_str().unwrap().to_string(),
        r["receipt"].as_str().unwrap().to_string(),
    );
    assert_eq!(receipt.len(), 32);

    let s: Value = app
        .http
        .get(format!("{url}/public/reports/{receipt}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(s["status"], "received");
    assert!(
        s.get("reporter_contact").is_none() && s.get("about").is_none(),
        "the receipt shows status only"
    );
    assert_problem(
        app.http
            .get(format!("{url}/public/reports/{}", "0".repeat(32)))
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;

    // At rest: neither the database nor its log holds the contact, nor the receipt.
    // On PostgreSQL there is no such file: the stored row is read instead.
    if app.state.db.backend() == credgate::storage::Backend::Postgres {
        let row: (String, Option<String>) =
            sqlx::query_as("SELECT receipt_hash, contact_sealed FROM reports WHERE id = $1")
                .bind(&id)
                .fetch_one(app.state.db.pool())
                .await
                .unwrap();
        let text = format!("{row:?}");
        assert!(row.1.is_some(), "the contact is stored, sealed");
        assert!(
            !text.contains(CONTACT) && !text.contains(&receipt),
            "{text}"
        );
    }
    for f in ["credgate.db", "credgate.db-wal"] {
        if app.state.db.backend() == credgate::storage::Backend::Postgres {
            break;
        }
        // The database file must be there to be read; its WAL may have been checkpointed away.
        let bytes = std::fs::read(app.dir.path().join(f)).unwrap_or_else(|e| {
            assert!(f.ends_with("-wal"), "{f}: {e}");
            Vec::new()
        });
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(CONTACT), "{f} holds the contact in clear");
        assert!(!text.contains(&receipt), "{f} holds the receipt in clear");
    }
    // The audit record of the filing: no address, no contact.
    let rec = app.record(&audit_id).await;
    assert_eq!(rec.client_addr, "withheld");
    assert_eq!(rec.caller_request_id, None, "the reporter's request id is not kept");
    assert_eq!(rec.trace_id, None, "the reporter's trace id is not kept");
    assert!(!serde_json::to_string(&rec).unwrap().contains(CONTACT));

    // Handlers read it back; nobody else does.
    let (_, handler) = app.token("objection_handler").await;
    let full: Value = app
        .http
        .get(format!("{url}/admin/reports/{id}"))
        .bearer_auth(&handler)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(full["reporter_contact"], CONTACT);
    for role in ["security_officer", "regulator"] {
        let (_, t) = app.token(role).await;
        assert_problem(
            app.http
                .get(format!("{url}/admin/reports/{id}"))
                .bearer_auth(&t)
                .send()
                .await
                .unwrap(),
            403,
        )
        .await;
    }
    let list: Value = app
        .http
        .get(format!("{url}/admin/reports"))
        .bearer_auth(&handler)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        !list.to_string().contains(CONTACT),
        "lists do not open contacts"
    );

    let step = |to: &'static str| {
        app.http
            .post(format!("{url}/admin/reports/{id}/transitions"))
            .bearer_auth(&handler)
            .json(&json!({"to": to}))
            .send()
    };
    assert_problem(step("received").await.unwrap(), 409).await;
    assert_eq!(step("investigating").await.unwrap().status(), 200);
    assert_eq!(step("closed").await.unwrap().status(), 200);
    let s: Value = app
        .http
        .get(format!("{url}/public/reports/{receipt}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(s["status"], "closed");

    // A malformed filing is refused without echoing what was sent.
    let res = app
        .http
        .post(format!("{url}/public/reports"))
        .header("content-type", "application/json")
        .body(format!(
            "{{\"about\": 1, \"reporter_contact\": \"{CONTACT}\""
        ))
        .send()
        .await
        .unwrap();
    let p = assert_problem(res, 400).await;
    assert!(!p.to_string().contains(CONTACT));
}

#[tokio::test]
async fn filings_are_rate_limited_per_address() {
    let app = TestApp::spawn_with(|c| c.rate_limits.filings_per_address_per_minute = 2).await;
    let mut codes = vec![];
    for _ in 0..3 {
        let res = app
            .http
            .post(format!("{}/public/reports", app.url))
            .json(&json!({"about": "x", "category": "other", "description": "y"}))
            .send()
            .await
            .unwrap();
        codes.push(res.status().as_u16());
    }
    assert_eq!(codes, [201, 201, 429]);
}

#[tokio::test]
async fn no_log_line_of_a_running_gateway_contains_the_contact() {
    let mut gateway = GatewayProcess::prepare(dead_addr(), dead_addr());
    let log = gateway.dir.path().join("gateway.log");
    gateway.start("trace", Some(&log)).await;
    let url = gateway.url.clone();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let res = http.post(format!("{url}/public/reports"))
        .json(&json!({"about": "x", "category": "fraud", "description": "y", "reporter_contact": CONTACT}))
        .send().await.unwrap();
    assert_eq!(res.status(), 201);
    let bad = http
        .post(format!("{url}/public/reports"))
        .header("content-type", "application/json")
        .body(format!(
            "{{\"reporter_contact\": \"{CONTACT}\", \"category\": 5}}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    // The refused request was logged to its end: its answer, then its audit record.
    crate::helpers::wait_until(
        "the refused request's audit record is logged",
        Duration::from_secs(30),
        || async {
            let logs = std::fs::read_to_string(&log).unwrap();
            logs.find("status=400")
                .is_some_and(|i| logs[i..].contains("INSERT INTO audit_log"))
        },
    )
    .await;
    gateway.kill();
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(
        logs.contains("/public/reports"),
        "the gateway did log the requests"
    );
    assert!(!logs.contains(CONTACT), "a log line contains the contact");
}

#[tokio::test]
async fn a_move_from_a_stale_status_or_with_an_oversized_note_changes_nothing() {
    use credgate::workflows::{
        events::history,
        machine::{Actor, Move},
        reports::{MACHINE, Status},
    };
    let app = TestApp::spawn().await;
    let res = app
        .http
        .post(format!("{}/public/reports", app.url))
        .json(&json!({"about": "x", "category": "other", "description": "y"}))
        .send()
        .await
        .unwrap();
    let id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, handler) = app.token("objection_handler").await;
    let res = app
        .http
        .post(format!("{}/admin/reports/{id}/transitions", app.url))
        .bearer_auth(&handler)
        .json(&json!({"to": "investigating", "note": "n".repeat(2001)}))
        .send()
        .await
        .unwrap();
    assert_problem(res, 400).await;
    assert_eq!(
        history(&app.state.db, "report", &id).await.unwrap().len(),
        1,
        "nothing recorded"
    );

    // Another handler moved it first: this move, based on what it read before, must not land.
    let mut tx = app.state.db.pool().begin().await.unwrap();
    let stale = Move {
        id: id.clone(),
        from: Status::Investigating,
        to: Status::Closed,
        by: Actor::Handler,
        actor: "late".into(),
        note: None,
        at: 1,
    };
    let moved = MACHINE.apply_in(&mut tx, &stale).await.unwrap();
    tx.commit().await.unwrap();
    assert!(!moved);
    assert_eq!(
        history(&app.state.db, "report", &id).await.unwrap().len(),
        1
    );
    let s: Value = app
        .http
        .get(format!("{}/admin/reports/{id}", app.url))
        .bearer_auth(&handler)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(s["status"], "received");
}
