//! Low-severity findings of the rev4 review, each with a hostile test that failed on the code
//! it was written against: `audit verify --sink-file` reading a line of any length, the
//! recorded `sha256:` namespace shared with stored values and the officers' subject search
//! that did not reduce its input as the recorder does, and `audit archive` saying "nothing is
//! older" when a sink held every chain back.

use std::time::Duration;

use serde_json::Value;

use crate::cli::{config_file, credgate, explain, text};
use crate::helpers::{TestApp, wait_until};
use crate::rev3_review::{sink_line, sink_lines};

/// A writer id of its own for one test.
fn writer(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// L1: `audit verify --sink-file` read the file a line at a time with no bound on a line, so
/// a file of one endless line grew the CLI's memory without end (and a 10 MB line of nothing
/// was skipped as "another program's" and the check passed). A line longer than any message
/// credgate ships now stops the reading there and fails the verification, naming the line.
#[tokio::test]
async fn rev4_a_sink_file_line_longer_than_any_message_fails_verify_naming_it() {
    let writer = writer("rev4-line");
    let w = writer.clone();
    let app = TestApp::spawn_with(move |c| {
        c.audit.checkpoint_every = 1;
        c.audit.writer_id = Some(w);
    })
    .await;
    let (_, token) = app.token("regulator").await;
    for _ in 0..3 {
        let res = app.data(&token, "/v1/stores/power/lists/red").await;
        assert_eq!(res.status(), 200);
    }
    let file = sink_lines(&app.state.db, &writer).await;
    let genuine = file.lines().count();
    let path = app.dir.path().join("sink.log");
    let verify = |path: &std::path::Path| {
        credgate(&[
            "audit",
            "verify",
            "--sink-file",
            &path.display().to_string(),
            "--config",
            &config_file(&app),
        ])
    };
    // The genuine lines alone verify.
    std::fs::write(&path, &file).unwrap();
    let out = verify(&path);
    assert!(out.status.success(), "{}", explain(&out));

    // Then 10 MB of one line, and a genuine line after it.
    let endless = sink_line("audit", &[], &"x".repeat(10_000_000));
    let after = file.lines().next().unwrap();
    std::fs::write(&path, format!("{file}{endless}{after}\n")).unwrap();
    let out = verify(&path);
    let (stdout, _) = text(&out);
    let report: Option<Value> = serde_json::from_str(&stdout).ok();
    let line = genuine + 1;
    assert!(
        !out.status.success()
            && report.as_ref().is_some_and(|r| r["ok"] == false
                && r["sink_file"]["verdict"] == "sink_line_too_long"
                && r["sink_file"]["line"] == line
                && r["reason"]
                    .as_str()
                    .is_some_and(|why| why.contains(&format!("line {line} "))))
            && !stdout.contains(&"x".repeat(1000)),
        "line {line} of the sink file is 10 MB long: verify must fail on it, naming it{}",
        explain(&out)
    );
}

/// L1's cap against the longest line credgate can ship for a data answer: 1,000 subjects
/// (the engine's cap) of 128 bytes that JSON writes 6 bytes each, and a path as long as
/// hyper's whole request head (417,792 bytes) with every byte re-encoded in 3. The record's
/// JSON, with room for its SD parameters, stays under half the cap.
#[test]
fn rev4_the_longest_record_line_is_well_under_the_sink_line_cap() {
    let record = credgate::audit::AuditRecord {
        path: "%22".repeat(417_792),
        subjects: (0..1000)
            .map(|i| format!("{i:04}{}", "\u{1}".repeat(124)))
            .collect(),
        hash: format!("v4:{}", "0".repeat(64)),
        prev_hash: format!("v4:{}", "0".repeat(64)),
        writer_id: "w".repeat(128),
        ..Default::default()
    };
    let json = serde_json::to_vec(&record).unwrap().len();
    let line = json + 4096;
    let cap = credgate::audit::ship::MAX_SINK_LINE;
    assert!(
        line < cap / 2,
        "a record line of {line} bytes against a cap of {cap}"
    );
    println!("longest data-answer record line: about {line} bytes; cap {cap}");
}

/// An officer's search of the log by subject: the ids of the records found (one page).
async fn officer_search(app: &TestApp, officer: &str, subject: &str) -> Vec<String> {
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
    let mut ids: Vec<String> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// `sha256:` and the hex digest of `value`: how the recorder writes a long value.
fn digest_of(value: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, value.as_bytes());
    format!("sha256:{}", hex::encode(d.as_ref()))
}

/// The audit id of one read of the fake store's document, which holds `value` where the
/// route's subject id is (a store's value that is not a valid id).
async fn read_with_subject(app: &TestApp, token: &str, value: &str) -> String {
    *app.fake.doc.lock().unwrap() = serde_json::json!({"uscc": value, "name": "x"});
    let res = app
        .data(token, "/v1/stores/fake/doc/91350100M000100Y43")
        .await;
    assert_eq!(res.status(), 200);
    res.headers()["x-audit-id"].to_str().unwrap().to_string()
}

/// L2: a store's value over 128 bytes that is not an id is recorded as `sha256:<hex>`, but
/// (a) a stored value that itself read `sha256:<64 hex>` was recorded as sent, so a store
/// could plant records in the search for another value's digest; and (b) the officers' search
/// did not reduce its input, so a search for a 129-256 byte value found nothing. Both backends
/// (`CREDGATE_TEST_PG`).
#[tokio::test]
async fn rev4_a_subject_search_reduces_as_the_recorder_and_the_digest_form_is_reserved() {
    let app = TestApp::spawn().await;
    let (_, token) = app.token("regulator").await;
    let (_, officer) = app.token("security_officer").await;
    // 200 bytes: over the recorder's 128, under the search's 256.
    let long = "L".repeat(200);
    let long_digest = digest_of(&long);
    let long_read = read_with_subject(&app, &token, &long).await;
    // A store planting the long value's recorded form as a value of its own.
    let planted_read = read_with_subject(&app, &token, &long_digest).await;
    // A short value in the reserved namespace, not in the digest form.
    let short_reserved = "sha256:not-a-digest";
    let short_read = read_with_subject(&app, &token, short_reserved).await;

    let planted = app.record(&planted_read).await;
    assert!(
        !planted.subjects.contains(&long_digest),
        "(a) a store's value `{long_digest}` was recorded as sent: it reads as the digest \
         of another value: {:?}",
        planted.subjects
    );
    assert!(planted.subjects.contains(&digest_of(&long_digest)));
    assert!(
        app.record(&short_read)
            .await
            .subjects
            .contains(&digest_of(short_reserved))
    );

    // The digest, pasted from a record, finds that record and no planted one.
    assert_eq!(
        officer_search(&app, &officer, &long_digest).await,
        vec![long_read.clone()],
        "(a) the search for a recorded digest"
    );
    // The value itself finds the same record (129-256 bytes).
    assert_eq!(
        officer_search(&app, &officer, &long).await,
        vec![long_read],
        "(b) the search for a 200-byte value must find its own record, and only it"
    );
    // A reserved value is found by typing it (reduced as recorded), and the planted value
    // by its own recorded form.
    assert_eq!(
        officer_search(&app, &officer, short_reserved).await,
        vec![short_read]
    );
    assert_eq!(
        officer_search(&app, &officer, &digest_of(&long_digest)).await,
        vec![planted_read]
    );
    // Over the search's 256 bytes: refused, as before.
    let res = app
        .http
        .get(format!("{}/admin/audit", app.url))
        .query(&[("subject", "L".repeat(257).as_str())])
        .bearer_auth(&officer)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
}

/// L3: `audit archive` said "nothing is older than the retention minimum" when records were
/// older, and every chain was held back by a sink that had not confirmed them.
#[tokio::test]
async fn rev4_archive_says_when_a_sink_held_everything_back() {
    use sqlx::Executor as _;
    let writer = writer("rev4-held");
    let w = writer.clone();
    let app = TestApp::spawn_with(move |c| {
        c.audit.checkpoint_every = 1;
        c.audit.writer_id = Some(w);
        c.audit.ship = Some(credgate::config::ShipConfig {
            address: crate::helpers::dead_addr().to_string(),
            tls: false,
            ca_file: None,
            sink: "rev4-held".into(),
            facility: "local0".into(),
            max_message_bytes: 64 * 1024,
        });
    })
    .await;
    let (_, token) = app.token("regulator").await;
    for _ in 0..3 {
        assert_eq!(
            app.data(&token, "/v1/stores/power/lists/red")
                .await
                .status(),
            200
        );
    }
    let db = &app.state.db;
    // The shipper's heartbeat writes the chain's row (its lease) at once; the sink confirms
    // nothing (it is down).
    wait_until("the shipping row", Duration::from_secs(30), || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM audit_shipping WHERE writer_id = $1")
            .bind(&writer)
            .fetch_one(db.pool())
            .await
            .unwrap()
            > 0
    })
    .await;
    // The chain's checkpoints made ten years old: past every retention.
    crate::audit::drop_guards(db).await;
    db.pool()
        .execute(sqlx::AssertSqlSafe(format!(
            "UPDATE audit_checkpoints SET time_us = time_us - {} WHERE writer_id = '{writer}'",
            10_i64 * 366 * 86_400 * 1_000_000
        )))
        .await
        .unwrap();
    let before = app.record_count().await;
    let dir = app.dir.path().join("arch").display().to_string();
    let out = credgate(&[
        "audit",
        "archive",
        "--out",
        &dir,
        "--config",
        &config_file(&app),
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{}", explain(&out));
    assert_eq!(app.record_count().await, before, "nothing was archived");
    assert!(
        stderr.contains("held back: ") && stderr.contains(&writer),
        "{}",
        explain(&out)
    );
    assert!(
        !stdout.contains("nothing is older") && stdout.contains("held back"),
        "the chain's records are older than the retention; a sink held them back, and the \
         archive said otherwise{}",
        explain(&out)
    );
}
