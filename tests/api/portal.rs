//! The subject portal `/portal/` over HTTP. Hostile first: another subject's item ids in URLs
//! and forms (404, never 403), forms without the CSRF token or with another reader's, markup and
//! control characters in every field, oversized bodies, a staff caller and no caller at all.
//! Then each task once end to end, in both languages, and the audit record of each view.
//!
//! Every request goes through `Portal` (made by `portal_client`), the one place that knows how a
//! subject signs in to the pages.

use credgate::domain::SubjectType;
use serde_json::{Value, json};

use crate::{
    helpers::TestApp,
    signin::{Site, sign_in, site, site_with},
};

/// A subject's browser, as far as these tests need one: its cookies (the session and the CSRF
/// nonce), the CSRF token of its forms, its language.
pub(crate) struct Portal {
    pub url: String,
    pub http: reqwest::Client,
    pub cookies: String,
    pub csrf: String,
    pub lang: &'static str,
}

/// Signs the demo subject whose id is `uscc` in to the portal at the demo provider (a real
/// sign-in: authorization code, PKCE, a session cookie), with a CSRF pair for its forms.
pub(crate) async fn portal_client(site: &Site, uscc: &str) -> Portal {
    let user = site
        .idp
        .users()
        .into_iter()
        .find(|u| u.subject_id.as_deref() == Some(uscc))
        .unwrap_or_else(|| panic!("no demo subject is {uscc}"));
    let b = sign_in(&site.app, &site.idp, &user.username).await;
    let p = Portal {
        url: site.app.url.clone(),
        http: b.http.clone(),
        cookies: format!("cg_session={}; csrf={}", b.session, b.csrf_cookie),
        csrf: b.csrf.clone(),
        lang: "en",
    };
    assert_eq!(p.get("/portal/record").await.status(), 200, "signed in");
    p
}

impl Portal {
    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .header("cookie", &self.cookies)
            .header("accept-language", self.lang)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.req(reqwest::Method::GET, path).send().await.unwrap()
    }

    /// GET, asserting the status, returning the page.
    pub async fn page(&self, path: &str, status: u16) -> String {
        let res = self.get(path).await;
        assert_eq!(res.status(), status, "GET {path}");
        res.text().await.unwrap()
    }

    /// POSTs a form with this reader's CSRF token.
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        let mut all = vec![("csrf", self.csrf.as_str())];
        all.extend_from_slice(fields);
        self.post_raw(path, serde_urlencoded::to_string(all).unwrap())
            .await
    }

    pub async fn post_raw(&self, path: &str, body: String) -> reqwest::Response {
        self.req(reqwest::Method::POST, path)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap()
    }
}

fn uscc(app: &TestApp, i: usize) -> String {
    app.sample().entities[i]["uscc"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Where a POST sent the browser (its `Location`), asserting a 303.
fn location(res: &reqwest::Response) -> String {
    assert_eq!(res.status(), 303, "a change answers with a redirect");
    res.headers()["location"].to_str().unwrap().to_owned()
}

const OBJECTION: &[(&str, &str)] = &[
    ("record", "power|entity|registered_capital"),
    ("reason", "注册资本已于2025年变更"),
    ("correction", "50000000"),
];

fn consent(days: i64) -> Vec<(&'static str, String)> {
    let until = time::OffsetDateTime::now_utc() + time::Duration::days(days);
    vec![
        ("org", "test-bank".into()),
        ("purpose", "lending".into()),
        ("scope", "entity".into()),
        ("expires", until.date().to_string()),
        ("notice_version", "portal-consent-1.en".into()),
        ("agree", "yes".into()),
    ]
}

fn pairs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// One item of each kind filed by `p` through the portal: (objection, request, complaint,
/// consent) ids.
async fn file_one_of_each(p: &Portal) -> [String; 4] {
    let o = location(&p.post("/portal/objections", OBJECTION).await);
    let r = location(
        &p.post(
            "/portal/requests",
            &[
                ("kind", "correction"),
                ("record", "power|entity|"),
                ("reason", "地址有误"),
            ],
        )
        .await,
    );
    let c = location(
        &p.post(
            "/portal/complaints",
            &[
                ("org", "nosy-bank"),
                ("category", "excessive_query"),
                ("description", "查询过多"),
            ],
        )
        .await,
    );
    assert_eq!(
        location(&p.post("/portal/consents", &pairs(&consent(30))).await),
        "/portal/consents"
    );
    let page = p.page("/portal/consents", 200).await;
    let at = page
        .find("/portal/consents/cs_")
        .expect("the consent is listed")
        + 17;
    let cs = page[at..].split('/').next().unwrap().to_owned();
    let id = |l: &str| l.rsplit('/').next().unwrap().to_owned();
    [id(&o), id(&r), id(&c), cs]
}

#[tokio::test]
async fn another_subjects_items_answer_404_like_missing_ones() {
    let s = site().await;
    let app = &s.app;
    let me = portal_client(&s, &uscc(app, 0)).await;
    let [o, r, c, cs] = file_one_of_each(&me).await;
    let them = portal_client(&s, &uscc(app, 1)).await;
    for path in [
        format!("/portal/objections/{o}"),
        format!("/portal/requests/{r}"),
        format!("/portal/complaints/{c}"),
        format!("/portal/consents/{cs}/receipt"),
        "/portal/objections/ob_nothing".into(),
        "/portal/consents/cs_nothing/receipt".into(),
        "/portal/requests/%3Cscript%3Ealert(1)%3C%2Fscript%3E".into(),
        format!("/portal/complaints/cp_{}", "9".repeat(4000)),
        format!("/portal/objections/{o}%00"),
    ] {
        let body = them.page(&path, 404).await;
        assert!(
            !body.contains("注册资本") && !body.contains(&uscc(app, 0)),
            "{path}: {body}"
        );
        assert!(
            !body.contains("<script>alert") && !body.contains("99999999"),
            "no echo"
        );
    }
    for path in [
        format!("/portal/objections/{o}/withdraw"),
        format!("/portal/consents/{cs}/revoke"),
        "/portal/consents/cs_nothing/revoke".into(),
        format!("/portal/objections/{o}%00/withdraw"),
        format!("/portal/consents/{cs}%00/revoke"),
    ] {
        assert_eq!(them.post(&path, &[]).await.status(), 404, "{path}");
    }
    // Untouched: still mine, still open, still active; and not in their lists.
    let mine = me.page(&format!("/portal/objections/{o}"), 200).await;
    assert!(mine.contains("Withdraw objection"), "{mine}");
    assert!(
        me.page("/portal/consents", 200)
            .await
            .contains(&format!("/portal/consents/{cs}/revoke"))
    );
    for list in [
        "/portal/objections",
        "/portal/requests",
        "/portal/complaints",
        "/portal/consents",
    ] {
        let theirs = them.page(list, 200).await;
        assert!(
            !theirs.contains(&o)
                && !theirs.contains(&r)
                && !theirs.contains(&c)
                && !theirs.contains(&cs),
            "{list}"
        );
    }
}

/// Every form of the portal, with a body that would be accepted with the right token.
fn every_form(o: &str, cs: &str) -> Vec<(String, Vec<(&'static str, String)>)> {
    let f = |v: &[(&'static str, &str)]| v.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
    vec![
        ("/portal/objections".into(), f(OBJECTION)),
        (
            "/portal/requests".into(),
            f(&[
                ("kind", "deletion"),
                ("record", "power|entity|"),
                ("reason", "x"),
            ]),
        ),
        (
            "/portal/complaints".into(),
            f(&[("org", "b"), ("category", "other"), ("description", "x")]),
        ),
        ("/portal/consents".into(), consent(10)),
        (format!("/portal/objections/{o}/withdraw"), vec![]),
        (format!("/portal/consents/{cs}/revoke"), vec![]),
        ("/portal/record".into(), vec![]),
    ]
}

#[tokio::test]
async fn forms_without_the_token_or_with_another_readers_are_refused() {
    // Many refusals in a row: above the per-subject rate, which pages share with the API.
    let s = site_with(|c| c.subject_limits.burst = 200).await;
    let app = &s.app;
    let me = portal_client(&s, &uscc(app, 0)).await;
    let [o, _, _, cs] = file_one_of_each(&me).await;
    let other = portal_client(&s, &uscc(app, 0)).await;
    assert_ne!(other.csrf, me.csrf, "each browser has its own nonce");
    let before = app.record_count().await;
    for (path, fields) in every_form(&o, &cs) {
        let body = serde_urlencoded::to_string(&fields).unwrap();
        let res = me.post_raw(&path, body.clone()).await;
        assert_eq!(res.status(), 403, "{path} without a token");
        let stolen = format!("csrf={}&{body}", other.csrf);
        assert_eq!(
            me.post_raw(&path, stolen).await.status(),
            403,
            "{path} with another's token"
        );
        let forged = format!("csrf={}&{body}", "0".repeat(64));
        assert_eq!(
            me.post_raw(&path, forged).await.status(),
            403,
            "{path} forged"
        );
        // A form another site posts, even with a matching pair.
        let res = me
            .req(reqwest::Method::POST, &path)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("sec-fetch-site", "cross-site")
            .body(format!("csrf={}&{body}", me.csrf))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "{path} cross-site");
    }
    assert!(
        app.record_count().await > before,
        "the refusals are recorded"
    );
    // Nothing changed: one of each, the objection open, the consent active, no self-query.
    assert_eq!(
        me.page("/portal/objections", 200)
            .await
            .matches("/portal/objections/ob_")
            .count(),
        1
    );
    assert_eq!(
        me.page("/portal/requests", 200)
            .await
            .matches("/portal/requests/rq")
            .count(),
        1
    );
    assert!(
        me.page(&format!("/portal/objections/{o}"), 200)
            .await
            .contains("Withdraw objection")
    );
    assert!(
        me.page("/portal/consents", 200)
            .await
            .contains(&format!("/portal/consents/{cs}/revoke"))
    );
    assert!(
        me.page("/portal/record", 200)
            .await
            .contains("<strong>0</strong>")
    );
}

const MARKUP: &str = r#"<script>alert(1)</script><img src=x onerror=alert(2)>"#;

#[tokio::test]
async fn markup_in_every_field_is_escaped_and_control_characters_refused() {
    let s = site().await;
    let app = &s.app;
    let me = portal_client(&s, &uscc(app, 0)).await;
    // Accepted as text, shown escaped.
    let o = location(
        &me.post(
            "/portal/objections",
            &[
                ("record", "power|entity|"),
                ("reason", MARKUP),
                ("correction", MARKUP),
            ],
        )
        .await,
    );
    let r = location(
        &me.post(
            "/portal/requests",
            &[
                ("kind", "repair"),
                ("record", "power|entity|"),
                ("reason", MARKUP),
            ],
        )
        .await,
    );
    let c = location(
        &me.post(
            "/portal/complaints",
            &[
                ("org", "bank"),
                ("category", "other"),
                ("description", MARKUP),
            ],
        )
        .await,
    );
    for path in [o, r, c] {
        let html = me.page(&path, 200).await;
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"),
            "{path}: {html}"
        );
        assert!(
            !html.contains("<script>alert") && !html.contains("<img src=x"),
            "{path}"
        );
    }
    // Refused, drawn again with what was typed (escaped), nothing filed.
    let bad: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "/portal/objections",
            vec![("record", "power|entity|"), ("reason", "a\u{7}b")],
        ),
        (
            "/portal/objections",
            vec![("record", "power|entity|"), ("reason", "a\u{202E}b")],
        ),
        (
            "/portal/objections",
            vec![("record", MARKUP), ("reason", MARKUP)],
        ),
        (
            "/portal/objections",
            vec![("record", "power|entity|no_such_field"), ("reason", "x")],
        ),
        (
            "/portal/requests",
            vec![
                ("kind", MARKUP),
                ("record", "power|entity|"),
                ("reason", "x"),
            ],
        ),
        (
            "/portal/requests",
            vec![
                ("kind", "repair"),
                ("record", "power|entity|"),
                ("reason", "\u{0}"),
            ],
        ),
        (
            "/portal/complaints",
            vec![("org", MARKUP), ("category", "other"), ("description", "x")],
        ),
        (
            "/portal/complaints",
            vec![
                ("org", "bank\u{1b}"),
                ("category", "other"),
                ("description", "x"),
            ],
        ),
        (
            "/portal/complaints",
            vec![("org", "bank"), ("category", MARKUP), ("description", "x")],
        ),
        (
            "/portal/complaints",
            vec![
                ("org", "bank"),
                ("category", "other"),
                ("description", "a\u{8}"),
            ],
        ),
    ];
    for (path, fields) in &bad {
        let res = me.post(path, fields).await;
        assert_eq!(res.status(), 400, "{path} {fields:?}");
        let html = res.text().await.unwrap();
        assert!(
            html.contains(r#"id="portal-message""#),
            "{path}: says what went wrong"
        );
        assert!(
            !html.contains("<script>alert") && !html.contains("<img src=x"),
            "{path}: {html}"
        );
    }
    for (field, value) in [
        ("org", MARKUP),
        ("org", "bank\u{0}"),
        ("purpose", MARKUP),
        ("scope", MARKUP),
        ("expires", MARKUP),
        ("expires", "2020-01-01"),
        ("notice_version", MARKUP),
        ("agree", "no"),
    ] {
        let mut f = consent(10);
        f.retain(|(k, _)| *k != field);
        f.push((field, value.into()));
        let res = me.post("/portal/consents", &pairs(&f)).await;
        assert_eq!(res.status(), 400, "consent {field}={value:?}");
        let html = res.text().await.unwrap();
        assert!(
            !html.contains("<script>alert") && !html.contains("<img src=x"),
            "{field}"
        );
    }
    assert_eq!(
        me.page("/portal/objections", 200)
            .await
            .matches("/portal/objections/ob_")
            .count(),
        1
    );
    assert_eq!(
        me.page("/portal/complaints", 200)
            .await
            .matches("/portal/complaints/cp")
            .count(),
        1
    );
    assert!(
        !me.page("/portal/consents", 200).await.contains("/receipt"),
        "no consent granted"
    );
}

#[tokio::test]
async fn oversized_and_malformed_form_bodies_are_refused() {
    let s = site().await;
    let app = &s.app;
    let me = portal_client(&s, &uscc(app, 0)).await;
    let huge = format!("csrf={}&reason={}", me.csrf, "x".repeat(200 * 1024));
    for path in [
        "/portal/objections",
        "/portal/complaints",
        "/portal/consents",
    ] {
        let res = me.post_raw(path, huge.clone()).await;
        assert_eq!(res.status(), 413, "{path}");
        let html = res.text().await.unwrap();
        assert!(
            html.contains("<html") && !html.contains("xxxxxxxx"),
            "{path}: a page, no echo"
        );
    }
    let res = me
        .post_raw("/portal/complaints", "csrf=%ZZ&&==".into())
        .await;
    assert!(
        matches!(res.status().as_u16(), 400 | 403),
        "{}",
        res.status()
    );
    // A long reason within the form limit but past the field's is refused as the API does.
    let long = "长".repeat(2001);
    let res = me
        .post(
            "/portal/objections",
            &[("record", "power|entity|"), ("reason", &long)],
        )
        .await;
    assert_eq!(res.status(), 400);
    assert!(
        !me.page("/portal/objections", 200)
            .await
            .contains("/portal/objections/ob_")
    );
}

#[tokio::test]
async fn no_caller_a_bearer_token_and_a_staff_session_get_no_portal_page() {
    let s = site().await;
    let app = &s.app;
    let mine = uscc(app, 0);
    let me = portal_client(&s, &mine).await;
    let [o, _, _, cs] = file_one_of_each(&me).await;
    let staff = sign_in(app, &s.idp, "officer").await;
    let staff_cookies = format!("cg_session={}; csrf={}", staff.session, staff.csrf_cookie);
    let bearer = format!("Bearer {}", app.subject_token(&mine, SubjectType::Legal));
    let paths = [
        "/portal".to_string(),
        "/portal/".into(),
        "/portal/record".into(),
        "/portal/access".into(),
        "/portal/consents".into(),
        "/portal/objections".into(),
        format!("/portal/objections/{o}"),
        format!("/portal/consents/{cs}/receipt"),
        "/portal/requests".into(),
        "/portal/complaints".into(),
    ];
    // No one; the subject's API token (pages take a session only); a staff member's session.
    let callers = [
        ("nobody", None, None),
        ("bearer", Some(bearer.as_str()), None),
        ("staff", None, Some(staff_cookies.as_str())),
    ];
    for (who, auth, cookie) in callers {
        let with = |mut req: reqwest::RequestBuilder| {
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            if let Some(c) = cookie {
                req = req.header("cookie", c);
            }
            req
        };
        for path in &paths {
            let res = with(app.http.get(format!("{}{path}", app.url)))
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            let to_signin = status == 303
                && res.headers()["location"]
                    .to_str()
                    .unwrap()
                    .starts_with("/signin/subject");
            match who {
                "staff" => assert_eq!(status, 403, "{path} as staff"),
                _ => assert!(to_signin, "{path} as {who}: {status}"),
            }
            let body = res.text().await.unwrap();
            assert!(
                !body.contains(&mine) && !body.contains("注册资本"),
                "{path}"
            );
        }
        let csrf = if who == "staff" {
            &staff.csrf
        } else {
            &me.csrf
        };
        let res = with(
            app.http
                .post(format!("{}/portal/objections/{o}/withdraw", app.url)),
        )
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}"))
        .send()
        .await
        .unwrap();
        let sent_to = res
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_owned());
        assert!(
            res.status() == 403 || sent_to.is_some_and(|l| l.starts_with("/signin/subject")),
            "no withdrawal without the subject ({who})"
        );
    }
    let page = me.page(&format!("/portal/objections/{o}"), 200).await;
    assert!(page.contains("Withdraw objection"), "still open");
}

#[tokio::test]
async fn an_objection_is_filed_followed_and_withdrawn() {
    let s = site().await;
    let app = &s.app;
    let me = portal_client(&s, &uscc(app, 0)).await;
    let to = location(&me.post("/portal/objections", OBJECTION).await);
    let page = me.page(&to, 200).await;
    assert!(page.contains("Registered capital") && page.contains("注册资本已于2025年变更"));
    assert!(page.contains(r#"id="case-status">Submitted"#), "{page}");
    assert!(page.contains("<time datetime="), "the deadline is shown");
    let list = me.page("/portal/objections", 200).await;
    assert!(list.contains(&to), "listed");
    let id = to.rsplit('/').next().unwrap();
    let back = location(
        &me.post(&format!("/portal/objections/{id}/withdraw"), &[])
            .await,
    );
    assert_eq!(back, to);
    let page = me.page(&to, 200).await;
    assert!(page.contains(r#"id="case-status">Withdrawn"#), "{page}");
    assert!(!page.contains("Withdraw objection"), "no longer offered");
    assert_eq!(
        page.matches("<tr><td><time").count(),
        2,
        "history: filed, withdrawn"
    );
    // Forced a second time: refused, nothing changes.
    let res = me
        .post(&format!("/portal/objections/{id}/withdraw"), &[])
        .await;
    assert_eq!(res.status(), 409);
    // The API sees the same objection, withdrawn.
    let api: Value = app
        .http
        .get(format!("{}/subject/objections/{id}", app.url))
        .bearer_auth(app.subject_token(&uscc(app, 0), SubjectType::Legal))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(api["status"], "withdrawn");
    assert_eq!(api["field"], "registered_capital");
}

#[tokio::test]
async fn a_consent_is_granted_with_its_notice_its_receipt_downloaded_and_revoked() {
    let s = site().await;
    let app = &s.app;
    let me = portal_client(&s, &uscc(app, 0)).await;
    let page = me.page("/portal/consents", 200).await;
    assert!(page.contains(r#"id="notice-text""#) && page.contains("revoke this consent"));
    let [_, _, _, cs] = file_one_of_each(&me).await;
    let res = me.get(&format!("/portal/consents/{cs}/receipt")).await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );
    let receipt: Value = res.json().await.unwrap();
    let api: Value = app
        .http
        .get(format!("{}/subject/consents", app.url))
        .bearer_auth(app.subject_token(&uscc(app, 0), SubjectType::Legal))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let c = &api["items"][0];
    assert_eq!(c["receipt"], receipt, "the receipt the API shows");
    assert_eq!(c["grantee_org"], "test-bank");
    assert_eq!(c["scope"], json!(["entity"]));
    assert_eq!(c["notice_version"], "portal-consent-1.en");
    let notice = credgate::web::pages::Lang::En.t("portal.consent.notice");
    let hash = hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        notice.as_bytes(),
    ));
    assert_eq!(c["notice_sha256"], hash, "the hash of the text shown");
    assert_eq!(
        location(&me.post(&format!("/portal/consents/{cs}/revoke"), &[]).await),
        "/portal/consents"
    );
    let page = me.page("/portal/consents", 200).await;
    assert!(
        page.contains("Revoked") && !page.contains(&format!("{cs}/revoke")),
        "{page}"
    );
    // Revoking again changes nothing, as in the API: the first revocation's time stays.
    let first = page[page.find("Revoked <time").unwrap()..]
        .split("</time>")
        .next()
        .unwrap()
        .to_owned();
    location(&me.post(&format!("/portal/consents/{cs}/revoke"), &[]).await);
    assert!(me.page("/portal/consents", 200).await.contains(&first));
}

#[tokio::test]
async fn requests_and_complaints_are_filed_and_followed() {
    let s = site().await;
    let app = &s.app;
    let me = portal_client(&s, &uscc(app, 0)).await;
    let [_, r, c, _] = file_one_of_each(&me).await;
    let page = me.page(&format!("/portal/requests/{r}"), 200).await;
    assert!(page.contains("Correction") && page.contains("地址有误") && page.contains("Submitted"));
    let page = me.page(&format!("/portal/complaints/{c}"), 200).await;
    assert!(
        page.contains("nosy-bank")
            && page.contains("Too many queries")
            && page.contains("查询过多")
    );
    assert!(me.page("/portal/requests", 200).await.contains(&r));
    assert!(me.page("/portal/complaints", 200).await.contains(&c));
}

#[tokio::test]
async fn my_record_is_read_on_request_and_counted() {
    let s = site().await;
    let app = &s.app;
    let mine = uscc(app, 0);
    let me = portal_client(&s, &mine).await;
    location(&me.post("/portal/objections", OBJECTION).await);
    let page = me.page("/portal/record", 200).await;
    assert!(
        page.contains("<strong>0</strong> / 2"),
        "viewing the page costs nothing: {page}"
    );
    let res = me.post("/portal/record", &[]).await;
    let audit = res.headers()["x-audit-id"].to_str().unwrap().to_owned();
    let page = me.page(&location(&res), 200).await;
    assert!(
        page.contains("Company record") && page.contains(&mine),
        "{page}"
    );
    assert!(page.contains("<strong>1</strong> / 2"), "counted");
    assert!(
        page.contains("Marks on this record"),
        "the open objection marks it: {page}"
    );
    let record = app.record(&audit).await;
    assert_eq!(record.kind, "profile");
    assert_eq!(record.purpose.as_deref(), Some("self_query"));
    assert_eq!(
        record.subjects[0], mine,
        "about me first (then whom my record names)"
    );
    assert_eq!(me.post("/portal/record", &[]).await.status(), 303);
    let res = me.post("/portal/record", &[]).await;
    assert_eq!(res.status(), 429, "past the free number");
    let page = res.text().await.unwrap();
    assert!(page.contains(r#"id="record-message""#) && !page.contains("Company record"));
    let page = me.page("/portal/record", 200).await;
    assert!(
        page.contains(r#"id="record-message""#) && !page.contains("Read my record"),
        "the page says the free queries are used, and offers no button"
    );
}

#[tokio::test]
async fn who_accessed_my_data_shows_the_table_and_the_chart() {
    let s = site().await;
    let app = &s.app;
    let mine = uscc(app, 0);
    let bank = app
        .token_in("financial_institution", "nosy-bank", None)
        .await;
    assert_eq!(
        app.data(&bank, &format!("/v1/stores/power/entities/{mine}"))
            .await
            .status(),
        200
    );
    let me = portal_client(&s, &mine).await;
    let res = me.get("/portal/access").await;
    assert_eq!(res.status(), 200);
    let audit = res.headers()["x-audit-id"].to_str().unwrap().to_owned();
    let html = res.text().await.unwrap();
    for cell in [
        "<th scope=\"col\">Organisation</th>",
        "<td>nosy-bank</td>",
        "<td>Financial institution</td>",
        "<td>Lending</td>",
        "<td>Consent</td>",
        "<td>Allowed</td>",
    ] {
        assert!(html.contains(cell), "{cell}: {html}");
    }
    assert!(
        html.contains("<svg class=\"chart\"") && html.contains("· nosy-bank"),
        "{html}"
    );
    let record = app.record(&audit).await;
    assert_eq!(record.kind, "subject");
    assert_eq!(record.actor_subject.as_deref(), Some(mine.as_str()));
    // Someone else's page does not show my reader.
    let them = portal_client(&s, &uscc(app, 1)).await;
    assert!(!them.page("/portal/access", 200).await.contains("nosy-bank"));
}

#[tokio::test]
async fn who_accessed_my_data_pages_through_older_accesses_and_refuses_a_made_up_cursor() {
    let s = site().await;
    let app = &s.app;
    let mine = uscc(app, 0);
    for org in ["first-bank", "second-bank", "third-bank"] {
        let bank = app.token_in("financial_institution", org, None).await;
        let res = app
            .data(&bank, &format!("/v1/stores/power/entities/{mine}"))
            .await;
        assert_eq!(res.status(), 200);
    }
    let me = portal_client(&s, &mine).await;
    let html = me.page("/portal/access?limit=2", 200).await;
    assert!(html.contains("<td>third-bank</td>") && html.contains("<td>second-bank</td>"));
    assert!(!html.contains("<td>first-bank</td>"), "{html}");
    let link = html
        .split("href=\"")
        .map(|h| h.split('"').next().unwrap())
        .find(|h| h.starts_with("/portal/access?cursor="))
        .unwrap_or_else(|| panic!("an older-accesses link: {html}"));
    assert!(html.contains(">Older accesses</a>"), "{html}");
    let older = me.page(&format!("{link}&limit=2"), 200).await;
    assert!(older.contains("<td>first-bank</td>"), "{older}");
    assert!(!older.contains("Older accesses"), "the last page: {older}");
    let zh = in_lang(&me, "zh").page("/portal/access?limit=1", 200).await;
    assert!(zh.contains("更早的查询"), "{zh}");
    // A made-up cursor or limit is a clear page, not an error of ours.
    for q in [
        "?cursor=x%27%20OR%201=1",
        "?limit=100000",
        "?cursor=1&evil=1",
    ] {
        let page = me.page(&format!("/portal/access{q}"), 400).await;
        assert!(
            !page.contains("SELECT") && !page.contains("cursor"),
            "{q}: {page}"
        );
    }
}

#[tokio::test]
async fn every_page_is_audited_translated_and_labelled_in_both_languages() {
    let s = site().await;
    let app = &s.app;
    let mine = uscc(app, 0);
    let mut me = portal_client(&s, &mine).await;
    let [o, r, c, _] = file_one_of_each(&me).await;
    let paths = [
        "/portal/record".to_string(),
        "/portal/access".into(),
        "/portal/consents".into(),
        "/portal/objections".into(),
        format!("/portal/objections/{o}"),
        "/portal/requests".into(),
        format!("/portal/requests/{r}"),
        "/portal/complaints".into(),
        format!("/portal/complaints/{c}"),
    ];
    let nav = [
        "My record",
        "Who accessed my data",
        "Consents",
        "Objections",
        "Requests",
        "Complaints",
    ];
    for lang in ["en", "zh-CN"] {
        me.lang = lang;
        for path in &paths {
            let res = me.get(path).await;
            assert_eq!(res.status(), 200, "{path}");
            let id = res.headers()["x-audit-id"].to_str().unwrap().to_owned();
            let csp = res.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .to_owned();
            assert!(csp.contains("script-src 'self'"), "{path}");
            let html = res.text().await.unwrap();
            assert!(!html.contains("??"), "{path} in {lang} names a missing key");
            assert!(html.contains(&format!(r#"<html lang="{lang}">"#)));
            if lang == "en" {
                nav.iter()
                    .for_each(|l| assert!(html.contains(&format!(">{l}</a>")), "{path}: {l}"));
                assert!(
                    html.contains(">Sign out</button>"),
                    "{path}: a sign-out form"
                );
            } else {
                assert!(html.contains(">我的信用记录</a>") && !html.contains(">My record</a>"));
            }
            assert_labelled(path, &html);
            let record = app.record(&id).await;
            assert_eq!(record.kind, "subject", "{path}");
            assert_eq!(
                record.actor_subject.as_deref(),
                Some(mine.as_str()),
                "{path}"
            );
        }
    }
}

/// Every visible input, select and textarea has a `<label for>` naming its id, and headings
/// do not skip a level.
fn assert_labelled(path: &str, html: &str) {
    for tag in ["<input ", "<select ", "<textarea "] {
        for (at, _) in html.match_indices(tag) {
            let end = at + html[at..].find('>').unwrap();
            let t = &html[at..end];
            if t.contains(r#"type="hidden""#) {
                continue;
            }
            let id = t.split(r#"id=""#).nth(1).and_then(|s| s.split('"').next());
            let id = id.unwrap_or_else(|| panic!("{path}: {t} has no id"));
            assert!(
                html.contains(&format!(r#"<label for="{id}">"#)),
                "{path}: {id} unlabelled"
            );
        }
    }
    let mut last = 0;
    for (at, _) in html.match_indices("<h") {
        let Some(level) = html[at + 2..].chars().next().and_then(|c| c.to_digit(10)) else {
            continue;
        };
        assert!(level <= last + 1, "{path}: h{level} after h{last}");
        last = level;
    }
}

/// The same browser in another language (the `Accept-Language` it sends).
fn in_lang(p: &Portal, lang: &'static str) -> Portal {
    Portal {
        url: p.url.clone(),
        http: p.http.clone(),
        cookies: p.cookies.clone(),
        csrf: p.csrf.clone(),
        lang,
    }
}

/// `Read my record` is a POST (a counted, audited self-query) answered by a redirect to a GET
/// that draws the reading: a refresh draws it again and counts nothing; another subject, a
/// made-up name, markup or an expired reading draw the page with its button and the notice,
/// never the data.
#[tokio::test]
async fn reading_my_record_is_post_redirect_get_and_the_reading_is_mine_only() {
    let s = site().await;
    let app = &s.app;
    let me = portal_client(&s, &uscc(app, 0)).await;
    let name = app.sample().entities[0]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let to = location(&me.post("/portal/record", &[]).await);
    let reading = to.strip_prefix("/portal/record?reading=").expect(&to);
    assert!(
        reading.len() == 32 && reading.bytes().all(|b| b.is_ascii_hexdigit()),
        "{to}"
    );
    let first = me.page(&to, 200).await;
    assert!(first.contains(&name), "the record is drawn");
    assert!(
        first.contains("<strong>1</strong>"),
        "one self-query counted"
    );
    // Fields by the catalog's labels, not JSON paths; in Chinese in Chinese.
    assert!(first.contains(">Registered capital</th>"), "{first}");
    assert!(!first.contains(">registered_capital<"));
    let zh = in_lang(&me, "zh-CN").page(&to, 200).await;
    assert!(zh.contains(">注册资本</th>") && zh.contains("企业信用记录"));
    for _ in 0..3 {
        assert!(
            me.page(&to, 200).await.contains(&name),
            "a refresh draws it again"
        );
    }
    assert!(
        me.page("/portal/record", 200)
            .await
            .contains("<strong>1</strong>"),
        "refreshes counted nothing"
    );

    let them = portal_client(&s, &uscc(app, 1)).await;
    let theirs = them.page(&to, 200).await;
    assert!(
        !theirs.contains(&name),
        "another subject never sees my reading"
    );
    assert!(theirs.contains("id=\"record-expired\""));
    for bad in [
        "/portal/record?reading=".to_owned(),
        "/portal/record?reading=%3Cscript%3Ex".into(),
        format!("/portal/record?reading={}", "a".repeat(5000)),
        format!("/portal/record?reading={}", reading.to_ascii_uppercase()),
    ] {
        let page = me.page(&bad, 200).await;
        assert!(
            !page.contains(&name) && !page.contains("<script>x"),
            "{bad}"
        );
        assert!(page.contains("id=\"record-expired\""), "{bad}");
    }
    app.state
        .clock
        .advance(std::time::Duration::from_secs(11 * 60));
    let later = me.page(&to, 200).await;
    assert!(!later.contains(&name), "an expired reading is gone");
    assert!(
        later.contains("Read my record"),
        "and the button is offered again"
    );
}
