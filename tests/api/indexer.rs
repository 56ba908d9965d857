//! The subject index written behind the path (issue 18, decision 3, `audit::indexer`): a
//! subject's searches are exact before anything is indexed, the indexer catches up, a crashed
//! step re-runs harmlessly, several chains (replicas) are indexed each by its own progress, and
//! `GET /admin/audit` says how far the index goes.

use std::collections::BTreeSet;
use std::time::Duration;

use credgate::audit::{AuditRecord, chain, index_store, indexer, store, verify};
use credgate::domain::SubjectType;
use serde_json::Value;

use crate::helpers::{TestApp, assert_problem, wait_until};

/// Appends `subjects.len()` records to chain `writer_id`, record `i` naming `subjects[i]`.
pub(crate) async fn append(
    app: &TestApp,
    writer_id: &str,
    subjects: &[Vec<String>],
) -> Vec<AuditRecord> {
    let now = credgate::storage::now_micros();
    let records: Vec<AuditRecord> = subjects
        .iter()
        .enumerate()
        .map(|(i, s)| data_record(writer_id, now, i, s.clone()))
        .collect();
    append_records(app, writer_id, records).await
}

/// Record `i` of a test's batch made at `now`: an allowed data read by `test-bank` naming
/// `subjects`.
pub(crate) fn data_record(
    writer_id: &str,
    now: i64,
    i: usize,
    subjects: Vec<String>,
) -> AuditRecord {
    AuditRecord {
        id: format!("au_{writer_id}_{now}_{i}"),
        time_us: now + i as i64,
        request_id: format!("req-{i}"),
        kind: "data".into(),
        client_id: Some("cl_test".into()),
        org: Some("test-bank".into()),
        method: "GET".into(),
        path: format!("/v1/stores/power/entities/{i}"),
        subjects,
        decision: "allow".into(),
        status: 200,
        client_addr: "127.0.0.1".into(),
        ..Default::default()
    }
}

/// Appends `records` to chain `writer_id` as its writer would (linked to its head, in batches
/// of 500); returns them as stored (with their `seq`s).
pub(crate) async fn append_records(
    app: &TestApp,
    writer_id: &str,
    mut records: Vec<AuditRecord>,
) -> Vec<AuditRecord> {
    let mut writer = store::WriterConn::new(app.state.db.clone(), writer_id);
    let mut known = None;
    for batch in records.chunks_mut(500) {
        store::append(&mut writer, &mut known, batch, |head, records| {
            for r in records.iter_mut() {
                r.writer_id = writer_id.into();
            }
            chain::link(head.chain_seq, head.hash.clone(), records);
            None
        })
        .await
        .unwrap();
        store::read_seqs(&app.state.db, batch).await.unwrap();
    }
    records
}

/// What an exact answer holds: the ids of every stored record that names `subject` (or that
/// the subject made, for the officers' search), read from the records themselves.
async fn expected(app: &TestApp, subject: &str, officer_view: bool) -> BTreeSet<String> {
    store::page_after(&app.state.db, 0, 1_000_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.kind != "admin")
        .filter(|r| {
            r.subjects.iter().any(|s| s == subject)
                || (officer_view && r.actor_subject.as_deref() == Some(subject))
        })
        .filter(|r| officer_view || ["data", "profile", "public"].contains(&r.kind.as_str()))
        .map(|r| r.id)
        .collect()
}

/// The ids `GET /admin/audit?subject=` answers (one page of up to 1000).
async fn officer_search(app: &TestApp, officer: &str, subject: &str) -> BTreeSet<String> {
    let res = app
        .http
        .get(format!("{}/admin/audit", app.url))
        .query(&[("subject", subject), ("limit", "1000")])
        .bearer_auth(officer)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{subject:?}");
    let page: Value = res.json().await.unwrap();
    assert!(page["next_cursor"].is_null(), "one page holds it: {page}");
    ids(&page)
}

fn ids(page: &Value) -> BTreeSet<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

/// Subject index entries, (subject, record) pairs, of records of `writer_id`'s chain: in step
/// rows (migration 0090) or in `audit_subjects` rows written before, each pair counted once.
async fn rows_of(app: &TestApp, writer_id: &str) -> i64 {
    crate::audit::index_entries_of(&app.state.db, writer_id)
        .await
        .into_iter()
        .collect::<BTreeSet<_>>()
        .len() as i64
}

async fn progress(app: &TestApp, writer_id: &str) -> i64 {
    index_store::progress_of(&app.state.db, writer_id)
        .await
        .unwrap()
}

/// Waits until `writer_id`'s chain is indexed through its head as it is now; that head.
async fn indexed_to_head(app: &TestApp, writer_id: &str, what: &str, within: Duration) -> i64 {
    let head = store::chain_head(&app.state.db, writer_id)
        .await
        .unwrap()
        .chain_seq;
    wait_until(what, within, || async {
        progress(app, writer_id).await >= head
    })
    .await;
    head
}

async fn verifies(app: &TestApp) {
    let report = verify::verify(&app.state.db, &app.state.audit_public_key)
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");
}

fn micros_of(rfc3339: &str) -> i64 {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("indexed_through {rfc3339:?} is RFC 3339: {e}"));
    (t.unix_timestamp_nanos() / 1000) as i64
}

/// With the indexer off nothing is indexed, yet the officers' subject search and the subject's
/// own access log answer exactly what the records say, through the gateway's real requests
/// (single records, a list naming many subjects, a refused read); after catching up, the same.
#[tokio::test]
async fn a_subjects_searches_are_exact_before_anything_is_indexed() {
    let app = TestApp::spawn_with(|c| c.audit.indexer = false).await;
    let own = app.state.audit.writer_id().to_string();
    let data = app.sample();
    let u = |i: usize| data.entities[i]["uscc"].as_str().unwrap().to_string();
    let bank = app.token_in("financial_institution", "bank-a", None).await;
    app.data(&bank, &format!("/v1/stores/power/entities/{}", u(0)))
        .await;
    app.data(&bank, &format!("/v1/stores/power/entities/{}", u(1)))
        .await;
    app.data(&bank, "/v1/stores/power/entities?page_size=20")
        .await;
    let denied = app
        .http
        .get(format!("{}/v1/stores/power/entities/{}", app.url, u(0)))
        .bearer_auth(&bank)
        .header("X-Purpose", "supervision")
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    let (_, officer) = app.token("security_officer").await;

    assert_eq!(rows_of(&app, &own).await, 0, "nothing indexed yet");
    let before_progress = progress(&app, &own).await;
    for i in [0, 1, 2, 30] {
        let want = expected(&app, &u(i), true).await;
        assert_eq!(
            officer_search(&app, &officer, &u(i)).await,
            want,
            "{}",
            u(i)
        );
    }
    assert_eq!(
        expected(&app, &u(0), true).await.len(),
        3,
        "two reads and the list"
    );
    let log = access_log_ids(&app, &u(0)).await;
    assert_eq!(log, expected_access(&app, &u(0)).await);
    assert_eq!(log.len(), 3);
    verifies(&app).await;
    assert_eq!(
        progress(&app, &own).await,
        before_progress,
        "the indexer is off"
    );

    let indexed = indexer::catch_up(&app.state.db).await.unwrap();
    assert!(indexed >= 4, "{indexed}");
    assert!(rows_of(&app, &own).await >= 22);
    for i in [0, 1, 2, 30] {
        let want = expected(&app, &u(i), true).await;
        assert_eq!(
            officer_search(&app, &officer, &u(i)).await,
            want,
            "{}",
            u(i)
        );
    }
    assert_eq!(access_log_ids(&app, &u(0)).await, log);
    verifies(&app).await;
}

/// The subject's own access log, as (time, decision) pairs: the subject sees no record ids.
async fn access_log_ids(app: &TestApp, uscc: &str) -> BTreeSet<String> {
    let me = app.subject_token(uscc, SubjectType::Legal);
    let log: Value = app
        .http
        .get(format!("{}/subject/access-log", app.url))
        .bearer_auth(&me)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    log["items"]
        .as_array()
        .unwrap_or_else(|| panic!("{log}"))
        .iter()
        .map(|i| format!("{} {}", i["time"].as_str().unwrap(), i["decision"]))
        .collect()
}

/// `expected(.., false)` in the access log's terms.
async fn expected_access(app: &TestApp, uscc: &str) -> BTreeSet<String> {
    let want = expected(app, uscc, false).await;
    store::page_after(&app.state.db, 0, 1_000_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| want.contains(&r.id))
        .map(|r| {
            let time = credgate::storage::micros_to_rfc3339(r.time_us);
            format!("{time} {}", Value::from(r.decision))
        })
        .collect()
}

/// With the indexer on, every record's rows appear and the chain's progress reaches its head
/// without anyone asking; `indexed_through` is then about now, not behind the last record.
#[tokio::test]
async fn the_indexer_catches_up_on_its_own_and_says_how_far() {
    let app = TestApp::spawn().await;
    let own = app.state.audit.writer_id().to_string();
    let bank = app.token_in("financial_institution", "bank-a", None).await;
    for _ in 0..5 {
        app.data(&bank, "/v1/stores/power/entities?page_size=10")
            .await;
    }
    let head = indexed_to_head(
        &app,
        &own,
        "the indexer reaches the chain's head",
        Duration::from_secs(10),
    )
    .await;
    assert!(
        rows_of(&app, &own).await >= 50,
        "ten subjects a list, five lists"
    );
    let last = store::chain_page_after(&app.state.db, &own, head - 1, 1)
        .await
        .unwrap()
        .pop()
        .unwrap();
    let (_, officer) = app.token("security_officer").await;
    let before = credgate::storage::now_micros();
    let page = app.audit(&officer, "limit=1").await;
    let after = credgate::storage::now_micros();
    let through = micros_of(page["indexed_through"].as_str().expect("indexed_through"));
    assert!(
        through > last.time_us,
        "past the last indexed record: {page}"
    );
    assert!(through <= after, "never in the future: {page}");
    // The officer's own search is recorded meanwhile; a caught-up log says about now.
    assert!(through >= before - 5_000_000, "{through} vs {before}");
    verifies(&app).await;
}

/// With the indexer off, `indexed_through` stays at the first record not yet indexed however
/// long one waits, and moves past it once that record is indexed.
#[tokio::test]
async fn indexed_through_stops_at_the_first_record_not_indexed() {
    let app = TestApp::spawn_with(|c| c.audit.indexer = false).await;
    indexer::catch_up(&app.state.db).await.unwrap();
    let records = append(&app, "stalled", &[vec!["s-1".into()], vec!["s-2".into()]]).await;
    let (_, officer) = app.token("security_officer").await;
    let page = app.audit(&officer, "limit=1").await;
    let through = micros_of(page["indexed_through"].as_str().unwrap());
    assert_eq!(through, records[0].time_us, "{page}");
    indexer::catch_up(&app.state.db).await.unwrap();
    let page = app.audit(&officer, "limit=1").await;
    let through = micros_of(page["indexed_through"].as_str().unwrap());
    assert!(through > records[1].time_us, "{page}");
    // The schema says so too.
    let doc: Value = app
        .http
        .get(format!("{}/openapi.json", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let page_schema = &doc["components"]["schemas"]["AuditPage"];
    assert_eq!(
        page_schema["properties"]["indexed_through"]["format"],
        "date-time"
    );
}

/// A step that crashed after its rows were written but before the progress moved (as seen
/// from the next start: rows above the progress) is re-run harmlessly: no duplicate, no error,
/// the progress moves to the head in steps of at most `BATCH`, and a second run finds nothing.
#[tokio::test]
async fn a_crashed_step_is_run_again_harmlessly_in_large_batches() {
    let app = TestApp::spawn_with(|c| c.audit.indexer = false).await;
    indexer::catch_up(&app.state.db).await.unwrap();
    // Each record costs 3 of a step's budget (itself and two names): two full steps and a few.
    let n = (indexer::BATCH / 3 * 2 + 7) as usize;
    let subjects: Vec<Vec<String>> = (0..n)
        .map(|i| vec![format!("crash-{}", i % 20), format!("row-{i}")])
        .collect();
    let records = append(&app, "crashing", &subjects).await;
    // Part of the tail already has rows, as written before migration 0090 (one per subject
    // and record, in `audit_subjects`, still read): the steps add their own over them.
    for r in records.iter().take(300) {
        for s in &r.subjects {
            sqlx::query("INSERT INTO audit_subjects (subject_id, seq) VALUES ($1, $2)")
                .bind(s)
                .bind(r.seq)
                .execute(app.state.db.pool())
                .await
                .unwrap();
        }
    }
    assert_eq!(progress(&app, "crashing").await, 0);
    verifies(&app).await;
    let indexed = indexer::catch_up(&app.state.db).await.unwrap();
    assert_eq!(indexed, n as i64);
    assert_eq!(progress(&app, "crashing").await, n as i64);
    assert_eq!(
        rows_of(&app, "crashing").await,
        2 * n as i64,
        "one row per subject"
    );
    assert_eq!(indexer::catch_up(&app.state.db).await.unwrap(), 0);
    verifies(&app).await;
    let (_, officer) = app.token("security_officer").await;
    let want: BTreeSet<String> = records
        .iter()
        .filter(|r| r.subjects[0] == "crash-3")
        .map(|r| r.id.clone())
        .collect();
    assert_eq!(officer_search(&app, &officer, "crash-3").await, want);
}

/// An index row already there above a chain's existing progress (planted by someone with the
/// database, or left by a race), at the very key the next step writes, does not stop the
/// chain's indexing. On SQLite the step was an
/// upsert, whose ABORT rule replaced the trigger's `INSERT OR IGNORE`: every later step failed
/// on that row, for good, and the unindexed tail every subject's search scans grew without end.
#[tokio::test]
async fn a_row_already_there_above_the_progress_does_not_stop_indexing() {
    let app = TestApp::spawn_with(|c| c.audit.indexer = false).await;
    append(&app, "planted", &[vec!["a".into()], vec!["b".into()]]).await;
    indexer::catch_up(&app.state.db).await.unwrap();
    assert_eq!(progress(&app, "planted").await, 2);
    let tail = append(
        &app,
        "planted",
        &[vec!["c".into(), "d".into()], vec!["e".into()]],
    )
    .await;
    crate::audit::plant_step(&app.state.db, "d", "planted", &[tail[0].seq]).await;
    assert_eq!(indexer::catch_up(&app.state.db).await.unwrap(), 2);
    assert_eq!(progress(&app, "planted").await, 4);
    assert_eq!(rows_of(&app, "planted").await, 5, "one row per subject");
    verifies(&app).await;
}

/// Progress only moves forward: lowering it (which would let verification take rows deleted
/// from the index for rows not yet written) or removing it is refused by the database.
#[tokio::test]
async fn the_progress_cannot_be_moved_back_or_removed() {
    let app = TestApp::spawn_with(|c| c.audit.indexer = false).await;
    append(&app, "guarded", &[vec!["g".into()], vec!["g".into()]]).await;
    indexer::catch_up(&app.state.db).await.unwrap();
    let pool = app.state.db.pool();
    for sql in [
        "UPDATE audit_index_progress SET chain_seq = 0 WHERE writer_id = 'guarded'",
        "UPDATE audit_index_progress SET writer_id = 'other' WHERE writer_id = 'guarded'",
        "DELETE FROM audit_index_progress WHERE writer_id = 'guarded'",
    ] {
        let e = sqlx::query(sql)
            .execute(pool)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("only moves forward"), "{sql}: {e}");
    }
    // The index rows themselves stay append-only (step rows: migration 0090).
    let rows: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM audit_subject_steps WHERE writer_id = 'guarded'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert!(rows >= 1, "the chain's subject has its step rows");
    for sql in [
        "DELETE FROM audit_subject_steps WHERE writer_id = 'guarded'",
        "UPDATE audit_subject_steps SET seqs = '[]' WHERE writer_id = 'guarded'",
        "UPDATE audit_subject_steps SET writer_id = 'other' WHERE writer_id = 'guarded'",
    ] {
        let e = sqlx::query(sql)
            .execute(pool)
            .await
            .expect_err("the index is append-only")
            .to_string();
        assert!(
            e.contains("audit_subject_steps is append-only"),
            "{sql}: {e}"
        );
    }
}

/// Two replicas on one database, each writing its own chain; one runs no indexer. The other
/// indexes its own chain at once and the idle one's after `FOREIGN_GRACE`; a subject's search
/// is exact all along; two catch-ups racing on the same chains leave one row per subject and
/// the progress at each head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_chains_are_indexed_each_by_its_own_progress() {
    let app = TestApp::spawn_with(|c| {
        c.audit.indexer = false;
        c.audit.writer_id = Some("replica-a".into());
    })
    .await;
    let other = app
        .sibling_with(|c| {
            c.audit.indexer = true;
            c.audit.writer_id = Some("replica-b".into());
        })
        .await;
    let data = app.sample();
    let u = |i: usize| data.entities[i]["uscc"].as_str().unwrap().to_string();
    let bank = app.token_in("financial_institution", "bank-a", None).await;
    let (_, officer) = app.token("security_officer").await;
    for round in 0..6 {
        let url = if round % 2 == 0 { &app.url } else { &other.url };
        let res = app
            .http
            .get(format!("{url}/v1/stores/power/entities/{}", u(round % 3)))
            .bearer_auth(&bank)
            .header("X-Purpose", "lending")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        for i in 0..3 {
            let want = expected(&app, &u(i), true).await;
            assert_eq!(officer_search(&app, &officer, &u(i)).await, want);
        }
    }
    indexed_to_head(
        &app,
        "replica-b",
        "replica-b indexes its own chain",
        Duration::from_secs(5),
    )
    .await;
    indexed_to_head(
        &app,
        "replica-a",
        "replica-b indexes the chain of the replica without an indexer",
        Duration::from_secs(15),
    )
    .await;
    // Two indexers racing over the same tails (a chain's progress moves once per step).
    append(&app, "replica-c", &vec![vec!["raced".to_string()]; 3000]).await;
    let (x, y) = tokio::join!(
        indexer::catch_up(&app.state.db),
        indexer::catch_up(&other.state.db)
    );
    x.unwrap();
    y.unwrap();
    indexer::catch_up(&app.state.db).await.unwrap();
    assert_eq!(progress(&app, "replica-c").await, 3000);
    assert_eq!(rows_of(&app, "replica-c").await, 3000);
    let _ = &other;
    verifies(&app).await;
}

/// Hostile subject filters: pattern characters, quotes, JSON fragments and an id with one
/// character changed match nothing, before and after indexing, even where stored records name
/// subjects those patterns would match; over-long values are a 400, never a 500.
#[tokio::test]
async fn hostile_subject_filters_match_nothing_but_themselves() {
    let app = TestApp::spawn_with(|c| c.audit.indexer = false).await;
    let stored = [
        "91350100M000100Y43",
        "a_b",
        "100%",
        "o'brien",
        "say \"hi\"",
        "back\\slash",
    ];
    append(
        &app,
        "hostile",
        &stored
            .iter()
            .map(|s| vec![s.to_string()])
            .collect::<Vec<_>>(),
    )
    .await;
    let (_, officer) = app.token("security_officer").await;
    let probes = [
        "%",
        "_",
        "a%",
        "a_c",
        "100_",
        "%Y43",
        "91350100M000100Y4_",
        "91350100M000100Y4",
        "' OR '1'='1",
        "o''brien",
        "\"",
        "\",\"",
        "[\"a_b\"]",
        "a_b\"",
        "back\\\\slash",
        "*",
        "a_B",
    ];
    for round in 0..2 {
        for p in probes {
            let got = officer_search(&app, &officer, p).await;
            assert!(got.is_empty(), "round {round}: {p:?} matched {got:?}");
        }
        for s in stored {
            assert_eq!(officer_search(&app, &officer, s).await.len(), 1, "{s:?}");
        }
        indexer::catch_up(&app.state.db).await.unwrap();
    }
    for long in ["x".repeat(10 * 1024), "%".repeat(257)] {
        let res = app
            .http
            .get(format!("{}/admin/audit", app.url))
            .query(&[("subject", long.as_str())])
            .bearer_auth(&officer)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        assert!(status == 400 || status == 414 || status == 431, "{status}");
        if status == 400 {
            assert_problem(res, 400).await;
        }
    }
    for nul in ["a%00b", "%00"] {
        let res = app
            .http
            .get(format!("{}/admin/audit?subject={nul}", app.url))
            .bearer_auth(&officer)
            .send()
            .await
            .unwrap();
        assert_problem(res, 400).await;
    }
}

/// Hostile rows: a record whose `subjects` is not a JSON array (planted, or a bug) above the
/// progress must neither fail a subject's search (the tail is matched in SQL: `json_valid`,
/// `credgate_subject_list`) nor stop the chain's indexing; it matches nothing on PostgreSQL.
#[tokio::test]
async fn malformed_subjects_fail_no_search_and_stop_no_indexing() {
    let app = TestApp::spawn_with(|c| c.audit.indexer = false).await;
    indexer::catch_up(&app.state.db).await.unwrap();
    let who = "91110000000000077X".to_string();
    append(&app, "malformed", &[vec![who.clone()]]).await;
    for (i, bad) in ["not json", "{\"a\": 1}", "[1, [2]", ""].iter().enumerate() {
        sqlx::query(
            "INSERT INTO audit_log (seq, id, time_us, request_id, kind, method, path, subjects, \
             decision, masked, status, bytes_out, total_us, client_addr, prev_hash, hash, \
             writer_id, chain_seq) \
             SELECT (SELECT MAX(seq) + 1 FROM audit_log), id || $1, time_us, request_id, kind, \
             method, path, $2, decision, masked, status, bytes_out, total_us, client_addr, \
             (SELECT hash FROM audit_log WHERE writer_id = 'malformed' AND chain_seq = $3), \
             hash || $1, writer_id, 1 + $3 FROM audit_log \
             WHERE writer_id = 'malformed' AND chain_seq = 1",
        )
        .bind(format!("-bad{i}"))
        .bind(*bad)
        .bind(i as i64 + 1)
        .execute(app.state.db.pool())
        .await
        .unwrap();
    }
    let (_, officer) = app.token("security_officer").await;
    assert_eq!(officer_search(&app, &officer, &who).await.len(), 1, "tail");
    indexer::catch_up(&app.state.db).await.unwrap();
    assert_eq!(progress(&app, "malformed").await, 5, "indexed past them");
    assert_eq!(officer_search(&app, &officer, &who).await.len(), 1, "index");
}
