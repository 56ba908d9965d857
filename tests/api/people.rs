//! Staff are people (issue 16 item 2): a person signed in at a staff OpenID Connect provider
//! calls `/admin` with that provider's token, gets exactly what the roles table gives their
//! roles, and the audit record names them. Hostile first: the tokens an attacker or a confused
//! client would send are refused, and each refusal is itself recorded.

use credgate::config::Config;
use credgate_demo_idp::{Alg, DemoIdp, Options};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem, dead_addr};

const CONSOLE: &str = "credgate-console";
const PORTAL: &str = "credgate-portal";
const ACR2: &str = credgate_demo_idp::ACR_TWO_FACTOR;

/// The demo provider as staff provider (console audience) and subject provider (portal
/// audience), as `credgate demo` configures it: a second factor for `system_admin`.
fn providers_for(issuer: &str) -> Vec<credgate::config::IdentityProviderConfig> {
    let text = format!(
        r#"
[[identity_providers]]
issuer = "{issuer}"
kind = "staff"
audience = "{CONSOLE}"
role_map = {{ security_officer = "security_officer", objection_handler = "objection_handler", system_admin = "system_admin", auditor = "auditor" }}
require_acr = {{ system_admin = ["{ACR2}"] }}
require_amr = {{ system_admin = ["otp"] }}

[[identity_providers]]
issuer = "{issuer}"
kind = "subject"
audience = "{PORTAL}"
"#
    );
    Config::parse(&text, "people").unwrap().identity_providers
}

struct People {
    app: TestApp,
    idp: DemoIdp,
}

async fn start() -> People {
    let idp = DemoIdp::start(Options {
        audience: CONSOLE.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let extra = providers_for(idp.issuer());
    let app = TestApp::spawn_with(|c| c.identity_providers.extend(extra)).await;
    People { app, idp }
}

impl People {
    /// A console token for a demo staff user, signed in with `amr` (`pwd`, or `pwd` + `otp`).
    fn staff(&self, user: &str, amr: &[&str]) -> String {
        let claims = self.idp.claims_for(user, amr).unwrap();
        self.idp.mint(Alg::EdDSA, &claims).unwrap()
    }

    /// A token with the staff user's claims altered by `edit`.
    fn staff_with(&self, user: &str, edit: impl FnOnce(&mut Value)) -> String {
        let mut claims = self.idp.claims_for(user, &["pwd", "otp"]).unwrap();
        edit(&mut claims);
        self.idp.mint(Alg::ES256, &claims).unwrap()
    }

    /// A portal token for a demo data subject.
    fn subject(&self, user: &str) -> String {
        self.staff_with(user, |c| c["aud"] = PORTAL.into())
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> reqwest::Response {
        let mut req = self
            .app
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.app.url))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(b);
        }
        req.send().await.unwrap()
    }

    /// The committed record of a response.
    async fn record_of(&self, res: &reqwest::Response) -> credgate::audit::AuditRecord {
        let id = res
            .headers()
            .get("x-audit-id")
            .expect("every /admin and /subject answer is recorded")
            .to_str()
            .unwrap()
            .to_string();
        self.app.record(&id).await
    }
}

const OFFICER: &str = "security_officer";
const AUDITOR: &str = "auditor";
const ADMIN: &str = "system_admin";
const HANDLER: &str = "objection_handler";
const READERS: &[&str] = &[OFFICER, AUDITOR];

/// One row: method, path, the roles it admits, their status, the body sent.
type Row = (
    &'static str,
    String,
    &'static [&'static str],
    u16,
    Option<Value>,
);

/// The roles table (DESIGN.md, "Who uses it"), as tests/api/roles.rs checks it for clients.
fn table(victim: &str) -> Vec<Row> {
    let lock = json!({"org": "nobody-org", "reason": "people test"});
    vec![
        ("GET", "/admin/audit".into(), READERS, 200, None),
        (
            "GET",
            "/admin/audit/export?format=ndjson".into(),
            READERS,
            200,
            None,
        ),
        ("GET", "/admin/audit/verify".into(), READERS, 200, None),
        ("GET", "/admin/alerts".into(), READERS, 200, None),
        (
            "POST",
            "/admin/alerts/al_nosuch/ack".into(),
            &[OFFICER],
            404,
            None,
        ),
        (
            "POST",
            "/admin/lockdown".into(),
            &[OFFICER],
            201,
            Some(lock),
        ),
        ("GET", "/admin/lockdown".into(), &[OFFICER], 200, None),
        ("GET", "/admin/clients".into(), &[ADMIN], 200, None),
        (
            "POST",
            format!("/admin/clients/{victim}/disable"),
            &[ADMIN],
            200,
            None,
        ),
        (
            "POST",
            format!("/admin/clients/{victim}/enable"),
            &[ADMIN],
            200,
            None,
        ),
        ("POST", "/admin/policies/reload".into(), &[ADMIN], 200, None),
        ("GET", "/admin/objections".into(), &[HANDLER], 200, None),
        ("GET", "/admin/complaints".into(), &[HANDLER], 200, None),
        ("GET", "/admin/reports".into(), &[HANDLER], 200, None),
    ]
}

#[tokio::test]
async fn each_staff_person_gets_exactly_what_the_roles_table_allows() {
    let p = start().await;
    let (victim, _) = p.app.add_client("financial_institution").await;
    let people = [
        (OFFICER, p.staff("officer", &["pwd", "otp"])),
        (AUDITOR, p.staff("auditor", &["pwd", "otp"])),
        (ADMIN, p.staff("admin", &["pwd", "otp"])),
        (HANDLER, p.staff("handler", &["pwd", "otp"])),
        ("subject", p.subject("company1")),
    ];
    let mut wrong = Vec::new();
    for (method, path, allowed, ok, body) in table(&victim) {
        for (who, token) in &people {
            let res = p.call(method, &path, token, body.as_ref()).await;
            let want = if allowed.contains(who) {
                ok
            } else if *who == "subject" {
                401
            } else {
                403
            };
            let got = res.status().as_u16();
            if got != want {
                wrong.push(format!("{method} {path} as {who}: {got}, want {want}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[tokio::test]
async fn the_audit_record_names_the_person_and_their_org_and_the_chain_verifies() {
    let p = start().await;
    let officer = p.staff("officer", &["pwd", "otp"]);
    let res = p.call("GET", "/admin/audit?limit=1", &officer, None).await;
    assert_eq!(res.status(), 200);
    let r = p.record_of(&res).await;
    assert_eq!(r.actor.as_deref(), Some("staff:officer"));
    assert_eq!(r.actor_org.as_deref(), Some("credgate-ops"));
    assert_eq!(r.role.as_deref(), Some(OFFICER));
    assert_eq!(r.client_id, None, "a person is not a client");
    assert!(
        r.hash.starts_with("v4:"),
        "the person is in the hash: {}",
        r.hash
    );

    // A change made by a person is attributed to them in the change's own history too.
    let lock = json!({"org": "some-org", "reason": "people test"});
    let res = p
        .call("POST", "/admin/lockdown", &officer, Some(&lock))
        .await;
    assert_eq!(res.status(), 201);
    let r = p.record_of(&res).await;
    assert_eq!(r.actor.as_deref(), Some("staff:officer"));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["created_by"], "staff:officer", "{body}");

    // The auditor sees the officer's actions (staff records), named, and the chain of v1 and
    // v2 records verifies end to end.
    let auditor = p.staff("auditor", &["pwd", "otp"]);
    let res = p.call("GET", "/admin/audit?limit=50", &auditor, None).await;
    let page: Value = res.json().await.unwrap();
    let named = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["actor"] == "staff:officer" && i["actor_org"] == "credgate-ops")
        .count();
    assert!(named >= 2, "{page}");
    let res = p.call("GET", "/admin/audit/verify", &auditor, None).await;
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["ok"], true, "{v}");
}

#[tokio::test]
async fn system_admin_without_the_second_factor_is_403_and_recorded() {
    let p = start().await;
    let password_only = p.staff("admin", &["pwd"]);
    let res = p.call("GET", "/admin/clients", &password_only, None).await;
    let r = p.record_of(&res).await;
    let problem = assert_problem(res, 403).await;
    assert_eq!(problem["rule"], "second-factor-required", "{problem}");
    assert_eq!((r.status, r.decision.as_str()), (403, "deny"));
    assert_eq!(r.rule.as_deref(), Some("second-factor-required"));
    // The `acr` alone or the `amr` alone is not enough.
    let amr_only = p.staff_with("admin", |c| {
        c["acr"] = "urn:credgate:demo:acr:password".into()
    });
    let acr_only = p.staff_with("admin", |c| c["amr"] = json!(["pwd"]));
    for t in [amr_only, acr_only] {
        let res = p.call("GET", "/admin/clients", &t, None).await;
        assert_problem(res, 403).await;
    }
    // With both factors: in.
    let res = p
        .call(
            "GET",
            "/admin/clients",
            &p.staff("admin", &["pwd", "otp"]),
            None,
        )
        .await;
    assert_eq!(res.status(), 200);
}

/// Separation of duties: a person the provider maps to an administering and an auditing role
/// at once is refused on every staff route, and the refusal is recorded.
#[tokio::test]
async fn a_person_who_would_both_administer_and_audit_is_refused() {
    let p = start().await;
    for audits in ["auditor", "security_officer"] {
        let both = p.staff_with("admin", |c| c["groups"] = json!(["system_admin", audits]));
        for path in ["/admin/clients", "/admin/audit"] {
            let res = p.call("GET", path, &both, None).await;
            let r = p.record_of(&res).await;
            let problem = assert_problem(res, 403).await;
            assert_eq!(
                problem["rule"], "separation-of-duties",
                "{audits} {path}: {problem}"
            );
            assert_eq!(r.decision, "deny");
        }
    }
}

#[tokio::test]
async fn hostile_person_tokens_are_refused_and_recorded() {
    let p = start().await;
    let stranger = DemoIdp::start(Options {
        audience: CONSOLE.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let officer_claims = p.idp.claims_for("officer", &["pwd", "otp"]).unwrap();
    let now = jsonwebtoken::get_current_timestamp();
    let mut forged_claims = officer_claims.clone();
    forged_claims["groups"] = json!(["security_officer"]);
    let cases: Vec<(&str, String, u16)> =
        vec![
        (
            "an unconfigured issuer",
            stranger
                .mint(Alg::EdDSA, &stranger.claims_for("officer", &["pwd", "otp"]).unwrap())
                .unwrap(),
            401,
        ),
        (
            "another provider's key under the configured issuer",
            stranger.mint(Alg::EdDSA, &forged_claims).unwrap(),
            401,
        ),
        ("a subject provider's token", p.subject("company1"), 401),
        (
            "an expired token",
            p.staff_with("officer", |c| {
                c["exp"] = (now - 3600).into();
                c["iat"] = (now - 7200).into();
                c["nbf"] = (now - 7200).into();
            }),
            401,
        ),
        (
            "a token for another audience",
            p.staff_with("officer", |c| c["aud"] = "someone-else".into()),
            401,
        ),
        (
            "roles that map to nothing",
            p.staff_with("officer", |c| c["groups"] = json!(["janitor", "admins"])),
            403,
        ),
        (
            "no roles claim",
            p.staff_with("officer", |c| {
                c.as_object_mut().unwrap().remove("groups");
            }),
            403,
        ),
        (
            "a control character in the org",
            p.staff_with("officer", |c| c["org"] = "ops\u{1b}[31m".into()),
            401,
        ),
        (
            "a token without a name",
            p.staff_with("officer", |c| {
                c.as_object_mut().unwrap().remove("name");
            }),
            401,
        ),
        (
            "a lying algorithm header",
            p.idp
                .mint_with_header(
                    Alg::EdDSA,
                    &json!({"alg": "HS256", "typ": "JWT", "kid": p.idp.kid(Alg::EdDSA).unwrap()}),
                    &officer_claims,
                )
                .unwrap(),
            401,
        ),
        ("garbage", "not.a.token".into(), 401),
    ];
    for (what, token, want) in cases {
        let res = p.call("GET", "/admin/alerts", &token, None).await;
        let got = res.status().as_u16();
        assert_eq!(got, want, "{what}");
        let r = p.record_of(&res).await;
        assert_eq!((r.status, r.decision.as_str()), (want, "deny"), "{what}");
        assert_eq!(r.kind, "admin", "{what}");
        assert_problem(res, want).await;
    }
    // The real officer token still works, and a staff token is no data subject's.
    let officer = p.staff("officer", &["pwd", "otp"]);
    assert_eq!(
        p.call("GET", "/admin/alerts", &officer, None)
            .await
            .status(),
        200
    );
    for path in ["/subject/access-log", "/subject/me", "/subject/objections"] {
        let res = p.call("GET", path, &officer, None).await;
        assert_eq!(res.status(), 401, "{path}");
        let r = p.record_of(&res).await;
        assert_eq!(r.status, 401);
    }
    // Nor is a person's token an institution's on the data path.
    let res = p
        .call("GET", "/v1/stores/power/entities", &officer, None)
        .await;
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn a_subject_signed_in_at_a_discovered_provider_uses_the_subject_api() {
    let p = start().await;
    let token = p.subject("company1");
    for path in ["/subject/me", "/subject/access-log", "/subject/objections"] {
        let res = p.call("GET", path, &token, None).await;
        assert_eq!(res.status(), 200, "{path}");
    }
    // After a rotation the new key is fetched on first sight (the handlers that check
    // synchronously start the fetch and accept from the next request on).
    p.idp.rotate().unwrap();
    let token = p.subject("company1");
    let mut ok = false;
    for _ in 0..20 {
        if p.call("GET", "/subject/access-log", &token, None)
            .await
            .status()
            == 200
        {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ok, "the rotated key was fetched");
    // The static-key provider keeps working beside it (`credgate token subject`).
    let uscc = p.app.sample().entities[0]["uscc"]
        .as_str()
        .unwrap()
        .to_string();
    let old = p
        .app
        .subject_token(&uscc, credgate::domain::SubjectType::Legal);
    assert_eq!(p.call("GET", "/subject/me", &old, None).await.status(), 200);
    let res = p.call("GET", "/admin/alerts", &old, None).await;
    assert_eq!(res.status(), 401, "a subject token on /admin");
}

#[tokio::test]
async fn readyz_names_a_provider_that_cannot_be_reached() {
    let dead = format!("http://{}", dead_addr());
    let mut extra = providers_for(&dead);
    extra.truncate(1);
    let app = TestApp::spawn_with(|c| c.identity_providers.extend(extra)).await;
    let res = app
        .http
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(res, 503).await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains(&dead), "{detail}");
    assert!(
        !detail.contains("test-idp"),
        "only the provider without keys: {detail}"
    );
}

#[tokio::test]
async fn readyz_lists_the_providers_and_sighup_reloads_them_audited() {
    let p = start().await;
    let res = p
        .app
        .http
        .get(format!("{}/readyz", p.app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let listed = body["identity_providers"].as_array().unwrap();
    assert_eq!(listed.len(), 3, "{body}");
    assert!(listed.iter().all(|p| p["keys_loaded"] == true), "{body}");

    let before = p.app.state.providers();
    let before_count = p.app.record_count().await;
    credgate::replicas::reload_providers(&p.app.state, &p.app.state.config)
        .await
        .unwrap();
    let after = p.app.state.providers();
    assert!(
        !std::sync::Arc::ptr_eq(&before, &after),
        "a new registry is in force"
    );
    let records = credgate::audit::store::page_after(&p.app.state.db, 0, 100_000)
        .await
        .unwrap();
    assert!(records.len() > before_count);
    let reload = records
        .iter()
        .rev()
        .find(|r| r.path == "/admin/identity-providers/reload")
        .expect("the reload is recorded");
    assert_eq!((reload.kind.as_str(), reload.status), ("admin", 200));
    // The new registry works, and its refresher runs (a rotation is picked up).
    p.idp.rotate().unwrap();
    let officer = p.staff("officer", &["pwd", "otp"]);
    assert_eq!(
        p.call("GET", "/admin/alerts", &officer, None)
            .await
            .status(),
        200
    );
}
