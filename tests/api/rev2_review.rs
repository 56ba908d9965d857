//! Hostile review (rev2) of the subject indexer (issue 18) and clock steps (issue 19).
//! Each test states what it proves; each was written against the first version, showed its
//! finding there, and now holds the fix.

use std::time::{Duration, Instant};

use credgate::audit::{index_store, indexer, verify};
use serde_json::Value;

use crate::{helpers::TestApp, indexer::append};

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

/// R1 (clock): a token that has EXPIRED was accepted again after the clock stepped back by
/// less than its age (`time_ok` checked `exp` against the stepped-back wall clock). Token times
/// now run on `Clock::steady`; the token stays refused.
#[tokio::test]
async fn rev2_an_expired_token_stays_expired_after_a_step_back() {
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

/// R2 (indexer, SQLite): 2,000 list records (100 subjects each, what a 100-row list writes)
/// are 200,000 index rows. A step was one statement of up to 2,000 records under SQLite's
/// write lock (300-440 ms; an append waited 437 ms). A step is now bounded by cost (records
/// plus rows, `indexer::BATCH`): proves one step stays within it and a few milliseconds, that
/// the audit writer's appends are not held up while the whole tail is indexed step by step,
/// and that an officer's subject search is exact before and after.
#[tokio::test]
async fn rev2_sqlite_index_steps_leave_the_audit_writer_room() {
    if std::env::var("CREDGATE_TEST_PG").is_ok() {
        println!("SKIPPED: SQLite lock measurement");
        return;
    }
    let app = TestApp::spawn_with(|c| c.audit.indexer = false).await;
    indexer::catch_up(&app.state.db).await.unwrap();
    let (_, officer) = app.token("security_officer").await;
    let records = 2000;
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
    let step = index_store::index_step(
        &app.state.db,
        "rev2-list",
        0,
        indexer::BATCH,
        indexer::BATCH,
    )
    .await
    .unwrap();
    let step_ms = t.elapsed().as_secs_f64() * 1000.0;
    let index_store::Step::Indexed { to, records: n, .. } = step else {
        panic!("{step:?}");
    };
    let rows = crate::audit::index_entries(&app.state.db).await.len() as i64;
    assert!(n >= 1 && n * 101 <= indexer::BATCH + 101, "{step:?}");
    assert!(rows >= n * 100, "the step's rows are there: {rows}");
    indexer::catch_up(&app.state.db).await.unwrap();

    let mut indexed = Vec::new();
    for _ in 0..5 {
        indexed.push(officer_search_ms(&app, &officer, &probe).await);
    }
    assert!(indexed.iter().all(|(_, n)| *n == 1), "{indexed:?}");
    println!(
        "REV2 step={step:?} to={to} step_ms={step_ms:.1} tail_search_ms={:?} \
         indexed_search_ms={:?}",
        tail.iter().map(|(m, _)| *m as i64).collect::<Vec<_>>(),
        indexed.iter().map(|(m, _)| *m as i64).collect::<Vec<_>>()
    );
    append(&app, "rev2-list", &subjects).await;
    let baseline = appends_while(&app, None).await;
    let db = app.state.db.clone();
    let t = Instant::now();
    let stepping = tokio::spawn(async move { indexer::catch_up(&db).await });
    let during = appends_while(&app, Some(&stepping)).await;
    let indexed_n = stepping.await.unwrap().unwrap();
    let catch_up_ms = t.elapsed().as_secs_f64() * 1000.0;
    println!(
        "REV2 append_max_ms baseline={baseline:.1} during_catch_up={during:.1} \
         catch_up_records={indexed_n} catch_up_ms={catch_up_ms:.0}"
    );
    assert!(indexed_n >= records as i64, "{indexed_n}");
    // What proves the fix is the step's cost bound asserted above (before it, one step took
    // 2,000 records and held SQLite's lock 300-440 ms; an append waited 437 ms). The time is a
    // sanity bound on a shared host: 250 ms (a debug build), or 4x the worst append with no
    // indexing, or 4x one measured step, whichever is larger, since a busy host (the whole
    // suite and other work on 2 cores; a local CI run saw 219 ms with a 62 ms step) slows the
    // appends and the steps alike. Since steps stop at `index_store::STEP_ROWS` the measured
    // step is 13-30 ms, and the worst append (35-151 ms in a debug build beside other tests)
    // is the host's and the WAL's (the index's pages checkpointed by whichever commit meets
    // them), not a step's: the floor was 100 ms, under what that measured.
    let bound = 250.0_f64.max(4.0 * baseline).max(4.0 * step_ms);
    assert!(
        during < bound,
        "an audit append waited {during:.0} ms behind index steps (bound {bound:.0} ms; one \
         step took {step_ms:.0} ms)"
    );
}

/// R3 (tampering): a progress row planted for a writer id that has not written yet would make
/// that chain's records invisible to every subject search (they would be "indexed" by the
/// progress, without rows, and not in the tail). The database now refuses a progress above
/// the chain's last record (migration 0080, both backends), by INSERT or by UPDATE; the
/// chain's record is then indexed and found.
#[tokio::test]
async fn rev2_planted_progress_for_a_new_writer_is_refused() {
    let app = TestApp::spawn_with(|c| c.audit.indexer = false).await;
    indexer::catch_up(&app.state.db).await.unwrap();
    let planted = sqlx::query(
        "INSERT INTO audit_index_progress (writer_id, chain_seq, indexed_us) \
         VALUES ('replica-new', 1000000000, 0)",
    )
    .execute(app.state.db.pool())
    .await;
    let err = planted.expect_err("a progress for a writer with no record is refused");
    assert!(err.to_string().contains("ahead of its chain"), "{err}");
    let who = "91110000000000000X".to_string();
    append(&app, "replica-new", &[vec![who.clone()]]).await;
    let (_, officer) = app.token("security_officer").await;
    assert_eq!(
        officer_search_ms(&app, &officer, &who).await.1,
        1,
        "in the tail"
    );
    indexer::catch_up(&app.state.db).await.unwrap();
    let ahead = sqlx::query(
        "UPDATE audit_index_progress SET chain_seq = 5 WHERE writer_id = 'replica-new'",
    )
    .execute(app.state.db.pool())
    .await;
    assert!(ahead.is_err(), "an UPDATE past the head is refused too");
    let rows = crate::audit::index_entries_of(&app.state.db, "replica-new")
        .await
        .len();
    assert_eq!(rows, 1, "indexed");
    assert_eq!(
        officer_search_ms(&app, &officer, &who).await.1,
        1,
        "by the index"
    );
    let report = verify::verify(&app.state.db, &app.state.audit_public_key)
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");
}

async fn appends_while(
    app: &TestApp,
    task: Option<&tokio::task::JoinHandle<Result<i64, credgate::storage::StorageError>>>,
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

/// R4 (tampering): moving an existing chain's progress FORWARD by hand over records not yet
/// indexed hid them from every subject search on PostgreSQL. Progress implies rows is now a
/// rule of both databases (migration 0080: moving the progress inserts the rows of what it
/// moves over), so the hand-moved progress indexes them: still found, verify content.
#[tokio::test]
async fn rev2_progress_moved_forward_indexes_what_it_moves_over() {
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
        .expect("a forward move within the chain is allowed");
    let rows = crate::audit::index_entries(&app.state.db)
        .await
        .into_iter()
        .filter(|(s, _)| *s == who)
        .count();
    assert_eq!(rows, 2, "the move indexed what it moved over");
    let hits = officer_search_ms(&app, &officer, &who).await.1;
    let report = verify::verify(&app.state.db, &app.state.audit_public_key)
        .await
        .unwrap();
    assert_eq!(hits, 2);
    assert!(report.ok, "{report:?}");
}
