//! The pages: HTTP-level checks (headers, CSRF, no inline code, labels, audit) on every page in
//! both languages, and one walk through the public pages in real headless Chromium over
//! WebDriver (chromedriver + fantoccini), with screenshots under `target/screenshots/`.

use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator, key::Key};
use serde_json::{Value, json};

use crate::helpers::{TestApp, skip_unless_ci};

pub(crate) const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; script-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Every page a reader can reach without signing in, with a representative query.
fn page_paths(uscc: &str) -> Vec<String> {
    vec![
        "/".into(),
        format!("/?uscc={uscc}"),
        "/?uscc=NOT-A-USCC".into(),
        "/lists/red".into(),
        "/lists/red?page=2".into(),
        "/lists/black".into(),
        "/report".into(),
        "/lists/none".into(),
    ]
}

fn a_uscc(app: &TestApp) -> String {
    app.sample().entities[0]["uscc"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn get(app: &TestApp, path: &str, lang: &str) -> reqwest::Response {
    app.http
        .get(format!("{}{path}", app.url))
        .header("accept-language", lang)
        .send()
        .await
        .unwrap()
}

// ---- a small HTML tag scanner: enough to find attributes, not a full parser ----

/// A start tag: its name and its attributes (values unescaped).
type Tag = (String, Vec<(String, String)>);

/// Each start tag, and each script element's inner text.
fn tags(html: &str) -> (Vec<Tag>, Vec<String>) {
    let (mut out, mut scripts) = (Vec::new(), Vec::new());
    let mut rest = html;
    while let Some(at) = rest.find('<') {
        rest = &rest[at + 1..];
        if rest.starts_with('/') || rest.starts_with('!') {
            continue;
        }
        let end = rest.find('>').expect("a tag closes");
        let (name, attrs) = parse_tag(&rest[..end]);
        rest = &rest[end + 1..];
        if name == "script" {
            let close = rest.find("</script>").expect("a script closes");
            scripts.push(rest[..close].to_owned());
        }
        out.push((name, attrs));
    }
    (out, scripts)
}

fn parse_tag(s: &str) -> (String, Vec<(String, String)>) {
    let s = s.trim_end_matches('/');
    let name_end = s.find(char::is_whitespace).unwrap_or(s.len());
    let name = s[..name_end].to_ascii_lowercase();
    let mut attrs = Vec::new();
    let mut rest = s[name_end..].trim_start();
    while !rest.is_empty() {
        let key_end = rest
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(rest.len());
        let key = rest[..key_end].to_ascii_lowercase();
        rest = rest[key_end..].trim_start();
        let mut value = String::new();
        if let Some(r) = rest.strip_prefix('=') {
            let r = r.trim_start();
            let (v, after) = match r.chars().next() {
                Some(q @ ('"' | '\'')) => {
                    let close = r[1..].find(q).expect("a quoted value closes") + 1;
                    (&r[1..close], &r[close + 1..])
                }
                _ => r.split_at(r.find(char::is_whitespace).unwrap_or(r.len())),
            };
            value = unescape(v);
            rest = after.trim_start();
        }
        attrs.push((key, value));
    }
    (name, attrs)
}

/// The entities minijinja's HTML escaping writes (it escapes `/` too).
fn unescape(v: &str) -> String {
    v.replace("&#x2f;", "/")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

fn attr<'a>(attrs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Fails on any inline style or script: `style=`, `<style>`, a script without `src` or with
/// content, an `on*=` handler, a `javascript:` URL.
fn assert_no_inline_code(path: &str, html: &str) {
    let (tags, scripts) = tags(html);
    for (name, attrs) in &tags {
        assert_ne!(name, "style", "{path}: a <style> element");
        if name == "script" {
            assert!(attr(attrs, "src").is_some(), "{path}: an inline <script>");
        }
        for (k, v) in attrs {
            assert_ne!(k, "style", "{path}: a style= attribute on <{name}>");
            assert!(!k.starts_with("on"), "{path}: an {k}= handler on <{name}>");
            assert!(
                !v.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("javascript:"),
                "{path}: a javascript: URL"
            );
        }
    }
    assert!(
        scripts.iter().all(|s| s.trim().is_empty()),
        "{path}: script content inline"
    );
}

/// Every visible input, select and textarea has an id that a `<label for>` names.
fn assert_inputs_labelled(path: &str, html: &str) {
    let (tags, _) = tags(html);
    let labelled: Vec<&str> = tags
        .iter()
        .filter(|(n, _)| n == "label")
        .filter_map(|(_, a)| attr(a, "for"))
        .collect();
    for (name, attrs) in &tags {
        let field = matches!(name.as_str(), "input" | "select" | "textarea");
        if !field || attr(attrs, "type") == Some("hidden") {
            continue;
        }
        let id = attr(attrs, "id").unwrap_or_else(|| panic!("{path}: a <{name}> without id"));
        assert!(
            labelled.contains(&id),
            "{path}: <{name} id={id}> has no <label for>"
        );
    }
}

#[tokio::test]
async fn every_page_has_the_strict_csp_and_no_inline_code_in_both_languages() {
    let app = TestApp::spawn().await;
    for lang in ["en", "zh-CN"] {
        for path in page_paths(&a_uscc(&app)) {
            let res = get(&app, &path, lang).await;
            let h = res.headers().clone();
            assert_eq!(h["content-security-policy"], CSP, "{path}");
            assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
            assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
            assert_eq!(h["cache-control"], "no-store", "{path}");
            assert!(
                h["content-type"].to_str().unwrap().starts_with("text/html"),
                "{path}: {:?}",
                h["content-type"]
            );
            let html = res.text().await.unwrap();
            let want = if lang == "en" {
                r#"<html lang="en">"#
            } else {
                r#"<html lang="zh-CN">"#
            };
            assert!(html.contains(want), "{path} in {lang}");
            assert!(
                !html.contains("??"),
                "{path} in {lang}: a message key is missing"
            );
            assert_no_inline_code(&path, &html);
            assert_inputs_labelled(&path, &html);
        }
    }
}

#[test]
fn the_scanner_catches_inline_code() {
    let bad = [
        r#"<p style="color:red">x</p>"#,
        "<style>p{}</style>",
        "<script>alert(1)</script>",
        r#"<a href="/" onclick="x()">x</a>"#,
        r#"<a href="javascript:x()">x</a>"#,
        r#"<script src="/a.js">alert(1)</script>"#,
    ];
    for html in bad {
        let caught = std::panic::catch_unwind(|| assert_no_inline_code("t", html)).is_err();
        assert!(caught, "not caught: {html}");
    }
    assert_no_inline_code(
        "t",
        r#"<script src="/assets/x.js" defer></script><p class="a">ok</p>"#,
    );
    let unlabelled = std::panic::catch_unwind(|| assert_inputs_labelled("t", r#"<input id="a">"#));
    assert!(unlabelled.is_err());
}

#[tokio::test]
async fn assets_have_hashed_names_and_long_cache_and_nothing_else_answers() {
    let app = TestApp::spawn().await;
    let html = get(&app, "/", "en").await.text().await.unwrap();
    let (tags, _) = tags(&html);
    let css = tags
        .iter()
        .find(|(n, a)| n == "link" && attr(a, "rel") == Some("stylesheet"))
        .and_then(|(_, a)| attr(a, "href"))
        .unwrap()
        .to_owned();
    assert!(
        css.starts_with("/assets/site.") && css.ends_with(".css") && css.len() > 30,
        "{css}"
    );
    let res = get(&app, &css, "en").await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    assert!(
        res.headers().get("x-audit-id").is_none(),
        "assets are unaudited"
    );
    for wrong in [
        "/assets/site.css",
        "/assets/site.0000000000000000.css",
        "/assets/..%2fCargo.toml",
    ] {
        let res = get(&app, wrong, "en").await;
        assert_eq!(res.status(), 404, "{wrong}");
        assert!(
            res.text()
                .await
                .unwrap()
                .contains("This page does not exist")
        );
    }
}

#[tokio::test]
async fn lookup_shows_the_public_tier_and_no_personal_identifier_and_is_audited() {
    let app = TestApp::spawn().await;
    let e = &app.sample().entities[0];
    let uscc = e["uscc"].as_str().unwrap();
    let res = get(&app, &format!("/?uscc={}", uscc.to_ascii_lowercase()), "en").await;
    assert_eq!(res.status(), 200);
    let audit_id = res.headers()["x-audit-id"].to_str().unwrap().to_owned();
    let html = res.text().await.unwrap();
    assert!(
        html.contains(e["name"].as_str().unwrap()),
        "the entity's name is shown"
    );
    // Fields by the catalog's labels, days in the reader's convention with the machine form.
    let established = e["established"].as_str().unwrap();
    assert!(html.contains(">Established on</th>"), "{html}");
    assert!(html.contains(&format!("<time datetime=\"{established}\">")));
    assert!(!html.contains(">established</th>"));
    let zh = get(&app, &format!("/?uscc={uscc}"), "zh-CN").await;
    let zh = zh.text().await.unwrap();
    assert!(
        zh.contains(">成立日期</th>") && zh.contains("日</time>"),
        "{zh}"
    );
    let id_number = e["legal_representative"]["id_number"].as_str().unwrap();
    assert!(
        !html.contains(id_number),
        "a personal identifier reached the public page"
    );
    let phone = e["legal_representative"]["phone"].as_str().unwrap();
    assert!(
        !html.contains(phone),
        "a phone number reached the public page"
    );
    let r = app.record(&audit_id).await;
    assert_eq!(r.kind, "public");
    assert_eq!(r.role.as_deref(), Some("public"));
    assert_eq!(r.dataset.as_deref(), Some("entity"));
    assert!(r.subjects.contains(&uscc.to_owned()), "{:?}", r.subjects);
    assert_eq!(r.purpose.as_deref(), Some("public_disclosure"));
}

#[tokio::test]
async fn a_bad_uscc_is_a_clear_page_not_a_crash() {
    let app = TestApp::spawn().await;
    let uscc = a_uscc(&app);
    // The same code with its check character changed.
    let last = uscc.chars().last().unwrap();
    let wrong = format!("{}{}", &uscc[..17], if last == '0' { '1' } else { '0' });
    for (q, lang, says) in [
        (wrong.as_str(), "en", "not a valid USCC"),
        ("<script>alert(1)</script>", "en", "not a valid USCC"),
        ("91%2F..%2Fpersons", "zh-CN", "不是有效的统一社会信用代码"),
        (&"9".repeat(5000), "en", "not a valid USCC"),
    ] {
        let res = get(&app, &format!("/?uscc={q}"), lang).await;
        assert_eq!(res.status(), 400, "{q}");
        let html = res.text().await.unwrap();
        assert!(html.contains(says), "{q}: {html}");
        assert!(!html.contains("<script>alert"), "the input is escaped");
    }
    let res = get(&app, "/?uscc=91110000000000000X", "en").await;
    assert!(matches!(res.status().as_u16(), 400 | 404));
}

/// The page's rows are the rows the public API releases for the same page: current entries
/// only, as the policies decide.
#[tokio::test]
async fn the_lists_show_what_the_public_path_releases_with_pagination() {
    // The demo's list routes take `page` and `page_size`; the tests' shared config's do not.
    let app = TestApp::spawn_with(|c| {
        for r in c.stores[0].routes.iter_mut() {
            if r.dataset.ends_with("_list") && r.dataset != "entity_list" {
                r.query = Some(vec!["page".into(), "page_size".into()]);
            }
        }
    })
    .await;
    for which in ["red", "black"] {
        let api: Value = app
            .http
            .get(format!(
                "{}/public/stores/power/lists/{which}?page=1&page_size=20",
                app.url
            ))
            .header("x-purpose", "public_disclosure")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let res = get(&app, &format!("/lists/{which}"), "en").await;
        assert_eq!(res.status(), 200);
        let html = res.text().await.unwrap();
        let items = api["items"].as_array().unwrap();
        assert!(!items.is_empty(), "the sample has {which}-list entries");
        for item in items {
            assert!(html.contains(item["uscc"].as_str().unwrap()));
        }
        assert_eq!(
            html.matches("<tr>").count(),
            items.len() + 1,
            "a header row and one per entry"
        );
        assert!(html.contains("<svg class=\"chart\""), "a chart by sector");
    }
    let res = get(&app, "/lists/red?page=999", "en").await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(html.contains("No entries on this page") && html.contains("rel=\"prev\""));
    assert_eq!(get(&app, "/lists/red?page=abc", "en").await.status(), 400);
    // A list route that takes no paging parameters is shown as one page, without links.
    let plain = TestApp::spawn().await;
    let html = get(&plain, "/lists/red?page=3", "en")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("<tbody>")
            && !html.contains("rel=\"next\"")
            && !html.contains("rel=\"prev\"")
    );
}

/// A fresh reader's CSRF cookie and the token of the report form.
async fn csrf_pair(app: &TestApp) -> (String, String) {
    let res = get(app, "/report", "en").await;
    let cookie = res.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let html = res.text().await.unwrap();
    let (tags, _) = tags(&html);
    let token = tags
        .iter()
        .find(|(n, a)| n == "input" && attr(a, "name") == Some("csrf"))
        .and_then(|(_, a)| attr(a, "value"))
        .unwrap()
        .to_owned();
    (cookie, token)
}

async fn post_form(
    app: &TestApp,
    path: &str,
    cookie: Option<&str>,
    form: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = app.http.post(format!("{}{path}", app.url)).form(form);
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    req.send().await.unwrap()
}

async fn report_count(app: &TestApp) -> usize {
    credgate::storage::reports::list_all(&app.state.db)
        .await
        .unwrap()
        .len()
}

/// A browser that says the form was posted from another site is refused even with a matching
/// cookie and token (a cookie planted over plain HTTP cannot then be used cross-site).
#[tokio::test]
async fn a_form_posted_from_another_site_is_refused() {
    let app = TestApp::spawn().await;
    let (cookie, token) = csrf_pair(&app).await;
    let form = [
        ("about", "X Co"),
        ("category", "fraud"),
        ("description", "d"),
        ("csrf", token.as_str()),
    ];
    for site in ["cross-site", "same-site"] {
        let res = app
            .http
            .post(format!("{}/report", app.url))
            .header("cookie", &cookie)
            .header("sec-fetch-site", site)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "{site}");
    }
    let res = app
        .http
        .post(format!("{}/report", app.url))
        .header("cookie", &cookie)
        .header("sec-fetch-site", "same-origin")
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
}

#[tokio::test]
async fn a_form_post_without_or_with_a_wrong_csrf_token_is_refused() {
    let app = TestApp::spawn().await;
    let (cookie, token) = csrf_pair(&app).await;
    let (other_cookie, _) = csrf_pair(&app).await;
    let fields = |t: &'static str| {
        vec![
            ("about", "X Co"),
            ("category", "fraud"),
            ("description", "d"),
            ("csrf", t),
        ]
    };
    let leaked: &'static str = Box::leak(token.clone().into_boxed_str());
    for (cookie, form, why) in [
        (None, fields(leaked), "no cookie"),
        (Some(cookie.as_str()), fields(""), "no token"),
        (Some(cookie.as_str()), fields("00ff"), "a wrong token"),
        (
            Some(other_cookie.as_str()),
            fields(leaked),
            "another reader's token",
        ),
        (Some("csrf=zz"), fields(leaked), "a malformed cookie"),
    ] {
        let res = post_form(&app, "/report", cookie, &form).await;
        assert_eq!(res.status(), 403, "{why}");
        assert!(
            res.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        assert!(
            res.text().await.unwrap().contains("reload the page"),
            "{why}"
        );
        let res = post_form(
            &app,
            "/report/status",
            cookie,
            &[("receipt", "x"), ("csrf", form[3].1)],
        )
        .await;
        assert_eq!(res.status(), 403, "status check, {why}");
    }
    assert_eq!(report_count(&app).await, 0, "nothing was filed");
    let res = post_form(&app, "/report", Some(&cookie), &fields(leaked)).await;
    assert_eq!(res.status(), 201);
    assert_eq!(report_count(&app).await, 1);
}

#[tokio::test]
async fn a_report_is_filed_its_receipt_shown_once_and_its_status_checked() {
    let app = TestApp::spawn().await;
    let (cookie, token) = csrf_pair(&app).await;
    let form = [
        ("about", "某某公司"),
        ("category", "false_records"),
        ("description", "They publish false records."),
        ("contact", "reporter@example.org"),
        ("csrf", token.as_str()),
    ];
    let res = post_form(&app, "/report", Some(&cookie), &form).await;
    assert_eq!(res.status(), 201);
    let audit_id = res.headers()["x-audit-id"].to_str().unwrap().to_owned();
    let html = res.text().await.unwrap();
    let receipt = html
        .split("<output id=\"receipt\" class=\"receipt\">")
        .nth(1)
        .unwrap();
    let receipt = receipt.split('<').next().unwrap().to_owned();
    assert_eq!(receipt.len(), 32, "{receipt}");
    assert!(
        !html.contains("reporter@example.org"),
        "the contact is not echoed"
    );
    let r = app.record(&audit_id).await;
    assert!(
        r.subjects.is_empty() && r.client_id.is_none(),
        "the record names no reporter"
    );
    // A whistleblower's address would identify them: the page keeps it out, as the API does.
    assert_eq!(r.client_addr, "withheld");
    let form = [("receipt", receipt.as_str()), ("csrf", token.as_str())];
    let res = post_form(&app, "/report/status", Some(&cookie), &form).await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(
        html.contains("Received") && !html.contains(&receipt),
        "status shown, receipt not again"
    );
    let res = post_form(
        &app,
        "/report/status",
        Some(&cookie),
        &[("receipt", "nope"), ("csrf", &token)],
    )
    .await;
    assert_eq!(res.status(), 404);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("No report has this receipt")
    );
    let bad = [
        ("about", ""),
        ("category", "nonsense"),
        ("description", ""),
        ("csrf", token.as_str()),
    ];
    let res = post_form(&app, "/report", Some(&cookie), &bad).await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("could not be accepted"));
    assert_eq!(report_count(&app).await, 1);
}

#[tokio::test]
async fn the_language_comes_from_accept_language_and_the_switch_sticks() {
    let app = TestApp::spawn().await;
    let zh = get(&app, "/report", "zh-CN,zh;q=0.9,en;q=0.5")
        .await
        .text()
        .await
        .unwrap();
    assert!(zh.contains("联系方式（选填）") && !zh.contains("Contact (optional)"));
    let res = get(&app, "/lang/en?back=/report", "zh-CN").await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/report");
    let cookie = res.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cookie.starts_with("lang=en;") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let en = app
        .http
        .get(format!("{}/report", app.url))
        .header("accept-language", "zh-CN")
        .header("cookie", "lang=en")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(en.contains("Contact (optional)") && !en.contains("联系方式"));
    for back in [
        "//evil.example/",
        "https://evil.example/",
        "/\\evil.example",
        "/admin/audit",
    ] {
        let res = get(&app, &format!("/lang/zh-CN?back={}", urlencode(back)), "en").await;
        assert_eq!(res.headers()["location"], "/", "{back}");
    }
    assert_eq!(get(&app, "/lang/fr", "en").await.status(), 404);
}

fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[tokio::test]
async fn errors_on_page_paths_are_pages_in_the_readers_language_and_elsewhere_problems() {
    let app = TestApp::spawn().await;
    let res = get(&app, "/lists/none", "zh-CN").await;
    assert_eq!(res.status(), 404);
    let html = res.text().await.unwrap();
    assert!(html.contains("该页面不存在") && html.contains("请求编号"));
    let res = app
        .http
        .delete(format!("{}/report", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    assert!(res.text().await.unwrap().contains("not available here"));
    let res = post_form(&app, "/report", None, &[("x", &"y".repeat(100))]).await;
    assert_eq!(res.status(), 403);
    let res = get(&app, "/v1/nothing", "en").await;
    assert_eq!(res.headers()["content-type"], "application/problem+json");
}

// ---- the browser ----

/// chromedriver on a free port, ended when dropped.
pub(crate) struct Driver {
    child: std::process::Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn which(bin: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

pub(crate) async fn start_driver() -> Option<Driver> {
    let bin = which("chromedriver")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new(bin)
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Some(driver);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

pub(crate) async fn browser(driver: &Driver) -> Client {
    let chromium = which("chromium")
        .or_else(|| which("chromium-browser"))
        .expect("chromium next to chromedriver");
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1000", "--lang=en-US"],
        }
    });
    let mut b = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
    b.capabilities(caps.as_object().unwrap().clone());
    b.connect(&driver.url)
        .await
        .expect("a browser session starts")
}

pub(crate) fn shots_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("../screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A screenshot of the page under `name`, and axe-core's check of it (the public walk's every
/// page goes through here).
async fn seen(c: &Client, name: &str) {
    shot(c, name).await;
    crate::axe::assert_accessible(c, name).await;
}

pub(crate) async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(shots_dir().join(format!("{name}.png")), png).unwrap();
}

/// The field a `<label>` with exactly this text names: finds it the way a person (or a screen
/// reader) does, so an unbound label fails here.
pub(crate) async fn field(c: &Client, label: &str) -> fantoccini::elements::Element {
    let xpath = format!("//label[normalize-space()='{label}']");
    let l = c
        .find(Locator::XPath(&xpath))
        .await
        .unwrap_or_else(|_| panic!("a label `{label}`"));
    let id = l
        .attr("for")
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("`{label}` has for="));
    c.find(Locator::Id(&id)).await.unwrap()
}

pub(crate) async fn button(c: &Client, text: &str) -> fantoccini::elements::Element {
    let xpath = format!("//button[normalize-space()='{text}']");
    c.find(Locator::XPath(&xpath))
        .await
        .unwrap_or_else(|_| panic!("a button `{text}`"))
}

pub(crate) async fn body_text(c: &Client) -> String {
    match c.find(Locator::Css("body")).await {
        Ok(b) => b.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Waits (up to 10 s) for the page to show `needle`: a click that submits a form or follows a
/// link returns before the next page has loaded, and the old page's elements go stale.
pub(crate) async fn wait_text(c: &Client, needle: &str) -> String {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let text = body_text(c).await;
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < until,
            "the page never showed `{needle}`: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_public_pages_work_in_a_real_browser() {
    let Some(driver) = start_driver().await else {
        return skip_unless_ci(
            "pages::the_public_pages_work_in_a_real_browser",
            "chromedriver is not installed",
        );
    };
    let app = TestApp::spawn().await;
    let started = Instant::now();
    let c = browser(&driver).await;
    let walk = walk(&app, &c).await;
    c.close().await.unwrap();
    eprintln!(
        "browser walk: {:?} (session start included: {:?})",
        walk,
        started.elapsed()
    );
}

async fn walk(app: &TestApp, c: &Client) -> Duration {
    let t = Instant::now();
    lookup_in_browser(app, c).await;
    lists_in_browser(app, c).await;
    report_in_browser(app, c).await;
    switch_in_browser(app, c).await;
    t.elapsed()
}

/// Look-up by label, keyboard only: the label's field gets focus, the code is typed, Enter
/// submits.
async fn lookup_in_browser(app: &TestApp, c: &Client) {
    let e = &app.sample().entities[1];
    let uscc = e["uscc"].as_str().unwrap();
    c.goto(&format!("{}/", app.url)).await.unwrap();
    seen(c, "lookup-en").await;
    let input = field(c, "USCC").await;
    assert_focus_ring_visible(c, &input, "the USCC field").await;
    assert_focus_ring_visible(c, &button(c, "Look up").await, "the Look up button").await;
    input.send_keys(uscc).await.unwrap();
    input.send_keys(&Key::Enter.to_string()).await.unwrap();
    let text = wait_text(c, e["name"].as_str().unwrap()).await;
    assert!(!text.contains(e["legal_representative"]["id_number"].as_str().unwrap()));
    seen(c, "lookup-result-en").await;
    let input = field(c, "USCC").await;
    input.clear().await.unwrap();
    input.send_keys("91110000ABCDEFGH12").await.unwrap();
    button(c, "Look up").await.click().await.unwrap();
    wait_text(c, "This is not a valid USCC").await;
    seen(c, "lookup-invalid-en").await;
}

/// The focus ring axe-core does not check (WCAG 2.4.7 and 1.4.11): focused by keyboard, the
/// element draws an outline at least 2 px wide whose colour has 3:1 against the page.
async fn assert_focus_ring_visible(c: &Client, e: &fantoccini::elements::Element, what: &str) {
    const RING: &str = r#"
        const e = arguments[0];
        e.focus();
        const s = getComputedStyle(e);
        return [e.matches(':focus-visible'), s.outlineStyle, s.outlineWidth, s.outlineColor,
                getComputedStyle(document.body).backgroundColor];
    "#;
    let v = c
        .execute(RING, vec![serde_json::to_value(e).unwrap()])
        .await
        .unwrap();
    let v: (bool, String, String, String, String) = serde_json::from_value(v).unwrap();
    assert!(v.0, "{what}: focused but not :focus-visible");
    assert_eq!(v.1, "solid", "{what}: no outline");
    let width: f64 = v.2.trim_end_matches("px").parse().unwrap();
    assert!(width >= 2.0, "{what}: outline {}", v.2);
    let ratio = contrast(&v.3, &v.4);
    assert!(
        ratio >= 3.0,
        "{what}: ring {} on {} is {ratio:.2}:1",
        v.3,
        v.4
    );
}

/// The WCAG contrast ratio of two computed `rgb(r, g, b)` colours.
fn contrast(a: &str, b: &str) -> f64 {
    let lum = |s: &str| {
        let n: Vec<f64> = s
            .trim_start_matches("rgba(")
            .trim_start_matches("rgb(")
            .trim_end_matches(')')
            .split(',')
            .take(3)
            .map(|x| x.trim().parse::<f64>().unwrap() / 255.0)
            .map(|c| {
                if c <= 0.03928 {
                    c / 12.92
                } else {
                    ((c + 0.055) / 1.055).powf(2.4)
                }
            })
            .collect();
        0.2126 * n[0] + 0.7152 * n[1] + 0.0722 * n[2]
    };
    let (x, y) = (lum(a), lum(b));
    (x.max(y) + 0.05) / (x.min(y) + 0.05)
}

#[test]
fn contrast_is_the_wcag_ratio() {
    assert!((contrast("rgb(0, 0, 0)", "rgb(255, 255, 255)") - 21.0).abs() < 0.01);
    assert!((contrast("rgb(245, 166, 35)", "rgb(247, 248, 250)") - 1.91).abs() < 0.01);
    assert!((contrast("rgb(180, 83, 9)", "rgb(247, 248, 250)") - 4.73).abs() < 0.01);
}

async fn lists_in_browser(app: &TestApp, c: &Client) {
    c.goto(&format!("{}/", app.url)).await.unwrap();
    c.find(Locator::LinkText("Red list"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(c, "Current entries only").await;
    let rows = c.find_all(Locator::Css("tbody tr")).await.unwrap();
    assert!(!rows.is_empty(), "the red list shows entries");
    seen(c, "list-red-en").await;
    c.find(Locator::LinkText("Black list"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(c, "Current entries only").await;
    assert_eq!(c.current_url().await.unwrap().path(), "/lists/black");
    seen(c, "list-black-en").await;
}

async fn report_in_browser(app: &TestApp, c: &Client) {
    c.goto(&format!("{}/report", app.url)).await.unwrap();
    seen(c, "report-en").await;
    field(c, "About")
        .await
        .send_keys("Example Trading Co")
        .await
        .unwrap();
    field(c, "Category")
        .await
        .select_by_value("data_abuse")
        .await
        .unwrap();
    field(c, "Description")
        .await
        .send_keys("Sells credit reports.")
        .await
        .unwrap();
    field(c, "Contact (optional)")
        .await
        .send_keys("tip@example.org")
        .await
        .unwrap();
    button(c, "Submit").await.click().await.unwrap();
    let receipt = c
        .wait()
        .for_element(Locator::Id("receipt"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(receipt.len(), 32, "{receipt}");
    seen(c, "report-receipt-en").await;
    field(c, "Receipt").await.send_keys(&receipt).await.unwrap();
    button(c, "Check").await.click().await.unwrap();
    let text = wait_text(c, "Status: Received").await;
    assert!(!text.contains(&receipt), "the receipt is shown once");
    seen(c, "report-status-en").await;
}

/// The switch is a link (no script needed); it sticks across pages; every page is drawn and
/// shot in Chinese too.
async fn switch_in_browser(app: &TestApp, c: &Client) {
    c.goto(&format!("{}/report", app.url)).await.unwrap();
    c.find(Locator::LinkText("中文"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(c, "联系方式（选填）").await;
    assert_eq!(c.current_url().await.unwrap().path(), "/report");
    seen(c, "report-zh-CN").await;
    let uscc = app.sample().entities[1]["uscc"]
        .as_str()
        .unwrap()
        .to_owned();
    for (path, name) in [
        ("/".to_owned(), "lookup-zh-CN"),
        (format!("/?uscc={uscc}"), "lookup-result-zh-CN"),
        ("/?uscc=bad".to_owned(), "lookup-invalid-zh-CN"),
        ("/lists/red".to_owned(), "list-red-zh-CN"),
        ("/lists/black".to_owned(), "list-black-zh-CN"),
        ("/lists/none".to_owned(), "error-404-zh-CN"),
    ] {
        c.goto(&format!("{}{path}", app.url)).await.unwrap();
        let html = c.source().await.unwrap();
        assert!(html.contains("lang=\"zh-CN\""), "{path} sticks to Chinese");
        seen(c, name).await;
    }
    report_in_chinese(c).await;
    c.find(Locator::LinkText("English"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(c, "Check a report's status").await;
    c.goto(&format!("{}/lists/none", app.url)).await.unwrap();
    wait_text(c, "This page does not exist").await;
    seen(c, "error-404-en").await;
}

/// The report walk again by its Chinese labels: every label is translated and still bound.
async fn report_in_chinese(c: &Client) {
    c.find(Locator::LinkText("举报"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(c, "举报对象").await;
    field(c, "举报对象")
        .await
        .send_keys("某贸易公司")
        .await
        .unwrap();
    field(c, "类别")
        .await
        .select_by_value("fraud")
        .await
        .unwrap();
    field(c, "情况说明")
        .await
        .send_keys("出售信用报告。")
        .await
        .unwrap();
    button(c, "提交").await.click().await.unwrap();
    let receipt = c
        .wait()
        .for_element(Locator::Id("receipt"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    wait_text(c, "您的举报已收到").await;
    seen(c, "report-receipt-zh-CN").await;
    field(c, "回执").await.send_keys(&receipt).await.unwrap();
    button(c, "查询状态").await.click().await.unwrap();
    wait_text(c, "状态: 已收到").await;
    seen(c, "report-status-zh-CN").await;
}
