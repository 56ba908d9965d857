//! Hostile review of the rev4 stop (paged access log, steady clock, SQLite write turn, subject
//! search digests). Each test failed on the code it was written against (93105c0), on SQLite
//! and PostgreSQL (R3 needs PostgreSQL and skips on SQLite):
//! - R1, R1b: the portal's access page hides older accesses behind a page with no items left;
//! - R2: the officers' search no longer finds legacy records naming a value as sent;
//! - R3: a walk of the access log skips a record that commits below its cursor (PostgreSQL);
//! - R4: a key rotated away during a corrected forward step verifies for the step's length more.

use credgate::domain::SubjectType;
use serde_json::Value;

use crate::helpers::TestApp;

fn uscc(app: &TestApp, i: usize) -> String {
    app.sample().entities[i]["uscc"]
        .as_str()
        .unwrap()
        .to_string()
}

/// One read of company `of`'s entity record by a bank of `org`; its audit id.
async fn read(app: &TestApp, org: &str, of: &str) -> String {
    let bank = app.token_in("financial_institution", org, None).await;
    let res = app
        .data(&bank, &format!("/v1/stores/power/entities/{of}"))
        .await;
    assert_eq!(res.status(), 200);
    res.headers()["x-audit-id"].to_str().unwrap().to_owned()
}

async fn log(app: &TestApp, token: &str, query: &str) -> Value {
    let res = app
        .http
        .get(format!("{}/subject/access-log{query}", app.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{query}");
    res.json().await.unwrap()
}

/// R1: the portal shows a page's table (and its "Older accesses" link) only when the page has
/// items left after the filters that run after `next_cursor` is counted (`names` in the store,
/// `is_about` for an id valid as both a USCC and a resident id). A page whose rows were all
/// dropped says "No one has accessed your records yet." and offers no way to the older
/// accesses, though the API gave a `next_cursor`. Here one index row planted in
/// `audit_subject_steps` (the index is not trusted: `names` exists for it) is enough, at the page
/// size the portal takes from its URL; with the default 100, a hundred such rows (or, for an
/// ambiguous id, a hundred reads about the other type of subject) hide the whole log.
#[tokio::test]
async fn rev4_a_portal_page_whose_rows_were_all_dropped_still_leads_to_older_accesses() {
    let s = crate::signin::site().await;
    let app = &s.app;
    let (mine, theirs) = (uscc(app, 0), uscc(app, 1));
    read(app, "old-bank", &mine).await;
    let their_read = read(app, "their-bank", &theirs).await;
    let record = app.record(&their_read).await;
    let seq = record.seq;
    crate::audit::plant_step(&app.state.db, &mine, &record.writer_id, &[seq]).await;
    // The API: an empty page that goes on (by design: the cursor counts the rows read).
    let me_api = app.subject_token(&mine, SubjectType::Legal);
    let page = log(app, &me_api, "?limit=1").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 0, "{page}");
    assert!(page["next_cursor"].is_string(), "{page}");
    // The portal: the same page.
    let me = crate::portal::portal_client(&s, &mine).await;
    let html = me.page("/portal/access?limit=1", 200).await;
    assert!(
        html.contains("Older accesses"),
        "old-bank read my record, but the page has no link to it (says \"no one has \
         accessed\": {})",
        html.contains("No one has accessed your records yet.")
    );
}

/// R1b: the same template, without any planting: a log of exactly a page's worth of records
/// gets a `next_cursor` (the page was full), the portal links to "Older accesses", and the
/// page behind the link says "No one has accessed your records yet." to a subject whose
/// records were read. With the portal's default page that is any subject read exactly 100
/// times (here a page of two, which the portal takes from its URL).
#[tokio::test]
async fn rev4_the_portal_page_after_the_last_one_does_not_say_no_one_read_my_records() {
    let s = crate::signin::site().await;
    let app = &s.app;
    let mine = uscc(app, 0);
    read(app, "first-bank", &mine).await;
    read(app, "second-bank", &mine).await;
    let me = crate::portal::portal_client(&s, &mine).await;
    let html = me.page("/portal/access?limit=2", 200).await;
    assert!(html.contains("<td>second-bank</td>") && html.contains("<td>first-bank</td>"));
    let Some(link) = html
        .split("href=\"")
        .map(|h| h.split('"').next().unwrap())
        .find(|h| h.starts_with("/portal/access?cursor="))
    else {
        return; // No link to a page with nothing on it: as it should be.
    };
    let older = me.page(link, 200).await;
    assert!(
        !older.contains("No one has accessed your records yet."),
        "two banks read my record; the page behind \"Older accesses\" ({link}) says no one did"
    );
}

/// R2: the officers' search now looks up `subject_to_search(input)` only. A record written
/// before `81c36be` (which began to digest values over 128 bytes) names a long store value as
/// sent, as does one written before `ea432f1` for a short value starting with `sha256:`. The
/// search for that exact value found those records before this stop, and finds nothing now.
#[tokio::test]
async fn rev4_the_subject_search_still_finds_records_that_name_a_long_value_as_sent() {
    let app = TestApp::spawn().await;
    let (_, officer) = app.token("security_officer").await;
    let long = "L".repeat(200);
    let short_reserved = "sha256:not-a-digest".to_string();
    // As a gateway before 81c36be (long) and before ea432f1 (reserved) recorded them.
    let legacy = crate::indexer::append(
        &app,
        "legacy-gw",
        &[vec![long.clone()], vec![short_reserved.clone()]],
    )
    .await;
    for (value, record) in [(&long, &legacy[0]), (&short_reserved, &legacy[1])] {
        let res = app
            .http
            .get(format!("{}/admin/audit", app.url))
            .query(&[("subject", value.as_str()), ("limit", "1000")])
            .bearer_auth(&officer)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let page: Value = res.json().await.unwrap();
        let ids: Vec<&str> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap())
            .collect();
        assert!(
            ids.contains(&record.id.as_str()),
            "the search for the {}-byte value {:.20}... no longer finds the record that \
             names it as sent: {ids:?}",
            value.len(),
            value
        );
    }
}

/// R3 (PostgreSQL): `seq` is a sequence, taken at INSERT, so a record of another chain can
/// commit after records with higher `seq`. A walk of the access log by keyset on `seq` then
/// skips it for good: the first page's cursor is already below it when it commits, and the
/// next pages only look further down. Here a record of chain `late-chain` holds its `seq` in
/// an open transaction while a bank's read commits above it; the walk is read; the late record
/// commits; the walk's next page does not have it, though a fresh first page shows it.
#[tokio::test]
#[ignore = "rev4 R3, accepted for now and documented (AccessPage::next): a walk shows what \
            committed before its first page, as the officers' search does; a fix (commit order \
            = seq order, or a snapshot in the cursor) is proposed in the stop's note"]
async fn rev4_a_record_that_commits_below_a_walks_cursor_is_not_skipped_by_the_walk() {
    let app = TestApp::spawn().await;
    if app.state.db.backend() != credgate::storage::Backend::Postgres {
        eprintln!("SKIPPED: on SQLite records commit in seq order (set CREDGATE_TEST_PG)");
        return;
    }
    let mine = uscc(&app, 0);
    let first = read(&app, "first-bank", &mine).await;
    app.record(&first).await;
    // A record naming me takes its seq now and commits later (another replica's slow commit).
    let mut late = app.state.db.pool().begin().await.unwrap();
    sqlx::query(
        "INSERT INTO audit_log (id, time_us, request_id, kind, client_id, org, role, \
           actor_subject, purpose, consent_id, method, path, store, dataset, subjects, \
           decision, rule, masked, status, bytes_out, upstream_us, total_us, client_addr, \
           prev_hash, hash, actor, actor_org, legal_basis, caller_request_id, trace_id, \
           writer_id, chain_seq) \
         SELECT 'au_late_record', time_us + 1, request_id, kind, client_id, 'late-bank', role, \
           actor_subject, purpose, consent_id, method, path, store, dataset, subjects, \
           decision, rule, masked, status, bytes_out, upstream_us, total_us, client_addr, \
           '0000000000000000000000000000000000000000000000000000000000000000', hash, actor, \
           actor_org, legal_basis, caller_request_id, trace_id, 'late-chain', 1 \
         FROM audit_log WHERE id = $1",
    )
    .bind(&first)
    .execute(&mut *late)
    .await
    .unwrap();
    let newer = read(&app, "newer-bank", &mine).await;
    app.record(&newer).await;
    let me = app.subject_token(&mine, SubjectType::Legal);
    // The walk, a page of two: newer-bank and first-bank, the cursor at first-bank's seq.
    let page = log(&app, &me, "?limit=2").await;
    let mut walked: Vec<String> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["org"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(walked, ["newer-bank", "first-bank"], "{page}");
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    late.commit().await.unwrap();
    let mut q = format!("?limit=2&cursor={cursor}");
    loop {
        let page = log(&app, &me, &q).await;
        walked.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["org"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => q = format!("?limit=2&cursor={c}"),
            None => break,
        }
    }
    let fresh = log(&app, &me, "?limit=500").await;
    let everything: Vec<&str> = fresh["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["org"].as_str().unwrap())
        .collect();
    assert!(everything.contains(&"late-bank"), "{fresh}");
    assert!(
        walked.iter().any(|o| o == "late-bank"),
        "the walk never showed late-bank's read of my record (seq below its cursor, committed \
         after its first page): walked {walked:?}, the log now {everything:?}"
    );
}

/// The kids `/.well-known/jwks.json` publishes: the keys that verify now.
async fn jwks_kids(app: &TestApp) -> Vec<String> {
    let jwks: Value = app
        .http
        .get(format!("{}/.well-known/jwks.json", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

/// R4: `steady` no longer keeps a forward step once it is corrected, but a token-signing key's
/// retirement still counts from its successor's `created_at`, the host's wall clock at the
/// rotation. A rotation made while the host's clock was two days ahead (an operator rotating
/// out a leaked key during the glitch) stamps the successor two days ahead; once the clock is
/// set right, the rotated-away key keeps verifying (and is published) for two days plus
/// `keep_for` of real time, not `keep_for`. (Before this stop, `steady` kept the step as its
/// floor, so the retirement came `keep_for` after the rotation in real time.)
#[tokio::test]
async fn rev4_a_key_rotated_away_during_a_forward_step_retires_when_its_lifetime_is_over() {
    use std::time::Duration;
    let app = TestApp::spawn().await;
    let clock = &app.state.clock;
    let old = jwks_kids(&app).await;
    assert_eq!(old.len(), 1, "{old:?}");
    let ahead = Duration::from_secs(2 * 86_400);
    // The host's clock jumps two days ahead; the key is rotated meanwhile, stamped on it.
    clock.step_forward(ahead);
    let new = app
        .state
        .keyring
        .rotate(&app.state.db, credgate::auth::keyring::KeyUse::TokenSigning)
        .await
        .unwrap();
    sqlx::query("UPDATE gateway_keys SET created_at = created_at + $1 WHERE kid = $2")
        .bind(ahead.as_micros() as i64)
        .bind(&new.kid)
        .execute(app.state.db.pool())
        .await
        .unwrap();
    credgate::replicas::refresh_keys(&app.state).await.unwrap();
    assert!(jwks_kids(&app).await.contains(&new.kid));
    // The clock is set right; then far more than a token's lifetime really passes.
    clock.step_back(ahead);
    clock.advance(Duration::from_secs(app.state.tokens.ttl_secs() + 3600));
    let kids = jwks_kids(&app).await;
    assert!(
        !kids.contains(&old[0]),
        "the key rotated away an hour past a token's lifetime ago still verifies (and is \
         published) until two days later: {kids:?}"
    );
}
