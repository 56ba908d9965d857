//! Objections end to end: every transition (legal and illegal), deadlines on a clock the test
//! moves, marking in direct, list and profile answers, delivery through the outbox with the
//! store down then up (and a second gateway on the same storage), and cross-subject attempts.

use std::time::Duration;

use credgate::domain::SubjectType;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem, wait_until};

struct Ctx {
    app: TestApp,
    uscc: String,
    subject: String,
    handler: String,
}

async fn setup() -> Ctx {
    let app = TestApp::spawn_with(|c| c.workflows.poll_ms = 50).await;
    let uscc = app.sample().entities[0]["uscc"]
        .as_str()
        .unwrap()
        .to_string();
    let subject = app.subject_token(&uscc, SubjectType::Legal);
    let (_, handler) = app.token("objection_handler").await;
    Ctx {
        app,
        uscc,
        subject,
        handler,
    }
}

impl Ctx {
    async fn file(&self, store: &str) -> Value {
        let res = self
            .app
            .http
            .post(format!("{}/subject/objections", self.app.url))
            .bearer_auth(&self.subject)
            .json(
                &json!({"store": store, "dataset": "entity", "record_ref": self.uscc,
                          "field": "registered_capital", "reason": "注册资本已于2025年变更",
                          "requested_correction": "50000000"}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        res.json().await.unwrap()
    }

    async fn move_to(&self, id: &str, to: &str) -> reqwest::Response {
        self.app
            .http
            .post(format!(
                "{}/admin/objections/{id}/transitions",
                self.app.url
            ))
            .bearer_auth(&self.handler)
            .json(&json!({"to": to, "note": format!("moved to {to}")}))
            .send()
            .await
            .unwrap()
    }

    async fn get(&self, id: &str) -> Value {
        let res = self
            .app
            .http
            .get(format!("{}/admin/objections/{id}", self.app.url))
            .bearer_auth(&self.handler)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res.json().await.unwrap()
    }

    async fn wait_status(&self, id: &str, status: &str) -> Value {
        let what = format!("objection {id} becomes {status}");
        wait_until(&what, Duration::from_secs(30), || async {
            self.get(id).await["status"] == status
        })
        .await;
        self.get(id).await
    }
}

#[tokio::test]
async fn the_whole_path_with_every_illegal_step_refused_and_the_history_kept() {
    let c = setup().await;
    let o = c.file("power").await;
    let id = o["id"].as_str().unwrap().to_string();
    assert_eq!(o["status"], "submitted");
    assert_eq!(o["due_at"], o["accept_due_at"]);

    // Illegal from submitted: 409, nothing changes.
    for to in [
        "forwarded",
        "answered",
        "corrected",
        "closed",
        "withdrawn",
        "submitted",
    ] {
        assert_problem(c.move_to(&id, to).await, 409).await;
    }
    assert_problem(c.move_to(&id, "vanished").await, 400).await;
    assert_eq!(c.get(&id).await["status"], "submitted");
    // The 409 names the moves that are allowed (DESIGN.md).
    let body = assert_problem(c.move_to(&id, "closed").await, 409).await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .ends_with("allowed next states: accepted, rejected"),
        "{body}"
    );

    assert_eq!(c.move_to(&id, "accepted").await.status(), 200);
    // The outbox delivers to the sample store; the store's ticket comes back.
    let o = c.wait_status(&id, "forwarded").await;
    assert!(o["store_ticket"].as_str().unwrap().starts_with("T-"));
    for to in ["accepted", "corrected", "closed", "rejected"] {
        assert_problem(c.move_to(&id, to).await, 409).await;
    }
    assert_eq!(c.move_to(&id, "answered").await.status(), 200);
    assert_problem(c.move_to(&id, "closed").await, 409).await;
    assert_eq!(c.move_to(&id, "corrected").await.status(), 200);
    assert_problem(c.move_to(&id, "upheld").await, 409).await;
    assert_eq!(c.move_to(&id, "closed").await.status(), 200);
    for to in ["accepted", "withdrawn", "answered"] {
        assert_problem(c.move_to(&id, to).await, 409).await;
    }
    let o = c.get(&id).await;
    assert_eq!(o["outcome"], "corrected");
    let steps: Vec<&str> = o["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["to"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "submitted",
            "accepted",
            "forwarded",
            "answered",
            "corrected",
            "closed"
        ]
    );
    assert!(
        o["history"][1]["by"].as_str().unwrap().starts_with("cg_"),
        "who"
    );
    assert_eq!(o["history"][3]["note"], "moved to answered");

    // The subject sees the same history of their own objection.
    let mine: Value = c
        .app
        .http
        .get(format!("{}/subject/objections/{id}", c.app.url))
        .bearer_auth(&c.subject)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(mine["history"].as_array().unwrap().len(), 6);
}

#[tokio::test]
async fn rejection_needs_a_reason_and_a_subject_may_withdraw_until_decided() {
    let c = setup().await;
    let a = c.file("power").await["id"].as_str().unwrap().to_string();
    let res = c
        .app
        .http
        .post(format!("{}/admin/objections/{a}/transitions", c.app.url))
        .bearer_auth(&c.handler)
        .json(&json!({"to": "rejected"}))
        .send()
        .await
        .unwrap();
    assert_problem(res, 400).await;
    assert_eq!(c.move_to(&a, "rejected").await.status(), 200);
    let res = c
        .app
        .http
        .post(format!("{}/subject/objections/{a}/withdraw", c.app.url))
        .bearer_auth(&c.subject)
        .send()
        .await
        .unwrap();
    assert_problem(res, 409).await;

    let b = c.file("power").await["id"].as_str().unwrap().to_string();
    let res = c
        .app
        .http
        .post(format!("{}/subject/objections/{b}/withdraw", c.app.url))
        .bearer_auth(&c.subject)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(c.get(&b).await["status"], "withdrawn");
    assert_problem(c.move_to(&b, "accepted").await, 409).await;
}

#[tokio::test]
async fn deadlines_follow_working_days_and_overdue_ones_are_listed_and_alerted() {
    let c = setup().await;
    let o = c.file("power").await;
    let id = o["id"].as_str().unwrap();
    let created = time::OffsetDateTime::parse(
        o["created_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let accept = time::OffsetDateTime::parse(
        o["accept_due_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let decide = time::OffsetDateTime::parse(
        o["decide_due_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!((decide - created).whole_days(), 20);
    let span = (accept - created).whole_days();
    assert!(
        (3..=5).contains(&span),
        "three working days span {span} calendar days"
    );
    assert!(accept.weekday().number_from_monday() <= 5);

    // Tokens live on the same clock: six days on, the handler needs a fresh one.
    let handler = std::cell::RefCell::new(c.handler.clone());
    let list = |q: &'static str| {
        let app = &c.app;
        let h = handler.borrow().clone();
        async move {
            app.http
                .get(format!("{}/admin/objections?{q}", app.url))
                .bearer_auth(h)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(list("overdue=true").await["items"], json!([]));
    c.app.state.clock.advance_days(6);
    *handler.borrow_mut() = c.app.token("objection_handler").await.1;
    let overdue = list("overdue=true").await;
    assert_eq!(overdue["items"][0]["id"], id);
    assert_eq!(overdue["items"][0]["overdue"], true);
    assert_eq!(
        list("status=submitted").await["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(list("status=closed").await["items"], json!([]));

    let (_, officer) = c.app.token("security_officer").await;
    wait_until(
        "an overdue objection raises an alert",
        Duration::from_secs(30),
        || async {
            let alerts: Value = c
                .app
                .http
                .get(format!("{}/admin/alerts", c.app.url))
                .bearer_auth(&officer)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            alerts["items"].as_array().unwrap().iter().any(|a| {
                a["rule"] == "objection-overdue" && a["detail"].as_str().unwrap().contains(id)
            })
        },
    )
    .await;
}

#[tokio::test]
async fn contested_records_are_marked_in_direct_list_and_profile_answers_until_closure() {
    let c = setup().await;
    let (_, bank) = c.app.token("financial_institution").await;
    let direct = format!("/v1/stores/power/entities/{}", c.uscc);
    let res = c.app.data(&bank, &direct).await;
    assert!(res.headers().get("x-objection").is_none());
    assert!(
        res.json::<Value>()
            .await
            .unwrap()
            .get("_objections")
            .is_none()
    );

    let id = c.file("power").await["id"].as_str().unwrap().to_string();
    let res = c.app.data(&bank, &direct).await;
    assert_eq!(res.headers()["x-objection"], "pending");
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["_objections"],
        json!([{"id": id, "status": "submitted", "dataset": "entity", "field": "registered_capital"}])
    );

    let res = c
        .app
        .data(&bank, "/v1/stores/power/entities?page_size=100")
        .await;
    assert_eq!(res.headers()["x-objection"], "pending");
    let body: Value = res.json().await.unwrap();
    let rows = body["items"].as_array().unwrap();
    let marked: Vec<&Value> = rows
        .iter()
        .filter(|r| r.get("_objections").is_some())
        .collect();
    assert_eq!(marked.len(), 1, "only the contested row");
    assert_eq!(marked[0]["uscc"], c.uscc.as_str());

    let res = c
        .app
        .data(&bank, &format!("/v1/subjects/{}/profile", c.uscc))
        .await;
    assert_eq!(res.headers()["x-objection"], "pending");
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["sections"]["power.entity"]["_objections"][0]["id"],
        id.as_str()
    );

    // Decided unresolved and closed: no longer pending, but the statement stays with the record.
    c.move_to(&id, "accepted").await;
    c.wait_status(&id, "forwarded").await;
    for to in ["answered", "unresolved", "closed"] {
        assert_eq!(c.move_to(&id, to).await.status(), 200, "{to}");
    }
    let res = c.app.data(&bank, &direct).await;
    assert!(res.headers().get("x-objection").is_none());
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["_objections"][0]["status"], "unresolved");
    assert_eq!(
        body["_objections"][0]["statement"],
        "注册资本已于2025年变更"
    );
    // Issue 15 item 8: the store's finding stays beside the subject's statement.
    assert_eq!(
        body["_objections"][0]["store_finding"], "moved to answered",
        "{body}"
    );

    // A rejected objection leaves no mark.
    let other = c.app.sample().entities[1]["uscc"]
        .as_str()
        .unwrap()
        .to_string();
    let them = c.app.subject_token(&other, SubjectType::Legal);
    let res = c
        .app
        .http
        .post(format!("{}/subject/objections", c.app.url))
        .bearer_auth(&them)
        .json(
            &json!({"store": "power", "dataset": "entity", "record_ref": other, "reason": "wrong"}),
        )
        .send()
        .await
        .unwrap();
    let oid = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    c.move_to(&oid, "rejected").await;
    let res = c
        .app
        .data(&bank, &format!("/v1/stores/power/entities/{other}"))
        .await;
    assert!(res.headers().get("x-objection").is_none());
}

#[tokio::test]
async fn delivery_survives_a_store_outage_and_a_second_gateway_and_stays_one_ticket() {
    let c = setup().await;
    c.app
        .fake
        .objections_down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let id = c.file("fake").await["id"].as_str().unwrap().to_string();
    assert_eq!(c.move_to(&id, "accepted").await.status(), 200);
    // Several failed attempts while the store is down; the objection waits, accepted.
    wait_until(
        "a delivery was attempted while the store was down",
        Duration::from_secs(30),
        || async {
            c.app
                .fake
                .deliveries
                .load(std::sync::atomic::Ordering::SeqCst)
                >= 1
        },
    )
    .await;
    assert_eq!(c.get(&id).await["status"], "accepted");
    // A second gateway on the same storage (a restart, or a replica) finds the pending delivery.
    let _sibling = c.app.sibling().await;
    c.app
        .fake
        .objections_down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let o = c.wait_status(&id, "forwarded").await;
    assert_eq!(o["store_ticket"], "FT-1");
    // Forwarded means the delivery is recorded done: no deliverer takes it again.
    assert_eq!(
        c.app.fake.tickets.lock().unwrap().len(),
        1,
        "however often delivered, one ticket"
    );
}

#[tokio::test]
async fn redelivery_with_the_same_key_is_the_same_ticket_at_the_sample_store() {
    let c = setup().await;
    let store = c.app.state.stores.get("power").unwrap();
    let body = serde_json::to_vec(&json!({"record_ref": c.uscc, "reason": "x"})).unwrap();
    let a = store
        .deliver_objection("dl_same", body.clone())
        .await
        .unwrap();
    let b = store
        .deliver_objection("dl_same", body.clone())
        .await
        .unwrap();
    let other = store.deliver_objection("dl_other", body).await.unwrap();
    assert_eq!(a, b);
    assert_ne!(a, other);
}

#[tokio::test]
async fn objections_are_only_ever_the_subjects_own_and_the_queue_only_the_handlers() {
    let c = setup().await;
    let id = c.file("power").await["id"].as_str().unwrap().to_string();
    let stranger = c
        .app
        .subject_token("91350100M000100Y43", SubjectType::Legal);
    let url = &c.app.url;
    let res = c
        .app
        .http
        .get(format!("{url}/subject/objections/{id}"))
        .bearer_auth(&stranger)
        .send()
        .await
        .unwrap();
    assert_problem(res, 404).await;
    let res = c
        .app
        .http
        .post(format!("{url}/subject/objections/{id}/withdraw"))
        .bearer_auth(&stranger)
        .send()
        .await
        .unwrap();
    assert_problem(res, 404).await;
    let list: Value = c
        .app
        .http
        .get(format!("{url}/subject/objections"))
        .bearer_auth(&stranger)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"], json!([]));
    // Nobody objects on another's behalf.
    let res = c
        .app
        .http
        .post(format!("{url}/subject/objections"))
        .bearer_auth(&stranger)
        .json(&json!({"store": "power", "dataset": "entity", "record_ref": c.uscc, "reason": "x"}))
        .send()
        .await
        .unwrap();
    assert_problem(res, 400).await;
    for bad in [
        json!({"store": "nowhere", "dataset": "entity", "record_ref": c.uscc, "reason": "x"}),
        json!({"store": "power", "dataset": "entity", "record_ref": c.uscc, "reason": ""}),
        json!({"store": "power", "dataset": "entity", "record_ref": c.uscc, "reason": "x", "extra": 1}),
    ] {
        let res = c
            .app
            .http
            .post(format!("{url}/subject/objections"))
            .bearer_auth(&c.subject)
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_problem(res, 400).await;
    }
    // Institutions see none of it; officers and banks are not handlers.
    let (_, bank) = c.app.token("financial_institution").await;
    let res = c
        .app
        .http
        .get(format!("{url}/subject/objections"))
        .bearer_auth(&bank)
        .send()
        .await
        .unwrap();
    assert_problem(res, 401).await;
    for role in ["financial_institution", "security_officer", "regulator"] {
        let (_, t) = c.app.token(role).await;
        for path in [
            "/admin/objections".to_string(),
            format!("/admin/objections/{id}"),
        ] {
            let res = c
                .app
                .http
                .get(format!("{url}{path}"))
                .bearer_auth(&t)
                .send()
                .await
                .unwrap();
            assert_problem(res, 403).await;
        }
    }
    let res = c
        .app
        .http
        .get(format!("{url}/admin/objections/ob_nosuch"))
        .bearer_auth(&c.handler)
        .send()
        .await
        .unwrap();
    assert_problem(res, 404).await;
}
