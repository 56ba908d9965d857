//! The one-stop profile: every profile section for the subject's type, each masked by its own
//! dataset's plan; denied and failed sections listed.

use credgate::domain::SubjectType;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem};

#[tokio::test]
async fn a_legal_persons_profile_merges_sections_masks_each_and_lists_failed_stores() {
    let app = TestApp::spawn().await;
    let e = &app.sample().entities[4];
    let uscc = e["uscc"].as_str().unwrap();
    let (_, bank) = app.token("financial_institution").await;
    let res = app
        .data(&bank, &format!("/v1/subjects/{uscc}/profile"))
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["subject"], uscc);
    assert_eq!(body["subject_type"], "legal");
    let section = &body["sections"]["power.entity"];
    assert_eq!(section["name"], e["name"]);
    assert!(
        section.get("annual_revenue").is_none(),
        "masked by the entity plan"
    );
    assert_eq!(
        body["failed"],
        json!([{"section": "down.entity", "store": "down", "status": 502,
        "detail": "the store could not be reached"}])
    );
    assert_eq!(body["denied"], json!([]));
}

#[tokio::test]
async fn a_natural_persons_profile_with_every_section_denied_is_a_denial() {
    let app = TestApp::spawn().await;
    let p = &app.sample().persons[1];
    let id = p["id_number"].as_str().unwrap();
    let (_, bank) = app.token("financial_institution").await;
    // Its only section needs the person's consent: nothing released, so the profile is denied.
    let body = assert_problem(
        app.data(&bank, &format!("/v1/subjects/{id}/profile")).await,
        403,
    )
    .await;
    assert_eq!(body["rule"], "all-sections-denied");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("power.person (consent-required)"),
        "{body}"
    );

    let (_, agency) = app.token("government_agency").await;
    let body: Value = app
        .data(&agency, &format!("/v1/subjects/{id}/profile"))
        .await
        .json()
        .await
        .unwrap();
    let section = &body["sections"]["power.person"];
    assert_eq!(section["name"], p["name"]);
    assert!(
        section.get("records").is_none(),
        "T3 records withheld from T2"
    );
}

#[tokio::test]
async fn a_profile_needs_a_valid_id_a_token_and_a_purpose() {
    let app = TestApp::spawn().await;
    let (_, bank) = app.token("financial_institution").await;
    assert_problem(
        app.data(&bank, "/v1/subjects/91350100M000100Y44/profile")
            .await,
        400,
    )
    .await;
    assert_problem(
        app.data(
            &bank,
            "/v1/subjects/91350100M000100Y43/profile?type=natural",
        )
        .await,
        400,
    )
    .await;
    let res = app
        .http
        .get(format!(
            "{}/v1/subjects/91350100M000100Y43/profile",
            app.url
        ))
        .header("X-Purpose", "lending")
        .send()
        .await
        .unwrap();
    assert_problem(res, 401).await;
    let res = app
        .http
        .get(format!(
            "{}/v1/subjects/91350100M000100Y43/profile",
            app.url
        ))
        .bearer_auth(&bank)
        .send()
        .await
        .unwrap();
    assert_problem(res, 400).await;
    let _ = SubjectType::Legal;
}
