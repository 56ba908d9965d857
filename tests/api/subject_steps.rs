//! The subject index as step rows (migration 0090, `audit_subject_steps`): verification reads
//! them across its pages and reports every row the indexer would not have written, archiving
//! removes the rows it covers whole and keeps those straddling its cut, and the rows cannot be
//! updated or deleted otherwise.

use credgate::audit::{AuditRecord, archive, index_store, indexer, store, verify};

use crate::audit::{drop_guards, plant_step, plant_step_raw};
use crate::helpers::TestApp;
use crate::indexer::append;

async fn report(app: &TestApp) -> verify::ChainVerdict {
    verify::verify(&app.state.db, &app.state.audit_public_key)
        .await
        .unwrap()
}

/// Indexes `writer_id`'s chain in one step, however long: every subject's row holds all of it.
async fn one_step(app: &TestApp, writer_id: &str) {
    let step = index_store::index_step(&app.state.db, writer_id, 0, 1_000_000, 1_000_000)
        .await
        .unwrap();
    assert!(
        matches!(step, index_store::Step::Indexed { at_head: true, .. }),
        "{step:?}"
    );
}

/// Two chains naming the same subject, indexed: `(a's records, b's records)`.
async fn two_chains(app: &TestApp) -> (Vec<AuditRecord>, Vec<AuditRecord>) {
    let x = || vec!["x".to_string()];
    let a = append(app, "steps-a", &[x(), x(), vec!["y".into()]]).await;
    let b = append(app, "steps-b", &[x(), x()]).await;
    indexer::catch_up(&app.state.db).await.unwrap();
    let r = report(app).await;
    assert!(r.ok, "{r:?}");
    (a, b)
}

/// A step row naming a record of the log, of its own chain, that does not name its subject;
/// the same with the record on a later page of the walk than the row's first `seq` (the walk
/// carries it over); and a step of 2,500 records, whose rows straddle the walk's pages of a
/// thousand, verifies.
#[tokio::test]
async fn a_forged_step_row_is_found_on_any_page_of_the_walk() {
    let app = TestApp::spawn_with(|c| c.audit.indexer = false).await;
    indexer::catch_up(&app.state.db).await.unwrap();
    let subjects: Vec<Vec<String>> = (0..2500)
        .map(|i| {
            if i == 10 {
                vec!["p".to_string(), "q".to_string()]
            } else {
                vec!["p".to_string()]
            }
        })
        .collect();
    let records = append(&app, "long", &subjects).await;
    one_step(&app, "long").await;
    let r = report(&app).await;
    assert!(r.ok, "one row for `p` across three pages: {r:?}");

    // `q`'s row read with the first page names a record of the second, which names only `p`.
    let forged = [records[10].seq, records[1500].seq];
    plant_step(&app.state.db, "q", "long", &forged).await;
    let r = report(&app).await;
    assert!(!r.ok, "{r:?}");
    assert_eq!(r.first_bad_seq, Some(records[1500].seq), "{r:?}");
    assert_eq!(r.writer_id.as_deref(), Some("long"));
    assert!(r.reason.unwrap().contains("1 entries it does not name"));
}

/// A step row naming a record of another chain: that record does name the subject (its own
/// chain's row says so), so only the row's chain tells.
#[tokio::test]
async fn a_step_row_naming_another_chains_record_is_found() {
    let app = TestApp::spawn_with(|c| c.audit.indexer = false).await;
    let (_, b) = two_chains(&app).await;
    // `b[0]`: the key `("x", b[1])` is `steps-b`'s own row's.
    plant_step(&app.state.db, "x", "steps-a", &[b[0].seq]).await;
    let r = report(&app).await;
    assert!(!r.ok, "{r:?}");
    assert_eq!(r.first_bad_seq, Some(b[0].seq));
    assert_eq!(r.writer_id.as_deref(), Some("steps-a"));
    let why = r.reason.unwrap();
    assert!(why.contains("which is of chain `steps-b`"), "{why}");
}

/// A step row naming a `seq` the log does not hold, with no archive of its chain covering it;
/// another chain's archive does not cover it either.
#[tokio::test]
async fn a_step_row_naming_no_record_is_found() {
    let app = TestApp::spawn_with(|c| c.audit.indexer = false).await;
    let (a, b) = two_chains(&app).await;
    let gone = b[1].seq + 1000;
    plant_step(&app.state.db, "x", "steps-a", &[a[1].seq, gone]).await;
    // An archive row of the other chain past it (at its place 0, so its walk is unchanged):
    // only an archive of the row's own chain covers a `seq` the log no longer holds.
    sqlx::query(
        "INSERT INTO audit_archives \
         (upto_seq, hash, archived_at, file_name, records, writer_id, upto_chain_seq) \
         VALUES ($1, $2, 0, 'f', 0, 'steps-b', 0)",
    )
    .bind(gone + 1)
    .bind(credgate::audit::chain::GENESIS)
    .execute(app.state.db.pool())
    .await
    .unwrap();
    let r = report(&app).await;
    assert!(!r.ok, "{r:?}");
    assert_eq!(r.first_bad_seq, Some(gone), "{r:?}");
    let why = r.reason.unwrap();
    assert!(why.contains("which the log does not hold"), "{why}");
}

/// `first_seq` or `last_seq` not the least or greatest of `seqs`: readers trust them to know
/// which rows they may leave unread, so a row that lies about them hides its records.
#[tokio::test]
async fn a_step_row_whose_span_is_not_its_seqs_is_found() {
    let app = TestApp::spawn_with(|c| c.audit.indexer = false).await;
    let (a, _) = two_chains(&app).await;
    drop_guards(&app.state.db).await;
    let seqs = format!("[{}]", a[1].seq);
    for (first, last) in [(a[1].seq, a[2].seq + 500), (a[0].seq, a[2].seq + 600)] {
        plant_step_raw(&app.state.db, "x", "steps-a", (first, last), &seqs).await;
        let r = report(&app).await;
        assert!(!r.ok, "({first}, {last}): {r:?}");
        let why = r.reason.unwrap();
        assert!(why.contains("says it spans records"), "{why}");
        assert_eq!(r.writer_id.as_deref(), Some("steps-a"));
        sqlx::query("DELETE FROM audit_subject_steps WHERE subject_id = 'x' AND last_seq = $1")
            .bind(last)
            .execute(app.state.db.pool())
            .await
            .unwrap();
        assert!(report(&app).await.ok, "removed");
    }
}

/// `seqs` that is not a JSON array of 64-bit integers, on either backend (PostgreSQL keeps it
/// as text: verification must not fail on parsing it, but report it).
#[tokio::test]
async fn a_step_row_whose_seqs_is_not_a_list_of_seqs_is_found() {
    let app = TestApp::spawn_with(|c| c.audit.indexer = false).await;
    let (a, _) = two_chains(&app).await;
    drop_guards(&app.state.db).await;
    let s = a[1].seq;
    for (i, seqs) in [
        "not json".to_string(),
        format!("{{\"seq\": {s}}}"),
        "[]".into(),
        format!("[{s}.5]"),
        format!("[\"{s}\"]"),
        format!("[{s},]"),
        format!("[0{s}]"),
        format!("[{s}, 99999999999999999999]"),
        format!("[{s}, [{s}]]"),
        format!("[{s}"),
    ]
    .iter()
    .enumerate()
    {
        let last = s + 1000 + i as i64;
        plant_step_raw(&app.state.db, "x", "steps-a", (s, last), seqs).await;
        let r = verify::verify(&app.state.db, &app.state.audit_public_key)
            .await
            .unwrap_or_else(|e| panic!("{seqs}: {e}"));
        assert!(!r.ok, "{seqs}: {r:?}");
        let why = r.reason.unwrap();
        assert!(
            why.contains("does not hold a list of record seqs"),
            "{seqs}: {why}"
        );
        assert_eq!(r.writer_id.as_deref(), Some("steps-a"));
        sqlx::query("DELETE FROM audit_subject_steps WHERE subject_id = 'x' AND last_seq = $1")
            .bind(last)
            .execute(app.state.db.pool())
            .await
            .unwrap();
    }
    // JSON's own whitespace is no malformation (a duplicate entry of `a[0]`, which names `x`).
    let s = a[0].seq;
    let spaced = format!(" [ {s} ,\n\t{s} ]\r\n");
    plant_step_raw(&app.state.db, "x", "steps-a", (s, s), &spaced).await;
    let r = report(&app).await;
    assert!(r.ok, "{r:?}");
}

/// A row planted before the indexer reaches its records, at the very key the step will write
/// (insert-only access is enough), does not keep the genuine row out: the table has no unique
/// key (before, the trigger's `OR IGNORE` dropped the genuine row, and the append-only table
/// kept it out for good). Both rows are there, the subject's search finds both records, and a
/// duplicate of a true entry is no finding.
#[tokio::test]
async fn a_step_row_planted_at_the_key_a_step_writes_does_not_keep_the_genuine_one_out() {
    let app = TestApp::spawn_with(|c| c.audit.indexer = false).await;
    indexer::catch_up(&app.state.db).await.unwrap();
    let records = append(
        &app,
        "kept-out",
        &[vec!["m".into(), "n".into()], vec!["m".into()]],
    )
    .await;
    plant_step(&app.state.db, "m", "kept-out", &[records[1].seq]).await;
    one_step(&app, "kept-out").await;
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT seqs FROM audit_subject_steps WHERE subject_id = 'm' AND writer_id = 'kept-out' \
         ORDER BY LENGTH(seqs)",
    )
    .fetch_all(app.state.db.pool())
    .await
    .unwrap();
    assert_eq!(
        rows.len(),
        2,
        "the planted row and the genuine one: {rows:?}"
    );
    let genuine: Vec<i64> = serde_json::from_str(&rows[1]).unwrap();
    assert_eq!(genuine.len(), 2, "{rows:?}");
    assert!(genuine.contains(&records[0].seq) && genuine.contains(&records[1].seq));
    let b = credgate::audit::store::Bounds {
        subject: Some("m".into()),
        ..Default::default()
    };
    let found = credgate::audit::store::search(&app.state.db, &b, None, 10, None)
        .await
        .unwrap();
    let mut seqs: Vec<i64> = found.iter().map(|r| r.seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, vec![records[0].seq, records[1].seq]);
    let r = report(&app).await;
    assert!(r.ok, "{r:?}");
}

/// The step rows are append-only: no UPDATE, no DELETE, while no archive of their chain covers
/// them whole.
#[tokio::test]
async fn step_rows_cannot_be_updated_or_deleted() {
    let app = TestApp::spawn_with(|c| c.audit.indexer = false).await;
    let (a, _) = two_chains(&app).await;
    let pool = app.state.db.pool();
    for sql in [
        "UPDATE audit_subject_steps SET seqs = '[1]' WHERE writer_id = 'steps-a'",
        "UPDATE audit_subject_steps SET last_seq = last_seq + 1 WHERE writer_id = 'steps-a'",
        "UPDATE audit_subject_steps SET writer_id = 'steps-b' WHERE writer_id = 'steps-a'",
        "DELETE FROM audit_subject_steps WHERE writer_id = 'steps-a'",
        "DELETE FROM audit_subject_steps",
    ] {
        let e = sqlx::query(sql)
            .execute(pool)
            .await
            .expect_err(sql)
            .to_string();
        assert!(
            e.contains("audit_subject_steps is append-only"),
            "{sql}: {e}"
        );
    }
    let seqs: String = sqlx::query_scalar(
        "SELECT seqs FROM audit_subject_steps WHERE subject_id = 'x' AND writer_id = 'steps-a'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let want: Vec<i64> = vec![a[0].seq, a[1].seq];
    let mut got: Vec<i64> = serde_json::from_str(&seqs).unwrap();
    got.sort_unstable();
    assert_eq!(got, want);
    assert!(report(&app).await.ok);
}

/// Archiving removes the chain's step rows it covers whole, in its transaction; a row whose
/// step straddles the cut stays (the guard refuses it), and verification accepts its archived
/// `seq`s, while records after the cut are still checked against it.
#[tokio::test]
async fn archiving_removes_the_step_rows_it_covers_and_keeps_those_across_its_cut() {
    let app = TestApp::spawn_with(|c| {
        c.audit.checkpoint_every = 3;
        c.audit.indexer = false;
    })
    .await;
    let db = &app.state.db;
    let own = app.state.audit.writer_id().to_string();
    let data = app.sample();
    let u = |i: usize| data.entities[i]["uscc"].as_str().unwrap().to_string();
    let (_, token) = app.token("regulator").await;
    app.data(&token, &format!("/v1/stores/power/entities/{}", u(1)))
        .await;
    // Until the chain's head is past its newest checkpoint: the archive's cut is inside.
    let newest_cp = || async {
        store::chain_checkpoints(db, &own)
            .await
            .unwrap()
            .last()
            .map(|c| (c.chain_seq, c.seq))
    };
    loop {
        app.data(&token, &format!("/v1/stores/power/entities/{}", u(0)))
            .await;
        let head = store::chain_head(db, &own).await.unwrap().chain_seq;
        if matches!(newest_cp().await, Some((cp, _)) if cp >= 3 && cp < head) {
            break;
        }
    }
    // One step over all of it: `u(0)`'s row straddles the cut, `u(1)`'s lies before it.
    indexer::catch_up(db).await.unwrap();
    indexed_to_head(&app, &own).await;
    let (_, cut) = newest_cp().await.unwrap();
    let count = |sql: &'static str| {
        let own = own.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .bind(own)
                .bind(cut)
                .fetch_one(db.pool())
                .await
                .unwrap()
        }
    };
    let covered =
        "SELECT COUNT(*) FROM audit_subject_steps WHERE writer_id = $1 AND last_seq <= $2";
    let across = "SELECT COUNT(*) FROM audit_subject_steps \
                  WHERE writer_id = $1 AND first_seq <= $2 AND last_seq > $2";
    assert!(count(covered).await >= 1, "a row the archive covers");
    assert!(count(across).await >= 1, "a row across the cut");
    let before_across = count(across).await;

    let six_years_on = credgate::storage::now_micros() + 6 * 366 * 86_400 * 1_000_000;
    let dir = app.dir.path().join("archive-steps");
    let done = archive::archive(db, 1826, six_years_on, &dir)
        .await
        .unwrap();
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(
        count(covered).await,
        0,
        "the rows it covers whole went with it"
    );
    assert_eq!(
        count(across).await,
        before_across,
        "the rows across the cut stay"
    );
    let r = verify::verify_at(db, &app.state.audit_public_key, six_years_on)
        .await
        .unwrap();
    assert!(r.ok, "{r:?}");
    assert_eq!(r.chains[0].archived_through, Some(done[0].upto_seq));
    let e = sqlx::query("DELETE FROM audit_subject_steps WHERE writer_id = $1")
        .bind(&own)
        .execute(db.pool())
        .await
        .expect_err("a row across the cut is not covered whole")
        .to_string();
    assert!(e.contains("audit_subject_steps is append-only"), "{e}");

    // The live part of a row across the cut still answers for the records after it: one of
    // them forged into `u(1)`'s index is found.
    let live = store::chain_page_after(db, &own, done[0].upto_seq, 1)
        .await
        .unwrap()
        .remove(0);
    assert!(!live.subjects.contains(&u(1)), "{:?}", live.subjects);
    plant_step(db, &u(1), &own, &[live.seq]).await;
    let r = verify::verify_at(db, &app.state.audit_public_key, six_years_on)
        .await
        .unwrap();
    assert!(!r.ok, "{r:?}");
    assert_eq!(r.first_bad_seq, Some(live.seq));
}

async fn indexed_to_head(app: &TestApp, writer_id: &str) {
    let progress = index_store::progress_of(&app.state.db, writer_id)
        .await
        .unwrap();
    let head = store::chain_head(&app.state.db, writer_id)
        .await
        .unwrap()
        .chain_seq;
    assert_eq!(progress, head, "indexed to the head");
}

/// SQLite stores any type in any column unless the table is STRICT: a blob planted as `seqs`
/// or text as a `seq` passed verification's checks (`json_valid` of a blob is 1) and made the
/// subject's searches and verification fail reading them (a 500, not a finding). The table
/// refuses them. (PostgreSQL's columns are typed.)
#[tokio::test]
async fn a_step_row_of_the_wrong_types_is_refused() {
    let app = TestApp::spawn_with(|c| c.audit.indexer = false).await;
    if app.state.db.backend() != credgate::storage::Backend::Sqlite {
        println!("SKIPPED: SQLite's column types");
        return;
    }
    for values in [
        "('x', 'w', 1, 1, x'5b315d')",
        "('x', 'w', 1, 'abc', '[1]')",
        "('x', 'w', 3.5, 4, '[4]')",
    ] {
        let sql = format!(
            "INSERT INTO audit_subject_steps (subject_id, writer_id, first_seq, last_seq, seqs) \
             VALUES {values}"
        );
        let e = sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(app.state.db.pool())
            .await
            .expect_err(values);
        assert!(e.to_string().contains("cannot store"), "{values}: {e}");
    }
}
