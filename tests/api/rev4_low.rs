//! Low-severity findings of the rev4 review, each with a hostile test that failed on the code
//! it was written against: `audit verify --sink-file` reading a line of any length, the
//! recorded `sha256:` namespace shared with stored values and the officers' subject search
//! that did not reduce its input as the recorder does, and `audit archive` saying "nothing is
//! older" when a sink held every chain back.

use serde_json::Value;

use crate::cli::{config_file, credgate, explain, text};
use crate::helpers::TestApp;

/// A writer id of its own for one test.
fn writer(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// One line of a sink's file as rsyslog's `%rawmsg%` writes it (without the framing).
fn sink_line(msgid: &str, params: &[(&str, String)], msg: &str) -> String {
    let sd: String = params
        .iter()
        .map(|(n, v)| format!(" {n}=\"{v}\""))
        .collect();
    format!(
        "<134>1 2026-01-01T00:00:00Z gw credgate 1 {msgid} [credgate@32473{sd}] \u{feff}{msg}\n"
    )
}

/// What a sink received of `writer`'s chain so far: a line per record and per checkpoint.
async fn sink_lines(db: &credgate::storage::Db, writer: &str) -> String {
    let mut out = String::new();
    for r in credgate::audit::store::chain_page_after(db, writer, 0, 10_000)
        .await
        .unwrap()
    {
        let params = [
            ("writer_id", r.writer_id.clone()),
            ("chain_seq", r.chain_seq.to_string()),
            ("hash", r.hash.clone()),
        ];
        out += &sink_line("audit", &params, "{}");
    }
    for c in credgate::audit::store::checkpoints(db).await.unwrap() {
        if c.writer_id != writer {
            continue;
        }
        let body = serde_json::json!({"writer_id": c.writer_id, "chain_seq": c.chain_seq,
            "seq": c.seq, "time_us": c.time_us, "hash": c.hash, "key_id": c.key_id,
            "signature": c.signature});
        let params = [
            ("writer_id", c.writer_id.clone()),
            ("chain_seq", c.chain_seq.to_string()),
        ];
        out += &sink_line("checkpoint", &params, &body.to_string());
    }
    out
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
