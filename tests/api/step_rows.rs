//! The step rows a SQLite indexing step groups itself and carries in its progress move
//! (migration 0100, `audit::step_rows`): they are the rows the database derived before, row
//! for row; a move that carries none, or fewer entries than its records name, is still indexed
//! by the database; rows that hold as many entries but say something else are what
//! verification finds; and the carried rows never stay in the progress table.

use credgate::audit::{AuditRecord, index_store, indexer, verify};
use credgate::storage::{Backend, Db};

use crate::audit::index_entries;
use crate::helpers::TestApp;
use crate::indexer::{append, append_records, data_record};

/// Record `i`'s names: names many records share, one that crosses buckets of `seq`s, quotes,
/// CJK and a name of its own every eleventh record.
fn names(i: usize) -> Vec<String> {
    let mut out = vec!["91110000000000000A".to_string(), format!("宁德-{}", i % 7)];
    if i.is_multiple_of(3) {
        out.push("q\"uote\\".into());
    }
    if i.is_multiple_of(11) {
        out.push(format!("own-{i}"));
    }
    out
}

/// One row as stored, its `seqs` parsed and sorted.
type Row = (String, String, i64, i64, Vec<i64>);

async fn rows(db: &Db) -> Vec<Row> {
    let raw: Vec<(String, String, i64, i64, String)> = sqlx::query_as(
        "SELECT subject_id, writer_id, first_seq, last_seq, seqs FROM audit_subject_steps",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    let mut out: Vec<Row> = raw
        .into_iter()
        .map(|(s, w, f, l, seqs)| {
            let mut seqs: Vec<i64> = serde_json::from_str(&seqs).unwrap();
            seqs.sort();
            (s, w, f, l, seqs)
        })
        .collect();
    out.sort();
    out
}

async fn appended(app: &TestApp) -> Vec<AuditRecord> {
    let now = 1_700_000_000_000_000;
    let records = (0..700)
        .map(|i| data_record("rows", now, i, names(i)))
        .collect();
    append_records(app, "rows", records).await
}

/// The same 700 records in two fresh databases: one indexed by the indexer's steps (after a
/// first progress, which the database derives), the other by moving its progress by hand to
/// the same places (the database derives every step). The rows are the same, none twice.
/// (That the database then derived nothing beside the carried rows is what `none twice`
/// shows; that carried rows skip derivation at all, `carried_rows_that_misstate...` shows.)
#[tokio::test]
async fn the_rows_a_step_groups_are_the_rows_the_database_derives() {
    let grouped = TestApp::spawn_with(|c| c.audit.indexer = false).await;
    let derived = TestApp::spawn_with(|c| c.audit.indexer = false).await;
    let (a, b) = (appended(&grouped).await, appended(&derived).await);
    let seqs = |r: &[AuditRecord]| r.iter().map(|r| r.seq).collect::<Vec<_>>();
    assert_eq!(
        seqs(&a),
        seqs(&b),
        "both databases gave the records one seq each"
    );

    let db = &grouped.state.db;
    let mut places = vec![];
    let mut done = 0;
    while done < 700 {
        // About 80 records a step: several steps, each across the buckets it meets.
        let step = index_store::index_step(db, "rows", done, 250, 700)
            .await
            .unwrap();
        let index_store::Step::Indexed { to, grouped, .. } = step else {
            panic!("{step:?}")
        };
        // A chain's first progress is derived by the database; every later step carries the
        // rows it grouped (on SQLite: PostgreSQL's trigger derives them all).
        let sqlite = db.backend() == Backend::Sqlite;
        assert_eq!(grouped, sqlite && done != 0, "step to {to}");
        places.push(to);
        done = to;
    }
    assert!(places.len() > 5, "{places:?}");

    let ddb = &derived.state.db;
    sqlx::query("INSERT INTO audit_index_progress (writer_id, chain_seq, indexed_us) VALUES ('rows', $1, 0)")
        .bind(places[0])
        .execute(ddb.pool())
        .await
        .unwrap();
    for to in &places[1..] {
        sqlx::query("UPDATE audit_index_progress SET chain_seq = $1 WHERE writer_id = 'rows'")
            .bind(*to)
            .execute(ddb.pool())
            .await
            .unwrap();
    }
    let (got, want) = (rows(db).await, rows(ddb).await);
    assert!(want.len() > 20, "{}", want.len());
    assert_eq!(got, want);
    let r = verify::verify(db, &grouped.state.audit_public_key)
        .await
        .unwrap();
    assert!(r.ok, "{r:?}");
}

/// An app without an indexer, on SQLite (carried rows are SQLite's): None after printing
/// SKIPPED on PostgreSQL.
async fn sqlite_app() -> Option<TestApp> {
    let app = TestApp::spawn_with(|c| c.audit.indexer = false).await;
    if app.state.db.backend() != Backend::Sqlite {
        println!("SKIPPED: SQLite's carried step rows");
        return None;
    }
    Some(app)
}

/// Carried rows are emptied in the statement that moved the progress, and cannot be set
/// without a move forward (they would wait there for the next move to insert them).
#[tokio::test]
async fn the_carried_rows_never_stay_in_the_progress_table() {
    let Some(app) = sqlite_app().await else {
        return;
    };
    append(&app, "kept", &[vec!["x".into()]]).await;
    indexer::catch_up(&app.state.db).await.unwrap();
    append(&app, "kept", &[vec!["x".into()], vec!["y".into()]]).await;
    indexer::catch_up(&app.state.db).await.unwrap();
    let left: Vec<Option<String>> =
        sqlx::query_scalar("SELECT step_rows FROM audit_index_progress")
            .fetch_all(app.state.db.pool())
            .await
            .unwrap();
    assert_eq!(left, vec![None]);
    assert_eq!(index_entries(&app.state.db).await.len(), 3);
    let planted = "[[\"x\", 1, 1, [1]]]";
    for sql in [
        "UPDATE audit_index_progress SET step_rows = $1",
        "UPDATE audit_index_progress SET step_rows = $1, chain_seq = chain_seq",
        "INSERT INTO audit_index_progress (writer_id, chain_seq, indexed_us, step_rows) \
         VALUES ('other', 0, 0, $1)",
    ] {
        let e = sqlx::query(sql)
            .bind(planted)
            .execute(app.state.db.pool())
            .await
            .expect_err(sql);
        assert!(
            e.to_string().contains("only with a move forward"),
            "{sql}: {e}"
        );
    }
}

/// A chain with progress and two records naming `who` above it: (app, their seqs).
async fn two_unindexed(who: &str) -> Option<(TestApp, Vec<i64>)> {
    let app = sqlite_app().await?;
    append(&app, "hand", &[vec!["other".into()]]).await;
    indexer::catch_up(&app.state.db).await.unwrap();
    let two = append(&app, "hand", &[vec![who.into()], vec![who.into()]]).await;
    Some((app, two.iter().map(|r| r.seq).collect()))
}

async fn move_by_hand(app: &TestApp, rows: &str) {
    sqlx::query(
        "UPDATE audit_index_progress SET chain_seq = 3, step_rows = $1 WHERE writer_id = 'hand'",
    )
    .bind(rows)
    .execute(app.state.db.pool())
    .await
    .expect("a forward move within the chain is allowed");
}

/// Moves by hand that carry no rows, malformed rows or too few entries: the database derives
/// the rows of what the move passes over, so no record drops out of its subject's searches.
#[tokio::test]
async fn a_move_carrying_too_few_rows_is_still_indexed_by_the_database() {
    let who = "91110000000000002X";
    for case in 0..6 {
        let Some((app, seqs)) = two_unindexed(who).await else {
            return;
        };
        let carried = match case {
            0 => "[]".to_string(),
            1 => "not json".to_string(),
            2 => format!("[[\"{who}\", {s}, {s}, \"[{s}]\"]]", s = seqs[0]),
            3 => "[\"x\", 7, null, {\"a\": [1, 2]}]".to_string(),
            4 => format!(
                "[[\"{who}\", \"{s}\", {s}, [{s}, {t}]]]",
                s = seqs[0],
                t = seqs[1]
            ),
            // Short by one: inserted beside the derived rows (an extra candidate, no harm).
            _ => format!("[[\"{who}\", {s}, {s}, [{s}]]]", s = seqs[0]),
        };
        move_by_hand(&app, &carried).await;
        assert_indexed_and_verified(&app, who, &seqs, &carried).await;
    }
}

/// Both of `who`'s records are in the index after a move carrying `carried`, and the log
/// verifies.
async fn assert_indexed_and_verified(app: &TestApp, who: &str, seqs: &[i64], carried: &str) {
    let mut of_who: Vec<i64> = index_entries(&app.state.db)
        .await
        .into_iter()
        .filter(|(s, _)| s == who)
        .map(|(_, seq)| seq)
        .collect();
    of_who.sort();
    of_who.dedup();
    assert_eq!(of_who, seqs, "carrying {carried}");
    let r = verify::verify(&app.state.db, &app.state.audit_public_key)
        .await
        .unwrap();
    assert!(r.ok, "carrying {carried}: {r:?}");
}

/// A carried row is stored as the database stores a row it derives: the name as text, the
/// span as integers and `seqs` as minified JSON text, however the carried JSON was spaced
/// (0110 reads the carried rows as JSONB and renders each row's `seqs` back to text).
#[tokio::test]
async fn carried_rows_are_stored_as_the_database_stores_its_own() {
    let who = "91110000000000002X";
    let Some((app, seqs)) = two_unindexed(who).await else {
        return;
    };
    let (s, t) = (seqs[0], seqs[1]);
    move_by_hand(
        &app,
        &format!("[ [ \"{who}\" , {s} ,\n {t} , [ {s} ,  {t} ] ] ]"),
    )
    .await;
    let stored: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT typeof(subject_id) || ':' || subject_id, typeof(first_seq) || ':' || first_seq, \
                typeof(last_seq) || ':' || last_seq, typeof(seqs) || ':' || seqs \
         FROM audit_subject_steps WHERE writer_id = 'hand' AND subject_id = $1",
    )
    .bind(who)
    .fetch_all(app.state.db.pool())
    .await
    .unwrap();
    assert_eq!(
        stored,
        vec![(
            format!("text:{who}"),
            format!("integer:{s}"),
            format!("integer:{t}"),
            format!("text:[{s},{t}]"),
        )]
    );
}

/// Rows with one entry a name that name someone else: the database does not derive (the
/// count is right), and verification reports the first record they misstate.
#[tokio::test]
async fn carried_rows_that_misstate_the_records_are_found_by_verification() {
    let Some((app, seqs)) = two_unindexed("91110000000000002X").await else {
        return;
    };
    let forged = serde_json::json!([["someone-else", seqs[0], seqs[1], seqs]]).to_string();
    move_by_hand(&app, &forged).await;
    let of_who = index_entries(&app.state.db)
        .await
        .into_iter()
        .filter(|(s, _)| s == "91110000000000002X")
        .count();
    assert_eq!(
        of_who, 0,
        "the count was right: the database derived nothing"
    );
    let r = verify::verify(&app.state.db, &app.state.audit_public_key)
        .await
        .unwrap();
    assert!(!r.ok, "{r:?}");
    assert_eq!(r.first_bad_seq, Some(seqs[0]));
}

/// A planted `subjects` that `json_valid` passes but that is not UTF-8 text does not stop the
/// chain's indexing: the step reads it as bytes (a blob holding a list of names is grouped
/// as that list; bytes that are not UTF-8 are odd, and the database derives the step's rows),
/// and the records after it are indexed.
#[tokio::test]
async fn a_planted_subjects_that_is_not_text_does_not_stop_indexing() {
    for (planted, grouped) in [
        ("X'5B2278225D'", true),
        ("CAST(X'5B2278FF225D' AS TEXT)", false),
    ] {
        let Some(app) = sqlite_app().await else {
            return;
        };
        append(&app, "odd", &[vec!["a".into()]]).await;
        indexer::catch_up(&app.state.db).await.unwrap();
        let two = append(&app, "odd", &[vec!["b".into()], vec!["c".into()]]).await;
        alter(&app, &format!("subjects = {planted}"), two[0].seq).await;
        let step = index_store::index_step(&app.state.db, "odd", 1, 1_000, 1_000).await;
        let step = step.unwrap_or_else(|e| panic!("{planted}: {e}"));
        assert!(
            matches!(step, index_store::Step::Indexed { to: 3, grouped: g, .. } if g == grouped),
            "{planted}: {step:?}"
        );
        // Only "c"'s rows are read: the database's own derivation (0090) copies a name that is
        // not UTF-8 into its row as it is, which a text read of every row would refuse.
        let c: Vec<String> =
            sqlx::query_scalar("SELECT seqs FROM audit_subject_steps WHERE subject_id = 'c'")
                .fetch_all(app.state.db.pool())
                .await
                .unwrap();
        let c: Vec<i64> = c
            .iter()
            .flat_map(|s| serde_json::from_str::<Vec<i64>>(s).unwrap())
            .collect();
        assert_eq!(c, vec![two[1].seq], "{planted}");
    }
}

/// A step of records whose names are all distinct stops once its rows reach
/// `index_store::STEP_ROWS` (what its move writes inside SQLite's write lock), whatever its
/// budget of names; the next step takes the rest, and every name is indexed.
#[tokio::test]
async fn a_step_of_distinct_names_stops_at_its_rows() {
    let Some(app) = sqlite_app().await else {
        return;
    };
    let names: Vec<Vec<String>> = (0..30)
        .map(|i| (0..100).map(|j| format!("n{i}-{j}")).collect())
        .collect();
    append(&app, "wide", &names).await;
    let db = &app.state.db;
    let step = index_store::index_step(db, "wide", 0, 1, 1_000)
        .await
        .unwrap();
    assert!(
        matches!(step, index_store::Step::Indexed { to: 1, .. }),
        "{step:?}"
    );
    let step = index_store::index_step(db, "wide", 1, 1_000_000, 1_000)
        .await
        .unwrap();
    let index_store::Step::Indexed {
        to,
        records,
        scanned,
        at_head,
        ..
    } = step
    else {
        panic!("{step:?}")
    };
    assert!(
        !at_head && scanned == records + 1,
        "it stopped reading: {step:?}"
    );
    assert_eq!(
        records as usize,
        index_store::STEP_ROWS / 100,
        "the record that reached the cap is the last"
    );
    indexer::catch_up(db).await.unwrap();
    assert!(to < 30);
    assert_eq!(index_entries(db).await.len(), 3_000);
}

/// A record whose `subjects` was replaced by text that is not UTF-8 (planted: the gateway
/// writes JSON from Rust strings), indexed by the database's own derivation, which copies the
/// name's bytes into its row: verification reports that record and does not stop at the first
/// column it cannot read as text (it answered an error, naming no record).
#[tokio::test]
async fn a_planted_name_that_is_not_utf8_is_reported_by_verification() {
    let Some(app) = sqlite_app().await else {
        return;
    };
    append(&app, "odd", &[vec!["a".into()]]).await;
    indexer::catch_up(&app.state.db).await.unwrap();
    let two = append(&app, "odd", &[vec!["b".into()], vec!["c".into()]]).await;
    alter(&app, "subjects = CAST(X'5B2278FF225D' AS TEXT)", two[0].seq).await;
    indexer::catch_up(&app.state.db).await.unwrap();
    let planted: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_subject_steps WHERE CAST(subject_id AS BLOB) = X'78FF'",
    )
    .fetch_one(app.state.db.pool())
    .await
    .unwrap();
    assert_eq!(planted, 1, "the derivation copied the name's bytes");
    assert_reported(&app, two[0].seq).await;
}

/// An index row planted with a name that is not UTF-8, naming a record the log holds:
/// verification reports that record (its rows name someone it does not), where it answered an
/// error, naming nothing.
#[tokio::test]
async fn a_planted_index_row_that_is_not_utf8_is_reported_by_verification() {
    let Some(app) = sqlite_app().await else {
        return;
    };
    let two = append(&app, "odd", &[vec!["a".into()], vec!["b".into()]]).await;
    indexer::catch_up(&app.state.db).await.unwrap();
    sqlx::query(
        "INSERT INTO audit_subject_steps (subject_id, writer_id, first_seq, last_seq, seqs) \
         VALUES (CAST(X'78FF' AS TEXT), 'odd', $1, $1, '[' || $1 || ']')",
    )
    .bind(two[1].seq)
    .execute(app.state.db.pool())
    .await
    .unwrap();
    assert_reported(&app, two[1].seq).await;
}

/// An index entry that is a BLOB of a subject's bytes is not that subject (searches, which
/// bind text, never find it): verification reads it as a name no record holds. Here it
/// stands in for the genuine row of a record that carried rows left out while keeping the
/// count (the first record's seq twice), so it must not make that record verify.
#[tokio::test]
async fn an_index_entry_that_is_a_blob_is_not_the_subject_it_spells() {
    let Some((app, seqs)) = two_unindexed("A").await else {
        return;
    };
    move_by_hand(
        &app,
        &format!("[[\"A\", {s}, {s}, [{s}, {s}]]]", s = seqs[0]),
    )
    .await;
    let r = verify::verify(&app.state.db, &app.state.audit_public_key)
        .await
        .unwrap();
    assert_eq!(r.first_bad_seq, Some(seqs[1]), "left out: {r:?}");
    sqlx::query("INSERT INTO audit_subjects (subject_id, seq) VALUES (X'41', $1)")
        .bind(seqs[1])
        .execute(app.state.db.pool())
        .await
        .unwrap();
    assert_reported(&app, seqs[1]).await;
}

/// The first record of a chain altered to hold text that is not UTF-8 (the page read is empty
/// up to it): reported, not an error.
#[tokio::test]
async fn a_first_record_that_is_not_utf8_is_reported_by_verification() {
    let Some(app) = sqlite_app().await else {
        return;
    };
    let one = append(&app, "first", &[vec!["a".into()], vec!["b".into()]]).await;
    alter(&app, "path = CAST(X'2FFF' AS TEXT)", one[0].seq).await;
    let r = assert_reported(&app, one[0].seq).await;
    assert!(
        r.reason
            .as_deref()
            .unwrap_or("")
            .contains("place 0 of chain `first`"),
        "{r:?}"
    );
}

/// Carried values that are not JSON text, or whose rows are not rows, as migration 0110 reads
/// them (JSONB): a BLOB of JSONB and JSON5 fail `json_valid` as under 0100, and a seq past 64
/// bits is no integer, so the database derives the rows (the records' own name lands); a BLOB
/// holding JSON text is read as that text, so its rows are taken as carried. The rows name a
/// decoy with the right count of entries, so which of the two happened shows in the index.
#[tokio::test]
async fn carried_values_that_are_not_plain_rows_are_read_as_before() {
    let (who, decoy) = ("91110000000000002X", "91110000000000003Y");
    for case in 0..4 {
        let Some((app, seqs)) = two_unindexed(who).await else {
            return;
        };
        let (s, t) = (seqs[0], seqs[1]);
        let rows = format!("[[\"{decoy}\", {s}, {t}, [{s}, {t}]]]");
        let (value, carried) = match case {
            0 => (format!("jsonb('{rows}')"), false),
            1 => (format!("CAST('{rows}' AS BLOB)"), true),
            2 => (format!("'[[''{decoy}'', {s}, {t}, [{s}, {t},],],]'"), false),
            _ => (format!("'[[\"{decoy}\", {s}, 1e30, [{s}, {t}]]]'"), false),
        };
        let sql = format!(
            "UPDATE audit_index_progress SET chain_seq = 3, step_rows = {value} \
             WHERE writer_id = 'hand'"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(app.state.db.pool())
            .await
            .unwrap_or_else(|e| panic!("{value}: {e}"));
        let named = |name: &str, entries: &[(String, i64)]| {
            let mut of: Vec<i64> = entries
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, seq)| *seq)
                .collect();
            of.sort();
            of.dedup();
            of
        };
        let entries = index_entries(&app.state.db).await;
        let (landed, absent) = if carried { (decoy, who) } else { (who, decoy) };
        assert_eq!(named(landed, &entries), seqs, "carrying {value}");
        assert_eq!(
            named(absent, &entries),
            Vec::<i64>::new(),
            "carrying {value}"
        );
        let r = verify::verify(&app.state.db, &app.state.audit_public_key)
            .await
            .unwrap();
        // Carried, the decoy stands where the records' own name belongs: verification says so.
        let expected = if carried { Some(seqs[0]) } else { None };
        assert_eq!(r.first_bad_seq, expected, "carrying {value}: {r:?}");
        assert_eq!(r.ok, !carried, "carrying {value}: {r:?}");
    }
}

/// A chain's last record altered so that its place is text, or its hash is not UTF-8: the
/// chain's end was read with the hash, which failed the whole verification naming nothing.
/// Both are reported.
#[tokio::test]
async fn a_last_record_whose_place_or_hash_is_not_what_was_written_is_reported() {
    for (column, value) in [
        ("chain_seq", "'2x'"),
        ("chain_seq", "X'02'"),
        ("chain_seq", "2.5"),
        ("hash", "CAST(X'FF' AS TEXT)"),
    ] {
        let Some(app) = sqlite_app().await else {
            return;
        };
        let two = append(&app, "last", &[vec!["a".into()], vec!["b".into()]]).await;
        alter(&app, &format!("{column} = {value}"), two[1].seq).await;
        let r = verify::verify(&app.state.db, &app.state.audit_public_key)
            .await
            .unwrap_or_else(|e| panic!("{column}: a report, not an error: {e}"));
        assert!(!r.ok, "{column}: {r:?}");
        assert_eq!(r.first_bad_seq, Some(two[1].seq), "{column}: {r:?}");
    }
}

/// A record whose place was made text in the middle of its chain (it sorts last): not ok, and
/// an answer rather than an error.
#[tokio::test]
async fn a_middle_record_whose_place_is_text_is_reported() {
    let Some(app) = sqlite_app().await else {
        return;
    };
    let names = [vec!["a".into()], vec!["b".into()], vec!["c".into()]];
    let three = append(&app, "mid", &names).await;
    alter(&app, "chain_seq = '2x'", three[1].seq).await;
    let r = verify::verify(&app.state.db, &app.state.audit_public_key)
        .await
        .expect("a report, not an error");
    assert!(!r.ok, "{r:?}");
    assert!(
        [three[1].seq, three[2].seq].contains(&r.first_bad_seq.unwrap_or(0)),
        "{r:?}"
    );
}

/// A copy of a record planted at place 0 of a chain that was never archived: the walk starts
/// at place 1, so it was never read, and its index rows passed for genuine ones.
#[tokio::test]
async fn a_record_planted_below_the_first_place_is_reported() {
    let Some(app) = sqlite_app().await else {
        return;
    };
    let two = append(&app, "low", &[vec!["a".into()], vec!["b".into()]]).await;
    crate::audit::drop_guards(&app.state.db).await;
    let db = app.state.db.pool();
    let mut conn = db.acquire().await.unwrap();
    for sql in [
        "CREATE TEMP TABLE planted AS SELECT * FROM audit_log WHERE seq = $1",
        "UPDATE planted SET seq = seq + 1000, chain_seq = 0, id = 'planted', \
         request_id = 'planted'",
        "INSERT INTO audit_log SELECT * FROM planted",
    ] {
        let q = sqlx::query(sql);
        let q = if sql.contains("$1") {
            q.bind(two[0].seq)
        } else {
            q
        };
        q.execute(&mut *conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    drop(conn);
    let r = verify::verify(&app.state.db, &app.state.audit_public_key)
        .await
        .unwrap();
    assert!(!r.ok, "{r:?}");
    assert_eq!(r.first_bad_seq, Some(two[0].seq + 1000), "{r:?}");
}

/// Verification answers (not an error), not ok, naming `seq` as the first bad record.
async fn assert_reported(app: &TestApp, seq: i64) -> verify::ChainVerdict {
    let r = verify::verify(&app.state.db, &app.state.audit_public_key)
        .await
        .expect("a report, not an error");
    assert!(!r.ok, "{r:?}");
    assert_eq!(r.first_bad_seq, Some(seq), "{r:?}");
    r
}

/// Alters record `seq` as someone with write access to the database would: the guards that
/// refuse an UPDATE of the log are dropped, then `SET {set}` is applied to that record.
async fn alter(app: &TestApp, set: &str, seq: i64) {
    crate::audit::drop_guards(&app.state.db).await;
    let sql = format!("UPDATE audit_log SET {set} WHERE seq = $1");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(seq)
        .execute(app.state.db.pool())
        .await
        .unwrap_or_else(|e| panic!("SET {set}: {e}"));
}
