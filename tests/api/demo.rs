//! `credgate demo` as a new user runs it: start it, then paste the printed lines into a shell.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

#[test]
fn the_demo_starts_and_its_printed_lines_work() {
    if Command::new("curl").arg("--version").output().is_err() {
        // CI installs curl (.ci/run): there a missing prerequisite is a failure, not a skip.
        crate::helpers::skip_unless_ci(
            "the_demo_starts_and_its_printed_lines_work",
            "curl is not installed",
        );
        return;
    }
    crate::helpers::serially_blocking();
    let dir = tempfile::tempdir().unwrap();
    // A relative --dir, as the README's command uses by default.
    let mut child = Command::new(env!("CARGO_BIN_EXE_credgate"))
        .current_dir(dir.path())
        .args([
            "demo",
            "--dir",
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--store-listen",
            "127.0.0.1:0",
            "--idp-listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().unwrap();
    let _guard = Kill(child);

    let mut printed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let done = line.contains("Bearer $AUDITOR");
        printed.push(line);
        if done || Instant::now() > deadline {
            break;
        }
    }
    let demo: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("demo/demo.json")).unwrap())
            .unwrap();
    let roles: Vec<&str> = demo["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["role"].as_str().unwrap())
        .collect();
    for role in [
        "regulator",
        "government_agency",
        "financial_institution",
        "credit_agency",
        "security_officer",
        "objection_handler",
        "system_admin",
        "auditor",
    ] {
        assert!(roles.contains(&role), "demo.json has a {role} client");
    }
    assert!(
        demo["gateway_url"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:")
    );
    assert!(dir.path().join("demo/credgate.toml").exists());

    // Run every printed command line, in order, in one shell, as a user pasting them would.
    let mut script = String::from("set -u\n");
    for l in &printed {
        let t = l.trim_start();
        if t.starts_with("curl ") {
            script.push_str(&format!(
                "echo \"== $({} -o /dev/null -w '%{{http_code}}' 2>/dev/null; true)\"\n",
                t
            ));
            script.push_str(t);
            script.push_str("; echo\n");
        } else if [
            "TOKEN=",
            "OFFICER=",
            "SUBJECT=",
            "REGULATOR=",
            "ADMIN=",
            "AUDITOR=",
            "PERSON=",
            "CONSENT=",
        ]
        .iter()
        .any(|v| t.starts_with(v))
        {
            script.push_str(t);
            script.push('\n');
        }
    }
    // From another directory than the demo's, as a second terminal would be.
    let out = Command::new("bash")
        .current_dir(std::env::temp_dir())
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout).to_string();
    let codes: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("== ")).collect();
    assert_eq!(
        codes,
        [
            "200", "200", "200", "403", "200", "200", "200", "401", "400", "400", "404", "403",
            "403", "200", "200", "201", "200", "200", "200", "200", "403", "200"
        ],
        "{out}"
    );
    let uscc = demo["samples"]["usccs"][0].as_str().unwrap();
    assert!(out.contains(&format!("\"uscc\":\"{uscc}\"")), "{out}");
    assert!(
        out.contains("consent-required") && out.contains("\"records\""),
        "{out}"
    );
    assert!(
        out.contains("\"annual_revenue\""),
        "the regulator sees revenue: {out}"
    );
    for c in demo["clients"].as_array().unwrap() {
        assert!(c["purposes"].is_array(), "each client lists its purposes");
    }
    assert_eq!(
        demo["public_purposes"],
        serde_json::json!(["public_disclosure"])
    );
    assert!(out.contains("\"subject_type\":\"legal\""), "{out}");
    assert!(
        out.contains("\"org\":\"demo-bank\""),
        "the company sees the bank in its access log: {out}"
    );
    assert!(
        out.contains("\"ok\":true"),
        "the audit chain verifies: {out}"
    );
    assert!(
        out.to_lowercase().contains("x-objection: pending") && out.contains("_objections"),
        "the mark: {out}"
    );
    assert!(
        out.contains("consent-required") && out.contains("\"records\""),
        "{out}"
    );
    assert!(
        out.contains("\"annual_revenue\""),
        "the regulator sees revenue: {out}"
    );
    for c in demo["clients"].as_array().unwrap() {
        assert!(c["purposes"].is_array(), "each client lists its purposes");
    }
    assert_eq!(
        demo["public_purposes"],
        serde_json::json!(["public_disclosure"])
    );
    people_sign_in(&demo);
}

/// demo.json's people (DESIGN.md, "People signing in"): every listed user signs in at the demo
/// provider through the authorization code flow with PKCE, as the console or the portal will,
/// and the access token works at the gateway; the record of a staff call names the person.
fn people_sign_in(demo: &Value) {
    let gateway = demo["gateway_url"].as_str().unwrap().to_string();
    let idp = demo["idp_url"].as_str().unwrap().to_string();
    assert!(idp.starts_with("http://127.0.0.1:"), "{demo}");
    assert_eq!(demo["console_url"], format!("{gateway}/console/"));
    assert_eq!(demo["portal_url"], format!("{gateway}/portal/"));
    assert_eq!(demo["public_url"], format!("{gateway}/"));
    let users = demo["users"].as_array().unwrap().clone();
    let roles: Vec<&str> = users.iter().filter_map(|u| u["role"].as_str()).collect();
    for role in [
        "security_officer",
        "objection_handler",
        "system_admin",
        "auditor",
    ] {
        assert!(roles.contains(&role), "a staff user for {role}");
    }
    for kind in ["legal", "natural"] {
        assert!(
            users.iter().any(|u| u["subject_type"] == kind),
            "a {kind} subject"
        );
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let mut tokens = std::collections::HashMap::new();
        for u in &users {
            let staff = u["kind"] == "staff";
            assert!(
                staff == u["totp_secret"].is_string(),
                "staff have a second factor: {u}"
            );
            let app = if staff { "console" } else { "portal" };
            let token = sign_in(&http, &idp, &gateway, app, u).await;
            let path = match u["role"].as_str() {
                Some("system_admin") => "/admin/clients",
                Some("objection_handler") => "/admin/objections",
                Some(_) => "/admin/audit?limit=1",
                None => "/subject/me",
            };
            let res = http
                .get(format!("{gateway}{path}"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200, "{} on {path}", u["username"]);
            tokens.insert(u["username"].as_str().unwrap().to_string(), token);
        }
        let page: Value = http
            .get(format!("{gateway}/admin/audit?limit=50"))
            .bearer_auth(&tokens["auditor"])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["actor"] == "staff:admin" && r["actor_org"] == "credgate-ops"),
            "the administrator's call names them: {page}"
        );
    });
}

/// The authorization code flow with PKCE (S256) at the demo provider, as a browser and the
/// console or portal drive it; the access token.
async fn sign_in(
    http: &reqwest::Client,
    idp: &str,
    gateway: &str,
    app: &str,
    user: &Value,
) -> String {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let client_id = format!("credgate-{app}");
    let redirect = format!("{gateway}/{app}/callback");
    let verifier = "demo-test-verifier-0123456789-abcdefghijklmnop";
    let challenge = URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        verifier.as_bytes(),
    ));
    let page = http
        .get(format!("{idp}/authorize"))
        .query(&[
            ("response_type", "code"),
            ("client_id", client_id.as_str()),
            ("redirect_uri", redirect.as_str()),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
            ("state", "s"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(
        page.status(),
        200,
        "{client_id} is registered for {redirect}"
    );
    let html = page.text().await.unwrap();
    for label in [
        ">Username</label>",
        ">Password</label>",
        ">Sign in</button>",
    ] {
        assert!(html.contains(label), "{label}");
    }
    let form = [
        ("flow", hidden(&html, "flow")),
        ("username", user["username"].as_str().unwrap().to_string()),
        ("password", user["password"].as_str().unwrap().to_string()),
    ];
    let mut res = http
        .post(format!("{idp}/login"))
        .form(&form)
        .send()
        .await
        .unwrap();
    if let Some(secret) = user["totp_secret"].as_str() {
        let html = res.text().await.unwrap();
        assert!(html.contains(">One-time code</label>"), "{html}");
        let secret = credgate_demo_idp::totp::base32_decode(secret).unwrap();
        let form = [
            ("step", hidden(&html, "step")),
            ("otp", credgate_demo_idp::totp::code_now(&secret)),
        ];
        res = http
            .post(format!("{idp}/login/otp"))
            .form(&form)
            .send()
            .await
            .unwrap();
    }
    assert_eq!(res.status(), 303, "{}", user["username"]);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with(&redirect), "{location}");
    let code = location
        .split("code=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    let body: Value = http
        .post(format!("{idp}/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect.as_str()),
            ("client_id", client_id.as_str()),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["access_token"].as_str().unwrap().to_string()
}

fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    html[start..].split('"').next().unwrap().to_string()
}
