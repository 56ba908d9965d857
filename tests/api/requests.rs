//! Subject requests (issue 15 items 2 and 7): a subject asks for repair, correction,
//! restriction or deletion of their own record; a handler accepts or refuses within three
//! working days, finishes within seven, extends once by ten; the subject reads the answer.
//! Hostile: another subject's id, unknown kind and fields, oversized reason, illegal moves,
//! wrong role, a subject token on /admin.

use std::time::Duration;

use credgate::domain::SubjectType;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem};

struct Ctx {
    app: TestApp,
    uscc: String,
    subject: String,
    /// Re-minted when the clock moves: gateway tokens expire on the gateway's clock.
    handler: std::sync::Mutex<String>,
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
        handler: std::sync::Mutex::new(handler),
    }
}

impl Ctx {
    fn handler(&self) -> String {
        self.handler.lock().unwrap().clone()
    }

    /// Moves the gateway's clock, and takes a handler token that is valid at the new time.
    async fn advance_days(&self, days: i64) {
        self.app.state.clock.advance_days(days);
        let (_, token) = self.app.token("objection_handler").await;
        *self.handler.lock().unwrap() = token;
    }

    async fn send(&self, path: &str, token: &str, body: Option<Value>) -> reqwest::Response {
        let url = format!("{}{path}", self.app.url);
        let req = match body {
            Some(b) => self.app.http.post(url).json(&b),
            None => self.app.http.get(url),
        };
        req.bearer_auth(token).send().await.unwrap()
    }

    fn body(&self, kind: &str) -> Value {
        json!({"kind": kind, "store": "power", "dataset": "entity", "record_ref": self.uscc,
               "reason": "处罚已于2025年完成整改，申请信用修复"})
    }

    async fn file(&self, kind: &str) -> Value {
        let res = self
            .send("/subject/requests", &self.subject, Some(self.body(kind)))
            .await;
        assert_eq!(res.status(), 201);
        assert!(res.headers().get("x-audit-id").is_some());
        res.json().await.unwrap()
    }

    async fn move_to(&self, id: &str, body: Value) -> reqwest::Response {
        let path = format!("/admin/requests/{id}/transitions");
        self.send(&path, &self.handler(), Some(body)).await
    }

    async fn get(&self, path: &str, token: &str) -> Value {
        let res = self.send(path, token, None).await;
        assert_eq!(res.status(), 200, "{path}");
        res.json().await.unwrap()
    }
}

fn at(v: &Value) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(
        v.as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
}

/// Calendar days that `working` working days after `from` span (weekends skipped).
fn span(from: time::OffsetDateTime, working: u32) -> i64 {
    let (mut t, mut left) = (from, working);
    while left > 0 {
        t += time::Duration::days(1);
        if t.weekday().number_from_monday() <= 5 {
            left -= 1;
        }
    }
    (t - from).whole_days()
}

#[tokio::test]
async fn a_request_is_accepted_extended_once_and_completed_within_working_days() {
    let c = setup().await;
    let r = c.file("repair").await;
    let id = r["id"].as_str().unwrap().to_string();
    assert_eq!(r["status"], "submitted");
    assert_eq!(r["kind"], "repair");
    let created = at(&r["created_at"]);
    assert_eq!(r["due_at"], r["accept_due_at"]);
    assert_eq!((at(&r["due_at"]) - created).whole_days(), span(created, 3));

    // Accepted: seven working days to finish, from acceptance.
    let res = c
        .move_to(&id, json!({"to": "accepted", "note": "受理"}))
        .await;
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("x-audit-id").is_some());
    let a: Value = res.json().await.unwrap();
    let finish = at(&a["finish_due_at"]);
    assert_eq!(a["due_at"], a["finish_due_at"]);
    let accepted = at(&a["updated_at"]);
    assert_eq!((finish - accepted).whole_days(), span(accepted, 7));

    // Extended once by ten working days; a second extension is 409 naming what is allowed.
    let e: Value = c
        .move_to(
            &id,
            json!({"to": "extended", "note": "需向行业主管部门核实"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(e["status"], "extended");
    assert_eq!(
        (at(&e["finish_due_at"]) - finish).whole_days(),
        span(finish, 10)
    );
    let body = assert_problem(c.move_to(&id, json!({"to": "extended"})).await, 409).await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .ends_with("allowed next states: completed, declined"),
        "{body}"
    );

    let done = json!({"to": "completed", "note": "已修复", "answer": "您的信用修复申请已办结"});
    assert_eq!(c.move_to(&id, done).await.status(), 200);
    let mine = c.get(&format!("/subject/requests/{id}"), &c.subject).await;
    assert_eq!(mine["status"], "completed");
    assert_eq!(mine["outcome"], "completed");
    assert_eq!(mine["answer"], "您的信用修复申请已办结");
    assert_eq!(mine["due_at"], Value::Null);
    let steps: Vec<&str> = mine["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["to"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["submitted", "accepted", "extended", "completed"]);
    let list = c.get("/subject/requests", &c.subject).await;
    assert_eq!(list["items"][0]["id"], id.as_str());
    for to in ["accepted", "declined", "submitted"] {
        assert_problem(c.move_to(&id, json!({"to": to, "note": "x"})).await, 409).await;
    }
}

#[tokio::test]
async fn overdue_requests_are_listed_and_alerted_and_a_refusal_needs_a_reason() {
    let c = setup().await;
    let r = c.file("deletion").await;
    let id = r["id"].as_str().unwrap().to_string();
    let list = |q: &str| {
        let (c, path) = (&c, format!("/admin/requests?{q}"));
        async move { c.get(&path, &c.handler()).await }
    };
    assert_eq!(list("overdue=true").await["items"], json!([]));
    c.advance_days(6).await;
    let overdue = list("overdue=true").await;
    assert_eq!(overdue["items"][0]["id"], id.as_str(), "{overdue}");
    assert_eq!(overdue["items"][0]["subject"], c.uscc.as_str());
    assert_eq!(list("status=accepted").await["items"], json!([]));
    assert_eq!(
        list("status=submitted").await["items"][0]["id"],
        id.as_str()
    );

    let (_, officer) = c.app.token("security_officer").await;
    let mut alerted = false;
    for _ in 0..100 {
        let alerts = c.get("/admin/alerts", &officer).await;
        alerted =
            alerts["items"].as_array().unwrap().iter().any(|a| {
                a["rule"] == "request-overdue" && a["detail"].as_str().unwrap().contains(&id)
            });
        if alerted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(alerted, "an overdue request raises an alert");

    assert_problem(c.move_to(&id, json!({"to": "refused"})).await, 400).await;
    let why = "删除请求不适用：记录仍在法定保存期内";
    assert_eq!(
        c.move_to(&id, json!({"to": "refused", "note": why}))
            .await
            .status(),
        200
    );
    let mine = c.get(&format!("/subject/requests/{id}"), &c.subject).await;
    assert_eq!(
        (mine["status"].as_str(), mine["answer"].as_str()),
        (Some("refused"), Some(why))
    );
    assert_eq!(mine["overdue"], false);
}

#[tokio::test]
async fn hostile_requests_are_refused_and_change_nothing() {
    let c = setup().await;
    let r = c.file("correction").await;
    let id = r["id"].as_str().unwrap().to_string();
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM requests")
            .fetch_one(c.app.state.db.pool())
            .await
            .unwrap()
    };

    // Another subject (even one whose resident id has the same 18 characters' shape) gets 404
    // for the id and an empty list.
    let other = c
        .app
        .subject_token("11010519491231002X", SubjectType::Natural);
    let body = assert_problem(
        c.send(&format!("/subject/requests/{id}"), &other, None)
            .await,
        404,
    )
    .await;
    let missing = assert_problem(
        c.send("/subject/requests/rq_nothing", &other, None).await,
        404,
    )
    .await;
    assert_eq!(
        body["detail"], missing["detail"],
        "another's id answers like a missing one"
    );
    assert_eq!(c.get("/subject/requests", &other).await["items"], json!([]));

    // Unknown kind, unknown field, oversized or control-laden reason, another's record.
    let mut bad = vec![
        c.body("erasure"),
        c.body("repair"),
        c.body("repair"),
        c.body("repair"),
    ];
    bad[1]["priority"] = json!("urgent");
    bad[2]["reason"] = json!("长".repeat(2001));
    bad[3]["reason"] = json!("ok\u{0}");
    let mut theirs = c.body("deletion");
    theirs["record_ref"] = json!(c.app.sample().entities[1]["uscc"]);
    bad.push(theirs);
    let mut nowhere = c.body("repair");
    nowhere["store"] = json!("nowhere");
    bad.push(nowhere);
    for b in bad {
        let res = c
            .send("/subject/requests", &c.subject, Some(b.clone()))
            .await;
        assert_problem(res, 400).await;
    }
    assert_eq!(count().await, 1);

    // Illegal move: 409 naming the allowed ones; unknown status: 400.
    let body = assert_problem(c.move_to(&id, json!({"to": "completed"})).await, 409).await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .ends_with("allowed next states: accepted, refused"),
        "{body}"
    );
    assert_problem(c.move_to(&id, json!({"to": "approved"})).await, 400).await;
    assert_problem(
        c.move_to(&id, json!({"to": "accepted", "by": "me"})).await,
        400,
    )
    .await;
    assert_problem(
        c.move_to("rq_nothing", json!({"to": "accepted"})).await,
        404,
    )
    .await;

    // Wrong role: 403; a subject token on /admin: 401; no token: 401.
    let (_, bank) = c.app.token("financial_institution").await;
    for (path, body) in [
        ("/admin/requests".to_string(), None),
        (format!("/admin/requests/{id}"), None),
        (
            format!("/admin/requests/{id}/transitions"),
            Some(json!({"to": "accepted"})),
        ),
    ] {
        assert_problem(c.send(&path, &bank, body.clone()).await, 403).await;
        assert_problem(c.send(&path, &c.subject, body.clone()).await, 401).await;
    }
    assert_problem(c.send("/subject/requests", &bank, None).await, 401).await;
    let anon = c
        .app
        .http
        .get(format!("{}/subject/requests", c.app.url))
        .send()
        .await
        .unwrap();
    assert_problem(anon, 401).await;
    let still = c.get(&format!("/admin/requests/{id}"), &c.handler()).await;
    assert_eq!(still["status"], "submitted");
    assert_eq!(still["history"].as_array().unwrap().len(), 1);
}

/// Every request route leaves an audit record of its kind (subject or admin).
#[tokio::test]
async fn every_request_route_is_audited() {
    let c = setup().await;
    let r = c.file("restriction").await;
    let id = r["id"].as_str().unwrap();
    let handler = c.handler();
    for (path, token, body, kind) in [
        ("/subject/requests".to_string(), &c.subject, None, "subject"),
        (
            format!("/subject/requests/{id}"),
            &c.subject,
            None,
            "subject",
        ),
        ("/admin/requests".to_string(), &handler, None, "admin"),
        (format!("/admin/requests/{id}"), &handler, None, "admin"),
        (
            format!("/admin/requests/{id}/transitions"),
            &handler,
            Some(json!({"to": "accepted"})),
            "admin",
        ),
    ] {
        let res = c.send(&path, token, body).await;
        assert_eq!(res.status(), 200, "{path}");
        let audit_id = res.headers()["x-audit-id"].to_str().unwrap().to_string();
        assert_eq!(c.app.record(&audit_id).await.kind, kind, "{path}");
    }
}

/// The entity record as the public and the regulator read it: (body, x-objection header).
async fn read_entity(c: &Ctx, token: Option<&str>) -> (Value, Option<String>) {
    let (path, purpose) = match token {
        None => (
            format!("/public/stores/power/entities/{}", c.uscc),
            "public_disclosure",
        ),
        Some(_) => (
            format!("/v1/stores/power/entities/{}", c.uscc),
            "supervision",
        ),
    };
    let mut req = c
        .app
        .http
        .get(format!("{}{path}", c.app.url))
        .header("X-Purpose", purpose);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), 200);
    let header = res
        .headers()
        .get("x-objection")
        .map(|v| v.to_str().unwrap().to_string());
    (res.json().await.unwrap(), header)
}

/// An open correction marks the record for every reader (`_objections` entry naming the
/// request, `X-Objection: pending`); once completed it is delivered to the store through the
/// outbox, with its kind and answer, and the mark is gone.
#[tokio::test]
async fn an_open_correction_marks_the_record_and_its_completion_is_delivered_to_the_store() {
    let c = setup().await;
    let (_, regulator) = c.app.token("regulator").await;
    let r = c.file("correction").await;
    let id = r["id"].as_str().unwrap().to_string();
    for token in [None, Some(regulator.as_str())] {
        let (doc, header) = read_entity(&c, token).await;
        assert_eq!(header.as_deref(), Some("pending"), "{doc}");
        let marks = doc["_objections"].as_array().expect("marked");
        assert!(
            marks
                .iter()
                .any(|m| m["id"] == id.as_str() && m["request"] == "correction"),
            "{doc}"
        );
    }
    // A deletion request does not mark the record: only repair and correction (a review) do.
    let other = c.file("deletion").await;
    let (doc, _) = read_entity(&c, None).await;
    assert!(!doc.to_string().contains(other["id"].as_str().unwrap()));

    assert_eq!(
        c.move_to(&id, json!({"to": "accepted"})).await.status(),
        200
    );
    let done = json!({"to": "completed", "answer": "已更正注册地址"});
    assert_eq!(c.move_to(&id, done).await.status(), 200);
    let (doc, header) = read_entity(&c, None).await;
    assert!(
        header.is_none() && doc.get("_objections").is_none(),
        "{doc}"
    );

    let mut delivered = None;
    for _ in 0..100 {
        let rows = outbox_rows(&c.app, "rqd_%").await;
        if let Some((p, true)) = rows.into_iter().next() {
            delivered = Some(p);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let p = delivered.expect("delivered to the store");
    assert_eq!(p["kind"], "correction");
    assert_eq!(p["request_id"], id.as_str());
    assert_eq!(p["record_ref"], c.uscc.as_str());
    assert_eq!(p["answer"], "已更正注册地址");
}

/// A subject cannot pile up open requests: past the per-subject cap the filing is 409 and
/// nothing is stored.
#[tokio::test]
async fn open_requests_are_capped_per_subject() {
    let c = setup().await;
    let max = c
        .app
        .state
        .config
        .subject_limits
        .max_open_objections_per_subject as usize;
    for _ in 0..max {
        c.file("repair").await;
    }
    let res = c
        .send("/subject/requests", &c.subject, Some(c.body("repair")))
        .await;
    let body = assert_problem(res, 409).await;
    assert!(
        body["detail"].as_str().unwrap().contains("open requests"),
        "{body}"
    );
    let list = c.get("/subject/requests", &c.subject).await;
    assert_eq!(list["items"].as_array().unwrap().len(), max);
}

async fn outbox_rows(app: &TestApp, like: &str) -> Vec<(Value, bool)> {
    use sqlx::Row;
    sqlx::query("SELECT payload, delivered_at FROM outbox WHERE id LIKE $1")
        .bind(like)
        .fetch_all(app.state.db.pool())
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            let p: String = r.try_get("payload").unwrap();
            let d: Option<i64> = r.try_get("delivered_at").unwrap();
            (serde_json::from_str(&p).unwrap(), d.is_some())
        })
        .collect()
}

/// (status, body) of the entity record as `token` reads it under `purpose` (the public without
/// a token).
async fn read_as(c: &Ctx, token: Option<&str>, purpose: &str, path: &str) -> (u16, Value) {
    let prefix = if token.is_some() { "/v1" } else { "/public" };
    let mut req = c
        .app
        .http
        .get(format!("{}{prefix}/stores/power{path}", c.app.url))
        .header("X-Purpose", purpose);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

/// A completed restriction (issue 15 item 7, PIPL art. 44) withholds the subject's records
/// (every dataset of the store) from institutions reading for other purposes and from the public (as no
/// such record), while a regulator reading for supervision still sees it, marked restricted,
/// and so does the subject; other subjects and other datasets are untouched. A handler lifts
/// it (a note required, only a completed restriction), and the record is released again.
#[tokio::test]
async fn a_completed_restriction_withholds_the_record_until_lifted() {
    let c = setup().await;
    let (_, regulator) = c.app.token("regulator").await;
    let (_, bank) = c.app.token("financial_institution").await;
    let own = format!("/entities/{}", c.uscc);
    let other = format!(
        "/entities/{}",
        c.app.sample().entities[1]["uscc"].as_str().unwrap()
    );
    let r = c.file("restriction").await;
    let id = r["id"].as_str().unwrap().to_string();
    // Filed or accepted is not yet restricted.
    assert_eq!(read_as(&c, Some(&bank), "lending", &own).await.0, 200);
    assert_eq!(
        c.move_to(&id, json!({"to": "accepted"})).await.status(),
        200
    );
    assert_eq!(read_as(&c, None, "public_disclosure", &own).await.0, 200);
    // Lifting what is not completed is refused.
    let early = c.move_to(&id, json!({"to": "lifted", "note": "x"})).await;
    assert_problem(early, 409).await;
    let done = json!({"to": "completed", "answer": "已限制处理"});
    assert_eq!(c.move_to(&id, done).await.status(), 200);

    for (token, purpose) in [
        (Some(bank.as_str()), "lending"),
        (None, "public_disclosure"),
    ] {
        let (status, body) = read_as(&c, token, purpose, &own).await;
        assert_eq!(status, 404, "{purpose}: {body}");
        assert!(!body.to_string().contains(&c.uscc), "{body}");
        assert!(!body.to_string().contains("restrict"), "{body}");
        assert_eq!(read_as(&c, token, purpose, &other).await.0, 200);
    }
    let (status, doc) = read_as(&c, Some(&regulator), "supervision", &own).await;
    assert_eq!(status, 200);
    assert_eq!(doc["uscc"], c.uscc.as_str());
    let marks = doc["_objections"].as_array().expect("marked restricted");
    assert!(
        marks
            .iter()
            .any(|m| m["id"] == id.as_str() && m["status"] == "restricted"),
        "{doc}"
    );
    // The subject reads their own record, marked.
    let mine = c.get("/subject/record", &c.subject).await;
    assert!(mine.to_string().contains("restricted"), "{mine}");
    // A restriction is about the subject's records, not one route: the list (dataset
    // `entity_list`) does not release the row either.
    let (status, list) = read_as(&c, Some(&bank), "lending", "/entities?page_size=100").await;
    assert_eq!(status, 200);
    assert!(!list.to_string().contains(&c.uscc), "{list}");

    // Lifting needs a note; a repair cannot be lifted.
    assert_problem(c.move_to(&id, json!({"to": "lifted"})).await, 400).await;
    let lift = json!({"to": "lifted", "note": "法院裁定已撤销，恢复处理"});
    assert_eq!(c.move_to(&id, lift).await.status(), 200);
    let (status, doc) = read_as(&c, Some(&bank), "lending", &own).await;
    assert_eq!(status, 200, "{doc}");
    assert!(doc.get("_objections").is_none(), "{doc}");
    let (_, doc) = read_as(&c, Some(&regulator), "supervision", &own).await;
    assert!(!doc.to_string().contains("restricted"), "{doc}");
    let seen = c.get(&format!("/subject/requests/{id}"), &c.subject).await;
    assert_eq!(seen["status"], "lifted", "{seen}");
    assert_eq!(seen["answer"], "已限制处理");
    // The subject's history names no handler and shows no handler's note (hostile review);
    // the handlers' view keeps both.
    let steps = seen["history"].as_array().unwrap();
    assert_eq!(steps.len(), 4, "{seen}");
    for step in steps {
        assert!(
            step.get("by").is_none() && step.get("note").is_none(),
            "{step}"
        );
    }
    assert!(!seen.to_string().contains("法院裁定"), "{seen}");
    assert!(!seen.to_string().contains("cg_"), "{seen}");
    let theirs = c.get(&format!("/admin/requests/{id}"), &c.handler()).await;
    assert!(theirs.to_string().contains("法院裁定"));
    assert!(
        theirs["history"][1]["by"]
            .as_str()
            .unwrap()
            .starts_with("cg_")
    );
    // The store is told of the lift through the outbox, as of the restriction.
    let mut lifted = None;
    for _ in 0..100 {
        if let Some((p, true)) = outbox_rows(&c.app, "rql_%").await.into_iter().next() {
            lifted = Some(p);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(lifted.expect("delivered")["kind"], "restriction_lifted");
    let repair = c.file("repair").await;
    let rid = repair["id"].as_str().unwrap();
    c.move_to(rid, json!({"to": "accepted"})).await;
    c.move_to(rid, json!({"to": "completed"})).await;
    let bad = c.move_to(rid, json!({"to": "lifted", "note": "x"})).await;
    assert_problem(bad, 409).await;
}

/// A completed restriction of the subject's `entity` record (the only dataset the portal's
/// request form offers) also withholds the same company's row from the list route `/entities`
/// (dataset `entity_list`), for a bank and on the public door: reading the list must not
/// bypass it (hostile review). A full-history reader still sees the row, marked restricted;
/// other companies' rows stay; the subject's own self-query still shows the record.
#[tokio::test]
async fn a_restricted_entity_is_not_released_through_the_entity_list() {
    let c = setup().await;
    let (_, bank) = c.app.token("financial_institution").await;
    let (_, regulator) = c.app.token("regulator").await;
    let other = c.app.sample().entities[1]["uscc"]
        .as_str()
        .unwrap()
        .to_owned();
    let list = "/entities?page_size=100";
    let (_, before) = read_as(&c, None, "public_disclosure", list).await;
    assert!(before.to_string().contains(&c.uscc), "{before}");
    let r = c.file("restriction").await;
    let id = r["id"].as_str().expect("filed").to_owned();
    for body in [
        json!({"to": "accepted"}),
        json!({"to": "completed", "answer": "限制处理"}),
    ] {
        assert_eq!(c.move_to(&id, body.clone()).await.status(), 200, "{body}");
    }
    let own = format!("/entities/{}", c.uscc);
    assert_eq!(read_as(&c, Some(&bank), "lending", &own).await.0, 404);
    for (token, purpose) in [
        (Some(bank.as_str()), "lending"),
        (None, "public_disclosure"),
    ] {
        let (status, rows) = read_as(&c, token, purpose, list).await;
        assert_eq!(status, 200, "{purpose}: {rows}");
        let text = rows.to_string();
        assert!(
            !text.contains(&c.uscc),
            "{purpose}: the restricted record is released through the list: {rows}"
        );
        assert!(!text.contains("restrict"), "{purpose}: {rows}");
        assert!(text.contains(&other), "{purpose}: other rows stay: {rows}");
    }
    let (status, rows) = read_as(&c, Some(&regulator), "supervision", list).await;
    assert_eq!(status, 200);
    let row = rows["items"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["uscc"] == c.uscc.as_str())
        .unwrap_or_else(|| panic!("a full-history reader sees the row: {rows}"))
        .clone();
    assert!(
        row["_objections"].as_array().is_some_and(|m| m
            .iter()
            .any(|m| m["id"] == id.as_str() && m["status"] == "restricted")),
        "{row}"
    );
    let mine = c.get("/subject/record", &c.subject).await;
    assert!(mine.to_string().contains(&c.uscc), "{mine}");
    assert!(mine.to_string().contains("restricted"), "{mine}");
}

/// Another replica learns of a restriction through the objections signal.
#[tokio::test]
async fn a_restriction_holds_on_a_sibling_replica() {
    let c = setup().await;
    let sibling = c.app.sibling().await;
    let (_, bank) = c.app.token("financial_institution").await;
    let r = c.file("restriction").await;
    let id = r["id"].as_str().unwrap().to_string();
    c.move_to(&id, json!({"to": "accepted"})).await;
    c.move_to(&id, json!({"to": "completed"})).await;
    let url = format!("{}/v1/stores/power/entities/{}", sibling.url, c.uscc);
    let mut last = 0;
    for _ in 0..100 {
        let res = c
            .app
            .http
            .get(&url)
            .bearer_auth(&bank)
            .header("X-Purpose", "lending")
            .send()
            .await
            .unwrap();
        last = res.status().as_u16();
        if last == 404 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(last, 404, "the sibling withholds the restricted record");
}
