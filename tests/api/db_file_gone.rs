//! The SQLite database file deleted, or replaced by `mv` (a backup restored over it), under a
//! running gateway. The pool keeps its connections open for good, so they go on writing the
//! old, unlinked inode: every audit record committed from then on is gone at the next restart,
//! and the data was released against it. The storage probe (`storage::health`) notices that
//! the path no longer names the file it opened, and the gateway fails closed until restarted.
//!
//! A client served just before (its status cached) needs no pooled connection on its request's
//! path, and the audit writer commits on a connection it keeps across batches
//! (`audit::store::WriterConn`), out of the pool's reach: both look at the probe's condition
//! themselves (`Db::usable`), tested by `a_cached_client_is_refused_too`.

use std::{path::Path, time::Duration};

use crate::{
    faults_support::readyz,
    helpers::{TestApp, assert_problem, wait_until},
};

/// What `/readyz` says for the condition.
const NAMED: &str = "deleted or replaced";

/// The probe looks every 250 ms: this leaves room for a loaded machine.
const NOTICED_WITHIN: Duration = Duration::from_secs(10);

fn sqlite_only(test: &str) -> bool {
    if std::env::var("CREDGATE_TEST_PG").is_ok() {
        println!("SKIPPED: SQLite file ({test})");
        return false;
    }
    true
}

/// A running app that has just served a client through the counting store (its id and token),
/// a token for another client it has not served yet, and the path.
async fn served_app() -> (TestApp, (String, String), String, String) {
    let app = TestApp::spawn().await;
    let uscc = app.sample().entities[0]["uscc"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/v1/stores/fake/entities/{uscc}");
    let (id, token) = app.token("regulator").await;
    let before = app.fake.hits();
    assert_eq!(app.data(&token, &path).await.status(), 200);
    assert_eq!(app.fake.hits(), before + 1, "the request reaches the store");
    assert_eq!(readyz(&app.http, &app.url).await.0, 200);
    let (_, fresh) = app.token("regulator").await;
    (app, (id, token), fresh, path)
}

fn db_file(app: &TestApp) -> std::path::PathBuf {
    let file = app.dir.path().join("credgate.db");
    assert!(
        app.state
            .config
            .storage_url
            .contains(&*file.to_string_lossy()),
        "the app's database is {file:?}: {}",
        app.state.config.storage_url
    );
    file
}

/// `/readyz` is 503 and names the condition.
async fn readyz_names_it(app: &TestApp) {
    let (status, body) = readyz(&app.http, &app.url).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(NAMED), "{body}");
    assert!(body.contains("restart"), "{body}");
}

/// A data request is refused with a 503 problem, the store is not asked, and `/readyz` names
/// the condition.
async fn refused(app: &TestApp, token: &str, path: &str) {
    let hits = app.fake.hits();
    let body = assert_problem(app.data(token, path).await, 503).await;
    assert!(!body.to_string().contains("sqlx"), "no internals: {body}");
    assert_eq!(app.fake.hits(), hits, "the store was not contacted");
    readyz_names_it(app).await;
}

/// Until the probe has seen it, looked at every few milliseconds (not through `/readyz`): a
/// cached client's status is trusted for about a second after the last poll that reached the
/// database, so a request sent at once still takes the cached path (`cached_path_taken`).
async fn noticed(app: &TestApp) {
    wait_until(
        "the probe sees the replaced file",
        NOTICED_WITHIN,
        || async { app.state.db.condition() == credgate::storage::health::Condition::FileReplaced },
    )
    .await;
}

/// Whether the client's status was still answered from the cache after its request, so
/// during it too (the cache's trust only runs out while the database is refused, it is not
/// renewed): the request then took the path where only the new checks stand before the store.
fn cached_path_taken(app: &TestApp, client_id: &str) -> bool {
    app.state.client_status.lookup(client_id).is_some()
}

/// Runs `case` (which asserts the refusal whatever the path) until one run took the cached
/// path, at most three times: on a loaded machine the cache's second of trust may run out
/// between the probe's notice and the request, and that run shows nothing of these checks.
async fn on_the_cached_path<F, Fut>(case: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..3 {
        if case().await {
            return;
        }
    }
    panic!("three runs missed the cached path: the checks before the store were not exercised");
}

#[tokio::test]
async fn a_deleted_database_file_refuses_every_request_for_good() {
    if !sqlite_only("a_deleted_database_file_refuses_every_request_for_good") {
        return;
    }
    let (app, _, token, path) = served_app().await;
    let file = db_file(&app);
    // A second name for the same inode, to put the very file back afterwards.
    let spare = file.with_extension("db.spare");
    std::fs::hard_link(&file, &spare).unwrap();
    std::fs::remove_file(&file).unwrap();

    noticed(&app).await;
    refused(&app, &token, &path).await;
    // The same file (same inode) back at the path, for several probe rounds: only the
    // condition's stickiness still refuses.
    std::fs::rename(&spare, &file).unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    refused(&app, &token, &path).await;
}

#[tokio::test]
async fn a_database_file_moved_over_refuses_every_request_for_good() {
    if !sqlite_only("a_database_file_moved_over_refuses_every_request_for_good") {
        return;
    }
    let (app, _, token, path) = served_app().await;
    let file = db_file(&app);
    // A backup restored with `mv`: the same bytes under the same name, another inode.
    let copy = file.with_extension("db.restored");
    std::fs::copy(&file, &copy).unwrap();
    std::fs::rename(&copy, &file).unwrap();
    assert!(Path::new(&file).exists());

    noticed(&app).await;
    refused(&app, &token, &path).await;
    // A second look, several probe rounds later: the file at the path is readable and sound,
    // and it is still not the one the pool opened.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    refused(&app, &token, &path).await;
}

/// The hostile case: a client served a moment before the deletion. Nothing on its request's
/// path takes a pooled connection before the store is asked, and the writer commits on the
/// connection it keeps: before, the record went into the deleted file and the data was
/// released (200). Now the data path looks at the condition before the store is asked, and the
/// writer before it writes.
#[tokio::test]
async fn a_cached_client_is_refused_too() {
    if !sqlite_only("a_cached_client_is_refused_too") {
        return;
    }
    on_the_cached_path(|| async {
        let (app, (id, served), _, path) = served_app().await;
        std::fs::remove_file(db_file(&app)).unwrap();
        noticed(&app).await;
        refused(&app, &served, &path).await;
        cached_path_taken(&app, &id)
    })
    .await;
}

/// The probe looks every 250 ms; a batch committed in between, after the file was deleted, went
/// into the unlinked file. The writer looks at the path itself after each commit and before
/// the batch is acknowledged: right after the deletion (before any probe round could see it),
/// an append fails, so no answer is released against a record that a restart would not find.
#[tokio::test]
async fn a_batch_committed_after_the_deletion_is_not_acknowledged() {
    if !sqlite_only("a_batch_committed_after_the_deletion_is_not_acknowledged") {
        return;
    }
    let app = TestApp::spawn_with(|c| c.audit.indexer = false).await;
    let file = db_file(&app);
    // One writer for both batches: after the first it knows its head and keeps its
    // connection, so the second reaches its commit with no await between the deletion and
    // `WriterConn::get`'s look at the condition (the probe cannot run in between on this
    // single-threaded runtime), and only the check after the commit can refuse it.
    let mut writer = credgate::audit::store::WriterConn::new(app.state.db.clone(), "gone");
    let mut known = None;
    let record = |id: &str| credgate::audit::AuditRecord {
        id: id.into(),
        kind: "data".into(),
        method: "GET".into(),
        path: "/v1/stores/power/entities/1".into(),
        decision: "allow".into(),
        status: 200,
        client_addr: "127.0.0.1".into(),
        ..Default::default()
    };
    let link = |h: &credgate::audit::store::ChainHead, r: &mut [credgate::audit::AuditRecord]| {
        for rec in r.iter_mut() {
            rec.writer_id = "gone".into();
        }
        credgate::audit::chain::link(h.chain_seq, h.hash.clone(), r);
        None
    };
    let mut first = vec![record("au_gone_before")];
    credgate::audit::store::append(&mut writer, &mut known, &mut first, link)
        .await
        .unwrap();
    let mut records = vec![record("au_gone_after")];
    std::fs::remove_file(&file).unwrap();
    let appended =
        credgate::audit::store::append(&mut writer, &mut known, &mut records, link).await;
    assert!(appended.is_err(), "acknowledged a batch in a deleted file");
    assert_eq!(
        app.state.db.condition(),
        credgate::storage::health::Condition::FileReplaced,
        "and the gateway now refuses, for good"
    );
}

/// A profile (one store read a section) is refused like a single read, and no section asks the
/// store: with the counting store's entity route made a profile route, a profile asked after
/// the deletion leaves its count where it was.
#[tokio::test]
async fn a_profile_asks_no_store_while_the_file_is_gone() {
    if !sqlite_only("a_profile_asks_no_store_while_the_file_is_gone") {
        return;
    }
    on_the_cached_path(|| async {
        let app = TestApp::spawn_with(|c| {
            for store in c.stores.iter_mut().filter(|s| s.name == "fake") {
                for r in store
                    .routes
                    .iter_mut()
                    .filter(|r| r.path == "/entities/{uscc}")
                {
                    r.profile = true;
                }
            }
        })
        .await;
        let uscc = app.sample().entities[0]["uscc"]
            .as_str()
            .unwrap()
            .to_string();
        let profile = format!("/v1/subjects/{uscc}/profile");
        let (id, token) = app.token("regulator").await;
        let before = app.fake.hits();
        assert_eq!(app.data(&token, &profile).await.status(), 200);
        assert!(
            app.fake.hits() > before,
            "the profile reads the counting store"
        );
        std::fs::remove_file(db_file(&app)).unwrap();
        noticed(&app).await;
        refused(&app, &token, &profile).await;
        cached_path_taken(&app, &id)
    })
    .await;
}
