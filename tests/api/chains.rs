//! Per-writer audit chains (issue 18, decision 1): each gateway process writes its own chain,
//! named by `[audit] writer_id`; verification checks every chain; a log written before chains
//! were per writer verifies after the migration as the `legacy` chain.

use std::{collections::HashSet, time::Duration};

use credgate::audit::{
    AuditRecord,
    chain::{self, Encoding, LEGACY_WRITER},
    store, verify,
};
use serde_json::Value;
use sqlx::Executor;

use crate::helpers::{TestApp, wait_until};

/// A fresh database: PostgreSQL under `CREDGATE_TEST_PG`, else a SQLite file in `dir`.
async fn fresh_url(dir: &std::path::Path) -> String {
    match crate::helpers::test_postgres_url().await {
        Some(url) => url,
        None => format!("sqlite://{}/chains.db", dir.display()),
    }
}

/// The database as every release before migration 0060 left it: the backend's migrations up
/// to 0050, run from a copy of exactly those files.
async fn pre_chain_database(dir: &std::path::Path) -> credgate::storage::Db {
    let db = credgate::storage::Db::connect(&fresh_url(dir).await)
        .await
        .unwrap();
    let backend = match db.backend() {
        credgate::storage::Backend::Sqlite => "sqlite",
        credgate::storage::Backend::Postgres => "postgres",
    };
    let from = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    let old = dir.join("old-migrations");
    std::fs::create_dir_all(&old).unwrap();
    for entry in std::fs::read_dir(&from).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name.as_str() < "0060" {
            std::fs::copy(&path, old.join(&name)).unwrap();
        }
    }
    sqlx::migrate::Migrator::new(old.as_path())
        .await
        .unwrap()
        .run(db.pool())
        .await
        .unwrap();
    db
}

/// A record as the writers before per-writer chains made them: `seq` is its place in the one
/// chain, hashed in the oldest encoding that holds its fields (v1, v2 with a person, v3 with a
/// legal basis).
fn legacy_record(seq: i64, prev_hash: &str) -> AuditRecord {
    let mut r = AuditRecord {
        seq,
        id: format!("au_legacy_{seq}"),
        time_us: 1_600_000_000_000_000 + seq,
        request_id: format!("req-{seq}"),
        kind: "data".into(),
        client_id: Some("cl_old".into()),
        method: "GET".into(),
        path: format!("/v1/stores/power/entities/{seq}"),
        subjects: vec![format!("subject-{}", seq % 3)],
        decision: "allow".into(),
        status: 200,
        client_addr: "127.0.0.1".into(),
        prev_hash: prev_hash.into(),
        writer_id: LEGACY_WRITER.into(),
        chain_seq: seq,
        ..Default::default()
    };
    let encoding = match seq % 3 {
        0 => Encoding::V1,
        1 => {
            r.actor = Some("staff:alice".into());
            Encoding::V2
        }
        _ => {
            r.legal_basis = Some("consent".into());
            Encoding::V3
        }
    };
    r.hash = encoding.hash(prev_hash, &r);
    r
}

/// Inserts `r` with the columns the log had before migration 0060.
async fn insert_legacy(db: &credgate::storage::Db, r: &AuditRecord) {
    sqlx::query(
        "INSERT INTO audit_log (seq, id, time_us, request_id, kind, client_id, org, role, \
         actor_subject, purpose, consent_id, method, path, store, dataset, subjects, decision, \
         rule, masked, status, bytes_out, upstream_us, total_us, client_addr, prev_hash, hash, \
         actor, actor_org, legal_basis, caller_request_id, trace_id) VALUES ($1, $2, $3, $4, \
         $5, $6, NULL, NULL, NULL, NULL, NULL, $7, $8, NULL, NULL, $9, $10, NULL, '{}', $11, 0, \
         NULL, 0, $12, $13, $14, $15, NULL, $16, NULL, NULL)",
    )
    .bind(r.seq)
    .bind(&r.id)
    .bind(r.time_us)
    .bind(&r.request_id)
    .bind(&r.kind)
    .bind(&r.client_id)
    .bind(&r.method)
    .bind(&r.path)
    .bind(serde_json::to_string(&r.subjects).unwrap())
    .bind(&r.decision)
    .bind(r.status as i32)
    .bind(&r.client_addr)
    .bind(&r.prev_hash)
    .bind(&r.hash)
    .bind(&r.actor)
    .bind(&r.legal_basis)
    .execute(db.pool())
    .await
    .unwrap();
}

const DAY_US: i64 = 86_400_000_000;

/// Ten legacy records, checkpoints at 4 and 8 (old enough to archive), records 1..4 archived:
/// the log an existing deployment carries into the migration. Returns the legacy witness
/// (the checkpoint at 8, as an old `audit verify --witness` file holds it).
async fn write_legacy_log(
    db: &credgate::storage::Db,
    key: &ring::signature::Ed25519KeyPair,
    now: i64,
) -> verify::Witness {
    let mut prev = chain::GENESIS.to_string();
    let mut records = Vec::new();
    for seq in 1..=10 {
        let r = legacy_record(seq, &prev);
        prev = r.hash.clone();
        insert_legacy(db, &r).await;
        records.push(r);
    }
    let mut witness = None;
    for (seq, age_days) in [(4i64, 400), (8, 300)] {
        let (hash, time_us) = (&records[seq as usize - 1].hash, now - age_days * DAY_US);
        let signature = chain::sign_checkpoint(key, seq, hash, time_us);
        sqlx::query(
            "INSERT INTO audit_checkpoints (seq, time_us, hash, key_id, signature) \
             VALUES ($1, $2, $3, 'old-key', $4)",
        )
        .bind(seq)
        .bind(time_us)
        .bind(hash)
        .bind(&signature)
        .execute(db.pool())
        .await
        .unwrap();
        witness = Some(verify::Witness {
            seq,
            time_us,
            hash: hash.clone(),
            signature,
            writer_id: None,
            chain_seq: None,
        });
    }
    // The archive of those days: 1..4 moved out, as `audit archive` did (the old guard lets
    // exactly these rows go once the archive row is in).
    for stmt in [
        format!(
            "INSERT INTO audit_archives (upto_seq, hash, archived_at, file_name, records) \
             VALUES (4, '{}', {}, 'credgate-audit-000000000001-000000000004.ndjson', 4)",
            records[3].hash,
            now - 100 * DAY_US
        ),
        "DELETE FROM audit_subjects WHERE seq <= 4".into(),
        "DELETE FROM audit_log WHERE seq <= 4".into(),
    ] {
        db.pool().execute(sqlx::AssertSqlSafe(stmt)).await.unwrap();
    }
    witness.unwrap()
}

/// Appends `n` records to `writer_id`'s chain through the writer's own store path, signing a
/// checkpoint at the end when `key` is given.
async fn append_chain(
    db: &credgate::storage::Db,
    writer_id: &str,
    n: usize,
    key: Option<&ring::signature::Ed25519KeyPair>,
    time_us: i64,
) -> Vec<AuditRecord> {
    let mut writer = store::WriterConn::new(db.clone(), writer_id);
    let mut known = None;
    let mut records: Vec<AuditRecord> = (0..n)
        .map(|i| AuditRecord {
            id: format!("au_{writer_id}_{}_{i}", uuid::Uuid::new_v4().simple()),
            time_us: time_us + i as i64,
            request_id: format!("req-{i}"),
            kind: "data".into(),
            method: "GET".into(),
            path: format!("/v1/stores/power/entities/{i}"),
            subjects: vec![format!("subject-{}", i % 3)],
            decision: "allow".into(),
            status: 200,
            client_addr: "127.0.0.1".into(),
            ..Default::default()
        })
        .collect();
    store::append(&mut writer, &mut known, &mut records, |head, records| {
        for r in records.iter_mut() {
            r.writer_id = writer_id.into();
        }
        let (place, hash) = chain::link(head.chain_seq, head.hash.clone(), records);
        key.map(|k| store::Checkpoint {
            seq: 0,
            writer_id: writer_id.into(),
            chain_seq: place,
            time_us,
            signature: chain::sign_chain_checkpoint(k, writer_id, place, &hash, time_us),
            hash,
            key_id: "k".into(),
        })
    })
    .await
    .unwrap();
    store::read_seqs(db, &mut records).await.unwrap();
    records
}

fn test_key() -> (ring::signature::Ed25519KeyPair, Vec<u8>) {
    let kp = ring::signature::Ed25519KeyPair::from_seed_unchecked(&[9u8; 32]).unwrap();
    let public = ring::signature::KeyPair::public_key(&kp).as_ref().to_vec();
    (kp, public)
}

#[tokio::test]
async fn a_log_written_before_per_writer_chains_verifies_after_the_migration_as_the_legacy_chain() {
    let dir = tempfile::tempdir().unwrap();
    let db = pre_chain_database(dir.path()).await;
    let (key, public) = test_key();
    let now = credgate::storage::now_micros();
    let witness = write_legacy_log(&db, &key, now).await;

    db.migrate().await.unwrap();
    let report = verify::verify_at(&db, &public, now).await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.records, 6);
    assert_eq!(report.chains.len(), 1);
    let legacy = &report.chains[0];
    assert_eq!(legacy.writer_id, LEGACY_WRITER);
    assert_eq!(
        (
            legacy.records,
            legacy.archived_through,
            legacy.signed_through
        ),
        (6, Some(4), Some(8))
    );
    assert_eq!(legacy.head, legacy_record_hash(&db, 10).await);
    // A witness kept before the migration (no chain named) still holds.
    let held = verify::verify_against(&db, &public, &witness)
        .await
        .unwrap();
    assert!(held.ok, "{held:?}");

    // A writer after the migration starts a chain of its own; both verify, and the log's seq
    // goes on after the legacy records.
    let new = append_chain(&db, "replica-a", 5, Some(&key), now).await;
    assert!(
        new.iter().all(|r| r.seq > 10),
        "{:?}",
        new.iter().map(|r| r.seq).collect::<Vec<_>>()
    );
    assert!(
        new.iter()
            .all(|r| Encoding::of_hash(&r.hash) == Some(Encoding::V4))
    );
    let report = verify::verify_at(&db, &public, now).await.unwrap();
    assert!(report.ok, "{report:?}");
    let names: Vec<&str> = report.chains.iter().map(|c| c.writer_id.as_str()).collect();
    assert_eq!(names, [LEGACY_WRITER, "replica-a"]);
    assert_eq!(report.chains[1].signed_through, Some(5));

    // Still append-only, both chains.
    let moved = format!(
        "UPDATE audit_log SET writer_id = 'replica-b' WHERE seq = {}",
        new[0].seq
    );
    for stmt in [
        "UPDATE audit_log SET org = 'x' WHERE seq = 6",
        "DELETE FROM audit_log WHERE seq = 6",
        &moved,
        "DELETE FROM audit_log WHERE writer_id = 'replica-a'",
        "DELETE FROM audit_checkpoints",
        "UPDATE audit_checkpoints SET chain_seq = 1",
        "DELETE FROM audit_archives",
        "DELETE FROM audit_subjects",
    ] {
        let e = db
            .pool()
            .execute(sqlx::AssertSqlSafe(stmt))
            .await
            .expect_err(stmt)
            .to_string();
        assert!(e.contains("is append-only"), "{stmt}: {e}");
    }

    // A legacy record edited, or passed off as another chain's, is found and named.
    crate::audit::drop_guards(&db).await;
    db.pool()
        .execute("UPDATE audit_log SET path = '/elsewhere' WHERE seq = 7")
        .await
        .unwrap();
    let r = verify::verify_at(&db, &public, now).await.unwrap();
    assert!(!r.ok);
    assert_eq!(
        (r.first_bad_id.as_deref(), r.writer_id.as_deref()),
        (Some("au_legacy_7"), Some(LEGACY_WRITER))
    );
}

async fn legacy_record_hash(db: &credgate::storage::Db, seq: i64) -> String {
    store::page_after(db, seq - 1, 1).await.unwrap()[0]
        .hash
        .clone()
}

/// The archive follows each chain: one file per chain, each cut at its own signed checkpoint,
/// and each chain verifies from its own base afterwards.
#[tokio::test]
async fn archiving_takes_each_chain_up_to_its_own_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let db = credgate::storage::Db::open(&fresh_url(dir.path()).await)
        .await
        .unwrap();
    let (key, public) = test_key();
    let now = credgate::storage::now_micros();
    let old = now - 400 * DAY_US;
    append_chain(&db, "replica-a", 3, Some(&key), old).await;
    append_chain(&db, "replica-b", 4, Some(&key), old).await;
    append_chain(&db, "replica-a", 2, None, now).await;
    let out = dir.path().join("archive");
    let done = credgate::audit::archive::archive(&db, 183, now, &out)
        .await
        .unwrap();
    let cut: Vec<(&str, i64, i64)> = done
        .iter()
        .map(|a| (a.writer_id.as_str(), a.upto_seq, a.records))
        .collect();
    assert_eq!(cut, [("replica-a", 3, 3), ("replica-b", 4, 4)]);
    assert_ne!(done[0].file, done[1].file);
    let report = verify::verify_at(&db, &public, now).await.unwrap();
    assert!(report.ok, "{report:?}");
    let chains: Vec<(&str, i64, Option<i64>)> = report
        .chains
        .iter()
        .map(|c| (c.writer_id.as_str(), c.records, c.archived_through))
        .collect();
    assert_eq!(
        chains,
        [("replica-a", 2, Some(3)), ("replica-b", 0, Some(4))]
    );
    // Chains go on from their archives.
    let next = append_chain(&db, "replica-b", 1, None, now).await;
    assert_eq!(next[0].chain_seq, 5);
    assert!(verify::verify_at(&db, &public, now).await.unwrap().ok);

    // An archive row of one chain unlocks nothing of another's.
    let e = db
        .pool()
        .execute("DELETE FROM audit_log WHERE writer_id = 'replica-b'")
        .await
        .expect_err("another chain's archive does not unlock this one")
        .to_string();
    assert!(e.contains("is append-only"), "{e}");

    // A record forged into place 1, which the archive freed (the link trigger takes place 1
    // onto genesis): verify walks from the boundary on, and must still find it.
    let mut writer = store::WriterConn::new(db.clone(), "replica-b");
    let mut known = None;
    let mut forged = vec![AuditRecord {
        id: "au_forged_into_the_archived_places".into(),
        time_us: old,
        request_id: "req-forged".into(),
        kind: "data".into(),
        org: Some("nea".into()),
        method: "GET".into(),
        path: "/v1/stores/power/persons/150102198812268481".into(),
        subjects: vec!["150102198812268481".into()],
        decision: "allow".into(),
        status: 200,
        client_addr: "127.0.0.1".into(),
        ..Default::default()
    }];
    store::append(&mut writer, &mut known, &mut forged, |_, records| {
        records[0].writer_id = "replica-b".into();
        chain::link(0, "0".repeat(64), records);
        None
    })
    .await
    .unwrap();
    let report = verify::verify_at(&db, &public, now).await.unwrap();
    assert!(
        !report.ok,
        "a record below the archive boundary passed: {report:?}"
    );
    assert_eq!(
        report.first_bad_id.as_deref(),
        Some("au_forged_into_the_archived_places")
    );
}

/// Two gateways (replicas) on one database, writing at once through parallel clients: each
/// writes its own chain, every released response has exactly one record, both chains verify,
/// and the status function names both with their last checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_keep_chains_of_their_own_and_every_release_is_recorded_once() {
    let app = TestApp::spawn_with(|c| c.audit.checkpoint_every = 16).await;
    let other = app.sibling().await;
    let (a, b) = (
        app.state.audit.writer_id().to_string(),
        other.state.audit.writer_id().to_string(),
    );
    assert_ne!(a, b, "two processes on port 0 get ids of their own");
    let released = load(&app, [app.url.clone(), other.url.clone()], 8, 25).await;
    assert_eq!(released.len(), 200);
    let all = store::page_after(&app.state.db, 0, 1_000_000)
        .await
        .unwrap();
    let stored: HashSet<&str> = all.iter().map(|r| r.id.as_str()).collect();
    assert!(released.iter().all(|id| stored.contains(id.as_str())));
    let seqs: HashSet<i64> = all.iter().map(|r| r.seq).collect();
    assert_eq!(seqs.len(), all.len(), "no seq taken twice");
    let report = verify::verify(&app.state.db, &app.state.audit_public_key)
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");
    let mut names: Vec<&str> = report.chains.iter().map(|c| c.writer_id.as_str()).collect();
    names.sort();
    let mut expected = vec![a.as_str(), b.as_str()];
    expected.sort();
    assert_eq!(names, expected);
    for c in &report.chains {
        let count = all.iter().filter(|r| r.writer_id == c.writer_id).count() as i64;
        assert_eq!(c.records, count, "{c:?}");
        assert!(c.records > 50, "both replicas served: {c:?}");
        assert!(c.signed_through.is_some(), "{c:?}");
    }
    // The dashboard's view: both chains, how far each is signed, by which key.
    let status = store::chain_status(&app.state.db).await.unwrap();
    assert_eq!(status.len(), 2);
    for s in &status {
        let c = report
            .chains
            .iter()
            .find(|c| c.writer_id == s.writer_id)
            .unwrap();
        assert_eq!(s.head_chain_seq, c.records);
        assert_eq!(s.head_hash, c.head);
        assert_eq!(s.signed_through, c.signed_through);
        assert!(s.last_checkpoint_key_id.is_some());
    }
}

/// Runs `workers` clients, each making `each` data requests to the urls in turn; returns the
/// audit ids of the released responses. Every response must be a 200.
async fn load(app: &TestApp, urls: [String; 2], workers: usize, each: usize) -> Vec<String> {
    let (_, token) = app.token("regulator").await;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (http, token, url) = (app.http.clone(), token.clone(), urls[w % 2].clone());
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..each {
                let res = http
                    .get(format!("{url}/v1/stores/power/entities?page_size=1"))
                    .bearer_auth(&token)
                    .header("X-Purpose", "supervision")
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 200);
                ids.push(res.headers()["x-audit-id"].to_str().unwrap().to_string());
            }
            ids
        }));
    }
    let mut released = Vec::new();
    for t in tasks {
        released.extend(t.await.unwrap());
    }
    released
}

/// Two processes misconfigured with ONE writer id, writing at once: neither forks the chain.
/// The database refuses the loser's batch (the chain's unique place, the link check); its
/// writer logs the shared id loudly, chains the batch again onto the real head and retries,
/// so every request is still answered and recorded once, in one chain that verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_sharing_one_writer_id_do_not_fork_the_chain() {
    let app = TestApp::spawn_with(|c| {
        c.audit.checkpoint_every = 16;
        c.audit.writer_id = Some("same-id".into());
    })
    .await;
    let other = app.sibling().await;
    assert_eq!(other.state.audit.writer_id(), "same-id");
    let released = load(&app, [app.url.clone(), other.url.clone()], 8, 20).await;
    let all = store::page_after(&app.state.db, 0, 1_000_000)
        .await
        .unwrap();
    let ids: HashSet<&str> = all.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), all.len());
    assert!(released.iter().all(|id| ids.contains(id.as_str())));
    let report = verify::verify(&app.state.db, &app.state.audit_public_key)
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.chains.len(), 1, "{report:?}");
    assert_eq!(report.chains[0].records, all.len() as i64);
}

/// With no traffic, a chain's tail is signed on the writer's timer within `checkpoint_secs`
/// (here 1 s; the bound is generous for a loaded 2-core machine: it waits for the condition,
/// not for the time).
#[tokio::test]
async fn an_idle_chains_tail_is_signed_on_the_timer() {
    let app = TestApp::spawn_with(|c| {
        c.audit.checkpoint_every = 1_000;
        c.audit.checkpoint_secs = 1;
    })
    .await;
    let (_, token) = app.token("regulator").await;
    for _ in 0..3 {
        app.data(&token, "/v1/stores/power/lists/red").await;
    }
    let me = app.state.audit.writer_id().to_string();
    let db = app.state.db.clone();
    wait_until("the idle tail is signed", Duration::from_secs(60), || {
        let (db, me) = (db.clone(), me.clone());
        async move {
            store::chain_status(&db)
                .await
                .unwrap()
                .iter()
                .any(|s| s.writer_id == me && s.unsigned == 0 && s.head_chain_seq == 4)
        }
    })
    .await;
    let report = verify::verify(&app.state.db, &app.state.audit_public_key)
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.chains[0].signed_through, Some(4));
}

/// A chain no running writer owns (a crashed replica's, or one inserted by someone with the
/// database's role: a v4 hash needs no key) is never signed by another replica: signing other
/// chains' heads turned a forged chain into a signed one (second review, H1). It stays unsigned,
/// and verify says so for that chain.
#[tokio::test]
async fn a_chain_no_running_writer_owns_is_not_signed_by_another_replica() {
    let app = TestApp::spawn_with(|c| c.audit.checkpoint_secs = 1).await;
    let old = credgate::storage::now_micros() - 3_600_000_000;
    append_chain(&app.state.db, "evil-writer", 3, None, old).await;
    // Several idle ticks of this replica (it signs its own tail every second).
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let status = store::chain_status(&app.state.db).await.unwrap();
    let evil = status
        .iter()
        .find(|s| s.writer_id == "evil-writer")
        .expect("the chain is listed");
    assert_eq!(evil.signed_through, None, "{status:?}");
    assert_eq!(evil.unsigned, 3);
    let report = verify::verify(&app.state.db, &app.state.audit_public_key)
        .await
        .unwrap();
    let chain = report
        .chains
        .iter()
        .find(|c| c.writer_id == "evil-writer")
        .expect("verify lists the chain");
    assert_eq!(chain.signed_through, None, "{report:?}");
}

/// Two chains of seven records each, a checkpoint every three, guards dropped: the attacker's
/// starting point. Returns the app and the two writer ids (the sibling's second).
async fn two_chains() -> (TestApp, String, String) {
    let app = TestApp::spawn_with(|c| c.audit.checkpoint_every = 3).await;
    let other = app.sibling().await;
    let (_, token) = app.token("regulator").await;
    for url in [&app.url, &other.url] {
        for _ in 0..6 {
            let res = app
                .http
                .get(format!("{url}/v1/stores/power/lists/red"))
                .bearer_auth(&token)
                .header("X-Purpose", "supervision")
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
        }
    }
    let (a, b) = (
        app.state.audit.writer_id().to_string(),
        other.state.audit.writer_id().to_string(),
    );
    assert!(
        verify::verify(&app.state.db, &app.state.audit_public_key)
            .await
            .unwrap()
            .ok
    );
    crate::audit::drop_guards(&app.state.db).await;
    (app, a, b)
}

async fn run(app: &TestApp, stmt: &str) {
    app.state
        .db
        .pool()
        .execute(sqlx::AssertSqlSafe(stmt.to_string()))
        .await
        .unwrap();
}

/// The `seq` of chain `writer`'s record at `place`.
async fn seq_of(app: &TestApp, writer: &str, place: i64) -> i64 {
    store::chain_page_after(&app.state.db, writer, place - 1, 1)
        .await
        .unwrap()[0]
        .seq
}

async fn verdict(app: &TestApp) -> verify::ChainVerdict {
    verify::verify(&app.state.db, &app.state.audit_public_key)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_edited_record_in_the_second_chain_is_found_and_its_chain_named_over_http() {
    let (app, _, b) = two_chains().await;
    let (_, officer) = app.token("security_officer").await;
    let answer = |app: &TestApp| {
        let (http, url, officer) = (app.http.clone(), app.url.clone(), officer.clone());
        async move {
            let res = http
                .get(format!("{url}/admin/audit/verify"))
                .bearer_auth(&officer)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            res.json::<Value>().await.unwrap()
        }
    };
    let ok = answer(&app).await;
    assert_eq!(ok["ok"], true, "{ok}");
    let chains = ok["chains"].as_array().unwrap();
    assert_eq!(chains.len(), 2, "{ok}");
    for c in chains {
        for field in ["writer_id", "records", "head", "signed_through"] {
            assert!(!c[field].is_null(), "{field} in {c}");
        }
    }
    assert_eq!(
        ok["records"],
        chains
            .iter()
            .map(|c| c["records"].as_i64().unwrap())
            .sum::<i64>()
    );

    let seq = seq_of(&app, &b, 5).await;
    run(
        &app,
        &format!("UPDATE audit_log SET org = 'innocent' WHERE seq = {seq}"),
    )
    .await;
    let bad = answer(&app).await;
    assert_eq!(bad["ok"], false, "{bad}");
    assert_eq!(bad["writer_id"], b.as_str(), "{bad}");
    assert_eq!(bad["first_bad_seq"], seq, "{bad}");
    assert!(
        bad["first_bad_id"].as_str().unwrap().starts_with("au_"),
        "{bad}"
    );
    assert!(bad["reason"].as_str().unwrap().contains("edited"), "{bad}");
}

#[tokio::test]
async fn a_record_moved_from_one_chain_to_another_is_found() {
    let (app, a, b) = two_chains().await;
    // A's head relinked as B's next record: the links hold, the hash names chain A.
    let b_head = store::chain_head(&app.state.db, &b).await.unwrap();
    let a_head = store::chain_head(&app.state.db, &a).await.unwrap();
    let seq = seq_of(&app, &a, a_head.chain_seq).await;
    run(
        &app,
        &format!(
            "UPDATE audit_log SET writer_id = '{b}', chain_seq = {}, prev_hash = '{}' WHERE seq = {seq}",
            b_head.chain_seq + 1,
            b_head.hash
        ),
    )
    .await;
    let r = verdict(&app).await;
    assert!(!r.ok, "{r:?}");
    assert_eq!(r.first_bad_seq, Some(seq));
    assert!(r.reason.unwrap().contains("moved to another chain"));
}

#[tokio::test]
async fn a_forged_or_moved_checkpoint_in_any_chain_is_found() {
    let (app, a, b) = two_chains().await;
    run(
        &app,
        &format!(
            "UPDATE audit_checkpoints SET signature = CASE WHEN substr(signature, 1, 2) = '00' \
             THEN 'ff' ELSE '00' END || substr(signature, 3) WHERE writer_id = '{b}' \
             AND chain_seq = (SELECT MAX(chain_seq) FROM audit_checkpoints WHERE writer_id = '{b}')"
        ),
    )
    .await;
    let r = verdict(&app).await;
    assert!(!r.ok, "{r:?}");
    assert_eq!(r.writer_id.as_deref(), Some(b.as_str()));
    assert!(r.reason.unwrap().contains("checkpoint"));

    // A's checkpoint claimed for B (the signature names chain A).
    let (app, a2, b2) = two_chains().await;
    let _ = (a, a2);
    run(
        &app,
        &format!(
            "UPDATE audit_checkpoints SET writer_id = '{b2}' WHERE writer_id <> '{b2}' \
             AND chain_seq = (SELECT MIN(chain_seq) FROM audit_checkpoints WHERE writer_id <> '{b2}')"
        ),
    )
    .await;
    let r = verdict(&app).await;
    assert!(!r.ok, "{r:?}");
    assert!(r.reason.unwrap().contains("checkpoint"), "moved checkpoint");
}

#[tokio::test]
async fn a_record_deleted_or_a_tail_removed_in_the_second_chain_is_found() {
    let (app, _, b) = two_chains().await;
    let seq = seq_of(&app, &b, 2).await;
    let next = seq_of(&app, &b, 3).await;
    run(&app, &format!("DELETE FROM audit_log WHERE seq = {seq}")).await;
    let r = verdict(&app).await;
    assert!(!r.ok, "{r:?}");
    assert_eq!(
        (r.first_bad_seq, r.writer_id.as_deref()),
        (Some(next), Some(b.as_str()))
    );

    let (app, _, b) = two_chains().await;
    run(
        &app,
        &format!("DELETE FROM audit_log WHERE writer_id = '{b}' AND chain_seq > 1"),
    )
    .await;
    let r = verdict(&app).await;
    assert!(!r.ok, "{r:?}");
    assert_eq!(r.writer_id.as_deref(), Some(b.as_str()));
    assert!(r.reason.unwrap().contains("removed from the end"));
}

#[test]
fn a_writer_id_is_printable_bounded_and_never_the_legacy_chains() {
    for bad in ["", "legacy", "a b", "tab\there", "é", &"x".repeat(129)] {
        let text = format!("[audit]\nwriter_id = {}\n", toml_str(bad));
        let c = credgate::config::Config::parse(&text, "t").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("audit.writer_id"), "{bad:?}: {e}");
    }
    for good in [
        "replica-1",
        "gw-a/10.0.0.5:8080",
        "[::1]:8080",
        &"x".repeat(128),
    ] {
        let text = format!("[audit]\nwriter_id = {}\n", toml_str(good));
        let c = credgate::config::Config::parse(&text, "t").unwrap();
        c.validate().unwrap();
    }
    // Unset: the host name and the listen address.
    let c = credgate::audit::AuditConfig::default().for_listener("10.0.0.5:8080".parse().unwrap());
    let id = c.writer_id.unwrap();
    assert!(id.ends_with("/10.0.0.5:8080"), "{id}");
    credgate::audit::check_writer_id(&id).unwrap();
}

/// A TOML basic string: JSON's escapes are TOML's for these values.
fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// `credgate audit verify` offline: it answers for every chain, and its witness file keeps
/// every chain's last checkpoint, so a tail removed with its checkpoints from a chain that is
/// not the newest is still found.
#[tokio::test]
async fn the_cli_verifies_every_chain_and_its_witness_holds_each_chains_last_checkpoint() {
    use crate::cli::{config_file, credgate, text};
    let (app, a, b) = two_chains().await;
    let cfg = config_file(&app);
    let witness = app.dir.path().join("witness.json");
    let path = witness.display().to_string();
    let out = credgate(&["audit", "verify", "--witness", &path, "--config", &cfg]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let chains: Vec<&str> = report["chains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["writer_id"].as_str().unwrap())
        .collect();
    assert_eq!(chains.len(), 2, "{report}");
    assert!(chains.contains(&a.as_str()) && chains.contains(&b.as_str()));
    let kept: Value = serde_json::from_slice(&std::fs::read(&witness).unwrap()).unwrap();
    assert_eq!(kept["chains"].as_array().unwrap().len(), 2, "{kept}");

    // The chain whose checkpoint is not the newest loses its tail and its checkpoints.
    let newest = kept["writer_id"].as_str().unwrap().to_string();
    let victim = if newest == a { &b } else { &a };
    // The index caught up first: a step of the running indexer between the index's rewrite
    // and the records' delete would leave rows naming deleted records (see `sink::cut_tail`).
    credgate::audit::indexer::catch_up(&app.state.db)
        .await
        .unwrap();
    crate::audit::unindex(
        &app.state.db,
        &format!("writer_id = '{victim}' AND chain_seq > 3"),
    )
    .await;
    for stmt in [
        format!("DELETE FROM audit_checkpoints WHERE writer_id = '{victim}' AND chain_seq > 3"),
        format!("DELETE FROM audit_log WHERE writer_id = '{victim}' AND chain_seq > 3"),
    ] {
        run(&app, &stmt).await;
    }
    let out = credgate(&["audit", "verify", "--config", &cfg]);
    assert!(out.status.success(), "alone, the database looks whole");
    let out = credgate(&["audit", "verify", "--witness", &path, "--config", &cfg]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["writer_id"], victim.as_str(), "{report}");
    assert!(
        report["reason"]
            .as_str()
            .unwrap()
            .contains("no longer holds")
    );
}
