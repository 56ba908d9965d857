//! Hostile paths, queries and answers on the data path (issue 13, items 6-10 and 15): what the
//! gateway decides on is exactly what reaches the store, and what leaves is exactly what the
//! policy names, for every reader.

use credgate::config::Config;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem};

const USCC: &str = "91350100M000100Y43";

/// A route on the fake store with a placeholder that names no subject, so that a path trick
/// in it would reach the store if it were not refused; and a `/records` route naming the query
/// parameters it allows.
fn hostile_routes(c: &mut Config) {
    let fake = c.stores.iter_mut().find(|s| s.name == "fake").unwrap();
    let mut things = fake.routes[0].clone();
    things.path = "/things/{name}".into();
    things.subject_path = None;
    things.subject_type = None;
    fake.routes.push(things);
    let records = fake
        .routes
        .iter_mut()
        .find(|r| r.path == "/records")
        .unwrap();
    records.query = Some(vec!["page".into(), "page_size".into()]);
}

/// Sends the request line as written (no client-side normalisation) with a bank's token.
async fn raw(app: &TestApp, token: &str, rest: &str) -> (u16, String) {
    app.raw_get(&format!("/v1/stores/fake/{rest}"), token).await
}

#[tokio::test]
async fn forty_path_spellings_are_decoded_once_and_nothing_ambiguous_reaches_the_store() {
    let app = TestApp::spawn_with(hostile_routes).await;
    let (_, bank) = app.token("financial_institution").await;
    // (spelling after `/v1/stores/fake/`, what the store must see, or None for a refusal)
    let legit: &[(&str, &str)] = &[
        (
            "entities/91350100M000100Y43",
            "/entities/91350100M000100Y43",
        ),
        (
            "entities/%39%31350100M000100Y43",
            "/entities/91350100M000100Y43",
        ),
        (
            "entities/91350100m000100y43",
            "/entities/91350100M000100Y43",
        ),
        (
            "entities/%2091350100M000100Y43",
            "/entities/91350100M000100Y43",
        ),
        (
            "%65ntities/91350100M000100Y43",
            "/entities/91350100M000100Y43",
        ),
        ("things/%E5%8D%8E%20x", "/things/%E5%8D%8E%20x"),
    ];
    let refused: &[&str] = &[
        "things/..",
        "things/.",
        "things/...",
        "things/%2e%2e",
        "things/%2E%2E",
        "things/%2e%2E",
        "things/.%2e",
        "things/%2e.",
        "things/%252e%252e",
        "things/%25252e",
        "things/%%32%65%%32%65",
        "things/%%32%66",
        "things/%252f",
        "things/%u002e%u002e",
        "things/x%25",
        "things%2fx",
        "things%2Fx",
        "things/..;",
        "things/..;x",
        "things/..%3b",
        "things/x;y=1",
        "things/x%3By=1",
        "things/x%3b",
        "things%5cx",
        "things/%5C..%5Cx",
        "things/%c0%ae%c0%ae",
        "things/%C0%AE",
        "things/%e0%80%ae",
        "things/%c0%af",
        "things/%e2%80%a4%e2%80%a4",
        "things/%e2%80%a5",
        "things/%ef%bc%8e%ef%bc%8e",
        "things/%ef%b9%92",
        "things/%e3%80%82",
        "things/..%20",
        "things/x.",
        "things/x%2e",
        "things/%00",
        "things/x%0a",
        "things/x%0d%0aX-Injected:%201",
        "things/%7f",
        "things/%c2%85",
        "things/%ff",
        "things//x",
        "things/x/",
        "things/%2e%2e%2f%2e%2e%2fadmin",
        "things/.%00.",
        "entities/..;/91350100M000100Y43",
        "entities/91350100M000100Y43;x=1",
        "entities/%2e%2e%2f91350100M000100Y43",
        // Unicode look-alikes: fullwidth `／` `＼` `；`, a soft hyphen, a zero-width space and
        // a right-to-left override after `..`, and fullwidth letters.
        "things/..%EF%BC%8Fadmin",
        "things/..%EF%BC%BCadmin",
        "things/..%EF%BC%9B",
        "things/x%EF%BC%9By=1",
        "things/..%C2%AD",
        "things/..%E2%80%8B",
        "things/x%E2%80%AEtxt.exe",
        "things/%E2%80%8B",
        "things/%EF%BD%81dmin",
    ];
    assert!(legit.len() + refused.len() >= 40);
    for (spelling, forwarded) in legit {
        let before = app.fake.hits();
        let (status, text) = raw(&app, &bank, spelling).await;
        assert!(
            status == 200 || status == 404,
            "{spelling}: {status} {text}"
        );
        assert_eq!(
            app.fake.hits(),
            before + 1,
            "{spelling} did not reach the store"
        );
        assert_eq!(app.fake.uri(), *forwarded, "{spelling}");
    }
    for spelling in refused {
        let before = app.fake.hits();
        let (status, text) = raw(&app, &bank, spelling).await;
        assert_eq!(status, 400, "{spelling}: {text}");
        assert!(
            text.contains("application/problem+json"),
            "{spelling}: not our problem answer: {text}"
        );
        assert_eq!(app.fake.hits(), before, "{spelling} reached the store");
    }
}

#[tokio::test]
async fn the_query_forwarded_is_the_query_decided() {
    let app = TestApp::spawn_with(hostile_routes).await;
    let (_, bank) = app.token("financial_institution").await;
    let other = "91110000100000589B";
    let refused = [
        format!("records?uscc={USCC}&x=1;uscc={other}"),
        format!("records?uscc={USCC};uscc={other}"),
        format!("records?uscc={USCC}&uscc={other}"),
        format!("records?uscc={USCC}&USCC={other}"),
        format!("records?uscc={USCC}&Uscc={other}"),
        format!("records?uscc={USCC}&uscc[]={other}"),
        format!("records?uscc[]={other}"),
        format!("records?uscc[0]={other}"),
        format!("records?uscc%5B%5D={other}"),
        format!("records?uscc={USCC}&page=1&page=2"),
        format!("records?uscc={USCC}&sort=name"),
        format!("records?uscc={USCC}&%75scc={other}"),
        format!("records?uscc={USCC}%00"),
        format!("records?uscc={USCC}&page=1%0a"),
        format!("records?uscc={USCC}&=1"),
    ];
    for q in &refused {
        let before = app.fake.hits();
        let (status, text) = raw(&app, &bank, q).await;
        assert_eq!(status, 400, "{q}: {text}");
        assert!(text.contains("application/problem+json"), "{q}: {text}");
        assert_eq!(app.fake.hits(), before, "{q} reached the store");
    }
    // What passes is re-serialised from the validated pairs, the subject's id canonical.
    let cases = [
        (
            format!("records?uscc={USCC}&page=2"),
            format!("/records?uscc={USCC}&page=2"),
        ),
        (
            "records?uscc=%2091350100m000100y43&page_size=5".to_string(),
            format!("/records?uscc={USCC}&page_size=5"),
        ),
        (
            format!("records?page=%31&uscc={USCC}"),
            format!("/records?page=1&uscc={USCC}"),
        ),
        (
            "records?page=a+b".to_string(),
            "/records?page=a+b".to_string(),
        ),
        ("records".to_string(), "/records".to_string()),
    ];
    for (q, forwarded) in &cases {
        let (status, text) = raw(&app, &bank, q).await;
        assert_eq!(status, 200, "{q}: {text}");
        assert_eq!(app.fake.uri(), *forwarded, "{q}");
    }
}

#[tokio::test]
async fn a_padded_or_lower_case_id_in_the_path_is_forwarded_canonical() {
    let app = TestApp::spawn().await;
    let (_, bank) = app.token("financial_institution").await;
    for spelling in [
        format!("%20{USCC}"),
        format!("{USCC}%20"),
        USCC.to_lowercase(),
    ] {
        let (status, text) = raw(&app, &bank, &format!("entities/{spelling}")).await;
        assert_eq!(status, 200, "{spelling}: {text}");
        assert_eq!(app.fake.uri(), format!("/entities/{USCC}"), "{spelling}");
    }
}

#[tokio::test]
async fn a_route_without_declared_parameters_still_forwards_only_validated_pairs() {
    let app = TestApp::spawn().await;
    let (_, bank) = app.token("financial_institution").await;
    let (status, _) = raw(&app, &bank, "things-not-routed?x=1").await;
    assert_eq!(status, 404);
    let res = app
        .data(&bank, "/v1/stores/power/entities?sector=coal&page_size=2")
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert!(body["items"].as_array().unwrap().len() <= 2);
    let res = app
        .data(&bank, "/v1/stores/power/entities?sector=coal;sector=oil")
        .await;
    assert_problem(res, 400).await;
}

#[tokio::test]
async fn the_audit_record_holds_the_canonical_path_and_query() {
    let app = TestApp::spawn_with(hostile_routes).await;
    let (_, bank) = app.token("financial_institution").await;
    let res = app
        .data(
            &bank,
            "/v1/stores/fake/%72ecords?page_size=%35&uscc=%2091350100m000100y43",
        )
        .await;
    assert_eq!(res.status(), 200);
    let id = res.headers()["x-audit-id"].to_str().unwrap().to_string();
    let record = app.record(&id).await;
    assert_eq!(
        record.path,
        format!("/v1/stores/fake/records?page_size=5&uscc={USCC}")
    );
    assert_eq!(app.fake.uri(), format!("/records?page_size=5&uscc={USCC}"));
    assert_eq!(record.subjects, vec![USCC.to_string()]);
}

/// Roles that may read persons, with a purpose each may declare.
const PERSON_READERS: &[(&str, &str)] = &[
    ("regulator", "supervision"),
    ("government_agency", "public_procurement"),
    ("financial_institution", "lending"),
    ("credit_agency", "credit_service"),
];

async fn grant_consent(app: &TestApp, person: &str, org: &str, purpose: &str) -> String {
    let expires = (time::OffsetDateTime::now_utc() + time::Duration::days(30))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let res = app
        .http
        .post(format!("{}/subject/consents", app.url))
        .bearer_auth(person)
        .json(&json!({"grantee_org": org, "purpose": purpose, "expires_at": expires, "separate": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let c: Value = res.json().await.unwrap();
    c["id"].as_str().unwrap().to_string()
}

async fn get_as(
    app: &TestApp,
    token: &str,
    purpose: &str,
    consent: &str,
    path: &str,
) -> reqwest::Response {
    app.http
        .get(format!("{}{path}", app.url))
        .bearer_auth(token)
        .header("X-Purpose", purpose)
        .header("X-Consent", consent)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_contested_person_is_marked_for_every_role_that_reads_persons() {
    let app = TestApp::spawn().await;
    let id = app.sample().persons[1]["id_number"]
        .as_str()
        .unwrap()
        .to_string();
    let person = app.subject_token(&id, credgate::domain::SubjectType::Natural);
    let res = app
        .http
        .post(format!("{}/subject/objections", app.url))
        .bearer_auth(&person)
        .json(
            &json!({"store": "power", "dataset": "person", "record_ref": id,
                      "field": "phone", "reason": "这个号码不是我的"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    for (role, purpose) in PERSON_READERS {
        let org = format!("org-{role}");
        let token = app.token_in(role, &org, None).await;
        let consent = grant_consent(&app, &person, &org, purpose).await;
        let res = get_as(
            &app,
            &token,
            purpose,
            &consent,
            &format!("/v1/stores/power/persons/{id}"),
        )
        .await;
        assert_eq!(res.status(), 200, "{role}");
        assert_eq!(
            res.headers()["x-objection"],
            "pending",
            "{role}: record header"
        );
        let body: Value = res.json().await.unwrap();
        assert_eq!(
            body["_objections"][0]["field"], "phone",
            "{role}: record {body}"
        );
        let res = get_as(
            &app,
            &token,
            purpose,
            &consent,
            &format!("/v1/subjects/{id}/profile"),
        )
        .await;
        assert_eq!(res.status(), 200, "{role}");
        assert_eq!(
            res.headers()["x-objection"],
            "pending",
            "{role}: profile header"
        );
        let body: Value = res.json().await.unwrap();
        assert_eq!(
            body["sections"]["power.person"]["_objections"][0]["field"], "phone",
            "{role}: profile {body}"
        );
    }
}

/// A problem answer with the parts that differ per request (ids, date, and `RateLimit`, which
/// counts this client's requests whatever they asked for) taken out.
async fn shape(res: reqwest::Response) -> (u16, Vec<(String, String)>, Value) {
    let status = res.status().as_u16();
    let mut headers: Vec<(String, String)> = res
        .headers()
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "x-request-id" | "x-audit-id" | "date" | "ratelimit"
            )
        })
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
        .collect();
    headers.sort();
    let mut body: Value = res.json().await.unwrap();
    body.as_object_mut().unwrap().remove("request_id");
    (status, headers, body)
}

#[tokio::test]
async fn a_regional_role_cannot_tell_an_out_of_region_record_from_a_missing_one() {
    let app = TestApp::spawn().await;
    let data = app.sample();
    let home = data.entities[0]["region"].as_str().unwrap();
    let elsewhere = data.entities.iter().find(|e| e["region"] != home).unwrap()["uscc"]
        .as_str()
        .unwrap()
        .to_string();
    let regional = app
        .token_in("regional_regulator", "office", Some(home))
        .await;
    let res = app
        .data(
            &regional,
            &format!(
                "/v1/stores/power/entities/{}",
                data.entities[0]["uscc"].as_str().unwrap()
            ),
        )
        .await;
    assert_eq!(res.status(), 200, "its own region is served");
    let out = shape(
        app.data(&regional, &format!("/v1/stores/power/entities/{elsewhere}"))
            .await,
    )
    .await;
    let missing = shape(
        app.data(&regional, &format!("/v1/stores/power/entities/{USCC}"))
            .await,
    )
    .await;
    assert_eq!(out.0, 404);
    assert_eq!(out, missing);
}

#[tokio::test]
async fn a_legal_representative_sees_reads_of_their_company_in_their_access_log() {
    let app = TestApp::spawn().await;
    let e = &app.sample().entities[2];
    let uscc = e["uscc"].as_str().unwrap();
    let rep = e["legal_representative"]["id_number"].as_str().unwrap();
    let bank = app
        .token_in("financial_institution", "curious-bank", None)
        .await;
    let res = app
        .data(&bank, &format!("/v1/stores/power/entities/{uscc}"))
        .await;
    assert_eq!(res.status(), 200);
    let shown = res.json::<Value>().await.unwrap()["legal_representative"]["id_number"].clone();
    assert_ne!(shown, json!(rep), "masked for a bank, yet partly released");
    let me = app.subject_token(rep, credgate::domain::SubjectType::Natural);
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
    assert_eq!(items[0]["org"], "curious-bank");
    assert_eq!(items[0]["dataset"], "entity");
}

#[tokio::test]
async fn a_profile_records_each_sections_decision_and_all_denied_is_a_denial() {
    let app = TestApp::spawn().await;
    let id = app.sample().persons[1]["id_number"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, bank) = app.token("financial_institution").await;
    // The person's only section needs a consent the bank does not have.
    let res = app.data(&bank, &format!("/v1/subjects/{id}/profile")).await;
    let audit_id = res.headers()["x-audit-id"].to_str().unwrap().to_string();
    let body = assert_problem(res, 403).await;
    assert_eq!(body["rule"], "all-sections-denied");
    let record = app.record(&audit_id).await;
    assert_eq!(record.decision, "deny");
    assert_eq!(
        record.dataset.as_deref(),
        Some("power.person=deny:consent-required")
    );
    // A legal person's profile: one section released, one failed; both recorded.
    let uscc = app.sample().entities[4]["uscc"]
        .as_str()
        .unwrap()
        .to_string();
    let res = app
        .data(&bank, &format!("/v1/subjects/{uscc}/profile"))
        .await;
    assert_eq!(res.status(), 200);
    let audit_id = res.headers()["x-audit-id"].to_str().unwrap().to_string();
    let record = app.record(&audit_id).await;
    assert_eq!(record.decision, "allow");
    assert_eq!(
        record.dataset.as_deref(),
        Some("down.entity=error:502,power.entity=allow")
    );
}

#[tokio::test]
async fn nothing_the_store_nests_under_a_named_field_leaves_for_any_reader() {
    let app = TestApp::spawn().await;
    let secret = "11010519491231002X";
    *app.fake.doc.lock().unwrap() = json!({
        "uscc": USCC,
        "name": {"text": "测试能源有限公司", "owner_id": secret},
        "region": "350000",
        "licenses": [{"number": "1350001-00001", "holder": {"id_number": secret}}],
        "rating": {"grade": "AA", "extra": [{"id_number": secret}]},
        "red_list": [secret],
    });
    let (status, text) = app
        .http
        .get(format!("{}/public/stores/fake/doc/{USCC}", app.url))
        .header("X-Purpose", "public_disclosure")
        .send()
        .await
        .map(|r| (r.status(), r))
        .unwrap();
    assert_eq!(status, 200);
    let masked: usize = text.headers()["x-masked-fields"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body: Value = text.json().await.unwrap();
    assert!(
        !body.to_string().contains(secret),
        "leaked to the public: {body}"
    );
    assert_eq!(body["licenses"], json!([{"number": "1350001-00001"}]));
    assert_eq!(body["rating"], json!({"grade": "AA"}));
    assert!(
        body.get("name").is_none() && body.get("red_list").is_none(),
        "{body}"
    );
    assert!(masked >= 4, "removed fields are counted: {masked}");
    for role in [
        "regulator",
        "financial_institution",
        "government_agency",
        "credit_agency",
    ] {
        let token = app.token_in(role, "org", None).await;
        let res = app
            .data(&token, &format!("/v1/stores/fake/doc/{USCC}"))
            .await;
        assert_eq!(res.status(), 200, "{role}");
        let body = res.text().await.unwrap();
        assert!(!body.contains(secret), "{role}: {body}");
    }
}

#[tokio::test]
async fn a_flood_of_objections_does_not_grow_every_answer_about_the_record() {
    // The per-record cap on open objections (3 by default) is lifted, so that the annotation's
    // own cap is what is tested here.
    let app = TestApp::spawn_with(|c| c.subject_limits.max_open_objections_per_record = 50).await;
    let uscc = app.sample().entities[0]["uscc"]
        .as_str()
        .unwrap()
        .to_string();
    let subject = app.subject_token(&uscc, credgate::domain::SubjectType::Legal);
    let fields = [
        "name",
        "sector",
        "region",
        "region_name",
        "established",
        "registered_capital",
        "address",
        "classification_grade",
        "red_list",
        "black_list",
        "annual_revenue",
        "uscc",
    ];
    let mut filed = 0;
    for field in fields {
        let res = app
            .http
            .post(format!("{}/subject/objections", app.url))
            .bearer_auth(&subject)
            .json(
                &json!({"store": "power", "dataset": "entity", "record_ref": uscc,
                          "field": field, "reason": "错".repeat(900)}),
            )
            .send()
            .await
            .unwrap();
        if res.status() == 201 {
            filed += 1;
        } else {
            assert!(res.status().is_client_error(), "{}", res.status());
        }
    }
    assert!(
        filed > credgate::workflows::marks::MAX_ANNOTATED,
        "the flood got through: {filed}"
    );
    let (_, bank) = app.token("financial_institution").await;
    let res = app
        .data(&bank, &format!("/v1/stores/power/entities/{uscc}"))
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let list = body["_objections"].as_array().unwrap();
    assert_eq!(list.len(), credgate::workflows::marks::MAX_ANNOTATED + 1);
    assert_eq!(
        list.last().unwrap()["truncated"],
        filed - credgate::workflows::marks::MAX_ANNOTATED
    );
    assert!(
        body["_objections"].to_string().len()
            <= credgate::workflows::marks::MAX_ANNOTATION_BYTES + 64
    );
}

/// The fake store's `/doc/{uscc}` serves a list of legal persons (what `FakeStore::doc` holds).
fn doc_is_a_list(c: &mut Config) {
    let fake = c.stores.iter_mut().find(|s| s.name == "fake").unwrap();
    let doc = fake
        .routes
        .iter_mut()
        .find(|r| r.path == "/doc/{uscc}")
        .unwrap();
    doc.path = "/doc/{page}".into();
    doc.dataset = "entity_list".into();
    doc.subject_path = None;
    doc.subject_type = None;
}

#[tokio::test]
async fn a_row_removed_by_masking_does_not_move_a_mark_onto_the_next_row() {
    let app = TestApp::spawn_with(doc_is_a_list).await;
    let a = credgate::domain::Uscc::complete("9111000012345678").unwrap();
    let b = credgate::domain::Uscc::complete("9111000012345679").unwrap();
    let subject = app.subject_token(a.as_str(), credgate::domain::SubjectType::Legal);
    let res = app
        .http
        .post(format!("{}/subject/objections", app.url))
        .bearer_auth(&subject)
        .json(
            &json!({"store": "fake", "dataset": "entity_list", "record_ref": a.as_str(),
                      "field": "items[*].name", "reason": "not our name"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    *app.fake.doc.lock().unwrap() = json!({"items": [
        {"junk": 1},
        {"uscc": a.as_str(), "name": "A"},
        {"uscc": b.as_str(), "name": "B"},
    ]});
    let regulator = app.token_in("regulator", "watchdog", None).await;
    let res = app.data(&regulator, "/v1/stores/fake/doc/1").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-objection"], "pending");
    let body: Value = res.json().await.unwrap();
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{body}");
    let row = |u: &str| items.iter().find(|r| r["uscc"] == u).unwrap();
    assert!(row(a.as_str())["_objections"].is_array(), "{body}");
    assert!(row(b.as_str()).get("_objections").is_none(), "{body}");
}

#[tokio::test]
async fn a_route_that_names_no_parameters_takes_none_and_no_key_renames_the_subject() {
    let app = TestApp::spawn_with(|c| {
        hostile_routes(c);
        let fake = c.stores.iter_mut().find(|s| s.name == "fake").unwrap();
        let things = fake
            .routes
            .iter_mut()
            .find(|r| r.path == "/things/{name}")
            .unwrap();
        // Even a list that names the placeholder cannot let a parameter stand in for it.
        things.query = Some(vec!["name".into(), "page".into()]);
    })
    .await;
    let (_, bank) = app.token("financial_institution").await;
    let other = "91110000100000589B";
    let many: Vec<String> = (0..65).map(|i| format!("page{i}=1")).collect();
    let refused = [
        // `/doc/{uscc}` names no parameter: none passes, least of all another subject.
        format!("doc/{USCC}?uscc={other}"),
        format!("doc/{USCC}?page=1"),
        "things/x?name=y".to_string(),
        "things/x?NAME=y".to_string(),
        format!("records?uscc={USCC}&u.scc={other}&page=1"),
        format!("records?uscc={USCC}&page=1&page-size=2&page_size=3"),
        format!("records?uscc={USCC}&page"),
        format!("records?{}", many.join("&")),
    ];
    for q in &refused {
        let before = app.fake.hits();
        let (status, text) = raw(&app, &bank, q).await;
        assert_eq!(status, 400, "{q}: {text}");
        assert!(text.contains("application/problem+json"), "{q}: {text}");
        assert_eq!(app.fake.hits(), before, "{q} reached the store");
    }
    let (status, text) = raw(&app, &bank, "things/x?page=2").await;
    assert!(status == 200 || status == 404, "{text}");
    assert_eq!(app.fake.uri(), "/things/x?page=2");
}

/// An 18-character id that is both a valid resident ID number and a valid USCC.
fn dual_id() -> String {
    (0..10_000)
        .filter_map(|i| {
            credgate::domain::ResidentId::complete(&format!("1101051980010{i:04}")).ok()
        })
        .map(|r| r.as_str().to_string())
        .find(|s| credgate::domain::Uscc::parse(s).is_ok())
        .expect("some resident ID number is also a USCC")
}

#[tokio::test]
async fn a_mark_on_a_companys_record_does_not_land_on_a_person_with_the_same_id() {
    let app = TestApp::spawn_with(|c| {
        let fake = c.stores.iter_mut().find(|s| s.name == "fake").unwrap();
        let doc = fake
            .routes
            .iter_mut()
            .find(|r| r.path == "/doc/{uscc}")
            .unwrap();
        doc.path = "/doc/{id_number}".into();
        doc.subject_path = Some("id_number".into());
        doc.subject_type = Some(credgate::domain::SubjectType::Natural);
        doc.dataset = "person".into();
    })
    .await;
    let id = dual_id();
    let company = app.subject_token(&id, credgate::domain::SubjectType::Legal);
    let res = app
        .http
        .post(format!("{}/subject/objections", app.url))
        .bearer_auth(&company)
        .json(
            &json!({"store": "fake", "dataset": "entity", "record_ref": id,
                      "reason": "our record is wrong"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    *app.fake.doc.lock().unwrap() = json!({"id_number": id, "name": "张三"});
    let person = app.subject_token(&id, credgate::domain::SubjectType::Natural);
    let consent = grant_consent(&app, &person, "watchdog", "supervision").await;
    let regulator = app.token_in("regulator", "watchdog", None).await;
    let res = get_as(
        &app,
        &regulator,
        "supervision",
        &consent,
        &format!("/v1/stores/fake/doc/{id}"),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("x-objection").is_none());
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["name"], "张三", "{body}");
    assert!(body.get("_objections").is_none(), "{body}");
}
