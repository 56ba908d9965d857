//! The staff console in real headless Chromium (issue 17 item 8): an officer signs in at the
//! demo provider on `localhost` (password, then the one-time code) and comes back to the
//! gateway on `127.0.0.1`, searches the log and verifies the chain, acknowledges an alert;
//! a handler moves an objection to its end; every console page is photographed in both
//! languages under `target/screenshots/console-*.png`.

use std::time::Duration;

use credgate::domain::SubjectType;
use fantoccini::{Client, Locator};
use serde_json::json;

use crate::{
    helpers::skip_unless_ci,
    pages::{body_text, browser, button, field, shot, start_driver, wait_text},
    signin::{Site, next_step, site},
};

/// Signs `user` in through the real pages: the console sends the browser to the provider,
/// which sends it back after the password and the one-time code.
pub(crate) async fn sign_in(c: &Client, s: &Site, user: &str) {
    c.goto(&format!("{}/console/", s.app.url)).await.unwrap();
    wait_text(c, "Username").await;
    let here = c.current_url().await.unwrap();
    assert_eq!(
        here.host_str(),
        Some("localhost"),
        "at the provider: {here}"
    );
    let u = s
        .idp
        .users()
        .into_iter()
        .find(|u| u.username == user)
        .unwrap();
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
    wait_text(c, "One-time code").await;
    let secret = credgate_demo_idp::totp::base32_decode(u.totp_secret.as_deref().unwrap()).unwrap();
    let code = credgate_demo_idp::totp::code_at(&secret, next_step(s.idp.issuer(), user).await);
    field(c, "One-time code")
        .await
        .send_keys(&code)
        .await
        .unwrap();
    button(c, "Sign in").await.click().await.unwrap();
    wait_text(c, "Sign out").await;
    let back = c.current_url().await.unwrap();
    assert_eq!(
        back.host_str(),
        Some("127.0.0.1"),
        "back at the gateway: {back}"
    );
    assert_eq!(back.path(), "/console/");
}

async fn sign_out(c: &Client) {
    button(c, "Sign out").await.click().await.unwrap();
    wait_text(c, "USCC").await;
}

/// Every page in `pages`, in English and in Chinese (through the language switch, which sticks),
/// photographed as `console-{name}-{en|zh}.png`.
async fn photograph(c: &Client, base: &str, pages: &[(&str, &str)]) {
    for (lang, suffix) in [("en", "en"), ("zh-CN", "zh-CN")] {
        c.goto(&format!("{base}/lang/{lang}?back=/console/"))
            .await
            .unwrap();
        for (name, path) in pages {
            c.goto(&format!("{base}{path}")).await.unwrap();
            let text = body_text(c).await;
            assert!(!text.contains("??"), "{name} in {lang} misses a label");
            shot(c, &format!("console-{name}-{suffix}")).await;
            crate::axe::assert_accessible(c, &format!("console {name} ({lang})")).await;
        }
    }
    c.goto(&format!("{base}/lang/en?back=/console/"))
        .await
        .unwrap();
}

#[tokio::test]
async fn staff_work_the_console_in_a_real_browser() {
    let Some(driver) = start_driver().await else {
        return skip_unless_ci(
            "browser_console::staff_work_the_console_in_a_real_browser",
            "chromedriver is not installed",
        );
    };
    let s = site().await;
    crate::helpers::watchdog::arm(Duration::from_secs(300));
    credgate::audit::alerts::insert(
        &s.app.state.db,
        "browser_rule",
        None,
        "a browser alert",
        &[],
    )
    .await
    .unwrap();
    let objection = file_objection(&s).await;
    let c = browser(&driver).await;

    sign_in(&c, &s, "officer").await;
    c.goto(&format!("{}/console/audit", s.app.url))
        .await
        .unwrap();
    field(&c, "Decision")
        .await
        .send_keys("Allowed")
        .await
        .unwrap();
    button(&c, "Search").await.click().await.unwrap();
    wait_text(&c, "Audit id").await;
    button(&c, "Verify chain").await.click().await.unwrap();
    wait_text(&c, "Chain intact").await;
    shot(&c, "console-verify-en").await;
    crate::axe::assert_accessible(&c, "console verify (en)").await;
    c.goto(&format!("{}/lang/zh-CN?back=/console/audit", s.app.url))
        .await
        .unwrap();
    button(&c, "验证审计链").await.click().await.unwrap();
    wait_text(&c, "审计链完整").await;
    shot(&c, "console-verify-zh-CN").await;
    crate::axe::assert_accessible(&c, "console verify (zh-CN)").await;
    c.goto(&format!("{}/lang/en?back=/console/", s.app.url))
        .await
        .unwrap();
    c.goto(&format!("{}/console/alerts", s.app.url))
        .await
        .unwrap();
    wait_text(&c, "a browser alert").await;
    button(&c, "Acknowledge").await.click().await.unwrap();
    wait_text(&c, "Acknowledged").await;
    photograph(
        &c,
        &s.app.url,
        &[
            ("dashboard", "/console/"),
            ("audit", "/console/audit"),
            ("alerts", "/console/alerts"),
            ("lockdowns", "/console/lockdowns"),
        ],
    )
    .await;
    sign_out(&c).await;

    sign_in(&c, &s, "handler").await;
    c.goto(&format!("{}/console/objections", s.app.url))
        .await
        .unwrap();
    c.find(Locator::LinkText(&objection))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&c, "Move to Rejected").await;
    let note = c.find(Locator::Id("note-rejected")).await.unwrap();
    note.send_keys("The record is right; the change was never filed.")
        .await
        .unwrap();
    button(&c, "Move to Rejected").await.click().await.unwrap();
    let text = wait_text(&c, "the change was never filed").await;
    assert!(!text.contains("Move to"), "an end state offers no move");
    let item = format!("/console/objections/{objection}");
    photograph(
        &c,
        &s.app.url,
        &[
            ("objections", "/console/objections"),
            ("objection", &item),
            ("complaints", "/console/complaints"),
            ("reports", "/console/reports"),
            ("requests", "/console/requests"),
        ],
    )
    .await;
    sign_out(&c).await;

    sign_in(&c, &s, "admin").await;
    photograph(&c, &s.app.url, &[("clients", "/console/clients")]).await;
    // Staff who open the portal are told it is for data subjects, and led back.
    c.goto(&format!("{}/portal/record", s.app.url))
        .await
        .unwrap();
    let text = wait_text(&c, "This page is for data subjects").await;
    assert!(text.contains("Back to the console"), "{text}");
    photograph(&c, &s.app.url, &[("wrong-area", "/portal/record")]).await;
    c.close().await.unwrap();
}

async fn file_objection(s: &Site) -> String {
    let uscc = s.app.sample().entities[0]["uscc"]
        .as_str()
        .unwrap()
        .to_string();
    let token = s.app.subject_token(&uscc, SubjectType::Legal);
    let v: serde_json::Value = s
        .app
        .http
        .post(format!("{}/subject/objections", s.app.url))
        .bearer_auth(&token)
        .json(
            &json!({"store": "power", "dataset": "entity", "record_ref": uscc,
                      "field": "registered_capital", "reason": "changed in 2025"}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["id"].as_str().unwrap().to_string()
}
