//! Hostile review (rev2) of the subject indexer (issue 18) and clock steps (issue 19).
//! Each test states what it proves; a test named `..._fails_today` asserts the behaviour the
//! review asks for and fails on main as merged (883e6bc / 5b2ac70).

use std::time::{Duration, Instant};

use credgate::audit::{AuditRecord, chain, index_store, indexer, store, verify};
use serde_json::Value;

use crate::helpers::TestApp;

/// Appends one record a vector to chain `writer_id` (copied from tests/api/indexer.rs).
async fn append(app: &TestApp, writer_id: &str, subjects: &[Vec<String>]) -> Vec<AuditRecord> {
    let mut writer = store::WriterConn::new(app.state.db.clone(), writer_id);
    let mut known = None;
    let now = credgate::storage::now_micros();
    let mut records: Vec<AuditRecord> = subjects
        .iter()
        .enumerate()
        .map(|(i, s)| AuditRecord {
            id: format!("au_{writer_id}_{now}_{i}"),
            time_us: now + i as i64,
            request_id: format!("req-{i}"),
            kind: "data".into(),
            client_id: Some("cl_test".into()),
            org: Some("test-bank".into()),
            method: "GET".into(),
            path: format!("/v1/stores/power/entities/{i}"),
            subjects: s.clone(),
            decision: "allow".into(),
            status: 200,
            client_addr: "127.0.0.1".into(),
            ..Default::default()
        })
        .collect();
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
    }
    records
}

async fn officer_search_ms(app: &TestApp, officer: &str, subject: &str) -> (f64, usize) {
    let t = Instant::now();
    let res = app
        .http
        .get(format!("{}/admin/audit", app.url))
        .query(&[("subject", subject), ("limit", "100")])
        .bearer_auth(officer)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let page: Value = res.json().await.unwrap();
    let n = page["items"].as_array().unwrap().len();
    if std::env::var("REV2_DEBUG").is_ok() {
        println!("REV2 page {page}");
    }
    (t.elapsed().as_secs_f64() * 1000.0, n)
}

/// R1 (clock): a token that has EXPIRED is accepted again after the clock steps back by less
/// than its age. `time_ok` checks `exp` against the stepped-back clock and `iat` only against
/// `now + leeway`, so any step back into the token's lifetime revives it. Asserts the token
/// stays refused (the wanted rule: "a step back never lengthens a token's life"); fails today.
#[tokio::test]
async fn rev2_expired_token_revived_by_step_back_fails_today() {
    let app = TestApp::spawn().await;
    let ttl = app.state.config.auth.token_ttl_secs;
    let leeway = app.state.config.auth.leeway_secs;
    let path = "/v1/stores/power/entities?page_size=1";
    let (id, secret) = app.add_client("regulator").await;
    let body: Value = app.token_for(&id, &secret).await.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap().to_string();
    assert_eq!(app.data(&token, path).await.status(), 200);

    // Expired well past the leeway.
    let past = Duration::from_secs(ttl + leeway + 120);
    app.state.clock.advance(past);
    assert_eq!(app.data(&token, path).await.status(), 401, "expired");

    // The host clock is stepped back by less than the token's age (NTP fixing a fast clock).
    app.state.clock.step_back(Duration::from_secs(ttl));
    let status = app.data(&token, path).await.status();
    assert_eq!(
        status, 401,
        "an expired token came back to life after a step back of {ttl} s"
    );
}

/// R2 (indexer, SQLite): one indexing step of BATCH list records (100 subjects each, what a
/// 100-row list writes) is ONE statement under SQLite's write lock. Measures it; the module
/// doc promises "a few milliseconds". Also measures an officer's subject search while those
/// records are unindexed (tail scan) and after.
#[tokio::test]
async fn rev2_sqlite_index_step_stalls_the_audit_writer_fails_today() {
    if std::env::var("CREDGATE_TEST_PG").is_ok() {
        println!("SKIPPED: SQLite lock measurement");
        return;
    }
    let app = TestApp::spawn_with(|c| c.audit.indexer = false).await;
    indexer::catch_up(&app.state.db).await.unwrap();
    let (_, officer) = app.token("security_officer").await;
    let records = indexer::BATCH as usize;
    let subjects: Vec<Vec<String>> = (0..records)
        .map(|i| {
            (0..100)
                .map(|j| format!("9111{:014}", i * 100 + j))
                .collect()
        })
        .collect();
    append(&app, "rev2-list", &subjects).await;
    let probe = subjects[records / 2][7].clone();

    let mut tail = Vec::new();
    for _ in 0..5 {
        tail.push(officer_search_ms(&app, &officer, &probe).await);
    }
    assert!(tail.iter().all(|(_, n)| *n == 1), "{tail:?}");

    let t = Instant::now();
    let step = index_store::index_step(&app.state.db, "rev2-list", 0, indexer::BATCH)
        .await
        .unwrap();
    let step_ms = t.elapsed().as_secs_f64() * 1000.0;

    let mut indexed = Vec::new();
    for _ in 0..5 {
        indexed.push(officer_search_ms(&app, &officer, &probe).await);
    }
    println!(
        "REV2 step={step:?} step_ms={step_ms:.1} tail_search_ms={:?} indexed_search_ms={:?}",
        tail.iter().map(|(m, _)| *m as i64).collect::<Vec<_>>(),
        indexed.iter().map(|(m, _)| *m as i64).collect::<Vec<_>>()
    );
    // The audit writer's single-record appends while the next step (records 2000..4000)
    // runs: the longest is how long a request's audit record waited for the lock.
    append(&app, "rev2-list", &subjects).await;
    let baseline = appends_while(&app, None).await;
    let db = app.state.db.clone();
    let stepping = tokio::spawn(async move {
        index_store::index_step(&db, "rev2-list", 2000, indexer::BATCH).await
    });
    let during = appends_while(&app, Some(&stepping)).await;
    stepping.await.unwrap().unwrap();
    println!("REV2 append_max_ms baseline={baseline:.1} during_step={during:.1}");
    assert!(
        during < 50.0,
        "an audit append waited {during:.0} ms behind one index step (200,000 index rows \
         in one statement; the step took {step_ms:.0} ms)"
    );
}

/// R3 (tampering): a progress row planted for a writer id that has not written yet (INSERT is
/// not guarded) makes that chain's records invisible to every subject search from the moment
/// they are written: they are "indexed" by the progress, have no rows, and are not in the
/// tail. Proves the access log misses them and that `verify` does notice (so it is a
/// detection-latency problem, not a silent hole).
#[tokio::test]
async fn rev2_planted_progress_for_a_new_writer_hides_its_records() {
    let app = TestApp::spawn_with(|c| c.audit.indexer = false).await;
    indexer::catch_up(&app.state.db).await.unwrap();
    sqlx::query(
        "INSERT INTO audit_index_progress (writer_id, chain_seq, indexed_us) \
         VALUES ('replica-new', 1000000000, 0)",
    )
    .execute(app.state.db.pool())
    .await
    .expect("INSERT into audit_index_progress is not guarded");
    let who = "91110000000000000X".to_string();
    append(&app, "replica-new", &[vec![who.clone()]]).await;
    let (_, officer) = app.token("security_officer").await;
    let (_, n) = officer_search_ms(&app, &officer, &who).await;
    // The indexer never reaches it either: nothing lies above the progress.
    indexer::catch_up(&app.state.db).await.unwrap();
    let rows: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_subjects s JOIN audit_log l ON l.seq = s.seq \
         WHERE l.writer_id = 'replica-new'",
    )
    .fetch_one(app.state.db.pool())
    .await
    .unwrap();
    assert_eq!(rows, 0, "the indexer never indexes it");
    let report = verify::verify(&app.state.db, &app.state.audit_public_key)
        .await
        .unwrap();
    println!("REV2 hidden_search_hits={n} verify_ok={}", report.ok);
    assert_eq!(n, 0, "the planted progress hides the record from searches");
    assert!(
        !report.ok,
        "verify notices the record without its index rows"
    );
}

/// The longest single-record append to chain `rev2-own` while `task` runs (or, without one,
/// over 20 appends).
async fn appends_while(
    app: &TestApp,
    task: Option<
        &tokio::task::JoinHandle<Result<index_store::Step, credgate::storage::StorageError>>,
    >,
) -> f64 {
    let mut worst: f64 = 0.0;
    let mut n = 0;
    loop {
        let t = Instant::now();
        append(app, "rev2-own", &[vec!["91110000000000001X".to_string()]]).await;
        worst = worst.max(t.elapsed().as_secs_f64() * 1000.0);
        n += 1;
        let done = match task {
            Some(h) => h.is_finished(),
            None => n >= 20,
        };
        if done {
            return worst;
        }
    }
}

/// R4 (tampering, PostgreSQL): moving an existing chain's progress FORWARD (the guard allows
/// it) over records not yet indexed hides them from every subject search. On SQLite the
/// progress trigger indexes them as it moves, so nothing is hidden; on PostgreSQL nothing does.
/// Proves verify notices in both cases.
#[tokio::test]
async fn rev2_progress_moved_forward_over_unindexed_records() {
    let app = TestApp::spawn_with(|c| c.audit.indexer = false).await;
    indexer::catch_up(&app.state.db).await.unwrap();
    let who = "91110000000000002X".to_string();
    append(&app, "rev2-fwd", &[vec!["91110000000000003X".to_string()]]).await;
    indexer::catch_up(&app.state.db).await.unwrap();
    append(&app, "rev2-fwd", &[vec![who.clone()], vec![who.clone()]]).await;
    let (_, officer) = app.token("security_officer").await;
    assert_eq!(officer_search_ms(&app, &officer, &who).await.1, 2);
    sqlx::query("UPDATE audit_index_progress SET chain_seq = 3 WHERE writer_id = 'rev2-fwd'")
        .execute(app.state.db.pool())
        .await
        .expect("forward moves are allowed");
    let hits = officer_search_ms(&app, &officer, &who).await.1;
    let report = verify::verify(&app.state.db, &app.state.audit_public_key)
        .await
        .unwrap();
    println!("REV2 forward_hits={hits} verify_ok={}", report.ok);
    if std::env::var("CREDGATE_TEST_PG").is_ok() {
        assert_eq!(hits, 0, "PostgreSQL: hidden");
        assert!(!report.ok, "verify notices");
    } else {
        assert_eq!(hits, 2, "SQLite: the trigger indexed them");
        assert!(report.ok);
    }
}
