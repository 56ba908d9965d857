//! The subject index as step rows (migration 0090): one row per subject per indexing step
//! holding the step's `seq`s that name it. A subject's walks read rows up to a cut and read
//! more when a page comes out short; these tests build rows of every shape (steps of one
//! record and of many, a step whose range straddles another chain's records, an unindexed
//! tail) and walk every page size both ways against the records themselves.

use credgate::audit::{AuditRecord, index_store, store};

use crate::helpers::TestApp;
use crate::indexer::{append_records, data_record};

/// Appends `n` records to chain `writer_id`; record `i` names subject "A", "B" when
/// `i % 3 == 0`, "C" when `i == 17`; made by org "rare" for purpose "lending" when
/// `i % 10 == 0`, else by org "even" or "odd" for "enforcement" (which the tests withhold
/// from the subject): filters that drop most candidates make pages come out short of the cut.
async fn append(app: &TestApp, writer_id: &str, n: usize, tag: usize) {
    let now = credgate::storage::now_micros();
    let records: Vec<AuditRecord> = (0..n)
        .map(|i| {
            let mut subjects = vec!["A".to_string()];
            if i % 3 == 0 {
                subjects.push("B".into());
            }
            if i == 17 {
                subjects.push("C".into());
            }
            let (org, purpose) = match i {
                _ if i % 10 == 0 => ("rare", "lending"),
                _ if i % 2 == 0 => ("even", "enforcement"),
                _ => ("odd", "enforcement"),
            };
            AuditRecord {
                org: Some(org.into()),
                purpose: Some(purpose.into()),
                ..data_record(writer_id, now + tag as i64 * 1_000, i, subjects)
            }
        })
        .collect();
    append_records(app, writer_id, records).await;
}

/// Indexes `writer_id` up to chain place `upto` in steps of about `budget` (a record costs one
/// plus its subjects).
async fn index_to(app: &TestApp, writer_id: &str, upto: i64, budget: i64) {
    let db = &app.state.db;
    loop {
        let done = index_store::progress_of(db, writer_id).await.unwrap();
        if done >= upto {
            return;
        }
        // The step reads no further than `upto`: `scan` counts records after `done`.
        let step = index_store::index_step(db, writer_id, done, budget, upto - done)
            .await
            .unwrap();
        assert!(
            matches!(step, index_store::Step::Indexed { .. }),
            "{step:?}"
        );
    }
}

/// Chain w1's records 1-40, then chain w2's 1-30, then w1's 41-80: w1 indexed in small steps
/// through 70 (one step spans w2's block), w2 in one step through 20, then 300 more of w2's in
/// one step across a bucket boundary (with w2's 21-30); w1's last 10 wait for the indexer.
async fn build() -> TestApp {
    let app = TestApp::spawn_with(|c| c.audit.indexer = false).await;
    append(&app, "w1", 40, 0).await;
    append(&app, "w2", 30, 1).await;
    append(&app, "w1", 40, 2).await;
    index_to(&app, "w1", 39, 7).await;
    index_to(&app, "w1", 42, 10_000).await;
    index_to(&app, "w1", 70, 9).await;
    index_to(&app, "w2", 20, 10_000).await;
    // 300 more records of w2 (seqs past 256) in one step: its rows are cut at each bucket of
    // 256 seqs, which the walks' reach of 256 from the cursor relies on.
    append(&app, "w2", 300, 4).await;
    index_to(&app, "w2", 320, 1_000_000).await;
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_subject_steps")
        .fetch_one(app.state.db.pool())
        .await
        .unwrap();
    assert!(rows > 30, "many step rows: {rows}");
    app
}

/// What the records say: the `seq`s naming `subject` (and made by `org`; with `lending_only`,
/// of purpose "lending"), newest first.
async fn truth(app: &TestApp, subject: &str, org: Option<&str>, lending_only: bool) -> Vec<i64> {
    let mut all: Vec<i64> = store::page_after(&app.state.db, 0, 1_000_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.subjects.iter().any(|s| s == subject))
        .filter(|r| org.is_none_or(|o| r.org.as_deref() == Some(o)))
        .filter(|r| !lending_only || r.purpose.as_deref() == Some("lending"))
        .map(|r| r.seq)
        .collect();
    all.reverse();
    all
}

#[tokio::test]
async fn the_access_log_walks_step_rows_page_by_page_exactly() {
    let app = build().await;
    let now = credgate::storage::now_micros();
    let cases = [
        ("A", false),
        ("A", true),
        ("B", false),
        ("B", true),
        ("C", false),
        ("nobody", false),
    ];
    for (subject, withhold) in cases {
        let want = truth(&app, subject, None, withhold).await;
        let withheld: &[(&str, u32)] = if withhold {
            &[("enforcement", 30)]
        } else {
            &[]
        };
        for limit in [1, 2, 5, 9, 200] {
            let (mut got, mut before) = (Vec::new(), None);
            loop {
                let page =
                    store::access_log_at(&app.state.db, subject, (before, limit), withheld, now)
                        .await
                        .unwrap();
                let seqs: Vec<i64> = page.records.iter().map(|r| r.seq).collect();
                if page.next.is_some() {
                    assert_eq!(seqs.len() as i64, limit, "{subject} {limit}: a full page");
                }
                got.extend(seqs);
                match page.next {
                    Some(n) => before = Some(n),
                    None => break,
                }
                assert!(got.len() <= want.len(), "{subject} {limit}: the walk ends");
            }
            assert_eq!(got, want, "{subject} withheld {withhold}, pages of {limit}");
        }
    }
}

#[tokio::test]
async fn the_officers_search_walks_step_rows_both_ways_with_filters() {
    let app = build().await;
    for (subject, org) in [
        ("A", None),
        ("A", Some("even")),
        ("A", Some("rare")),
        ("B", Some("odd")),
        ("B", Some("rare")),
        ("C", None),
    ] {
        let want = truth(&app, subject, org, false).await;
        let b = store::Bounds {
            subject: Some(subject.into()),
            org: org.map(Into::into),
            ..Default::default()
        };
        for limit in [1, 3, 8, 500] {
            // Newest first, as GET /admin/audit pages.
            let (mut got, mut before) = (Vec::new(), None);
            loop {
                let page = store::search(&app.state.db, &b, before, limit, None)
                    .await
                    .unwrap();
                got.extend(page.iter().map(|r| r.seq));
                if (page.len() as i64) < limit {
                    break;
                }
                before = page.last().map(|r| r.seq);
                assert!(got.len() <= want.len(), "the walk ends");
            }
            assert_eq!(
                got, want,
                "{subject} {org:?}, newest first, pages of {limit}"
            );
            // Oldest first, as the export pages.
            let (mut got, mut after) = (Vec::new(), 0);
            loop {
                let page = store::search(&app.state.db, &b, None, limit, Some(after))
                    .await
                    .unwrap();
                got.extend(page.iter().map(|r| r.seq));
                if (page.len() as i64) < limit {
                    break;
                }
                after = page.last().map(|r| r.seq).unwrap();
                assert!(got.len() <= want.len(), "the walk ends");
            }
            got.reverse();
            assert_eq!(
                got, want,
                "{subject} {org:?}, oldest first, pages of {limit}"
            );
        }
    }
}

/// A walk reads the step rows, then the log with each chain's records above its progress. An
/// indexer step committed between the two reads would move records out of the tail into rows
/// the first read did not see: both reads share one snapshot. Steps of one record run without
/// pause beside the searches; every answer must hold every record.
#[tokio::test]
async fn searches_beside_a_running_indexer_miss_nothing() {
    let app = TestApp::spawn_with(|c| c.audit.indexer = false).await;
    append(&app, "w3", 240, 3).await;
    let want = truth(&app, "A", None, false).await;
    let db = app.state.db.clone();
    let indexer = tokio::spawn(async move {
        let mut done = 0;
        while done < 240 {
            if let index_store::Step::Indexed { to, .. } =
                index_store::index_step(&db, "w3", done, 1, 1)
                    .await
                    .unwrap()
            {
                done = to;
            }
        }
    });
    let b = store::Bounds {
        subject: Some("A".into()),
        ..Default::default()
    };
    let mut runs = 0;
    while !indexer.is_finished() {
        let page = store::access_log_at(&app.state.db, "A", (None, 1000), &[], 0)
            .await
            .unwrap();
        let got: Vec<i64> = page.records.iter().map(|r| r.seq).collect();
        assert!(
            got == want,
            "access log, run {runs}: {:?}",
            differ(&got, &want)
        );
        let found = store::search(&app.state.db, &b, None, 1000, None)
            .await
            .unwrap();
        let got: Vec<i64> = found.iter().map(|r| r.seq).collect();
        assert!(
            got == want,
            "officers' search, run {runs}: {:?}",
            differ(&got, &want)
        );
        runs += 1;
    }
    indexer.await.unwrap();
    assert!(runs > 10, "the searches ran beside the steps: {runs}");
}

/// The `seq`s one list has and the other lacks: (missing, extra).
fn differ(got: &[i64], want: &[i64]) -> (Vec<i64>, Vec<i64>) {
    let missing = want.iter().filter(|s| !got.contains(s)).copied().collect();
    let extra = got.iter().filter(|s| !want.contains(s)).copied().collect();
    (missing, extra)
}
