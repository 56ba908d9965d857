//! The walks that cross the pages of two kinds of people (issue 17 item 8), in real headless
//! Chromium, two browsers at once (each its own cookies, as two people would have):
//! - a subject files an objection in the portal; a handler takes it in the console through
//!   accepted, (the outbox forwards it to the store,) answered with the store's finding, and
//!   corrected with the correction; the subject reads their record and sees the answer marked
//!   on that field;
//! - a member of the public files a report on `/report`, gets a receipt, looks it up and sees
//!   `Received`; a handler moves the report in the console; the same look-up shows the new
//!   status.
//!
//! Every step is photographed (`target/screenshots/walk-*.png`), in English and, where the
//! page can be drawn again by a GET, in Chinese too; axe-core checks every photographed page.

use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};

use crate::{
    axe::assert_accessible,
    browser_console::sign_in as staff_sign_in,
    browser_portal::sign_in as subject_sign_in,
    helpers::skip_unless_ci,
    pages::{body_text, browser, button, field, shot, start_driver, wait_text},
    signin::{Site, site},
};

/// The page the browser shows, photographed and checked in English, then drawn again in
/// Chinese through the language switch (which comes back to the same address) and
/// photographed and checked, then switched back to English.
async fn both(c: &Client, base: &str, name: &str) {
    shot(c, &format!("{name}-en")).await;
    assert_accessible(c, &format!("{name}-en")).await;
    let url = c.current_url().await.unwrap();
    let back = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let enc = |s: &str| {
        s.replace('%', "%25")
            .replace('?', "%3F")
            .replace('=', "%3D")
            .replace('&', "%26")
    };
    c.goto(&format!("{base}/lang/zh-CN?back={}", enc(&back)))
        .await
        .unwrap();
    let html = c.source().await.unwrap();
    assert!(html.contains("lang=\"zh-CN\""), "{name} in Chinese");
    assert!(
        !body_text(c).await.contains("??"),
        "{name}: a missing label"
    );
    shot(c, &format!("{name}-zh-CN")).await;
    assert_accessible(c, &format!("{name}-zh-CN")).await;
    c.goto(&format!("{base}/lang/en?back={}", enc(&back)))
        .await
        .unwrap();
}

/// Reloads the page until it shows `needle`: what another actor (the outbox) does shows only
/// on a fresh draw. Generous (60 s): the outbox's delivery on a loaded two-core box.
async fn reload_until(c: &Client, needle: &str) {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        if body_text(c).await.contains(needle) {
            return;
        }
        assert!(Instant::now() < until, "the page never showed `{needle}`");
        tokio::time::sleep(Duration::from_millis(500)).await;
        c.refresh().await.unwrap();
    }
}

/// A handler's move on an item page: its note (and correction) typed by their labels, the
/// button pressed, the page drawn again with the new state.
async fn move_to(c: &Client, to: &str, note: &str, correction: Option<&str>) {
    let id = to.to_ascii_lowercase();
    let id = match id.as_str() {
        "answered" | "corrected" | "accepted" | "investigating" | "closed" => id,
        other => panic!("no move to {other} here"),
    };
    c.find(Locator::Id(&format!("note-{id}")))
        .await
        .unwrap()
        .send_keys(note)
        .await
        .unwrap();
    if let Some(text) = correction {
        c.find(Locator::Id(&format!("corr-{id}")))
            .await
            .unwrap()
            .send_keys(text)
            .await
            .unwrap();
    }
    button(c, &format!("Move to {to}"))
        .await
        .click()
        .await
        .unwrap();
    wait_text(c, note).await;
}

#[tokio::test]
async fn an_objection_goes_from_the_portal_through_the_console_and_back() {
    let Some(driver) = start_driver().await else {
        return skip_unless_ci(
            "browser_walks::an_objection_goes_from_the_portal_through_the_console_and_back",
            "chromedriver is not installed",
        );
    };
    crate::helpers::watchdog::arm(Duration::from_secs(420));
    let s = site().await;
    let base = s.app.url.clone();
    let subject = browser(&driver).await;
    subject_sign_in(&s, &subject, "company1").await;

    // The subject files an objection by the field's label, not its JSON path.
    subject
        .goto(&format!("{base}/portal/objections"))
        .await
        .unwrap();
    wait_text(&subject, "File an objection").await;
    let picker = field(&subject, "Record and field").await;
    let label = picker
        .find(Locator::Css(
            "option[value='power|entity|registered_capital']",
        ))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(label, "Registered capital", "the catalog's label");
    both(&subject, &base, "walk-objection-1-form").await;
    field(&subject, "Record and field")
        .await
        .select_by_value("power|entity|registered_capital")
        .await
        .unwrap();
    field(&subject, "Reason")
        .await
        .send_keys("The capital was raised in 2025.")
        .await
        .unwrap();
    field(&subject, "Correction (optional)")
        .await
        .send_keys("50000000")
        .await
        .unwrap();
    button(&subject, "File objection")
        .await
        .click()
        .await
        .unwrap();
    wait_text(&subject, "History").await;
    let item = subject.current_url().await.unwrap().path().to_owned();
    let id = item.rsplit('/').next().unwrap().to_owned();
    assert!(body_text(&subject).await.contains("Registered capital"));
    both(&subject, &base, "walk-objection-2-filed").await;

    // A handler takes it through the console.
    let staff = browser(&driver).await;
    staff_sign_in(&staff, &s, "handler").await;
    staff
        .goto(&format!("{base}/console/objections"))
        .await
        .unwrap();
    wait_text(&staff, &id).await;
    both(&staff, &base, "walk-objection-3-queue").await;
    staff
        .find(Locator::LinkText(&id))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&staff, "Move to Accepted").await;
    move_to(&staff, "Accepted", "Taken up; sent to the store.", None).await;
    // The outbox forwards it to the store; then the store's answer can be recorded.
    reload_until(&staff, "Move to Answered").await;
    move_to(
        &staff,
        "Answered",
        "The bank confirms the capital was raised to 50,000,000 in 2025.",
        None,
    )
    .await;
    wait_text(&staff, "Move to Corrected").await;
    move_to(
        &staff,
        "Corrected",
        "Corrected as the bank answered.",
        Some("50000000"),
    )
    .await;
    both(&staff, &base, "walk-objection-4-corrected").await;

    // The subject reads the record and sees the answer on the field it was about.
    subject
        .goto(&format!("{base}/portal/record"))
        .await
        .unwrap();
    button(&subject, "Read my record")
        .await
        .click()
        .await
        .unwrap();
    wait_text(&subject, "Company record").await;
    let row = subject
        .find(Locator::XPath(
            "//tr[th[normalize-space()='Registered capital']]",
        ))
        .await
        .expect("the field's row, by its label");
    let text = row.text().await.unwrap();
    assert!(text.contains("Corrected"), "{text}");
    assert!(
        text.contains("The bank confirms"),
        "the store's finding: {text}"
    );
    assert!(text.contains("50000000"), "the correction: {text}");
    assert_eq!(row.attr("class").await.unwrap().as_deref(), Some("marked"));
    // Above the long table, a link straight to the marked field.
    let jump = subject
        .find(Locator::LinkText("Registered capital"))
        .await
        .expect("a link to the marked field");
    let target = jump.attr("href").await.unwrap().unwrap();
    assert_eq!(
        Some(target.trim_start_matches('#').to_owned()),
        row.attr("id").await.unwrap()
    );
    both(&subject, &base, "walk-objection-5-answer-on-record").await;
    subject.goto(&format!("{base}{item}")).await.unwrap();
    wait_text(&subject, "The bank confirms").await;
    both(&subject, &base, "walk-objection-6-answer").await;
    subject.close().await.unwrap();
    staff.close().await.unwrap();
}

#[tokio::test]
async fn a_report_is_followed_by_its_receipt_while_a_handler_moves_it() {
    let Some(driver) = start_driver().await else {
        return skip_unless_ci(
            "browser_walks::a_report_is_followed_by_its_receipt_while_a_handler_moves_it",
            "chromedriver is not installed",
        );
    };
    crate::helpers::watchdog::arm(Duration::from_secs(300));
    let s: Site = site().await;
    let base = s.app.url.clone();
    let public = browser(&driver).await;
    public.goto(&format!("{base}/report")).await.unwrap();
    both(&public, &base, "walk-report-1-form").await;
    field(&public, "About")
        .await
        .send_keys("Example Trading Co")
        .await
        .unwrap();
    field(&public, "Category")
        .await
        .select_by_value("false_records")
        .await
        .unwrap();
    field(&public, "Description")
        .await
        .send_keys("Files false tax records.")
        .await
        .unwrap();
    button(&public, "Submit").await.click().await.unwrap();
    let receipt = public
        .wait()
        .for_element(Locator::Id("receipt"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // The receipt is shown once, after the POST: no GET draws it again, so English only.
    shot(&public, "walk-report-2-receipt-en").await;
    assert_accessible(&public, "walk-report-2-receipt-en").await;
    check(&public, &receipt, ("Receipt", "Check"), "Status: Received").await;
    shot(&public, "walk-report-3-received-en").await;
    assert_accessible(&public, "walk-report-3-received-en").await;

    let staff = browser(&driver).await;
    staff_sign_in(&staff, &s, "handler").await;
    staff
        .goto(&format!("{base}/console/reports"))
        .await
        .unwrap();
    wait_text(&staff, "Example Trading Co").await;
    both(&staff, &base, "walk-report-4-queue").await;
    staff
        .find(Locator::Css("table tbody a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&staff, "Move to Investigating").await;
    move_to(&staff, "Investigating", "Asked the tax office.", None).await;
    both(&staff, &base, "walk-report-5-investigating").await;

    public.goto(&format!("{base}/report")).await.unwrap();
    check(
        &public,
        &receipt,
        ("Receipt", "Check"),
        "Status: Under investigation",
    )
    .await;
    shot(&public, "walk-report-6-investigating-en").await;
    assert_accessible(&public, "walk-report-6-investigating-en").await;
    public
        .goto(&format!("{base}/lang/zh-CN?back=/report"))
        .await
        .unwrap();
    check(&public, &receipt, ("回执", "查询状态"), "调查中").await;
    shot(&public, "walk-report-6-investigating-zh-CN").await;
    assert_accessible(&public, "walk-report-6-investigating-zh-CN").await;
    public.close().await.unwrap();
    staff.close().await.unwrap();
}

/// Looks a receipt up with the form's labelled field and button; the page's text once it shows
/// `status`.
async fn check(c: &Client, receipt: &str, (label, press): (&str, &str), status: &str) -> String {
    field(c, label).await.send_keys(receipt).await.unwrap();
    button(c, press).await.click().await.unwrap();
    wait_text(c, status).await
}
