//! The audit log: one record per request with the right fields, committed before release,
//! tamper-evident, searchable and exportable by officers, and the subject's own access log.

use credgate::{audit::verify, domain::SubjectType};
use serde_json::{Value, json};
use sqlx::Executor;

use crate::helpers::{TestApp, assert_problem};

fn audit_id(res: &reqwest::Response) -> String {
    res.headers()["x-audit-id"].to_str().unwrap().to_string()
}

#[tokio::test]
async fn every_kind_of_request_leaves_exactly_one_record_with_the_right_fields() {
    let app = TestApp::spawn().await;
    let (bank_id, secret) = app.add_client("financial_institution").await;

    // Token issuance, and a failed login: the secret never enters the log.
    let before = app.record_count().await;
    let res = app.token_for(&bank_id, &secret).await;
    let r = app.record(&audit_id(&res)).await;
    let token = res.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        (r.kind.as_str(), r.decision.as_str(), r.status),
        ("token", "allow", 200)
    );
    assert_eq!(r.client_id.as_deref(), Some(bank_id.as_str()));
    assert_eq!(r.role.as_deref(), Some("financial_institution"));
    let res = app.token_for(&bank_id, "wrong-secret").await;
    let r = app.record(&audit_id(&res)).await;
    assert_eq!(
        (r.decision.as_str(), r.status, r.rule.as_deref()),
        ("deny", 401, Some("invalid-client"))
    );
    assert_eq!(app.record_count().await, before + 2);

    // An allowed data request: who, what, for which purpose, about whom, what was masked.
    let e = &app.sample().entities[5];
    let uscc = e["uscc"].as_str().unwrap();
    let res = app
        .data(&token, &format!("/v1/stores/power/entities/{uscc}"))
        .await;
    assert_eq!(res.status(), 200);
    let r = app.record(&audit_id(&res)).await;
    let body = res.text().await.unwrap();
    assert_eq!(r.kind, "data");
    assert_eq!(r.client_id.as_deref(), Some(bank_id.as_str()));
    assert_eq!(r.org.as_deref(), Some("test-org"));
    assert_eq!(r.purpose.as_deref(), Some("lending"));
    assert_eq!(
        (r.store.as_deref(), r.dataset.as_deref()),
        (Some("power"), Some("entity"))
    );
    // The record's subject, and its legal representative, whose ID number it carries (masked).
    let rep = e["legal_representative"]["id_number"].as_str().unwrap();
    assert_eq!(r.subjects, vec![uscc.to_string(), rep.to_string()]);
    assert_eq!(
        (r.decision.as_str(), r.rule, r.status),
        ("allow", None, 200)
    );
    assert_eq!(r.masked.get("revenue"), Some(&1));
    assert_eq!(r.masked.get("id_number"), Some(&1));
    assert_eq!(r.bytes_out as usize, body.len());
    assert!(r.upstream_us.is_some() && r.total_us >= r.upstream_us.unwrap());
    assert_eq!(r.client_addr, "127.0.0.1");
    assert_eq!(r.method, "GET");
    assert!(!r.request_id.is_empty());

    // A denial names the rule; a list records the subjects of its released rows.
    let res = app
        .http
        .get(format!("{}/v1/stores/power/entities/{uscc}", app.url))
        .bearer_auth(&token)
        .header("X-Purpose", "supervision")
        .send()
        .await
        .unwrap();
    let r = app.record(&audit_id(&res)).await;
    assert_eq!(
        (r.decision.as_str(), r.rule.as_deref(), r.status),
        ("deny", Some("purpose-not-allowed"), 403)
    );
    let res = app
        .data(&token, "/v1/stores/power/entities?page_size=3")
        .await;
    let r = app.record(&audit_id(&res)).await;
    assert_eq!(
        r.subjects.len(),
        6,
        "three entities and their representatives"
    );

    // No token, a path trick, a failed store: recorded too.
    let res = app
        .http
        .get(format!("{}/v1/stores/power/entities/{uscc}", app.url))
        .send()
        .await
        .unwrap();
    let r = app.record(&audit_id(&res)).await;
    assert_eq!((r.decision.as_str(), r.status), ("deny", 401));
    let trick = "/v1/stores/power/entities/..%2F..%2Flists%2Fred";
    let res = app.data(&token, trick).await;
    let status = res.status().as_u16();
    assert!(
        matches!(status, 400 | 404),
        "a path trick is refused: {status}"
    );
    assert_eq!(app.fake.hits(), 0, "and reaches no store");
    let r = app.record(&audit_id(&res)).await;
    assert_eq!(
        (r.decision.as_str(), r.status, r.path.as_str()),
        ("deny", status, trick),
        "recorded as sent"
    );
    let res = app
        .data(&token, &format!("/v1/stores/down/entities/{uscc}"))
        .await;
    let r = app.record(&audit_id(&res)).await;
    assert_eq!(
        (r.decision.as_str(), r.status, r.rule.as_deref()),
        ("error", 502, Some("upstream-failed"))
    );

    // Public, subject and admin requests.
    let res = app
        .http
        .get(format!("{}/public/stores/power/entities/{uscc}", app.url))
        .header("X-Purpose", "public_disclosure")
        .send()
        .await
        .unwrap();
    let r = app.record(&audit_id(&res)).await;
    assert_eq!(
        (r.kind.as_str(), r.role.as_deref(), r.client_id.as_deref()),
        ("public", Some("public"), None)
    );
    let person = app.subject_token("11010519491231002X", SubjectType::Natural);
    let res = app
        .http
        .get(format!("{}/subject/me", app.url))
        .bearer_auth(&person)
        .send()
        .await
        .unwrap();
    let r = app.record(&audit_id(&res)).await;
    assert_eq!(
        (r.kind.as_str(), r.actor_subject.as_deref()),
        ("subject", Some("11010519491231002X"))
    );
    let (_, officer) = app.token("security_officer").await;
    let res = app
        .http
        .get(format!("{}/admin/audit/verify", app.url))
        .bearer_auth(&officer)
        .send()
        .await
        .unwrap();
    let r = app.record(&audit_id(&res)).await;
    assert_eq!(
        (r.kind.as_str(), r.role.as_deref()),
        ("admin", Some("security_officer"))
    );

    // Health checks are not audited; nothing of the secret or the bodies is in the log.
    let n = app.record_count().await;
    app.http
        .get(format!("{}/healthz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(app.record_count().await, n);
    let export = app
        .http
        .get(format!("{}/admin/audit/export?format=ndjson", app.url))
        .bearer_auth(&officer)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!export.contains(&secret) && !export.contains("wrong-secret"));
    assert!(
        !export.contains(e["name"].as_str().unwrap()),
        "no response body in the log"
    );
    assert!(!export.contains(&e["annual_revenue"].to_string()));
}

#[tokio::test]
async fn the_chain_verifies_and_the_table_refuses_update_and_delete() {
    let app = TestApp::spawn_with(|c| c.audit.checkpoint_every = 5).await;
    let (_, token) = app.token("regulator").await;
    for _ in 0..12 {
        app.data(&token, "/v1/stores/power/lists/red").await;
    }
    let report = verify::verify(&app.state.db, &app.state.audit_public_key)
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.records, 13);
    assert!(report.checkpoints >= 2);
    let pool = app.state.db.pool();
    for stmt in [
        "UPDATE audit_log SET org = 'x' WHERE seq = 2",
        "DELETE FROM audit_log WHERE seq = 2",
        "DELETE FROM audit_checkpoints",
    ] {
        refused_as_append_only(pool, stmt).await;
    }
}

/// Runs `stmt`, which the append-only guards must refuse (not fail for another reason).
async fn refused_as_append_only(pool: &sqlx::AnyPool, stmt: &str) {
    let e = pool
        .execute(sqlx::AssertSqlSafe(stmt))
        .await
        .expect_err("refused")
        .to_string();
    assert!(e.contains("is append-only"), "{stmt}: {e}");
}

/// Each writer has its own chain, but a process misconfigured with another's writer id (or a
/// buggy writer) must still not fork it: the database itself refuses a record that does not
/// link to its chain's head, and a second record at one place in a chain.
#[tokio::test]
async fn the_database_refuses_a_record_that_does_not_link_to_the_head() {
    let app = TestApp::spawn().await;
    let (_, token) = app.token("regulator").await;
    for _ in 0..3 {
        app.data(&token, "/v1/stores/power/lists/red").await;
    }
    let copy_of_head = |id: &str, writer: &str, chain_seq: &str, prev_hash: &str| {
        format!(
            "INSERT INTO audit_log (seq, id, time_us, request_id, kind, client_id, org, role, \
             actor_subject, purpose, consent_id, method, path, store, dataset, subjects, decision, \
             rule, masked, status, bytes_out, upstream_us, total_us, client_addr, prev_hash, hash, \
             writer_id, chain_seq) \
             SELECT (SELECT MAX(seq) + 1 FROM audit_log), '{id}', time_us, request_id, kind, \
             client_id, org, role, actor_subject, purpose, consent_id, method, path, store, dataset, \
             subjects, decision, rule, masked, status, bytes_out, upstream_us, total_us, \
             client_addr, {prev_hash}, hash, {writer}, {chain_seq} \
             FROM audit_log WHERE seq = (SELECT MAX(seq) FROM audit_log)"
        )
    };
    let pool = app.state.db.pool();
    // The next place, chained onto the record before the head: what a stale writer would send.
    let stale = pool
        .execute(sqlx::AssertSqlSafe(copy_of_head(
            "au_stale",
            "writer_id",
            "chain_seq + 1",
            "prev_hash",
        )))
        .await;
    let e = stale
        .expect_err("a record that skips the head is refused")
        .to_string();
    assert!(e.contains("does not link to the head"), "{e}");
    // A place already taken is refused too (the chain's unique index, or the link check).
    let taken = pool
        .execute(sqlx::AssertSqlSafe(copy_of_head(
            "au_taken",
            "writer_id",
            "chain_seq",
            "prev_hash",
        )))
        .await
        .expect_err("a place already taken is refused");
    let taken = taken.as_database_error().expect("by the database");
    assert!(
        taken.kind() == sqlx::error::ErrorKind::UniqueViolation
            || taken.message().contains("does not link to the head"),
        "{taken}"
    );
    // Another chain's head is no head of this one: a new chain starts from genesis only.
    for (place, prev) in [("chain_seq + 1", "hash"), ("1", "hash"), ("0", "prev_hash")] {
        let e = pool
            .execute(sqlx::AssertSqlSafe(copy_of_head(
                "au_other",
                "'another-writer'",
                place,
                prev,
            )))
            .await
            .expect_err("a record of another chain linking to this one is refused")
            .to_string();
        assert!(e.contains("does not link to the head"), "{place}: {e}");
    }
    // The same row linked to the head is accepted: the check refuses forks, not appends.
    pool.execute(sqlx::AssertSqlSafe(copy_of_head(
        "au_next",
        "writer_id",
        "chain_seq + 1",
        "hash",
    )))
    .await
    .expect("a record that links to the head is stored");
}

/// Batch sizes either side of the writer's cached statements (up to 64 rows; larger ones are
/// prepared each time), and a cached statement reused with other values: every record is
/// stored, chained and indexed under its subject, and the chain verifies.
#[tokio::test]
async fn batches_of_every_size_are_stored_whole_and_verify() {
    use credgate::audit::{AuditRecord, chain, store};
    let app = TestApp::spawn().await;
    let mut writer = store::WriterConn::new(app.state.db.clone(), "batch-writer");
    let mut known = None;
    // 512: `batch_max`'s default, the largest batch a writer sends.
    let sizes = [1usize, 63, 64, 64, 65, 200, 512, 1];
    let mut n = 0;
    for (b, &size) in sizes.iter().enumerate() {
        let mut records: Vec<AuditRecord> = (0..size)
            .map(|i| {
                n += 1;
                AuditRecord {
                    id: format!("au_batch_{b}_{i}"),
                    time_us: 1_700_000_000_000_000 + n,
                    request_id: format!("req-{b}-{i}"),
                    kind: "data".into(),
                    client_id: Some(format!("client-{}", i % 3)),
                    method: "GET".into(),
                    path: format!("/v1/stores/power/entities/{i}"),
                    subjects: vec![format!("subject-{b}"), format!("row-{n}")],
                    decision: "allow".into(),
                    status: 200,
                    client_addr: "127.0.0.1".into(),
                    ..Default::default()
                }
            })
            .collect();
        store::append(&mut writer, &mut known, &mut records, |head, records| {
            for r in records.iter_mut() {
                r.writer_id = "batch-writer".into();
            }
            chain::link(head.chain_seq, head.hash.clone(), records);
            None
        })
        .await
        .unwrap_or_else(|e| panic!("a batch of {size} is stored: {e}"));
    }
    let report = verify::verify(&app.state.db, &app.state.audit_public_key)
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");
    let chain = report
        .chains
        .iter()
        .find(|c| c.writer_id == "batch-writer")
        .expect("the writer's chain");
    assert_eq!(chain.records, sizes.iter().sum::<usize>() as i64);
    // The index is written behind the path (`audit::indexer`).
    credgate::audit::indexer::catch_up(&app.state.db)
        .await
        .unwrap();
    let pool = app.state.db.pool();
    let entries = index_entries(&app.state.db).await;
    for (b, &size) in sizes.iter().enumerate() {
        let indexed = entries
            .iter()
            .filter(|(s, _)| *s == format!("subject-{b}"))
            .count();
        assert_eq!(indexed, size, "batch {b} of {size}: subject index");
    }
    let last: String = sqlx::query_scalar("SELECT path FROM audit_log ORDER BY seq DESC LIMIT 1")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(last, "/v1/stores/power/entities/0");
}

/// A log of twelve records with a checkpoint every five, whose guards an attacker with database
/// access has dropped.
pub(crate) async fn tamperable() -> TestApp {
    let app = TestApp::spawn_with(|c| c.audit.checkpoint_every = 5).await;
    let (_, token) = app.token("regulator").await;
    for _ in 0..11 {
        app.data(&token, "/v1/stores/power/lists/red").await;
    }
    // Tampering starts from a log whose subject index is complete (`audit::indexer`).
    credgate::audit::indexer::catch_up(&app.state.db)
        .await
        .unwrap();
    drop_guards(&app.state.db).await;
    app
}

/// Verification still catches them.
async fn tampered(tamper: &str) -> verify::ChainVerdict {
    let app = tamperable().await;
    let pool = app.state.db.pool();
    for stmt in tamper.split(';').filter(|s| !s.trim().is_empty()) {
        pool.execute(sqlx::AssertSqlSafe(stmt)).await.unwrap();
    }
    verify::verify(&app.state.db, &app.state.audit_public_key)
        .await
        .unwrap()
}

/// Sets record `seq`'s org and recomputes every hash of its chain from it to the head, as an
/// attacker who knows the encoding would: the chain is consistent in itself, only signatures
/// can tell.
pub(crate) async fn rechain_from(db: &credgate::storage::Db, seq: i64, org: &str) {
    use credgate::audit::{chain, store};
    let target = store::page_after(db, seq - 1, 1).await.unwrap().remove(0);
    let (writer, place) = (target.writer_id.clone(), target.chain_seq);
    let mut records = store::chain_page_after(db, &writer, place - 1, 100_000)
        .await
        .unwrap();
    records[0].org = Some(org.to_string());
    let prev = match store::chain_page_after(db, &writer, place - 2, 1)
        .await
        .unwrap()
        .pop()
    {
        Some(r) if place > 1 => r.hash,
        _ => chain::GENESIS.to_string(),
    };
    chain::link(place - 1, prev, &mut records);
    for r in &records {
        sqlx::query("UPDATE audit_log SET org = $1, prev_hash = $2, hash = $3 WHERE seq = $4")
            .bind(&r.org)
            .bind(&r.prev_hash)
            .bind(&r.hash)
            .bind(r.seq)
            .execute(db.pool())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn an_edited_record_is_found_and_named() {
    let r = tampered("UPDATE audit_log SET org = 'innocent-org' WHERE seq = 4").await;
    assert!(!r.ok);
    assert_eq!(r.first_bad_seq, Some(4));
    assert!(r.first_bad_id.as_deref().unwrap().starts_with("au_"));
    assert!(r.reason.unwrap().contains("edited"));
    // Rewriting its hash and every later one, consistently: the signed checkpoint after it
    // no longer matches.
    let app = tamperable().await;
    let db = &app.state.db;
    rechain_from(db, 4, "innocent-org").await;
    let cp = credgate::audit::store::checkpoints(db)
        .await
        .unwrap()
        .into_iter()
        .find(|cp| cp.seq >= 4)
        .unwrap();
    let r = verify::verify(db, &app.state.audit_public_key)
        .await
        .unwrap();
    assert!(!r.ok);
    assert_eq!(r.first_bad_seq, Some(cp.seq), "{r:?}");
    assert!(r.reason.unwrap().contains("checkpoint"));
}

#[tokio::test]
async fn a_deleted_record_is_found() {
    let r = tampered("DELETE FROM audit_log WHERE seq = 6").await;
    assert!(!r.ok);
    assert_eq!(r.first_bad_seq, Some(7));
}

#[tokio::test]
async fn an_inserted_record_is_found() {
    let r = tampered(
        "UPDATE audit_log SET seq = -seq, chain_seq = -chain_seq WHERE seq >= 9; \
         UPDATE audit_log SET seq = 1 - seq, chain_seq = 1 - chain_seq WHERE seq < 0; \
         INSERT INTO audit_log (seq, id, time_us, request_id, kind, client_id, org, role, actor_subject, purpose, consent_id, method, path, store, dataset, subjects, decision, rule, masked, status, bytes_out, upstream_us, total_us, client_addr, prev_hash, hash, actor, actor_org, legal_basis, caller_request_id, trace_id, writer_id, chain_seq) \
         SELECT 9, 'au_forged', time_us, request_id, kind, client_id, org, role, actor_subject, purpose, consent_id, method, path, store, dataset, subjects, decision, rule, masked, status, bytes_out, upstream_us, total_us, client_addr, prev_hash, hash, actor, actor_org, legal_basis, caller_request_id, trace_id, writer_id, 9 FROM audit_log WHERE seq = 8",
    )
    .await;
    assert!(!r.ok);
    assert_eq!(r.first_bad_id.as_deref(), Some("au_forged"));
}

#[tokio::test]
async fn reordered_records_are_found() {
    // In the log's order (what officers page through and the subject index points at).
    let r = tampered("UPDATE audit_log SET seq = -1 WHERE seq = 3; UPDATE audit_log SET seq = 3 WHERE seq = 4; UPDATE audit_log SET seq = 4 WHERE seq = -1").await;
    assert!(!r.ok);
    assert_eq!(r.first_bad_seq, Some(3));
    // In the chain's order.
    let r = tampered("UPDATE audit_log SET chain_seq = -1 WHERE chain_seq = 3; UPDATE audit_log SET chain_seq = 3 WHERE chain_seq = 4; UPDATE audit_log SET chain_seq = 4 WHERE chain_seq = -1").await;
    assert!(!r.ok);
    assert!(r.reason.unwrap().contains("does not chain"));
    assert!(r.writer_id.is_some(), "the chain is named");
}

#[tokio::test]
async fn a_tail_removed_past_the_last_checkpoint_is_reported() {
    let r = tampered("DELETE FROM audit_log WHERE seq > 7").await;
    assert!(!r.ok, "{r:?}");
    assert!(r.reason.unwrap().contains("removed from the end"));
}

#[tokio::test]
async fn a_forged_checkpoint_is_found() {
    let r = tampered(
        "UPDATE audit_checkpoints SET signature = CASE WHEN substr(signature, 1, 2) = '00' THEN 'ff' ELSE '00' END \
         || substr(signature, 3) WHERE seq = (SELECT MIN(seq) FROM audit_checkpoints)",
    )
    .await;
    assert!(!r.ok);
    assert!(r.reason.unwrap().contains("checkpoint"));
}

#[tokio::test]
async fn when_the_log_cannot_be_written_data_requests_get_503_and_nothing_is_released() {
    let app = TestApp::spawn().await;
    let (_, token) = app.token("regulator").await;
    let e = &app.sample().entities[0];
    let path = format!("/v1/stores/power/entities/{}", e["uscc"].as_str().unwrap());
    assert_eq!(app.data(&token, &path).await.status(), 200);
    app.state
        .db
        .pool()
        .execute("ALTER TABLE audit_log RENAME TO audit_log_gone")
        .await
        .unwrap();

    let res = app.data(&token, &path).await;
    assert!(res.headers().get("x-audit-id").is_none());
    let body = assert_problem(res, 503).await;
    assert_eq!(body["type"], "urn:credgate:problem:audit-unavailable");
    assert!(
        !body.to_string().contains(e["name"].as_str().unwrap()),
        "no data: {body}"
    );
    let res = app
        .http
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .unwrap();
    assert_problem(res, 503).await;

    app.state
        .db
        .pool()
        .execute("ALTER TABLE audit_log_gone RENAME TO audit_log")
        .await
        .unwrap();
    assert_eq!(
        app.data(&token, &path).await.status(),
        200,
        "recovers once the log is writable"
    );
    let report = verify::verify(&app.state.db, &app.state.audit_public_key)
        .await
        .unwrap();
    assert!(report.ok, "nothing half-written: {report:?}");
    assert_eq!(
        app.http
            .get(format!("{}/readyz", app.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn officers_search_with_filters_and_stable_cursor_paging_and_others_are_refused() {
    let app = TestApp::spawn().await;
    let bank = app.token_in("financial_institution", "bank-a", None).await;
    let other = app.token_in("financial_institution", "bank-b", None).await;
    let data = app.sample();
    let u = |i: usize| data.entities[i]["uscc"].as_str().unwrap().to_string();
    for i in 0..5 {
        app.data(&bank, &format!("/v1/stores/power/entities/{}", u(i)))
            .await;
    }
    app.data(&other, &format!("/v1/stores/power/entities/{}", u(0)))
        .await;
    app.http
        .get(format!("{}/v1/stores/power/entities/{}", app.url, u(1)))
        .bearer_auth(&other)
        .header("X-Purpose", "supervision")
        .send()
        .await
        .unwrap();
    let (_, officer) = app.token("security_officer").await;

    let page = app
        .audit(&officer, "org=bank-a&decision=allow&store=power")
        .await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.iter().filter(|r| r["kind"] == "data").count(), 5);
    assert!(items.iter().all(|r| r["org"] == "bank-a"));
    let page = app.audit(&officer, &format!("subject={}", u(0))).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let page = app.audit(&officer, "org=bank-b&decision=deny").await;
    assert_eq!(page["items"][0]["rule"], "purpose-not-allowed");
    // Injection in any filter is just a value that matches nothing.
    for q in [
        "org=%27%20OR%20%271%27%3D%271",
        "client=x%27%3B%20DROP%20TABLE%20audit_log%3B--",
        "subject=%25",
        "store=power%27--",
    ] {
        let page = app.audit(&officer, q).await;
        assert_eq!(page["items"], json!([]), "{q}");
    }
    for q in [
        "decision=maybe",
        "from=yesterday",
        "limit=0",
        "limit=5000",
        "cursor=abc",
        "colour=red",
    ] {
        let res = app
            .http
            .get(format!("{}/admin/audit?{q}", app.url))
            .bearer_auth(&officer)
            .send()
            .await
            .unwrap();
        assert_problem(res, 400).await;
    }
    let res = app
        .http
        .get(format!(
            "{}/admin/audit?from=2000-01-01T00:00:00Z&to=2000-01-02T00:00:00Z",
            app.url
        ))
        .bearer_auth(&officer)
        .send()
        .await
        .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["items"], json!([]));

    // Paging: two by two, stable while new records arrive between pages.
    let first = app.audit(&officer, "org=bank-a&limit=2").await;
    let cursor = first["next_cursor"].as_str().unwrap().to_string();
    for i in 0..3 {
        app.data(&bank, &format!("/v1/stores/power/entities/{}", u(i)))
            .await;
    }
    let second = app
        .audit(&officer, &format!("org=bank-a&limit=2&cursor={cursor}"))
        .await;
    let seqs = |p: &Value| {
        p["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["seq"].as_i64().unwrap())
            .collect::<Vec<_>>()
    };
    let (a, b) = (seqs(&first), seqs(&second));
    assert!(
        a.iter().all(|x| b.iter().all(|y| y < x)),
        "second page strictly older: {a:?} {b:?}"
    );

    for role in ["financial_institution", "objection_handler", "regulator"] {
        let (_, t) = app.token(role).await;
        for path in [
            "/admin/audit",
            "/admin/audit/export",
            "/admin/audit/verify",
            "/admin/alerts",
        ] {
            let res = app
                .http
                .get(format!("{}{path}", app.url))
                .bearer_auth(&t)
                .send()
                .await
                .unwrap();
            assert_problem(res, 403).await;
        }
    }
    let res = app
        .http
        .get(format!("{}/admin/audit", app.url))
        .send()
        .await
        .unwrap();
    assert_problem(res, 401).await;
}

#[tokio::test]
async fn exports_round_trip_and_cannot_be_forged_by_control_characters() {
    let app = TestApp::spawn().await;
    let (_, bank) = app.token("financial_institution").await;
    app.data(&bank, "/v1/stores/power/entities?page_size=2")
        .await;
    // A client id with a newline and a formula: it must stay one line, one cell.
    app.token_for("evil\n{\"decision\":\"allow\"}", "x").await;
    app.http
        .get(format!("{}/v1/stores/power/entities?page_size=1", app.url))
        .bearer_auth(&bank)
        .header("X-Purpose", "lending")
        .header("X-Request-Id", "=HYPERLINK(\"http://x\")")
        .send()
        .await
        .unwrap();
    // The auditor's export holds every record, staff actions included.
    let (_, officer) = app.token("auditor").await;
    let get = |fmt: &str| {
        app.http
            .get(format!("{}/admin/audit/export?format={fmt}", app.url))
            .bearer_auth(&officer)
            .send()
    };
    let nd = get("ndjson").await.unwrap();
    assert_eq!(nd.headers()["content-type"], "application/x-ndjson");
    let nd = nd.text().await.unwrap();
    let lines: Vec<&str> = nd.lines().collect();
    let count = app.record_count().await;
    // The export's own record is committed before its stream starts, so it is included.
    assert_eq!(lines.len(), count, "one line per record");
    let stored = credgate::audit::store::page_after(&app.state.db, 0, 1000)
        .await
        .unwrap();
    for (line, r) in lines.iter().zip(&stored) {
        let parsed: credgate::audit::AuditRecord = serde_json::from_str(line).unwrap();
        assert_eq!(&parsed, r, "round trip");
    }
    let csv = get("csv").await.unwrap().text().await.unwrap();
    let count = app.record_count().await;
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), count);
    assert_eq!(
        csv.lines().count(),
        count + 1,
        "header plus one physical line per record"
    );
    assert!(
        rows.iter()
            .any(|r| r.iter().any(|cell| cell.starts_with("'=HYPERLINK"))),
        "formula defused"
    );
    // The id with a newline is kept as `(malformed)`: nothing of it reaches the export.
    assert!(rows.iter().any(|r| &r[5] == "(malformed)"), "{csv}");
    assert!(!csv.contains("evil"), "{csv}");
    assert_problem(get("xml").await.unwrap(), 400).await;
}

#[tokio::test]
async fn a_subject_sees_who_accessed_their_records_and_only_theirs() {
    let app = TestApp::spawn().await;
    let data = app.sample();
    let mine = data.entities[0]["uscc"].as_str().unwrap();
    let theirs = data.entities[1]["uscc"].as_str().unwrap();
    let bank = app
        .token_in("financial_institution", "nosy-bank", None)
        .await;
    app.data(&bank, &format!("/v1/stores/power/entities/{mine}"))
        .await;
    app.data(&bank, &format!("/v1/stores/power/entities/{theirs}"))
        .await;
    app.http
        .get(format!("{}/v1/stores/power/entities/{mine}", app.url))
        .bearer_auth(&bank)
        .header("X-Purpose", "supervision")
        .send()
        .await
        .unwrap();
    let me = app.subject_token(mine, SubjectType::Legal);
    let res = app
        .http
        .get(format!("{}/subject/access-log", app.url))
        .bearer_auth(&me)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let log: Value = res.json().await.unwrap();
    let items = log["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{log}");
    assert_eq!(items[0]["decision"], "deny");
    assert_eq!(items[1]["org"], "nosy-bank");
    assert_eq!(items[1]["purpose"], "lending");
    assert_eq!(items[1]["dataset"], "entity");
    assert!(items[1]["time"].as_str().unwrap().ends_with('Z'));
    assert!(
        items[1].get("client_id").is_none(),
        "the subject sees the org, not internals"
    );
    let someone = app.subject_token("91350100M000100Y43", SubjectType::Legal);
    let log: Value = app
        .http
        .get(format!("{}/subject/access-log", app.url))
        .bearer_auth(&someone)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(log["items"], json!([]));
    let res = app
        .http
        .get(format!("{}/subject/access-log", app.url))
        .bearer_auth(&bank)
        .send()
        .await
        .unwrap();
    assert_problem(res, 401).await;
}

#[tokio::test]
async fn a_lockdown_stops_a_client_or_a_whole_org_at_once_and_lifting_it_restores_access() {
    let app = TestApp::spawn().await;
    let (bank_id, secret) = app
        .add_client_in("financial_institution", "bank-z", None)
        .await;
    let token: Value = app.token_for(&bank_id, &secret).await.json().await.unwrap();
    let token = token["access_token"].as_str().unwrap().to_string();
    let colleague = app.token_in("financial_institution", "bank-z", None).await;
    let path = "/v1/stores/power/lists/red";
    let (_, officer) = app.token("security_officer").await;
    let lock = |body: Value| {
        app.http
            .post(format!("{}/admin/lockdown", app.url))
            .bearer_auth(&officer)
            .json(&body)
            .send()
    };

    let res = lock(json!({"client_id": bank_id, "reason": "complaint 42"}))
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let l: Value = res.json().await.unwrap();
    let body = assert_problem(app.data(&token, path).await, 403).await;
    assert_eq!(body["rule"], "lockdown");
    assert_eq!(
        app.data(&colleague, path).await.status(),
        200,
        "only that client"
    );

    let res = lock(json!({"org": "bank-z", "reason": "scraping"}))
        .await
        .unwrap();
    let org_lock: Value = res.json().await.unwrap();
    assert_problem(app.data(&colleague, path).await, 403).await;

    for id in [l["id"].as_str().unwrap(), org_lock["id"].as_str().unwrap()] {
        let res = app
            .http
            .delete(format!("{}/admin/lockdown/{id}", app.url))
            .bearer_auth(&officer)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
    }
    assert_eq!(app.data(&token, path).await.status(), 200);
    assert_eq!(app.data(&colleague, path).await.status(), 200);

    for bad in [
        json!({"reason": "x"}),
        json!({"client_id": "a", "org": "b", "reason": "x"}),
        json!({"org": "bank-z", "reason": ""}),
    ] {
        assert_problem(lock(bad).await.unwrap(), 400).await;
    }
    let res = app
        .http
        .delete(format!("{}/admin/lockdown/ld_nope", app.url))
        .bearer_auth(&officer)
        .send()
        .await
        .unwrap();
    assert_problem(res, 404).await;
    let res = app
        .http
        .post(format!("{}/admin/lockdown", app.url))
        .bearer_auth(&token)
        .json(&json!({"org": "bank-y", "reason": "x"}))
        .send()
        .await
        .unwrap();
    assert_problem(res, 403).await;
    // Both the lockdowns and the lifts are in the log, for the auditor: records of staff
    // actions are hidden from the officers who act.
    let (_, auditor) = app.token("auditor").await;
    let page = app.audit(&auditor, "").await;
    let admin: Vec<&Value> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["path"].as_str().unwrap().starts_with("/admin/lockdown"))
        .collect();
    // Exactly these, oldest first: every lockdown, every lift, every refusal.
    let mut seen: Vec<(String, String, u64, String)> = admin
        .iter()
        .map(|r| {
            (
                r["method"].as_str().unwrap().to_string(),
                r["path"].as_str().unwrap().to_string(),
                r["status"].as_u64().unwrap(),
                r["decision"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    seen.reverse();
    let row = |m: &str, p: String, s: u64, d: &str| (m.to_string(), p, s, d.to_string());
    let lift = |v: &Value| format!("/admin/lockdown/{}", v["id"].as_str().unwrap());
    let expected = vec![
        row("POST", "/admin/lockdown".into(), 201, "allow"),
        row("POST", "/admin/lockdown".into(), 201, "allow"),
        row("DELETE", lift(&l), 204, "allow"),
        row("DELETE", lift(&org_lock), 204, "allow"),
        row("POST", "/admin/lockdown".into(), 400, "deny"),
        row("POST", "/admin/lockdown".into(), 400, "deny"),
        row("POST", "/admin/lockdown".into(), 400, "deny"),
        row("DELETE", "/admin/lockdown/ld_nope".into(), 404, "deny"),
        row("POST", "/admin/lockdown".into(), 403, "deny"),
    ];
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after_and_are_audited() {
    let app = TestApp::spawn_with(|c| {
        c.rate_limits.per_client_per_minute = 3;
        c.rate_limits.per_address_per_minute = 4;
    })
    .await;
    let (id, secret) = app.add_client("regulator").await;
    let token: Value = app.token_for(&id, &secret).await.json().await.unwrap();
    let token = token["access_token"].as_str().unwrap().to_string();
    let mut statuses = vec![];
    for _ in 0..4 {
        statuses.push(app.data(&token, "/v1/stores/power/lists/red").await);
    }
    let last = statuses.pop().unwrap();
    assert!(statuses.iter().all(|r| r.status() == 200));
    assert!(
        last.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    let r = app.record(&audit_id(&last)).await;
    assert_eq!(
        (r.decision.as_str(), r.status, r.rule.as_deref()),
        ("deny", 429, Some("rate-limited"))
    );
    // The client is known before its rate is checked: the refusal names it.
    assert_eq!(r.client_id.as_deref(), Some(id.as_str()));
    assert_eq!(r.role.as_deref(), Some("regulator"));
    assert_problem(last, 429).await;
    // The public door: per source address, its own bucket (the token call above is not
    // charged to it).
    let mut codes = vec![];
    for _ in 0..5 {
        let res = app
            .http
            .get(format!("{}/public/stores/power/lists/red", app.url))
            .header("X-Purpose", "public_disclosure")
            .send()
            .await
            .unwrap();
        codes.push(res.status().as_u16());
    }
    assert_eq!(codes, [200, 200, 200, 200, 429]);
}

#[tokio::test]
async fn metrics_are_exposed_in_prometheus_text() {
    let app = TestApp::spawn().await;
    let (_, token) = app.token("regulator").await;
    app.data(&token, "/v1/stores/power/lists/red").await;
    app.data(&token, "/v1/stores/down/entities/91350100M000100Y43")
        .await;
    let res = app
        .http
        .get(format!("{}/metrics", app.metrics_url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = res.text().await.unwrap();
    for needle in [
        "credgate_requests_total{",
        "decision=\"allow\"",
        "credgate_request_duration_seconds_bucket",
        "credgate_audit_batch_size",
        "credgate_audit_commit_seconds_bucket",
        "credgate_audit_queue_depth",
        "credgate_upstream_errors_total{",
    ] {
        assert!(text.contains(needle), "{needle} missing");
    }
}

#[tokio::test]
async fn archiving_past_retention_keeps_the_live_chain_verifiable_from_the_archived_checkpoint() {
    let app = TestApp::spawn_with(|c| c.audit.checkpoint_every = 5).await;
    let (_, token) = app.token("regulator").await;
    for _ in 0..11 {
        app.data(&token, "/v1/stores/power/lists/red").await;
    }
    let db = &app.state.db;
    let out = app.dir.path().join("archive");
    let now = credgate::storage::now_micros();
    // Today nothing is five years old.
    assert!(
        credgate::audit::archive::archive(db, 1826, now, &out)
            .await
            .unwrap()
            .is_empty()
    );
    // Even asking for a day's retention keeps six months.
    assert!(
        credgate::audit::archive::archive(db, 1, now, &out)
            .await
            .unwrap()
            .is_empty()
    );

    let six_years_on = now + 6 * 366 * 86_400 * 1_000_000;
    let mut done = credgate::audit::archive::archive(db, 1826, six_years_on, &out)
        .await
        .unwrap();
    assert_eq!(done.len(), 1, "one chain, one file: {done:?}");
    let a = done.remove(0);
    assert_eq!((a.from_seq, a.upto_seq, a.records), (1, 10, 10));
    let text = std::fs::read_to_string(&a.file).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 11, "header and ten records");
    assert_eq!(lines[0]["checkpoint"]["seq"], 10);
    assert_eq!(
        lines[10]["hash"], lines[0]["checkpoint"]["hash"],
        "the file ends at its signed checkpoint"
    );

    let report = verify::verify_at(db, &app.state.audit_public_key, six_years_on)
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.chains[0].archived_through, Some(10));
    assert_eq!(report.chains[0].writer_id, a.writer_id);
    assert_eq!(
        app.data(&token, "/v1/stores/power/lists/red")
            .await
            .status(),
        200,
        "the log goes on"
    );
    assert!(
        verify::verify_at(db, &app.state.audit_public_key, six_years_on)
            .await
            .unwrap()
            .ok
    );

    // What was not archived stays append-only; what is live still tamper-evident.
    let pool = db.pool();
    refused_as_append_only(pool, "DELETE FROM audit_log WHERE seq = 12").await;
    refused_as_append_only(pool, "DELETE FROM audit_archives").await;
    drop_guards(db).await;
    pool.execute("UPDATE audit_log SET org = 'x' WHERE seq = 12")
        .await
        .unwrap();
    let report = verify::verify_at(db, &app.state.audit_public_key, six_years_on)
        .await
        .unwrap();
    assert_eq!(report.first_bad_seq, Some(12));
}

/// DESIGN.md's name for the commit window, which outside tooling relies on, is read (it was
/// refused as an unknown key); 200 us measured best here (1 and 2 ms lowered the entity row).
#[test]
fn the_commit_window_is_read_under_its_design_name() {
    let c = credgate::config::Config::parse("[audit]\ncommit_window_us = 1500\n", "t").unwrap();
    c.validate().unwrap();
    assert_eq!(c.audit.batch_wait_us, 1500);
    let c = credgate::config::Config::parse("", "t").unwrap();
    assert_eq!(c.audit.batch_wait_us, 200);
}

#[test]
fn retention_below_six_months_is_a_config_error() {
    let c = credgate::config::Config::parse("[audit]\nretention_days = 30\n", "t").unwrap();
    let e = c.validate().unwrap_err().to_string();
    assert!(
        e.contains("audit.retention_days") && e.contains("183"),
        "{e}"
    );
}

/// What an attacker with database access does first: removes the append-only guards.
pub(crate) async fn drop_guards(db: &credgate::storage::Db) {
    let pool = db.pool();
    let statements: &[&str] = match db.backend() {
        credgate::storage::Backend::Sqlite => &[
            "DROP TRIGGER audit_log_no_update",
            "DROP TRIGGER audit_log_no_delete",
            "DROP TRIGGER audit_checkpoints_no_update",
            "DROP TRIGGER audit_checkpoints_no_delete",
            "DROP TRIGGER audit_log_links",
            "DROP TRIGGER audit_subjects_no_update",
            "DROP TRIGGER audit_subjects_no_delete",
            "DROP TRIGGER audit_subject_steps_no_update",
            "DROP TRIGGER audit_subject_steps_no_delete",
        ],
        credgate::storage::Backend::Postgres => &[
            "ALTER TABLE audit_log DISABLE TRIGGER USER",
            "ALTER TABLE audit_checkpoints DISABLE TRIGGER USER",
            "ALTER TABLE audit_subjects DISABLE TRIGGER USER",
            "ALTER TABLE audit_subject_steps DISABLE TRIGGER USER",
        ],
    };
    for s in statements {
        pool.execute(*s).await.unwrap();
    }
}

/// Every entry of the subject index as (subject, record seq), from both of its tables: the
/// rows of `audit_subjects` (written before migration 0090, still read) and each `seq` of the
/// step rows of `audit_subject_steps` (what the indexer writes since).
pub(crate) async fn index_entries(db: &credgate::storage::Db) -> Vec<(String, i64)> {
    let mut out: Vec<(String, i64)> = sqlx::query_as("SELECT subject_id, seq FROM audit_subjects")
        .fetch_all(db.pool())
        .await
        .unwrap();
    let steps: Vec<(String, String)> =
        sqlx::query_as("SELECT subject_id, seqs FROM audit_subject_steps")
            .fetch_all(db.pool())
            .await
            .unwrap();
    for (subject, seqs) in steps {
        let seqs: Vec<i64> = serde_json::from_str(&seqs).unwrap();
        out.extend(seqs.into_iter().map(|seq| (subject.clone(), seq)));
    }
    out
}

/// The subject index entries of the records of `writer_id`'s chain.
pub(crate) async fn index_entries_of(
    db: &credgate::storage::Db,
    writer_id: &str,
) -> Vec<(String, i64)> {
    let seqs: std::collections::BTreeSet<i64> =
        sqlx::query_scalar("SELECT seq FROM audit_log WHERE writer_id = $1")
            .bind(writer_id)
            .fetch_all(db.pool())
            .await
            .unwrap()
            .into_iter()
            .collect();
    index_entries(db)
        .await
        .into_iter()
        .filter(|(_, seq)| seqs.contains(seq))
        .collect()
}

/// Removes from the subject index every entry of the records `SELECT seq FROM audit_log WHERE
/// {records}` selects, as an attacker who hides records (with the guards dropped) must: their
/// `audit_subjects` rows deleted, and each step row that holds one of them rewritten without
/// it (a step row holds a whole indexing step's records, so deleting it would also drop
/// the entries of records kept, which verification would report).
pub(crate) async fn unindex(db: &credgate::storage::Db, records: &str) {
    let gone: std::collections::BTreeSet<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT seq FROM audit_log WHERE {records}"
    )))
    .fetch_all(db.pool())
    .await
    .unwrap()
    .into_iter()
    .collect();
    for seq in &gone {
        sqlx::query("DELETE FROM audit_subjects WHERE seq = $1")
            .bind(seq)
            .execute(db.pool())
            .await
            .unwrap();
    }
    let rows: Vec<(String, String, i64, String)> =
        sqlx::query_as("SELECT subject_id, writer_id, last_seq, seqs FROM audit_subject_steps")
            .fetch_all(db.pool())
            .await
            .unwrap();
    let mut rewritten = Vec::new();
    for (subject, writer, last, seqs) in rows {
        let seqs: Vec<i64> = serde_json::from_str(&seqs).unwrap();
        if !seqs.iter().any(|s| gone.contains(s)) {
            continue;
        }
        sqlx::query("DELETE FROM audit_subject_steps WHERE subject_id = $1 AND last_seq = $2")
            .bind(&subject)
            .bind(last)
            .execute(db.pool())
            .await
            .unwrap();
        let kept: Vec<i64> = seqs.into_iter().filter(|s| !gone.contains(s)).collect();
        if !kept.is_empty() {
            rewritten.push((subject, writer, kept));
        }
    }
    for (subject, writer, kept) in rewritten {
        plant_step(db, &subject, &writer, &kept).await;
    }
}

/// Inserts a step row as the indexer writes one: `first_seq`/`last_seq` the least and
/// greatest of `seqs`.
pub(crate) async fn plant_step(
    db: &credgate::storage::Db,
    subject: &str,
    writer_id: &str,
    seqs: &[i64],
) {
    plant_step_raw(
        db,
        subject,
        writer_id,
        (
            seqs.iter().min().copied().unwrap(),
            seqs.iter().max().copied().unwrap(),
        ),
        &serde_json::to_string(seqs).unwrap(),
    )
    .await;
}

/// Inserts a step row exactly as given.
pub(crate) async fn plant_step_raw(
    db: &credgate::storage::Db,
    subject: &str,
    writer_id: &str,
    (first, last): (i64, i64),
    seqs: &str,
) {
    sqlx::query(
        "INSERT INTO audit_subject_steps (subject_id, writer_id, first_seq, last_seq, seqs) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(subject)
    .bind(writer_id)
    .bind(first)
    .bind(last)
    .bind(seqs)
    .execute(db.pool())
    .await
    .unwrap();
}

#[tokio::test]
async fn a_gateway_started_after_everything_was_archived_chains_onto_the_archive() {
    // A checkpoint after every batch: the archive can take the chain up to its very head.
    let app = TestApp::spawn_with(|c| {
        c.audit.checkpoint_every = 1;
        c.audit.writer_id = Some("replica-a".into());
    })
    .await;
    let (_, token) = app.token("regulator").await;
    for _ in 0..3 {
        app.data(&token, "/v1/stores/power/lists/red").await;
    }
    let db = &app.state.db;
    let six_years_on = credgate::storage::now_micros() + 6 * 366 * 86_400 * 1_000_000;
    let out = app.dir.path().join("archive-all");
    let a = credgate::audit::archive::archive(db, 1826, six_years_on, &out)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(a.writer_id, "replica-a");
    let live: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(live, 0, "archived through the head (place {})", a.upto_seq);

    // A restart of the same replica finds its chain empty: it must continue the chain from
    // the archive's last record, not start it again from genesis; and the log's seq goes on
    // after the archived ones.
    let restarted = app
        .sibling_with(|c| c.audit.writer_id = Some("replica-a".into()))
        .await;
    let res = app
        .http
        .get(format!("{}/v1/stores/power/lists/red", restarted.url))
        .bearer_auth(&token)
        .header("X-Purpose", "supervision")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let record = app
        .record(res.headers()["x-audit-id"].to_str().unwrap())
        .await;
    assert_eq!(
        (record.writer_id.as_str(), record.chain_seq),
        ("replica-a", a.upto_seq + 1)
    );
    let archived_seq: i64 = sqlx::query_scalar("SELECT MAX(upto_seq) FROM audit_archives")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert!(
        record.seq > archived_seq,
        "{} after {archived_seq}",
        record.seq
    );
    let report = verify::verify_at(db, &app.state.audit_public_key, six_years_on)
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");
}

/// Golden vector for the whistleblower contact's sealing: AES-256-GCM, nonce first, the report
/// id as the only associated data. Computed outside credgate (Python `cryptography`), so a
/// refactor that changes the associated data (or the layout) cannot silently make stored
/// contacts unreadable.
#[test]
fn golden_report_sealing_binds_exactly_the_report_id() {
    use base64::Engine;
    let sealed = "000102030405060708090a0b\
                  9d39f2b148234fa5fa2e4df2a0afa01ab01b6684446be7ee7af160474f7d45d623d0";
    let bytes: Vec<u8> = (0..sealed.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&sealed[i..i + 2], 16).unwrap())
        .collect();
    let sealed = base64::engine::general_purpose::STANDARD.encode(bytes);
    let sealer = credgate::auth::sealer::Sealer::new(&[9u8; 32]);
    assert_eq!(
        sealer.open("rp_golden", &sealed).as_deref(),
        Some("whistle@example.cn")
    );
    assert_eq!(sealer.open("rp_golden2", &sealed), None, "bound to the id");
    assert_eq!(sealer.open("", &sealed), None);
}

/// Each data request's record carries its purpose's legal basis (PIPL art. 13 code), covered
/// by the hash (encoding v3); records without one (token issuance, records written before the
/// field) keep their v1 bytes and still verify; the officer and the subject see the basis.
#[tokio::test]
async fn the_legal_basis_is_in_the_record_and_covered_by_its_hash() {
    use credgate::audit::chain::{self, Encoding};
    let app = TestApp::spawn().await;
    let (_, regulator) = app.token("regulator").await;
    let (_, bank) = app.token("financial_institution").await;
    let uscc = app.sample().entities[0]["uscc"]
        .as_str()
        .unwrap()
        .to_string();
    let res = app
        .data(&regulator, &format!("/v1/stores/power/entities/{uscc}"))
        .await;
    assert_eq!(res.status(), 200);
    let by_regulator = app
        .record(res.headers()["x-audit-id"].to_str().unwrap())
        .await;
    assert_eq!(by_regulator.legal_basis.as_deref(), Some("legal_duty"));
    assert_eq!(Encoding::of_hash(&by_regulator.hash), Some(Encoding::V4));
    let res = app.data(&bank, "/v1/stores/power/lists/red").await;
    let by_bank = app
        .record(res.headers()["x-audit-id"].to_str().unwrap())
        .await;
    assert_eq!(
        by_bank.legal_basis.as_deref(),
        app.state
            .policies()
            .purpose(&by_bank.purpose.clone().unwrap())
            .map(|p| p.legal_basis.code())
    );
    // Every record is written in v4, which covers the basis whether or not there is one
    // (records of the older versions are verified in `migration.rs`).
    let all = credgate::audit::store::page_after(&app.state.db, 0, 100_000)
        .await
        .unwrap();
    let token_record = all
        .iter()
        .find(|r| r.kind == "token")
        .expect("a token record");
    assert_eq!(token_record.legal_basis, None);
    assert_eq!(Encoding::of_hash(&token_record.hash), Some(Encoding::V4));
    assert!(all.iter().all(chain::verifies));
    let report = verify::verify(&app.state.db, &app.state.audit_public_key)
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");
    // The officer's view shows it.
    let (_, officer) = app.token("security_officer").await;
    let log = app.audit(&officer, "limit=20").await;
    assert!(
        log["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["id"] == by_regulator.id.as_str() && i["legal_basis"] == "legal_duty"),
        "{log}"
    );
}

#[tokio::test]
async fn an_edited_or_added_legal_basis_is_found() {
    // Edited on a record that carries one.
    let r = tampered(
        "UPDATE audit_log SET legal_basis = 'consent' WHERE seq = \
         (SELECT MIN(seq) FROM audit_log WHERE legal_basis IS NOT NULL)",
    )
    .await;
    assert!(!r.ok);
    assert!(r.first_bad_seq.is_some());
    // Added to an old-format record, whose v1 bytes do not cover it.
    let r = tampered(
        "UPDATE audit_log SET legal_basis = 'legal_duty' WHERE seq = \
         (SELECT MIN(seq) FROM audit_log WHERE legal_basis IS NULL)",
    )
    .await;
    assert!(!r.ok);
    // Removed, or a caller's id planted afterwards.
    let r = tampered(
        "UPDATE audit_log SET legal_basis = NULL WHERE seq = \
         (SELECT MAX(seq) FROM audit_log WHERE legal_basis IS NOT NULL)",
    )
    .await;
    assert!(!r.ok);
    let r = tampered(
        "UPDATE audit_log SET caller_request_id = 'planted' WHERE seq = \
         (SELECT MAX(seq) FROM audit_log)",
    )
    .await;
    assert!(!r.ok);
}

/// An officer searching the audit log by `subject` (the console's `Subject` filter) finds what
/// the subject did themselves: a consent granted in the portal and a page view name the
/// subject only as `actor_subject`, not in the touched subjects (hostile review). Another
/// subject's search does not find them, and the subject's own "who accessed my data" log still
/// shows accesses by others only, not their own acts.
#[tokio::test]
async fn a_consent_granted_in_the_portal_is_found_by_the_officers_subject_search() {
    let s = crate::signin::site().await;
    let uscc = s.app.sample().entities[0]["uscc"]
        .as_str()
        .unwrap()
        .to_owned();
    let me = crate::portal::portal_client(&s, &uscc).await;
    let before = access_log_of(&s.app, &uscc).await;
    let until = (time::OffsetDateTime::now_utc() + time::Duration::days(30))
        .date()
        .to_string();
    let res = me
        .post(
            "/portal/consents",
            &[
                ("org", "test-bank"),
                ("purpose", "lending"),
                ("expires", until.as_str()),
                ("notice_version", "portal-consent-1.en"),
                ("agree", "yes"),
            ],
        )
        .await;
    assert_eq!(res.status(), 303, "granted");
    let granted = audit_id(&res);
    let view = me.get("/portal/consents").await;
    assert_eq!(view.status(), 200);
    let viewed = audit_id(&view);
    let (_, officer) = s.app.token("security_officer").await;
    // A control the touched-subjects index finds (an objection, filed after both), so the
    // search has caught up before the two are looked for.
    let filed = me
        .post(
            "/portal/objections",
            &[
                ("record", "power|entity|registered_capital"),
                ("reason", "changed"),
            ],
        )
        .await;
    assert_eq!(filed.status(), 303);
    let control = audit_id(&filed);
    let found_by = |subject: String| {
        let (app, officer) = (&s.app, &officer);
        async move {
            let found = app
                .audit(officer, &format!("subject={subject}&limit=100"))
                .await;
            found["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|i| i["id"].as_str().map(str::to_owned))
                .collect::<Vec<String>>()
        }
    };
    let mut ids = Vec::new();
    for _ in 0..100 {
        ids = found_by(uscc.clone()).await;
        if ids.contains(&control) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ids.contains(&control), "the index caught up");
    for (what, id) in [
        ("the consent grant", &granted),
        ("the consents page view", &viewed),
    ] {
        assert!(
            ids.contains(id),
            "{what} ({id}) is not found by subject={uscc}"
        );
    }
    let other = s.app.sample().entities[1]["uscc"]
        .as_str()
        .unwrap()
        .to_owned();
    let theirs = found_by(other.clone()).await;
    for id in [&granted, &viewed, &control] {
        assert!(!theirs.contains(id), "{id} found by subject={other}");
    }
    // The subject's own access log: accesses by others, not their own acts (as before).
    let after = access_log_of(&s.app, &uscc).await;
    assert_eq!(
        after, before,
        "the subject's own acts entered their access log"
    );
    assert!(after.iter().all(|i| i["role"] != "subject"), "{after:?}");
}

/// The items of the subject's "who accessed my data" log.
async fn access_log_of(app: &TestApp, uscc: &str) -> Vec<Value> {
    let token = app.subject_token(uscc, SubjectType::Legal);
    let log: Value = app
        .http
        .get(format!("{}/subject/access-log", app.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    log["items"].as_array().expect("items").clone()
}
