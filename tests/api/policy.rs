//! The policy engine over real HTTP against the sample store: every role and purpose of the
//! shipped set, region scope, disclosure windows, unclassified fields, the public door, reload.

use credgate::policy::{PolicySet, Tier};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem};

/// Every clear value of a class above `clearance` in `clear`, by the catalog's paths.
fn values_above(set: &PolicySet, dataset: &str, clear: &Value, clearance: Tier) -> Vec<String> {
    let mut out = Vec::new();
    for (path, class) in &set.dataset(dataset).unwrap().fields {
        if set.class(class).unwrap().tier <= clearance {
            continue;
        }
        let mut nodes = vec![clear];
        for seg in path.split('.') {
            let (key, any) = match seg.strip_suffix("[*]") {
                Some(k) => (k, true),
                None => (seg, false),
            };
            nodes = nodes.into_iter().filter_map(|n| n.get(key)).collect();
            if any {
                nodes = nodes
                    .into_iter()
                    .flat_map(|n| n.as_array().into_iter().flatten())
                    .collect();
            }
        }
        for n in nodes {
            collect_scalars(n, &mut out);
        }
    }
    out
}

fn collect_scalars(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) if s.chars().count() >= 2 => out.push(format!("\"{s}\"")),
        Value::Number(n) if n.as_f64().is_some_and(|f| f.abs() >= 1000.0) => {
            out.push(n.to_string())
        }
        Value::Array(a) => a.iter().for_each(|x| collect_scalars(x, out)),
        Value::Object(m) => m.values().for_each(|x| collect_scalars(x, out)),
        _ => {}
    }
}

fn assert_nothing_above(
    set: &PolicySet,
    dataset: &str,
    clear: &Value,
    clearance: Tier,
    body: &str,
) {
    for v in values_above(set, dataset, clear, clearance) {
        assert!(
            !body.contains(&v),
            "{dataset}: clear value {v} above {clearance:?} released in {body}"
        );
    }
}

#[tokio::test]
async fn every_role_and_purpose_of_the_shipped_set_gets_its_decision_and_nothing_above_its_clearance()
 {
    let app = TestApp::spawn().await;
    let set = app.state.policies();
    let data = app.sample();
    let entity = &data.entities[1];
    let uscc = entity["uscc"].as_str().unwrap();
    let person = &data.persons[1];
    let person_id = person["id_number"].as_str().unwrap();
    let region = entity["region"].as_str().unwrap();
    let routes = [
        ("entity", format!("/v1/stores/power/entities/{uscc}")),
        ("person", format!("/v1/stores/power/persons/{person_id}")),
        (
            "entity_list",
            "/v1/stores/power/entities?page_size=50".to_string(),
        ),
        ("red_list", "/v1/stores/power/lists/red".to_string()),
        ("black_list", "/v1/stores/power/lists/black".to_string()),
    ];
    let mut checked = 0;
    for role_name in set.role_names() {
        if set.reserved(role_name).is_some() {
            // The public has its own door, tested below; a subject reads their own record
            // (portal_api). Neither is ever a client's role.
            continue;
        }
        let role = set.role(role_name).unwrap().clone();
        let token = app.token_in(role_name, "bank-x", Some(region)).await;
        for purpose in &role.purposes {
            for (dataset, path) in &routes {
                let res = app
                    .http
                    .get(format!("{}{}", app.url, path))
                    .bearer_auth(&token)
                    .header("X-Purpose", purpose)
                    .send()
                    .await
                    .unwrap();
                let status = res.status().as_u16();
                let text = res.text().await.unwrap();
                let expected = set.decide(role_name, purpose, dataset);
                match expected {
                    Err(d) => {
                        assert_eq!(status, 403, "{role_name}/{purpose}/{dataset}: {text}");
                        assert!(text.contains(d.rule));
                    }
                    Ok(plan) if plan.needs_consent => {
                        assert_eq!(status, 403, "{role_name}/{purpose}/{dataset}: {text}");
                        assert!(text.contains("consent-required"));
                    }
                    Ok(_) => {
                        assert_eq!(status, 200, "{role_name}/{purpose}/{dataset}: {text}");
                        let clear = match *dataset {
                            "entity" => entity.clone(),
                            "person" => person.clone(),
                            // List catalogs' paths apply to the full records the rows summarise.
                            _ => json!({"items": data.entities}),
                        };
                        assert_nothing_above(&set, dataset, &clear, role.clearance, &text);
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(
        checked >= 20,
        "only {checked} allowed combinations were checked"
    );
}

#[tokio::test]
async fn the_public_door_needs_no_token_and_shows_the_public_tier_only() {
    let app = TestApp::spawn().await;
    let e = &app.sample().entities[2];
    let uscc = e["uscc"].as_str().unwrap();
    let get = |path: String, purpose: &'static str| {
        app.http
            .get(format!("{}{}", app.url, path))
            .header("X-Purpose", purpose)
            .send()
    };
    let res = get(
        format!("/public/stores/power/entities/{uscc}"),
        "public_disclosure",
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["name"], e["name"]);
    assert!(body.get("annual_revenue").is_none() && body.get("classification_grade").is_none());
    // Registration facts are public (企业信息公示暂行条例 art. 6); identifiers are not.
    assert_eq!(body["registered_capital"], e["registered_capital"]);
    assert_eq!(
        body["legal_representative"],
        json!({"name": e["legal_representative"]["name"]})
    );

    let body = assert_problem(
        get(format!("/public/stores/power/entities/{uscc}"), "lending")
            .await
            .unwrap(),
        403,
    )
    .await;
    assert_eq!(body["rule"], "purpose-not-allowed");
    let body = assert_problem(
        get(
            "/public/stores/power/persons/11010519491231002X".into(),
            "public_disclosure",
        )
        .await
        .unwrap(),
        403,
    )
    .await;
    assert_eq!(body["rule"], "dataset-not-allowed");
    // The institutions' door still wants a token.
    assert_problem(
        get(
            format!("/v1/stores/power/entities/{uscc}"),
            "public_disclosure",
        )
        .await
        .unwrap(),
        401,
    )
    .await;
}

#[tokio::test]
async fn a_regional_office_sees_its_region_only() {
    let app = TestApp::spawn().await;
    let data = app.sample();
    let mine = &data.entities[0];
    let region = mine["region"].as_str().unwrap();
    let other = data
        .entities
        .iter()
        .find(|e| e["region"] != region)
        .unwrap();
    let token = app
        .token_in("regional_regulator", "nea-office", Some(region))
        .await;

    let res = app
        .data(
            &token,
            &format!(
                "/v1/stores/power/entities/{}",
                mine["uscc"].as_str().unwrap()
            ),
        )
        .await;
    assert_eq!(res.status(), 200);
    let res = app
        .data(
            &token,
            &format!(
                "/v1/stores/power/entities/{}",
                other["uscc"].as_str().unwrap()
            ),
        )
        .await;
    let body = assert_problem(res, 404).await;
    assert!(!body.to_string().contains(other["name"].as_str().unwrap()));

    let res = app
        .data(&token, "/v1/stores/power/entities?page_size=100")
        .await;
    let body: Value = res.json().await.unwrap();
    let rows = body["items"].as_array().unwrap();
    let expected = data
        .entities
        .iter()
        .filter(|e| e["region"] == region)
        .count();
    assert_eq!(rows.len(), expected);
    assert!(rows.iter().all(|r| r["region"] == region));

    let no_region = app.token_in("regional_regulator", "nea-office", None).await;
    let res = app
        .data(
            &no_region,
            &format!(
                "/v1/stores/power/entities/{}",
                mine["uscc"].as_str().unwrap()
            ),
        )
        .await;
    assert_eq!(assert_problem(res, 403).await["rule"], "row-scope");
}

fn ymd(days_ago: i64) -> String {
    let d = time::OffsetDateTime::now_utc().date() - time::Duration::days(days_ago);
    format!("{:04}-{:02}-{:02}", d.year(), d.month() as u8, d.day())
}

fn penalty(n: &str, severity: &str, days_ago: i64, ends_days_ago: i64) -> Value {
    json!({"decision_number": n, "authority": "A", "reason": "R", "severity": severity,
           "amount": 10000, "decided_at": ymd(days_ago), "publication_ends": ymd(ends_days_ago)})
}

/// Display periods (NDRC 信用修复管理办法: minor none, general 1 year, serious 3 years) hold
/// for every purpose but supervision and enforcement (risk control included); the five-year
/// retention (征信业管理条例 art. 16) for every role, regulators included; an undated record for
/// no one.
#[tokio::test]
async fn display_periods_hold_for_every_purpose_but_full_history_and_retention_for_every_role() {
    let app = TestApp::spawn().await;
    *app.fake.doc.lock().unwrap() = json!({
        "uscc": "91350100M000100Y43",
        "region": "350000",
        "penalties": [
            penalty("minor-recent", "minor", 30, -60),
            penalty("minor-old", "minor", 120, 30),
            penalty("general-recent", "general", 200, -165),
            penalty("general-old", "general", 400, 35),
            penalty("serious-2y", "serious", 730, -365),
            penalty("serious-4y", "serious", 1460, 365),
            penalty("ancient", "serious", 3650, 2555),
            {"decision_number": "undated", "severity": "minor"},
        ],
    });
    let numbers = |v: &Value| -> Vec<String> {
        v["penalties"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["decision_number"].as_str().unwrap().to_string())
            .collect()
    };
    let path = "/doc/91350100M000100Y43";
    let res = app
        .http
        .get(format!("{}/public/stores/fake{path}", app.url))
        .header("X-Purpose", "public_disclosure")
        .send()
        .await
        .unwrap();
    let displayed = ["general-recent", "serious-2y"];
    assert_eq!(numbers(&res.json().await.unwrap()), displayed);

    let (_, bank) = app.token("financial_institution").await;
    let read = |token: String, purpose: &'static str| {
        let req = app
            .http
            .get(format!("{}/v1/stores/fake{path}", app.url))
            .bearer_auth(token)
            .header("X-Purpose", purpose);
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    assert_eq!(numbers(&read(bank.clone(), "lending").await), displayed);
    let retained = [
        "minor-recent",
        "minor-old",
        "general-recent",
        "general-old",
        "serious-2y",
        "serious-4y",
    ];
    assert_eq!(numbers(&read(bank, "risk_control").await), displayed);
    let (_, regulator) = app.token("regulator").await;
    assert_eq!(
        numbers(&read(regulator, "supervision").await),
        retained,
        "regulators too stop at five years"
    );
}

#[tokio::test]
async fn fields_the_catalog_does_not_name_are_removed_and_counted() {
    let app = TestApp::spawn().await;
    *app.fake.doc.lock().unwrap() = json!({
        "uscc": "91350100M000100Y43",
        "name": "测试",
        "internal_risk_score": "S3CRET-VALUE",
        "legal_representative": {"name": "张伟", "spouse": "李娜-SECRET"},
        "licenses": [{"number": "L1"}],
    });
    let (_, regulator) = app.token("regulator").await;
    let res = app
        .data(&regulator, "/v1/stores/fake/doc/91350100M000100Y43")
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-masked-fields"], "2");
    let text = res.text().await.unwrap();
    assert!(
        !text.contains("S3CRET") && !text.contains("SECRET"),
        "{text}"
    );
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["legal_representative"], json!({"name": "张伟"}));
    assert_eq!(
        body["licenses"],
        json!([{"number": "L1"}]),
        "classified whole, kept whole"
    );
}

#[tokio::test]
async fn a_reload_swaps_the_set_and_a_bad_set_is_refused_while_the_old_one_serves() {
    let app = TestApp::spawn().await;
    let uscc = app.sample().entities[0]["uscc"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/public/stores/power/entities/{uscc}");
    let public = || {
        app.http
            .get(format!("{}{path}", app.url))
            .header("X-Purpose", "public_disclosure")
            .send()
    };
    let (_, officer) = app.token("system_admin").await;
    let reload = || {
        app.http
            .post(format!("{}/admin/policies/reload", app.url))
            .bearer_auth(&officer)
            .send()
    };
    let before: Value = public().await.unwrap().json().await.unwrap();
    assert!(before.get("established").is_some());

    // A good change: the public loses the founding date.
    let catalog = app.dir.path().join("policies/catalog.toml");
    let text = std::fs::read_to_string(&catalog).unwrap();
    std::fs::write(
        &catalog,
        text.replacen(
            "established = \"entity_basic\"",
            "established = \"rating_detail\"",
            1,
        ),
    )
    .unwrap();
    assert_eq!(reload().await.unwrap().status(), 200);
    let after: Value = public().await.unwrap().json().await.unwrap();
    assert_eq!(
        after["established"].as_str().unwrap().len(),
        7,
        "month only now: {}",
        after["established"]
    );

    // A bad change is refused with the file and line; the previous set keeps serving.
    let roles = app.dir.path().join("policies/roles.toml");
    let good_roles = std::fs::read_to_string(&roles).unwrap();
    std::fs::write(
        &roles,
        good_roles.replacen(
            "clearance = \"T1\"\npurposes = [\"public_disclosure\"]",
            "purposes = [\"public_disclosure\"]",
            1,
        ),
    )
    .unwrap();
    let body = assert_problem(reload().await.unwrap(), 422).await;
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("roles.toml:") && detail.contains("no clearance"),
        "{detail}"
    );
    let still: Value = public().await.unwrap().json().await.unwrap();
    assert_eq!(still, after);

    // Only system administrators reload.
    let (_, bank) = app.token("financial_institution").await;
    let res = app
        .http
        .post(format!("{}/admin/policies/reload", app.url))
        .bearer_auth(&bank)
        .send()
        .await
        .unwrap();
    assert_problem(res, 403).await;
}

#[tokio::test]
async fn the_gateway_refuses_to_start_on_a_bad_policy_set_naming_file_and_line() {
    let app = TestApp::spawn().await;
    let classes = app.dir.path().join("policies/classes.toml");
    let text = std::fs::read_to_string(&classes).unwrap();
    std::fs::write(&classes, text.replacen("tier = \"T4\"", "tier = \"T5\"", 1)).unwrap();
    let mut config = (*app.state.config).clone();
    config.listen = "127.0.0.1:0".parse().unwrap();
    let err = match credgate::web::App::build(config).await {
        Ok(_) => panic!("started on a bad policy set"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("classes.toml:") && err.contains("T5"), "{err}");
}

#[tokio::test]
async fn a_route_to_a_dataset_the_catalog_lacks_stops_the_start() {
    let app = TestApp::spawn().await;
    let mut config = (*app.state.config).clone();
    config.stores[0].routes[0].dataset = "mystery".into();
    let err = match credgate::web::App::build(config).await {
        Ok(_) => panic!("started with an undecidable route"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("mystery") && err.contains("catalog"), "{err}");
}

#[tokio::test]
async fn the_shipped_catalog_names_every_field_the_sample_store_serves() {
    let app = TestApp::spawn().await;
    let set = app.state.policies();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"t");
    let ctx = credgate::policy::ApplyCtx {
        region: None,
        today: time::OffsetDateTime::now_utc().date(),
        pseudonym_key: &key,
    };
    let data = credgate::sample_store::data::generate(42, 200);
    for (dataset, docs) in [("entity", &data.entities), ("person", &data.persons)] {
        let plan = set.decide("regulator", "supervision", dataset).unwrap();
        for doc in docs.iter() {
            let outcome = plan.apply(&mut doc.clone(), &ctx);
            assert_eq!(
                outcome.unclassified, 0,
                "{dataset}: {:?}",
                outcome.unclassified_paths
            );
        }
    }
    // List answers, as the store really serves them, through the gateway.
    let (_, regulator) = app.token("regulator").await;
    for path in [
        "/v1/stores/power/entities?page_size=100",
        "/v1/stores/power/lists/red",
        "/v1/stores/power/lists/black",
    ] {
        let res = app.data(&regulator, path).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["x-masked-fields"], "0", "{path}");
    }
}
