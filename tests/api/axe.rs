//! The automated accessibility check of the browser tests: the real axe-core (a pinned
//! `axe.min.js` from the npm package, installed by `.ci/run`) is injected into the page the
//! browser shows and run with the WCAG 2.1 A and AA rules; every violation of impact `serious`
//! or `critical` fails the test, listed with its rule, impact, first targets and the page.
//!
//! Where the file is: `CREDGATE_AXE_JS`, else [`AXE_FIXED`]. Without it the check says
//! SKIPPED, and fails under `CI=true` (a green run must have checked).
//!
//! How it gets past the pages' `script-src 'self'`: WebDriver's `execute` evaluates its script
//! outside the page's Content-Security-Policy, so the whole library is sent as the body of the
//! function `execute` evaluates (once per document), and `axe.run` is called by a second,
//! asynchronous `execute`. No `<script>` element is added to the page (the CSP would refuse
//! one) and nothing needs `eval`. The fixture test shows it under the strict CSP: the page's
//! own inline script is refused there while the injected library runs.

use std::sync::OnceLock;

use fantoccini::Client;
use serde::Deserialize;
use serde_json::Value;

use crate::helpers::skip_unless_ci;

/// The axe-core release `.ci/run` installs; the check says which one it ran.
pub(crate) const AXE_VERSION: &str = "4.14.1";

/// Where `.ci/run` installs it: `npm install --prefix /opt/axe-core axe-core@AXE_VERSION`.
const AXE_FIXED: &str = "/opt/axe-core/node_modules/axe-core/axe.min.js";

/// The rule sets axe-core tags as WCAG 2.0 and 2.1, levels A and AA.
const TAGS: &[&str] = &["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"];

/// One violated rule on a page, as axe-core reports it (only what the failure message needs).
#[derive(Debug, Deserialize)]
pub(crate) struct Violation {
    pub id: String,
    pub impact: Option<String>,
    pub help: String,
    /// The CSS selectors of the first few offending elements.
    pub targets: Vec<Value>,
}

/// The library's source, read once; `None` when neither place has it.
fn axe_source() -> Option<&'static str> {
    static SRC: OnceLock<Option<String>> = OnceLock::new();
    SRC.get_or_init(|| {
        let path = std::env::var("CREDGATE_AXE_JS").unwrap_or_else(|_| AXE_FIXED.to_owned());
        let src = std::fs::read_to_string(&path).ok()?;
        // Another file, or another release than the pinned one, would check something else.
        assert!(
            src.starts_with(&format!("/*! axe v{AXE_VERSION}\n")),
            "{path} is not axe-core {AXE_VERSION}"
        );
        Some(src)
    })
    .as_deref()
}

/// True when the check can run here; otherwise says SKIPPED (and fails under `CI=true`).
pub(crate) fn axe_available(test: &str) -> bool {
    if axe_source().is_some() {
        return true;
    }
    skip_unless_ci(
        test,
        "axe-core's axe.min.js is not installed (CREDGATE_AXE_JS or /opt/axe-core)",
    );
    false
}

/// Fails listing every serious or critical WCAG 2.1 A/AA violation on the page the browser
/// shows now; `page` names it in the message.
pub(crate) async fn assert_accessible(c: &Client, page: &str) {
    if !axe_available(&format!("axe on {page}")) {
        return;
    }
    let found = run(c).await;
    for v in &found.incomplete {
        // What axe-core could not decide (e.g. text inside a chart's SVG): shown, for a person.
        let at: Vec<String> = v.targets.iter().map(Value::to_string).collect();
        eprintln!(
            "axe-core needs review on {page}: {} ({}) at {}",
            v.id,
            v.help,
            at.join(", ")
        );
    }
    let bad = serious(&found.violations, page);
    assert!(
        bad.is_empty(),
        "axe-core {AXE_VERSION} on {page}:\n{}",
        bad.join("\n")
    );
}

/// The serious and critical violations as lines of a failure message.
pub(crate) fn serious(all: &[Violation], page: &str) -> Vec<String> {
    all.iter()
        .filter(|v| matches!(v.impact.as_deref(), Some("serious" | "critical")))
        .map(|v| {
            let targets: Vec<String> = v.targets.iter().map(Value::to_string).collect();
            format!(
                "  {page}: {} ({}): {} at {}",
                v.id,
                v.impact.as_deref().unwrap_or("?"),
                v.help,
                targets.join(", ")
            )
        })
        .collect()
}

/// What one run of axe-core found: the rules violated, and the serious or critical ones it
/// could not decide.
#[derive(Debug, Deserialize)]
pub(crate) struct Found {
    pub violations: Vec<Violation>,
    pub incomplete: Vec<Violation>,
}

/// Every violation axe-core finds on the current page, of any impact.
pub(crate) async fn violations(c: &Client) -> Vec<Violation> {
    run(c).await.violations
}

/// Injects axe-core where the page lacks it and runs it. Panics when the library cannot be
/// loaded into the page or fails: a check that did not run must not pass.
async fn run(c: &Client) -> Found {
    let src = axe_source().expect("axe_available was asked first");
    const LOADED: &str =
        "return typeof window.axe === 'object' && typeof window.axe.run === 'function';";
    if c.execute(LOADED, vec![]).await.unwrap() != Value::Bool(true) {
        // The library as the function body; its UMD wrapper sets `window.axe`.
        let body = format!("{src}\n;return typeof window.axe === 'object';");
        let loaded = c.execute(&body, vec![]).await.expect("axe-core injects");
        assert_eq!(loaded, Value::Bool(true), "axe-core did not load");
    }
    const RUN: &str = r#"
        const done = arguments[arguments.length - 1];
        const brief = v => ({ id: v.id, impact: v.impact, help: v.help,
                              targets: v.nodes.slice(0, 3).map(n => n.target) });
        axe.run(document, { runOnly: { type: 'tag', values: arguments[0] },
                            resultTypes: ['violations', 'incomplete'] })
          .then(r => done({ ok: {
              violations: r.violations.map(brief),
              incomplete: r.incomplete
                .filter(v => v.impact === 'serious' || v.impact === 'critical')
                .map(brief) } }))
          .catch(e => done({ error: String(e) }));
    "#;
    let out = c
        .execute_async(RUN, vec![serde_json::json!(TAGS)])
        .await
        .expect("axe.run answers");
    if let Some(e) = out.get("error") {
        panic!("axe.run failed: {e}");
    }
    serde_json::from_value(out["ok"].clone()).expect("axe-core's results")
}

/// A page with the pages' strict CSP: an inline script it carries must not run (so the
/// injection is shown to work where the page's own script could not).
fn page(body: &'static str) -> axum::response::Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>t</title></head>\
         <body><main><h1>A form</h1><form>{body}<button>Go</button></form></main>\
         <script>window.inlineRan = true;</script></body></html>"
    );
    axum::response::Response::builder()
        .header("content-type", "text/html; charset=utf-8")
        .header("content-security-policy", crate::pages::CSP)
        .body(axum::body::Body::from(html))
        .unwrap()
}

/// A tiny server on loopback: `/broken` has an input no label names, `/fixed` the same one
/// labelled. Its base URL.
async fn serve_fixture() -> String {
    let router = axum::Router::new()
        .route(
            "/broken",
            axum::routing::get(|| async { page("<input id=\"q\" name=\"q\">") }),
        )
        .route(
            "/fixed",
            axum::routing::get(|| async {
                page("<label for=\"q\">Query</label><input id=\"q\" name=\"q\">")
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    url
}

#[tokio::test]
async fn the_check_reports_an_unlabelled_input_under_the_strict_csp() {
    const NAME: &str = "axe::the_check_reports_an_unlabelled_input_under_the_strict_csp";
    let Some(driver) = crate::pages::start_driver().await else {
        return skip_unless_ci(NAME, "chromedriver is not installed");
    };
    if !axe_available(NAME) {
        return;
    }
    let url = serve_fixture().await;
    let c = crate::pages::browser(&driver).await;
    c.goto(&format!("{url}/broken")).await.unwrap();
    let inline = c.execute("return window.inlineRan === true;", vec![]).await;
    assert_eq!(inline.unwrap(), Value::Bool(false), "the CSP is in force");
    let lines = serious(&violations(&c).await, "broken");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("broken: label (critical)") && l.contains("#q")),
        "{lines:?}"
    );
    c.goto(&format!("{url}/fixed")).await.unwrap();
    assert!(serious(&violations(&c).await, "fixed").is_empty());
    c.close().await.unwrap();
}
