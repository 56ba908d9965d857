//! The law in the policies, through the gateway against real stores: retention and deletion
//! (征信业管理条例 art. 16), repair and display periods (NDRC 信用修复管理办法), list exits and
//! derived flags, the public without personal identifiers, prohibited data (art. 14).
//! Every test runs on SQLite, and on PostgreSQL when `CREDGATE_TEST_PG` is set.

use serde_json::{Value, json};

use crate::helpers::TestApp;

fn ymd(days_ago: i64) -> String {
    let d = time::OffsetDateTime::now_utc().date() - time::Duration::days(days_ago);
    format!("{:04}-{:02}-{:02}", d.year(), d.month() as u8, d.day())
}

async fn get(app: &TestApp, token: Option<&str>, path: &str, purpose: &str) -> (u16, Value) {
    let mut req = app
        .http
        .get(format!("{}{}", app.url, path))
        .header("X-Purpose", purpose);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn refs(v: &Value, key: &str, field: &str) -> Vec<String> {
    v[key]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p[field].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Deliveries of deletion requests the outbox holds, as (payload, delivered).
async fn deletions(app: &TestApp) -> Vec<(Value, bool)> {
    use sqlx::Row;
    sqlx::query("SELECT payload, delivered_at FROM outbox WHERE id LIKE 'del_%'")
        .fetch_all(app.state.db.pool())
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            let p: String = r.try_get("payload").unwrap();
            let d: Option<i64> = r.try_get("delivered_at").unwrap();
            (serde_json::from_str(&p).unwrap(), d.is_some())
        })
        .collect()
}

#[tokio::test]
async fn law_a_penalty_past_five_years_from_the_act_is_withheld_from_every_role_and_its_deletion_is_delivered()
 {
    let app = TestApp::spawn().await;
    // Published until last year, but the act ended five years and a day ago: retention runs
    // from the act, not from publication_ends.
    *app.fake.doc.lock().unwrap() = json!({
        "uscc": "91350100M000100Y43", "region": "350000",
        "penalties": [
            {"decision_number": "OLD", "severity": "serious", "decided_at": ymd(1500),
             "publication_ends": ymd(400), "ended_at": ymd(5 * 366 + 1)},
            {"decision_number": "KEEP", "severity": "serious", "decided_at": ymd(300),
             "publication_ends": ymd(-700), "ended_at": ymd(400)},
        ],
    });
    let regulator = app.token("regulator").await.1;
    let (status, body) = get(
        &app,
        Some(&regulator),
        "/v1/stores/fake/doc/91350100M000100Y43",
        "supervision",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        refs(&body, "penalties", "decision_number"),
        vec!["KEEP"],
        "{body}"
    );
    let bank = app.token("financial_institution").await.1;
    let (_, body) = get(
        &app,
        Some(&bank),
        "/v1/stores/fake/doc/91350100M000100Y43",
        "risk_control",
    )
    .await;
    assert_eq!(
        refs(&body, "penalties", "decision_number"),
        vec!["KEEP"],
        "{body}"
    );

    // One request per record, however often it is read, delivered to the store.
    let mut delivered = false;
    for _ in 0..100 {
        let d = deletions(&app).await;
        if d.len() == 1 && d[0].1 {
            delivered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let d = deletions(&app).await;
    assert!(delivered, "{d:?}");
    assert_eq!(d[0].0["kind"], "deletion");
    assert_eq!(d[0].0["record_ref"], "OLD");
    assert_eq!(d[0].0["subject"], "91350100M000100Y43");
    assert!(d[0].0["reason"].as_str().unwrap().contains("art. 16"));
    assert_eq!(app.fake.tickets.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn law_a_persons_expired_bad_record_is_withheld_from_the_regulator_too() {
    let app = TestApp::spawn().await;
    let today = credgate::sample_store::data::today();
    let expired = |r: &Value| {
        r["kind"] == "bad"
            && credgate::sample_store::data::shift_months(r["ended_at"].as_str().unwrap(), 60)
                < today
    };
    let person = app
        .sample()
        .persons
        .into_iter()
        .find(|p| p["records"].as_array().unwrap().iter().any(expired))
        .expect("the sample data holds an expired bad record");
    let id = person["id_number"].as_str().unwrap();
    let regulator = app.token("regulator").await.1;
    let (status, body) = get(
        &app,
        Some(&regulator),
        &format!("/v1/stores/power/persons/{id}"),
        "enforcement",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["records"], json!([]), "{body}");
    assert_eq!(body["id_number"], id);
}

/// A repaired penalty leaves bidding, procurement, lending and the public; the regulator's
/// supervision view keeps it, with the day of repair.
#[tokio::test]
async fn law_a_repaired_penalty_is_hidden_from_bidding_but_shown_to_the_regulator() {
    let app = TestApp::spawn().await;
    *app.fake.doc.lock().unwrap() = json!({
        "uscc": "91350100M000100Y43", "region": "350000",
        "penalties": [
            {"decision_number": "REPAIRED", "severity": "serious", "decided_at": ymd(500),
             "publication_ends": ymd(-500), "ended_at": ymd(600), "repaired_at": ymd(30)},
            {"decision_number": "REVOKED", "severity": "general", "decided_at": ymd(100),
             "publication_ends": ymd(-200), "ended_at": ymd(200), "revoked_at": ymd(10)},
            {"decision_number": "ENDED-EARLY", "severity": "general", "decided_at": ymd(100),
             "publication_ends": ymd(1), "ended_at": ymd(200)},
            {"decision_number": "LIVE", "severity": "general", "decided_at": ymd(100),
             "publication_ends": ymd(-200), "ended_at": ymd(200)},
        ],
    });
    let path = "/v1/stores/fake/doc/91350100M000100Y43";
    let agency = app.token("government_agency").await.1;
    for purpose in ["bidding", "public_procurement"] {
        let (_, body) = get(&app, Some(&agency), path, purpose).await;
        assert_eq!(
            refs(&body, "penalties", "decision_number"),
            vec!["LIVE"],
            "{purpose}: {body}"
        );
    }
    let bank = app.token("financial_institution").await.1;
    let (_, body) = get(&app, Some(&bank), path, "lending").await;
    assert_eq!(
        refs(&body, "penalties", "decision_number"),
        vec!["LIVE"],
        "{body}"
    );
    let regulator = app.token("regulator").await.1;
    let (_, body) = get(&app, Some(&regulator), path, "supervision").await;
    assert_eq!(
        refs(&body, "penalties", "decision_number"),
        vec!["REPAIRED", "REVOKED", "ENDED-EARLY", "LIVE"],
        "{body}"
    );
    assert_eq!(body["penalties"][0]["repaired_at"], ymd(30));
    assert_eq!(body["penalties"][1]["revoked_at"], ymd(10));
}

#[tokio::test]
async fn law_removed_and_expired_list_entries_are_not_public_and_flags_follow_current_entries() {
    let app = TestApp::spawn().await;
    let today = credgate::sample_store::data::today();
    for list in ["black", "red"] {
        let path = format!("/public/stores/power/lists/{list}");
        let (status, body) = get(&app, None, &path, "public_disclosure").await;
        assert_eq!(status, 200, "{body}");
        for item in body["items"].as_array().unwrap() {
            assert!(item["removed_at"].is_null(), "{item}");
            assert!(
                item["valid_until"].as_str().unwrap() >= today.as_str(),
                "{item}"
            );
        }
        let regulator = app.token("regulator").await.1;
        let (_, all) = get(
            &app,
            Some(&regulator),
            &format!("/v1/stores/power/lists/{list}"),
            "supervision",
        )
        .await;
        assert!(
            all["items"].as_array().unwrap().len() > body["items"].as_array().unwrap().len(),
            "the regulator sees the exits too"
        );
    }
    // The store's flag is stale: the only black-list entry was removed. The gateway says no.
    *app.fake.doc.lock().unwrap() = json!({
        "uscc": "91350100M000100Y43", "region": "350000", "black_list": true, "red_list": true,
        "list_entries": [{"list": "black", "reason": "严重失信", "listed_at": ymd(400),
            "valid_until": ymd(-700), "removed_at": ymd(20), "exit_reason": "信用修复"}],
    });
    let bank = app.token("financial_institution").await.1;
    let (_, body) = get(
        &app,
        Some(&bank),
        "/v1/stores/fake/doc/91350100M000100Y43",
        "lending",
    )
    .await;
    assert_eq!(
        (&body["black_list"], &body["red_list"]),
        (&json!(false), &json!(false)),
        "{body}"
    );
    assert_eq!(body["list_entries"], json!([]), "{body}");
    // Hostile: a flag with no entries to prove it is withheld, not believed.
    *app.fake.doc.lock().unwrap() =
        json!({"uscc": "91350100M000100Y43", "region": "350000", "black_list": true});
    let (_, body) = get(
        &app,
        Some(&bank),
        "/v1/stores/fake/doc/91350100M000100Y43",
        "lending",
    )
    .await;
    assert!(body.get("black_list").is_none(), "{body}");
}

#[tokio::test]
async fn law_the_public_sees_registration_facts_and_no_personal_identifier() {
    let app = TestApp::spawn().await;
    let data = app.sample();
    let (status, list) = get(
        &app,
        None,
        "/public/stores/power/entities?page_size=100",
        "public_disclosure",
    )
    .await;
    assert_eq!(status, 200);
    let e = &data.entities[3];
    let uscc = e["uscc"].as_str().unwrap();
    let (status, one) = get(
        &app,
        None,
        &format!("/public/stores/power/entities/{uscc}"),
        "public_disclosure",
    )
    .await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["registered_capital"], e["registered_capital"]);
    assert_eq!(one["address"], e["address"]);
    assert_eq!(
        one["legal_representative"],
        json!({"name": e["legal_representative"]["name"]})
    );
    for text in [list.to_string(), one.to_string()] {
        assert!(
            !text.contains("id_number") && !text.contains("phone"),
            "{text}"
        );
        for x in &data.entities {
            let id = x["legal_representative"]["id_number"].as_str().unwrap();
            let phone = x["legal_representative"]["phone"].as_str().unwrap();
            // Neither clear nor in the old masked forms (first six / last four, 3+4).
            for needle in [
                id.to_string(),
                format!("{}*", &id[..6]),
                format!("*{}", &id[14..]),
                phone.to_string(),
                format!("{}*", &phone[..3]),
            ] {
                assert!(!text.contains(&needle), "{needle} in {text}");
            }
        }
    }
}

/// 征信业管理条例 art. 14: `credgate policy check` refuses a catalog that names prohibited data,
/// and a reload could never take it.
#[tokio::test]
async fn law_policy_check_refuses_a_prohibited_class() {
    let dir = tempfile::tempdir().unwrap();
    crate::helpers::copy_dir(
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/policies")),
        dir.path(),
    );
    let catalog = dir.path().join("catalog.toml");
    let text = std::fs::read_to_string(&catalog).unwrap();
    std::fs::write(
        &catalog,
        text.replacen(
            "address = \"address\"",
            "address = \"address\"\n\"legal_representative.blood\" = \"blood_type\"",
            1,
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_credgate"))
        .args(["policy", "check", &dir.path().display().to_string()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("catalog.toml:") && err.contains("art. 14"),
        "{err}"
    );
}

/// A read for a withheld purpose (enforcement: 90 days in the shipped set) stays out of the
/// subject's access log, while the record exists for staff; once the period has run the subject
/// sees it. Each entry names its legal basis (PIPL art. 13 code).
#[tokio::test]
async fn law_withheld_purposes_stay_out_of_the_subjects_log_until_the_period_runs() {
    use credgate::domain::SubjectType;
    let app = TestApp::spawn().await;
    let uscc = app.sample().entities[0]["uscc"]
        .as_str()
        .unwrap()
        .to_string();
    let regulator = app.token("regulator").await.1;
    let path = format!("/v1/stores/power/entities/{uscc}");
    for purpose in ["enforcement", "supervision"] {
        let (status, _) = get(&app, Some(&regulator), &path, purpose).await;
        assert_eq!(status, 200);
    }
    let me = app.subject_token(&uscc, SubjectType::Legal);
    let log: Value = app
        .http
        .get(format!("{}/subject/access-log", app.url))
        .bearer_auth(&me)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = log["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{log}");
    assert_eq!(items[0]["purpose"], "supervision");
    assert_eq!(items[0]["legal_basis"], "legal_duty");

    // The record exists.
    let all = credgate::audit::store::page_after(&app.state.db, 0, 100_000)
        .await
        .unwrap();
    assert!(
        all.iter()
            .any(|r| r.purpose.as_deref() == Some("enforcement") && r.subjects.contains(&uscc))
    );
    // 91 days on, the subject sees both.
    let later = credgate::storage::now_micros() + 91 * 86_400 * 1_000_000;
    let seen = credgate::audit::store::access_log_at(
        &app.state.db,
        &uscc,
        (None, 500),
        &[("enforcement", 90)],
        later,
    )
    .await
    .unwrap();
    assert_eq!(seen.records.len(), 2);
    // Hostile: a purpose spelled to break out of the query is a bound value, not SQL.
    let none = credgate::audit::store::access_log_at(
        &app.state.db,
        &uscc,
        (None, 500),
        &[("x') OR 1=1 --", 90)],
        later,
    )
    .await
    .unwrap();
    assert_eq!(none.records.len(), 2);
}

/// The roles the policy reserves for a data subject reading their own record and for the
/// anonymous public are never a client's: `client add` refuses them by the policy's mark.
#[tokio::test]
async fn law_reserved_roles_are_refused_by_client_add() {
    let app = TestApp::spawn().await;
    let cfg = crate::cli::config_file(&app);
    for role in ["data_subject_legal", "data_subject_natural", "public"] {
        let out = crate::cli::credgate(&[
            "client", "add", "--name", "x", "--org", "o", "--role", role, "--config", &cfg,
        ]);
        let (_, err) = crate::cli::text(&out);
        assert!(!out.status.success(), "{role} was registered");
        assert!(err.contains("reserved"), "{role}: {err}");
    }
    let listed = credgate::storage::clients::list(&app.state.db)
        .await
        .unwrap();
    assert!(listed.is_empty(), "{listed:?}");
}

/// A client row edited by hand to a reserved role gets no token, and a token it holds (issued
/// before the edit, or minted for it) is refused at the data door and at the profile.
#[tokio::test]
async fn law_a_client_holding_a_reserved_role_gets_no_token_and_is_served_nothing() {
    let app = TestApp::spawn().await;
    let (id, secret) = app.add_client("regulator").await;
    let person = app.sample().persons[0]["id_number"]
        .as_str()
        .unwrap()
        .to_string();
    for role in ["data_subject_natural", "public"] {
        sqlx::query("UPDATE clients SET role = $1 WHERE id = $2")
            .bind(role)
            .bind(&id)
            .execute(app.state.db.pool())
            .await
            .unwrap();
        let res = app.token_for(&id, &secret).await;
        assert_eq!(res.status().as_u16(), 401, "{role} got a token");
        let record = credgate::storage::clients::get(&app.state.db, &id)
            .await
            .unwrap()
            .unwrap();
        let token = app.state.tokens.issue(&record).unwrap();
        // The status cache must not keep the role the client had before.
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        for purpose in ["self_query", "public_disclosure", "enforcement"] {
            let (status, body) = get(
                &app,
                Some(&token),
                &format!("/v1/stores/power/persons/{person}"),
                purpose,
            )
            .await;
            assert_eq!(status, 403, "{role} {purpose}: {body}");
            assert_eq!(body["rule"], "reserved-role", "{body}");
        }
        let (status, body) = get(
            &app,
            Some(&token),
            &format!("/v1/subjects/{person}/profile"),
            "self_query",
        )
        .await;
        assert_eq!(status, 403, "{role} profile: {body}");
        assert_eq!(body["rule"], "reserved-role", "{body}");
    }
}

/// An institution declaring the subject's own purpose is refused, whatever its clearance.
#[tokio::test]
async fn law_self_query_from_an_institution_is_403() {
    let app = TestApp::spawn().await;
    let person = app.sample().persons[0]["id_number"]
        .as_str()
        .unwrap()
        .to_string();
    for role in ["regulator", "financial_institution", "government_agency"] {
        let token = app.token(role).await.1;
        let (status, body) = get(
            &app,
            Some(&token),
            &format!("/v1/stores/power/persons/{person}"),
            "self_query",
        )
        .await;
        assert_eq!(status, 403, "{role}: {body}");
        assert_eq!(body["rule"], "purpose-not-allowed", "{body}");
    }
}

/// The policy engine refuses a client role that declares a purpose reserved for the subject.
#[test]
fn law_a_client_role_declaring_the_subjects_purpose_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    crate::helpers::copy_dir(std::path::Path::new("policies"), dir.path());
    let roles = dir.path().join("roles.toml");
    let text = std::fs::read_to_string(&roles).unwrap().replace(
        "purposes = [\"supervision\", \"enforcement\"]\ndatasets = [\"entity\", \"entity_list\", \"person\"",
        "purposes = [\"supervision\", \"enforcement\", \"self_query\"]\ndatasets = [\"entity\", \"entity_list\", \"person\"",
    );
    std::fs::write(&roles, text).unwrap();
    let err = credgate::policy::PolicySet::load(dir.path()).unwrap_err();
    assert!(
        err.message.contains("reserved for the data subject"),
        "{err}"
    );
}

/// Display rules apply to every purpose except the full-history ones (supervision, enforcement,
/// and the subject's own self_query, see shipped.toml's own-record case):
/// each (role, purpose) a client may declare is checked, so a new purpose cannot slip past them.
#[tokio::test]
async fn law_a_repaired_penalty_is_withheld_from_every_purpose_but_full_history() {
    let app = TestApp::spawn().await;
    *app.fake.doc.lock().unwrap() = json!({
        "uscc": "91350100M000100Y43", "region": "350000",
        "penalties": [
            {"decision_number": "REPAIRED", "severity": "serious", "decided_at": ymd(500),
             "publication_ends": ymd(-500), "ended_at": ymd(600), "repaired_at": ymd(30)},
            {"decision_number": "MINOR", "severity": "minor", "decided_at": ymd(10),
             "ended_at": ymd(20)},
        ],
    });
    let path = "/v1/stores/fake/doc/91350100M000100Y43";
    let cases: &[(&str, Option<&str>, &[&str], bool)] = &[
        ("regulator", None, &["supervision", "enforcement"], true),
        (
            "regional_regulator",
            Some("350000"),
            &["supervision", "enforcement"],
            true,
        ),
        (
            "government_agency",
            None,
            &[
                "administrative_approval",
                "qualification_review",
                "bidding",
                "public_procurement",
                "fiscal_funds",
            ],
            false,
        ),
        (
            "financial_institution",
            None,
            &["lending", "guarantee", "risk_control"],
            false,
        ),
        ("credit_agency", None, &["credit_service"], false),
    ];
    for (role, region, purposes, full) in cases {
        let token = app.token_in(role, "org-x", *region).await;
        for purpose in *purposes {
            let (status, body) = get(&app, Some(&token), path, purpose).await;
            assert_eq!(status, 200, "{role}/{purpose}: {body}");
            let seen = refs(&body, "penalties", "decision_number");
            let want: Vec<&str> = if *full {
                vec!["REPAIRED", "MINOR"]
            } else {
                vec![]
            };
            assert_eq!(seen, want, "{role}/{purpose}: {body}");
        }
    }
}

/// Adverse is the default: a list entry whose `list` is not a declared good value ("BAD",
/// "Black", "negative", a typo) is held to the black list's display period, not released.
#[tokio::test]
async fn law_an_unknown_list_value_is_adverse() {
    let app = TestApp::spawn().await;
    let entry = |list: &str| json!({"list": list, "reason": "r", "listed_at": ymd(1500), "valid_until": ymd(-300)});
    *app.fake.doc.lock().unwrap() = json!({
        "uscc": "91350100M000100Y43", "region": "350000",
        "list_entries": [entry("black"), entry("BAD"), entry("Black"), entry("negative"),
                         entry("red")],
    });
    let bank = app.token("financial_institution").await.1;
    let (status, body) = get(
        &app,
        Some(&bank),
        "/v1/stores/fake/doc/91350100M000100Y43",
        "lending",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(refs(&body, "list_entries", "list"), vec!["red"], "{body}");
}

/// Expired list rows of different companies listed on the same day each get their own
/// deletion request naming their subject (hostile review: they collapsed into one request a
/// store could not resolve), queued with the read's audit record (present the moment the
/// answer is, never before the record); a list value no rule declares is counted by a metric.
#[tokio::test]
async fn law_expired_list_rows_are_queued_for_deletion_each_with_its_subject_with_the_record() {
    let old = ymd(8 * 366);
    let ended = ymd(6 * 366);
    let page = json!({"items": [
        {"uscc": "91350100M000100Y43", "name": "A", "region": "350000", "list_entries": [
            {"list": "black", "listed_at": old, "valid_until": ended}]},
        {"uscc": "91110108MA01ABCD5X", "name": "B", "region": "110000", "list_entries": [
            {"list": "black", "listed_at": old, "valid_until": ended},
            {"list": "blak", "listed_at": ymd(10)}]},
    ]});
    let store = crate::helpers::serve(axum::Router::new().route(
        "/records",
        axum::routing::get(move || {
            let page = page.clone();
            async move { axum::Json(page) }
        }),
    ))
    .await;
    let app = TestApp::spawn_with(|c| {
        let fake = c.stores.iter_mut().find(|s| s.name == "fake").unwrap();
        fake.upstream = format!("http://{store}");
    })
    .await;
    let regulator = app.token("regulator").await.1;
    let res = app
        .http
        .get(format!("{}/v1/stores/fake/records", app.url))
        .bearer_auth(&regulator)
        .header("X-Purpose", "supervision")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let audit_id = res.headers()["x-audit-id"].to_str().unwrap().to_string();
    let body: Value = res.json().await.unwrap();
    assert!(!body.to_string().contains(&old), "{body}");
    // Already queued when the answer arrives: in the record's transaction, not after it.
    let d = deletions(&app).await;
    let mut subjects: Vec<&str> = d
        .iter()
        .map(|(p, _)| p["subject"].as_str().unwrap())
        .collect();
    subjects.sort();
    assert_eq!(
        subjects,
        ["91110108MA01ABCD5X", "91350100M000100Y43"],
        "{d:?}"
    );
    let record = app.record(&audit_id).await;
    assert_eq!(record.decision, "allow");
    // Read again: the same requests, not new ones.
    app.http
        .get(format!("{}/v1/stores/fake/records", app.url))
        .bearer_auth(&regulator)
        .header("X-Purpose", "supervision")
        .send()
        .await
        .unwrap();
    assert_eq!(deletions(&app).await.len(), 2);
    // The misspelt list is counted.
    let metrics = app
        .http
        .get(format!("{}/metrics", app.metrics_url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("credgate_unknown_list_values_total")
                && l.contains("entity_list")),
        "{metrics}"
    );
}
