//! Hostile review (rev3) of the last stop's work: audit shipping (`audit::ship`), the subject
//! indexer (`audit::indexer`, `audit::index_store`, migration 0080), the steady clock tokens
//! run on (`Clock::steady`) and `audit verify --sink-file`.
//!
//! Each `#[ignore]`d test FAILS on the code it was written against and shows one finding; its
//! doc comment says what it shows and what the fix should be. Run them with
//! `cargo test --locked --test api rev3_review -- --ignored`. F3 is a SQLite finding and F5 a
//! PostgreSQL one: on the other backend each prints SKIPPED and passes.

use std::time::{Duration, Instant};

use base64::Engine as _;
use credgate::audit::{index_store, indexer};
use serde_json::Value;

use crate::{helpers::TestApp, indexer::append};

const DAY: Duration = Duration::from_secs(86_400);

/// The claims of a JWT, decoded without any check (only to read `exp` and `nbf`).
fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// The status of a data request with `token` at the gateway at `url`.
async fn status_at(app: &TestApp, url: &str, token: &str) -> u16 {
    app.http
        .get(format!("{url}/v1/stores/power/entities?page_size=1"))
        .bearer_auth(token)
        .header("X-Purpose", "supervision")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// F1 (clock, tokens; medium). `Clock::steady` follows a forward step of the wall clock and
/// never comes back from it ("a step forward is followed, and becomes the new anchor"), and
/// tokens are issued on it. So a wall clock that jumps a day ahead and is corrected (a bad NTP
/// source, an operator's typo, a VM resumed with the wrong time) leaves this process issuing
/// every token a day in the future until it restarts: each one is refused now by every replica
/// whose clock is right (`nbf` beyond the leeway: random 401s behind a load balancer) and is
/// accepted by those replicas a day later, for its whole lifetime. A token issued after the
/// correction lives "a day from now" instead of "now": a leaked token of today works tomorrow.
/// On the wall clock only the tokens issued during the glitch were post-dated.
///
/// The fix the review proposed (issue on the wall clock, judge `exp` on `steady`) would have
/// made the issuer refuse its own new tokens as expired while `steady` stayed a day ahead.
/// Fixed instead in `Clock::steady`: its floor is what the monotonic clock has measured since
/// start, so a forward step is followed while it lasts and forgotten once corrected; a step
/// back is still not followed. A forward glitch now post-dates only what is issued during it.
#[tokio::test]
async fn rev3_a_corrected_forward_step_does_not_post_date_new_tokens() {
    let app = TestApp::spawn().await;
    let ttl = app.state.config.auth.token_ttl_secs;
    let leeway = app.state.config.auth.leeway_secs;
    let (id, secret) = app.add_client("regulator").await;

    let body: Value = app.token_for(&id, &secret).await.json().await.unwrap();
    let before = body["access_token"].as_str().unwrap().to_string();
    assert_eq!(status_at(&app, &app.url, &before).await, 200);

    // The wall clock jumps a day ahead, traffic goes on (a request reads the clock), and the
    // clock is stepped back to the right time.
    app.state.clock.step_forward(DAY);
    let during = status_at(&app, &app.url, &before).await;
    app.state.clock.step_back(DAY);

    let body: Value = app.token_for(&id, &secret).await.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap().to_string();
    let exp = claims_of(&token)["exp"].as_u64().unwrap();
    let wall = app.state.clock.now_secs();
    let here = status_at(&app, &app.url, &token).await;

    // A replica of the same deployment whose clock never jumped.
    let replica = app.sibling().await;
    let there_now = status_at(&app, &replica.url, &token).await;
    replica.state.clock.advance(DAY);
    let there_tomorrow = status_at(&app, &replica.url, &token).await;

    let observed = format!(
        "exp is {} s after the (corrected) wall clock, ttl {ttl} s; the issuer answers {here} \
         (and answered {during} to an older token during the glitch); a replica with the right \
         time answers {there_now} now and {there_tomorrow} a day later",
        exp as i64 - wall as i64
    );
    assert!(
        exp <= wall + ttl + leeway,
        "a token issued after the correction expires a day late: {observed}"
    );
    assert_eq!(
        (there_now, there_tomorrow),
        (200, 401),
        "valid now everywhere, dead tomorrow: {observed}"
    );
}

/// F2 (shipping, memory; medium). The shipper subscribes to the writer's `committed`
/// broadcast only to be woken, but a broadcast value stays queued until every receiver has
/// seen it. The shipper reads it only while connected and idle (`Shipper::idle`): while the
/// sink is down (connect, backoff), while a write blocks on a mute receiver (up to 10 s) and
/// while a session waits for the receiver's close (up to 10 s), it reads nothing, so the
/// channel keeps the newest 4,096 committed records (`CommittedRecord` holds the whole
/// `AuditRecord`, its subject list included) pinned in memory. A list record naming 100
/// subjects is several KiB: with a sink down for good, tens of MiB held for nothing, on top
/// of what the alert analyzer needs. The indexer subscribes the same way and holds them too
/// for as long as a pass runs (a long catch-up).
///
/// Fix: wake the shipper (and the indexer) with a `tokio::sync::Notify` or a `watch` of the
/// head's place, not with a receiver of the records; or drain `wake` in every wait.
#[tokio::test]
async fn rev3_a_down_sink_does_not_pin_committed_records() {
    let dead = crate::helpers::dead_addr();
    let app = TestApp::spawn_with(|c| {
        c.audit.writer_id = Some("rev3-pin".into());
        c.audit.ship = Some(ship_to(dead.to_string(), "rev3-down"));
    })
    .await;
    let (_, token) = app.token("regulator").await;
    let mut subjects = 0;
    const REQUESTS: usize = 200;
    for _ in 0..REQUESTS {
        let res = app
            .data(&token, "/v1/stores/power/entities?page_size=50")
            .await;
        assert_eq!(res.status(), 200);
        let id = res.headers()["x-audit-id"].to_str().unwrap().to_string();
        subjects = app.record(&id).await.subjects.len();
    }
    // The alert analyzer and the indexer read every commit within milliseconds; what stays
    // queued after that is held for the shipper alone.
    let started = Instant::now();
    let mut queued = app.state.audit.committed.len();
    while queued >= 16 && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        queued = app.state.audit.committed.len();
    }
    assert!(
        queued < 16,
        "{queued} committed records (of {REQUESTS} lists naming {subjects} subjects each) are \
         still queued in the broadcast 10 s later, held for a shipper that cannot connect \
         (it would hold 4,096)"
    );
}

/// F3 (indexer guard, SQLite; low). Migration 0080 says "progress only moves forward and is
/// never removed" and guards UPDATE and DELETE with triggers. On SQLite, `INSERT OR REPLACE`
/// resolves the primary-key conflict by deleting the old row, and SQLite fires no DELETE
/// trigger for that unless `recursive_triggers` is on (it is off): anyone who can write the
/// database lowers a chain's progress to 0 past both guards. What it buys is small, and this
/// test does not claim more: the index rows stay (append-only), verification still checks
/// every row present, and searches stay exact (the whole chain becomes the tail each subject
/// search scans with `json_each`, until an indexer moves the progress again; with `[audit]
/// indexer = false` everywhere, for good). The rule the migration states is not a rule on
/// SQLite. PostgreSQL has no REPLACE; its `ON CONFLICT DO UPDATE` meets the UPDATE guard.
///
/// Fix: `PRAGMA recursive_triggers = ON` in the SQLite connection setup (REPLACE's delete then
/// meets `audit_index_progress_no_delete`, and the same REPLACE hole closes on the other
/// append-only tables), or a BEFORE INSERT guard refusing an insert over an existing row.
#[tokio::test]
async fn rev3_sqlite_replace_cannot_lower_index_progress() {
    if std::env::var("CREDGATE_TEST_PG").is_ok() {
        println!("SKIPPED: SQLite's REPLACE conflict resolution");
        return;
    }
    let app = TestApp::spawn_with(|c| c.audit.indexer = false).await;
    let who = "91110000000000004X".to_string();
    let records = append(&app, "rev3-replace", &[vec![who.clone()], vec![who]]).await;
    indexer::catch_up(&app.state.db).await.unwrap();
    let head = records.last().unwrap().chain_seq;
    assert_eq!(
        index_store::progress_of(&app.state.db, "rev3-replace")
            .await
            .unwrap(),
        head
    );
    let update = sqlx::query(
        "UPDATE audit_index_progress SET chain_seq = 0 WHERE writer_id = 'rev3-replace'",
    )
    .execute(app.state.db.pool())
    .await;
    assert!(update.is_err(), "the UPDATE guard holds");

    let replaced = sqlx::query(
        "INSERT OR REPLACE INTO audit_index_progress (writer_id, chain_seq, indexed_us) \
         VALUES ('rev3-replace', 0, 0)",
    )
    .execute(app.state.db.pool())
    .await;
    let progress = index_store::progress_of(&app.state.db, "rev3-replace")
        .await
        .unwrap();
    assert!(
        replaced.is_err() && progress == head,
        "INSERT OR REPLACE {}: the progress went from {head} to {progress}",
        if replaced.is_ok() {
            "succeeded"
        } else {
            "was refused"
        }
    );
}

/// A `[audit.ship]` section to `address`, plain TCP.
fn ship_to(address: String, sink: &str) -> credgate::config::ShipConfig {
    credgate::config::ShipConfig {
        address,
        tls: false,
        ca_file: None,
        sink: sink.into(),
        facility: "local0".into(),
        max_message_bytes: 64 * 1024,
    }
}

/// F4 (shipping and archiving; medium). `audit archive` removes a chain's records up to a
/// signed checkpoint older than the retention, without looking at `audit_shipping`: records
/// that no sink has confirmed (a collector down or unreachable for long, a sink added or
/// renamed, which "ships the chain again from its start") leave the database, and the
/// shipper then reads on from the archive's base (`chain_page_after` skips the gap) without
/// an error, a metric or a `/readyz` word: the sink's copy, the one the database's
/// administrators cannot touch, silently misses them, and `--sink-file` cannot tell (its
/// witnesses are the newest records). The archive file holds them, on the same machine as
/// the database.
///
/// Fix: archive a chain only up to the lowest place every sink with a row for it has
/// confirmed (or refuse, naming the sink), and have the shipper treat a first record above
/// `handed + 1` as a gap: logged, counted and shown like `place_corrupt`.
#[tokio::test]
async fn rev3_archive_keeps_what_no_sink_has_confirmed() {
    let sink = "rev3-archive";
    let app = TestApp::spawn_with(|c| {
        c.audit.checkpoint_every = 5;
        c.audit.writer_id = Some("rev3-archive".into());
        c.audit.ship = Some(ship_to(crate::helpers::dead_addr().to_string(), sink));
    })
    .await;
    let (_, token) = app.token("regulator").await;
    for _ in 0..11 {
        app.data(&token, "/v1/stores/power/lists/red").await;
    }
    let db = &app.state.db;
    let confirmed = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT records_through FROM audit_shipping WHERE writer_id = $1 AND sink = $2",
        )
        .bind("rev3-archive")
        .bind(sink)
        .fetch_optional(db.pool())
        .await
        .unwrap()
    };
    // The shipper's heartbeat writes the chain's row (its lease) at once.
    crate::helpers::wait_until("the shipping row", Duration::from_secs(30), || async {
        confirmed().await.is_some()
    })
    .await;
    let out = app.dir.path().join("archive");
    let six_years_on = credgate::storage::now_micros() + 6 * 366 * 86_400 * 1_000_000;
    let done = credgate::audit::archive::archive(db, 1826, six_years_on, &out)
        .await
        .unwrap();
    let confirmed = confirmed().await.unwrap();
    let archived = done
        .iter()
        .find(|a| a.writer_id == "rev3-archive")
        .map_or(0, |a| a.upto_seq);
    assert!(
        archived <= confirmed,
        "the archive removed places 1..={archived} of the chain from the log; the sink \
         `{sink}` had confirmed through {confirmed}: the sink will never receive them"
    );

    // A confirmed place past the chain's head (an edited row) is corruption, as the shipper
    // judges it (it ships again from the start): it confirms nothing, so nothing is archived.
    sqlx::query("UPDATE audit_shipping SET records_through = $1 WHERE writer_id = $2")
        .bind(1_000_000_000_000_i64)
        .bind("rev3-archive")
        .execute(db.pool())
        .await
        .unwrap();
    let done = credgate::audit::archive::archive(db, 1826, six_years_on, &out)
        .await
        .unwrap();
    assert!(
        done.iter().all(|a| a.writer_id != "rev3-archive"),
        "a place past the head was taken as confirmed: {done:?}"
    );
}

/// F5 (indexer, PostgreSQL; medium). A record's subjects are what the release touched, and
/// where the store's value is not a valid id of the route's type the raw value is recorded
/// (`credgate_policy::engine::canonical`), whatever its length. PostgreSQL refuses a B-tree
/// entry over 2,704 bytes, and `audit_subjects`' primary key is (subject_id, seq): one answer
/// whose subject field holds a few thousand characters (a broken or hostile store) makes the progress
/// trigger fail, so the indexer's step over that record fails on every pass, for good. The
/// chain's indexing stops there: every record after it stays in the un-indexed tail, which
/// every subject search (officers' filter, each subject's "who accessed my data") scans and
/// parses as JSON, so those searches grow with the log; `indexed_through` stands still. (On
/// SQLite the row is accepted.)
///
/// Fix: record as a subject only a value that parses as the route's id type (count and drop
/// the rest, as unclassified fields are), or cap it (e.g. 64 bytes) before it is recorded;
/// and let the indexer skip, count and report a record it cannot index rather than stall
/// the chain behind it.
///
/// Fixed: a value over 128 bytes is recorded as `sha256:` and its digest (71 bytes), so the
/// record is bounded and whoever holds the value can still find it; valid ids are unchanged.
#[tokio::test]
async fn rev3_a_long_subject_from_a_store_does_not_stall_the_index() {
    if std::env::var("CREDGATE_TEST_PG").is_err() {
        println!("SKIPPED: PostgreSQL's B-tree entry limit");
        return;
    }
    let app = TestApp::spawn().await;
    let (_, token) = app.token("regulator").await;
    // Incompressible (PostgreSQL compresses a long entry before it judges its size): 3,000
    // characters of random hex.
    let long: String = (0..94)
        .map(|_| uuid::Uuid::new_v4().simple().to_string())
        .collect();
    *app.fake.doc.lock().unwrap() = serde_json::json!({"uscc": long, "name": "x"});
    let res = app
        .data(&token, "/v1/stores/fake/doc/91350100M000100Y43")
        .await;
    let id = res.headers()["x-audit-id"].to_str().unwrap().to_string();
    let first = app.record(&id).await;
    assert!(
        first
            .subjects
            .iter()
            .any(|s| s.starts_with("sha256:") && s.len() == 71),
        "the store's long value is recorded in its bounded form: {:?}",
        first.subjects.iter().map(String::len).collect::<Vec<_>>()
    );
    assert!(
        first.subjects.iter().all(|s| s.len() <= 128),
        "no subject over 128 bytes is recorded"
    );
    let who = app.sample().entities[3]["uscc"]
        .as_str()
        .unwrap()
        .to_string();
    let res = app
        .data(&token, &format!("/v1/stores/power/entities/{who}"))
        .await;
    assert_eq!(res.status(), 200);
    let id = res.headers()["x-audit-id"].to_str().unwrap().to_string();
    let later = app.record(&id).await;

    let writer = app.state.audit.writer_id().to_string();
    let started = Instant::now();
    let mut progress = 0;
    while progress < later.chain_seq && started.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        progress = index_store::progress_of(&app.state.db, &writer)
            .await
            .unwrap();
    }
    let why = match indexer::catch_up(&app.state.db).await {
        Ok(_) => "none".to_string(),
        Err(e) => e.to_string(),
    };
    assert!(
        progress >= later.chain_seq,
        "15 s on, the chain is indexed through {progress}, not {} (the long subject's record \
         is {}); the indexer's error: {why}",
        later.chain_seq,
        first.chain_seq
    );
}

/// One line of a sink's file as rsyslog's `%rawmsg%` writes it (without the framing).
pub(crate) fn sink_line(msgid: &str, params: &[(&str, String)], msg: &str) -> String {
    let sd: String = params
        .iter()
        .map(|(n, v)| format!(" {n}=\"{v}\""))
        .collect();
    format!(
        "<134>1 2026-01-01T00:00:00Z gw credgate 1 {msgid} [credgate@32473{sd}] \u{feff}{msg}\n"
    )
}

/// What a sink received of `writer`'s chain so far: a line per record and per checkpoint.
pub(crate) async fn sink_lines(db: &credgate::storage::Db, writer: &str) -> String {
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

/// Cuts `writer`'s chain after place `keep` as an administrator of the database would: the
/// records, their index rows, the checkpoints, and the index progress set back.
async fn cut_after(db: &credgate::storage::Db, writer: &str, keep: i64) {
    use sqlx::Executor as _;
    // The index caught up first: a step of the running indexer between the index's rewrite and
    // the records' delete would leave rows naming deleted records (see `sink::cut_tail`).
    credgate::audit::indexer::catch_up(db).await.unwrap();
    crate::audit::drop_guards(db).await;
    let progress_guards: &[&str] = match db.backend() {
        credgate::storage::Backend::Sqlite => &["DROP TRIGGER audit_index_progress_forward"],
        credgate::storage::Backend::Postgres => {
            &["ALTER TABLE audit_index_progress DISABLE TRIGGER audit_index_progress_forward"]
        }
    };
    for s in progress_guards {
        db.pool().execute(*s).await.unwrap();
    }
    crate::audit::unindex(
        db,
        &format!("writer_id = '{writer}' AND chain_seq > {keep}"),
    )
    .await;
    for stmt in [
        format!("DELETE FROM audit_log WHERE writer_id = '{writer}' AND chain_seq > {keep}"),
        format!(
            "DELETE FROM audit_checkpoints WHERE writer_id = '{writer}' AND chain_seq > {keep}"
        ),
        format!("UPDATE audit_index_progress SET chain_seq = {keep} WHERE writer_id = '{writer}'"),
    ] {
        db.pool().execute(sqlx::AssertSqlSafe(stmt)).await.unwrap();
    }
}

/// F6 (`audit verify --sink-file`; high). The sink's file is the copy the database's
/// administrators cannot touch, and `witnesses_in` keeps only each chain's NEWEST signed
/// checkpoint (and newest record line). An administrator who cuts a chain's tail (records,
/// checkpoints, index rows, the progress set back) and restarts its gateway gets the chain
/// written again from the cut: new records at the same places, new checkpoints. Once the new
/// chain has passed the old newest checkpoint, the file's newest lines are new ones the log
/// holds, and `verify --sink-file` passes, though the same file holds signed checkpoints (and
/// record lines) at those places with other hashes: the removed records are proven by the
/// sink and the check does not look. (The shipper would flag `place_corrupt` on the restart;
/// whoever cut the log sets `audit_shipping` back too, as this test's sink file is built
/// without a shipper.)
///
/// Fix: every signed checkpoint line of the file must be held by the log (or covered by an
/// archive), not only the newest per chain; and two record lines of one place with different
/// hashes (or a record line the log holds with another hash) fail the check.
#[tokio::test]
async fn rev3_a_tail_cut_and_written_again_is_found_by_the_sink_file() {
    use crate::cli::{config_file, credgate, text};
    crate::helpers::serially().await;
    let writer = format!(
        "rev3-regrow-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let w = writer.clone();
    let app = TestApp::spawn_with(move |c| {
        c.audit.checkpoint_every = 1;
        c.audit.writer_id = Some(w);
    })
    .await;
    let (_, token) = app.token("regulator").await;
    for _ in 0..8 {
        assert_eq!(
            app.data(&token, "/v1/stores/power/lists/red")
                .await
                .status(),
            200
        );
    }
    let db = app.state.db.clone();
    let head = credgate::storage::shipping::head(&db, &writer)
        .await
        .unwrap();
    let mut file = sink_lines(&db, &writer).await;

    // The tail after place 3 is cut, and the chain's gateway is started again.
    cut_after(&db, &writer, 3).await;
    let w = writer.clone();
    let again = app.sibling_with(move |c| c.audit.writer_id = Some(w)).await;
    for _ in 0..head + 2 {
        let res = app
            .http
            .get(format!("{}/v1/stores/power/lists/red", again.url))
            .bearer_auth(&token)
            .header("X-Purpose", "supervision")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    indexer::catch_up(&db).await.unwrap();
    // What the sink received since: the chain written again from place 4.
    let now = sink_lines(&db, &writer).await;
    let regrown: String = now
        .lines()
        .filter(|l| !file.contains(*l))
        .map(|l| format!("{l}\n"))
        .collect();
    file += &regrown;
    let path = app.dir.path().join("sink.log");
    std::fs::write(&path, &file).unwrap();
    let out = credgate(&[
        "audit",
        "verify",
        "--sink-file",
        &path.display().to_string(),
        "--config",
        &config_file(&app),
    ]);
    let (stdout, stderr) = text(&out);
    assert!(
        !out.status.success() && stdout.contains("signed_checkpoints_disagree"),
        "places 4..={head} were cut and written again; the sink file holds the original \
         signed checkpoints at those places and verify --sink-file passed:\n{stdout}{stderr}"
    );

    // A sink that missed the regrown lines at the old places (it was down meanwhile): no two
    // lines disagree, but its signed checkpoints at 4..=head are not what the log holds.
    let place = |l: &str| -> i64 {
        let v = l
            .split("chain_seq=\"")
            .nth(1)
            .and_then(|r| r.split('"').next());
        v.and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    let missed: String = regrown
        .lines()
        .filter(|l| place(l) > head)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&path, file.replace(&regrown, &missed)).unwrap();
    let out = credgate(&[
        "audit",
        "verify",
        "--sink-file",
        &path.display().to_string(),
        "--config",
        &config_file(&app),
    ]);
    let (stdout, stderr) = text(&out);
    assert!(
        !out.status.success() && stdout.contains("signed_checkpoint_not_held"),
        "the sink's signed checkpoints at 4..={head} are not in the log:\n{stdout}{stderr}"
    );
}
