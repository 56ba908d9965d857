//! The subject portal in real headless Chromium: a demo subject signs in at the demo provider
//! (on `localhost`, the gateway on `127.0.0.1`), files an objection and sees it listed, grants
//! and revokes a consent, and a forced URL of another subject's objection answers 404.
//! Screenshots of every portal page in both languages: `target/screenshots/portal-*.png`.

use std::time::Instant;

use credgate::domain::SubjectType;
use fantoccini::{Client, Locator};
use serde_json::{Value, json};

use crate::{
    axe::assert_accessible,
    helpers::skip_unless_ci,
    pages::{body_text, browser, button, field, shot, start_driver, wait_text},
    signin::{Site, site},
};

/// The pages a subject reaches from the portal's navigation, and each one's screenshot name.
const PAGES: &[(&str, &str)] = &[
    ("/portal/record", "record"),
    ("/portal/access", "access"),
    ("/portal/consents", "consents"),
    ("/portal/objections", "objections"),
    ("/portal/requests", "requests"),
    ("/portal/complaints", "complaints"),
];

#[tokio::test]
async fn a_subject_uses_the_portal_in_a_real_browser() {
    let Some(driver) = start_driver().await else {
        return skip_unless_ci(
            "browser_portal::a_subject_uses_the_portal_in_a_real_browser",
            "chromedriver is not installed",
        );
    };
    let s = site().await;
    let started = Instant::now();
    let c = browser(&driver).await;
    let me = sign_in(&s, &c, "company1").await;
    let objection = objection_in_browser(&s, &c).await;
    consent_in_browser(&s, &c).await;
    forced_url_in_browser(&s, &c, &me).await;
    // A bank's read, so that `Who accessed my data` has a row and a chart to show.
    let bank = s
        .app
        .token_in("financial_institution", "nosy-bank", None)
        .await;
    let read = s
        .app
        .data(&bank, &format!("/v1/stores/power/entities/{me}"))
        .await;
    assert_eq!(read.status(), 200);
    screenshots(&s, &c, &objection).await;
    c.close().await.unwrap();
    eprintln!("portal browser walk: {:?}", started.elapsed());
}

/// Opens the portal signed out, is sent to the provider, signs in there with the labelled
/// fields, and lands back on the portal. The subject's id.
pub(crate) async fn sign_in(s: &Site, c: &Client, user: &str) -> String {
    let u = s
        .idp
        .users()
        .into_iter()
        .find(|u| u.username == user)
        .unwrap();
    c.goto(&format!("{}/portal/", s.app.url)).await.unwrap();
    wait_text(c, "Username").await;
    assert_accessible(c, "provider-sign-in").await;
    assert!(
        c.current_url()
            .await
            .unwrap()
            .as_str()
            .starts_with(s.idp.issuer())
    );
    field(c, "Username")
        .await
        .send_keys(&u.username)
        .await
        .unwrap();
    field(c, "Password")
        .await
        .send_keys(&u.password)
        .await
        .unwrap();
    button(c, "Sign in").await.click().await.unwrap();
    wait_text(c, "Free self-queries").await;
    let url = c.current_url().await.unwrap();
    assert!(url.as_str().starts_with(&s.app.url), "{url}");
    u.subject_id.unwrap()
}

/// Files an objection on a field of my record and finds it in my list: its page's path.
async fn objection_in_browser(s: &Site, c: &Client) -> String {
    c.find(Locator::LinkText("Objections"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(c, "File an objection").await;
    assert_accessible(c, "portal-objections-empty-en").await;
    field(c, "Record and field")
        .await
        .select_by_value("power|entity|registered_capital")
        .await
        .unwrap();
    field(c, "Reason")
        .await
        .send_keys("注册资本已于2025年变更")
        .await
        .unwrap();
    field(c, "Correction (optional)")
        .await
        .send_keys("50000000")
        .await
        .unwrap();
    button(c, "File objection").await.click().await.unwrap();
    wait_text(c, "History").await;
    let path = c.current_url().await.unwrap().path().to_owned();
    assert!(path.starts_with("/portal/objections/ob_"), "{path}");
    assert!(body_text(c).await.contains("Submitted"));
    c.goto(&format!("{}/portal/objections", s.app.url))
        .await
        .unwrap();
    wait_text(c, "My objections").await;
    let rows = c
        .find_all(Locator::Css("#objections tbody tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "the objection is listed");
    path
}

/// Grants a consent with the notice shown, sees it active with its receipt, revokes it.
async fn consent_in_browser(s: &Site, c: &Client) {
    c.goto(&format!("{}/portal/consents", s.app.url))
        .await
        .unwrap();
    wait_text(c, "Grant a consent").await;
    field(c, "Organisation")
        .await
        .send_keys("test-bank")
        .await
        .unwrap();
    field(c, "Purpose")
        .await
        .select_by_value("lending")
        .await
        .unwrap();
    // A date input's typing order follows the browser's locale; set its value as a date.
    let until = (time::OffsetDateTime::now_utc() + time::Duration::days(90)).date();
    let date = field(c, "Valid until").await;
    c.execute(
        "arguments[0].value = arguments[1];",
        vec![
            serde_json::to_value(&date).unwrap(),
            json!(until.to_string()),
        ],
    )
    .await
    .unwrap();
    field(c, "I have read the notice and agree")
        .await
        .click()
        .await
        .unwrap();
    button(c, "Grant").await.click().await.unwrap();
    wait_text(c, "Download receipt").await;
    assert_accessible(c, "portal-consents-granted-en").await;
    let status = c.find(Locator::Css("#consents td.status")).await.unwrap();
    assert_eq!(status.text().await.unwrap(), "Active");
    button(c, "Revoke").await.click().await.unwrap();
    wait_text(c, "Revoked").await;
}

/// Another subject's objection, filed through the API: its URL answers 404, showing nothing.
async fn forced_url_in_browser(s: &Site, c: &Client, me: &str) {
    let other = s.app.sample().entities[1]["uscc"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(other, me);
    let res = s
        .app
        .http
        .post(format!("{}/subject/objections", s.app.url))
        .bearer_auth(s.app.subject_token(&other, SubjectType::Legal))
        .json(
            &json!({"store": "power", "dataset": "entity", "record_ref": other,
                      "reason": "someone else's"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    c.goto(&format!("{}/portal/objections/{id}", s.app.url))
        .await
        .unwrap();
    let text = wait_text(c, "This page does not exist.").await;
    assert!(!text.contains("someone else's") && !text.contains(&other));
    shot(c, "portal-forced-404-en").await;
    assert_accessible(c, "portal-forced-404-en").await;
    let back = format!("/portal/objections/{id}");
    c.goto(&format!("{}/lang/zh-CN?back={back}", s.app.url))
        .await
        .unwrap();
    let text = wait_text(c, "该页面不存在").await;
    assert!(
        text.contains("返回我的信用记录"),
        "a way back into the portal"
    );
    shot(c, "portal-forced-404-zh-CN").await;
    assert_accessible(c, "portal-forced-404-zh-CN").await;
    c.goto(&format!("{}/lang/en?back=/portal/record", s.app.url))
        .await
        .unwrap();
    wrong_area_in_browser(s, c).await;
}

/// Every portal page in English, then (through the language switch) in Chinese.
async fn screenshots(s: &Site, c: &Client, objection: &str) {
    let mut all: Vec<(String, String)> = PAGES
        .iter()
        .map(|(p, n)| ((*p).to_owned(), (*n).to_owned()))
        .collect();
    all.push((objection.to_owned(), "objection".into()));
    for (lang, label, marker) in [
        ("en", "English", "Free self-queries"),
        ("zh-CN", "中文", "免费本人查询"),
    ] {
        if lang == "zh-CN" {
            c.find(Locator::LinkText(label))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
        }
        for (path, name) in &all {
            c.goto(&format!("{}{path}", s.app.url)).await.unwrap();
            if path == "/portal/record" {
                wait_text(c, marker).await;
            }
            let text = body_text(c).await;
            assert!(!text.contains("??"), "{path} in {lang}");
            let bad = accessibility(c).await;
            assert!(bad.is_empty(), "{path} in {lang}: {bad:?}");
            shot(c, &format!("portal-{name}-{lang}")).await;
            assert_accessible(c, &format!("portal-{name}-{lang}")).await;
            if path == "/portal/record" {
                // One of the two free self-queries per language: the record as read.
                let read = if lang == "en" {
                    "Read my record"
                } else {
                    "查询我的记录"
                };
                button(c, read).await.click().await.unwrap();
                let title = if lang == "en" {
                    "Company record"
                } else {
                    "企业信用记录"
                };
                wait_text(c, title).await;
                refresh_draws_the_same_reading(c).await;
                assert!(accessibility(c).await.is_empty(), "the record as read");
                shot(c, &format!("portal-record-read-{lang}")).await;
                assert_accessible(c, &format!("portal-record-read-{lang}")).await;
            }
            if path == "/portal/access" {
                c.find(Locator::Css("svg.chart")).await.expect("the chart");
            }
        }
    }
}

/// What the page's live DOM gets wrong among the checks axe-core would report as serious and
/// that need no vendored script: a field without a label, a table without headers, a heading
/// that skips a level or a page without exactly one `h1`, a control without a name, no `lang`.
async fn accessibility(c: &Client) -> Vec<String> {
    const CHECK: &str = r#"
        const bad = [];
        document.querySelectorAll('input:not([type=hidden]), select, textarea').forEach(e => {
            if (!e.labels || e.labels.length === 0) bad.push('unlabelled ' + (e.id || e.name));
        });
        document.querySelectorAll('table').forEach(t => {
            if (!t.querySelector('thead th[scope=col]')) bad.push('a table without headers');
        });
        let last = 0;
        document.querySelectorAll('h1, h2, h3, h4, h5, h6').forEach(h => {
            const level = Number(h.tagName[1]);
            if (level > last + 1) bad.push(h.tagName + ' after h' + last);
            last = level;
        });
        if (document.querySelectorAll('h1').length !== 1) bad.push('not exactly one h1');
        document.querySelectorAll('a, button').forEach(e => {
            if (!e.textContent.trim() && !e.getAttribute('aria-label')) bad.push('an unnamed ' + e.tagName);
        });
        if (!document.documentElement.lang) bad.push('no lang');
        return bad;
    "#;
    let v = c.execute(CHECK, vec![]).await.unwrap();
    serde_json::from_value(v).unwrap()
}

/// The reading is drawn by a GET after the POST (post/redirect/get): a refresh draws it again
/// without asking the stores or counting another self-query.
async fn refresh_draws_the_same_reading(c: &Client) {
    let url = c.current_url().await.unwrap();
    assert_eq!(url.path(), "/portal/record");
    assert!(
        url.query().is_some_and(|q| q.starts_with("reading=")),
        "{url}"
    );
    let count = || async {
        c.find(Locator::Id("self-query-count"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let before = count().await;
    c.refresh().await.unwrap();
    assert_eq!(c.current_url().await.unwrap(), url, "no resubmission");
    assert_eq!(count().await, before, "a refresh counts nothing");
}

/// A subject who opens the console is told it is for staff and where their own pages are.
async fn wrong_area_in_browser(s: &Site, c: &Client) {
    c.goto(&format!("{}/console/", s.app.url)).await.unwrap();
    let text = wait_text(c, "This page is for staff").await;
    assert!(text.contains("Back to my record"), "{text}");
    shot(c, "portal-wrong-area-en").await;
    assert_accessible(c, "portal-wrong-area-en").await;
    c.goto(&format!("{}/lang/zh-CN?back=/console/", s.app.url))
        .await
        .unwrap();
    wait_text(c, "此页面仅供工作人员使用").await;
    shot(c, "portal-wrong-area-zh-CN").await;
    assert_accessible(c, "portal-wrong-area-zh-CN").await;
    c.goto(&format!("{}/lang/en?back=/portal/record", s.app.url))
        .await
        .unwrap();
}
