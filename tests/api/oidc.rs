//! OpenID Connect providers (`credgate_core::auth::oidc`) against the demo provider running on
//! loopback: discovery, key rotation, refresh limits, and the tokens an attacker would try.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use credgate_core::{
    auth::oidc::{OidcError, Providers, Verified},
    config::Config,
};
use credgate_demo_idp::{ACR_PASSWORD, ACR_TWO_FACTOR, Alg, DemoIdp, Options};
use jsonwebtoken::errors::ErrorKind;
use serde_json::{Value, json};

const ROLE_MAP: &str = r#"{ security_officer = "security_officer", objection_handler = "objection_handler", system_admin = "system_admin", auditor = "auditor" }"#;

fn staff_provider(issuer: &str) -> String {
    format!(
        r#"
[[identity_providers]]
issuer = "{issuer}"
kind = "staff"
audience = "credgate"
roles_claim = "groups"
role_map = {ROLE_MAP}
require_acr = {{ system_admin = ["{ACR_TWO_FACTOR}"] }}
require_amr = {{ security_officer = ["otp"] }}
"#
    )
}

fn subject_provider(issuer: &str) -> String {
    format!("[[identity_providers]]\nissuer = \"{issuer}\"\naudience = \"credgate\"\n")
}

fn config(text: &str) -> Config {
    let c = Config::parse(text, "test").unwrap();
    c.validate().unwrap();
    c
}

/// A registry over `text`, with one fetch attempt made.
async fn providers(text: &str) -> std::sync::Arc<Providers> {
    let p = Providers::from_config(&config(text)).unwrap();
    p.refresh_all().await;
    p
}

async fn idp() -> DemoIdp {
    DemoIdp::start(Options::default()).await.unwrap()
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn staff(v: Result<Verified, OidcError>) -> credgate_core::auth::oidc::StaffPerson {
    match v {
        Ok(Verified::Staff(p)) => p,
        other => panic!("expected a staff person, got {other:?}"),
    }
}

/// The header and claims of `token` with its signature dropped or replaced.
fn with_parts(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

#[tokio::test]
async fn discovery_finds_the_keys_and_both_algorithms_verify() {
    let idp = idp().await;
    let p = providers(&(staff_provider(idp.issuer()))).await;
    let status = p.status();
    assert!(status[0].keys_loaded && p.ready(), "{status:?}");
    assert_eq!(status[0].keys, 2);
    assert_eq!(status[0].kind, "staff");
    let claims = idp.claims_for("officer", &["pwd", "otp"]).unwrap();
    for alg in [Alg::ES256, Alg::EdDSA] {
        let person = staff(p.verify(&idp.mint(alg, &claims).unwrap()).await);
        assert_eq!(person.roles, ["security_officer"]);
        assert_eq!(person.org, "credgate-ops");
        assert_eq!(person.name, "Demo Security Officer");
        assert_eq!(person.id, "staff:officer");
        assert_eq!(person.acr.as_deref(), Some(ACR_TWO_FACTOR));
        assert_eq!(person.issuer, idp.issuer());
    }
}

#[tokio::test]
async fn a_subject_provider_maps_the_subject() {
    let idp = idp().await;
    let p = providers(&subject_provider(idp.issuer())).await;
    for user in ["company1", "person1"] {
        let claims = idp.claims_for(user, &["pwd"]).unwrap();
        match p.verify(&idp.mint(Alg::EdDSA, &claims).unwrap()).await {
            Ok(Verified::Subject {
                id,
                subject_type,
                issuer,
            }) => {
                assert_eq!(id.as_str(), claims["sub"]);
                assert_eq!(subject_type.as_str(), claims["subject_type"]);
                assert_eq!(issuer, idp.issuer());
            }
            other => panic!("{other:?}"),
        }
    }
    // A staff token at a subject provider names no subject.
    let claims = idp.claims_for("officer", &["pwd", "otp"]).unwrap();
    let r = p.verify(&idp.mint(Alg::EdDSA, &claims).unwrap()).await;
    assert!(matches!(r, Err(OidcError::Claim(_))), "{r:?}");
}

#[tokio::test]
async fn the_whole_sign_in_yields_a_token_credgate_accepts() {
    let idp = idp().await;
    let redirect = "http://127.0.0.1:9/cb";
    idp.register_client("credgate", redirect);
    let p = providers(&staff_provider(idp.issuer())).await;
    let token = sign_in(&idp, "credgate", redirect, "admin").await;
    let person = staff(p.verify(&token).await);
    assert_eq!(person.roles, ["system_admin"]);
    assert_eq!(person.amr, ["pwd", "otp", "mfa"]);
}

/// Through the login page (and the one-time-code step for users with a secret), as a browser
/// would; the access token. Long because it is one sign-in, step by step, kept readable in one
/// place rather than split into helpers that only this test would call.
async fn sign_in(idp: &DemoIdp, client: &str, redirect: &str, user: &str) -> String {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let verifier = "x".repeat(64);
    let challenge = URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        verifier.as_bytes(),
    ));
    let u = idp
        .users()
        .into_iter()
        .find(|u| u.username == user)
        .unwrap();
    let hidden = |html: &str, name: &str| {
        let m = format!("name=\"{name}\" value=\"");
        html[html.find(&m).unwrap() + m.len()..]
            .split('"')
            .next()
            .unwrap()
            .to_string()
    };
    let url = |p: &str| format!("{}{p}", idp.issuer());
    let q = [
        ("response_type", "code"),
        ("client_id", client),
        ("redirect_uri", redirect),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
    ];
    let html = http
        .get(url("/authorize"))
        .query(&q)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let form = [
        ("flow", hidden(&html, "flow")),
        ("username", u.username.clone()),
        ("password", u.password.clone()),
    ];
    let mut resp = http.post(url("/login")).form(&form).send().await.unwrap();
    if let Some(secret) = &u.totp_secret {
        let html = resp.text().await.unwrap();
        let secret = credgate_demo_idp::totp::base32_decode(secret).unwrap();
        let form = [
            ("step", hidden(&html, "step")),
            ("otp", credgate_demo_idp::totp::code_now(&secret)),
        ];
        resp = http
            .post(url("/login/otp"))
            .form(&form)
            .send()
            .await
            .unwrap();
    }
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let code = location.split("code=").nth(1).unwrap().to_string();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("redirect_uri", redirect),
        ("client_id", client),
        ("code_verifier", &verifier),
    ];
    let body: Value = http
        .post(url("/token"))
        .form(&form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["access_token"].as_str().unwrap().to_string()
}

/// One issuer for staff and subjects (as the demo provider is): the token's audience, which is
/// the client the person signed in to, picks the provider entry, and a person signing in to
/// the other app gets nothing there.
#[tokio::test]
async fn one_issuer_serves_staff_and_subjects_under_two_audiences() {
    let idp = idp().await;
    let (console, portal) = (
        "http://127.0.0.1:9/console/cb",
        "http://127.0.0.1:9/portal/cb",
    );
    idp.register_client("credgate-console", console);
    idp.register_client("credgate-portal", portal);
    idp.register_client("credgate-portal", console);
    let text = staff_provider(idp.issuer()).replace("\"credgate\"", "\"credgate-console\"")
        + &subject_provider(idp.issuer()).replace("\"credgate\"", "\"credgate-portal\"");
    let p = providers(&text).await;
    let officer = sign_in(&idp, "credgate-console", console, "officer").await;
    assert_eq!(staff(p.verify(&officer).await).roles, ["security_officer"]);
    let company = sign_in(&idp, "credgate-portal", portal, "company1").await;
    let r = p.verify(&company).await;
    assert!(matches!(r, Ok(Verified::Subject { .. })), "{r:?}");
    // The wrong app for the person: no role, no subject.
    let company_at_console = sign_in(&idp, "credgate-console", console, "company1").await;
    assert!(matches!(
        p.verify(&company_at_console).await,
        Err(OidcError::NoRoles)
    ));
    let handler_at_portal = sign_in(&idp, "credgate-portal", portal, "handler").await;
    assert!(matches!(
        p.verify(&handler_at_portal).await,
        Err(OidcError::Claim(_))
    ));
    // A token for both audiences, or for neither, names no one provider.
    for aud in [
        json!(["credgate-console", "credgate-portal"]),
        json!("credgate"),
        json!(null),
    ] {
        let mut c = idp.claims_for("officer", &["pwd", "otp"]).unwrap();
        c["aud"] = aud.clone();
        let r = p.verify(&idp.mint(Alg::ES256, &c).unwrap()).await;
        assert!(
            matches!(r, Err(OidcError::Invalid(ErrorKind::InvalidAudience))),
            "{aud}: {r:?}"
        );
    }
}

#[tokio::test]
async fn a_rotated_key_is_picked_up_on_its_first_token() {
    let idp = idp().await;
    let p = providers(&staff_provider(idp.issuer())).await;
    let claims = idp.claims_for("auditor", &["pwd"]).unwrap();
    let before = idp.mint(Alg::ES256, &claims).unwrap();
    staff(p.verify(&before).await);
    let fetches = idp.jwks_fetches();
    idp.rotate().unwrap();
    let after = idp.mint(Alg::ES256, &claims).unwrap();
    staff(p.verify(&after).await);
    assert_eq!(idp.jwks_fetches(), fetches + 1, "one fetch for the new kid");
    // The previous generation is still published, so the earlier token still verifies.
    staff(p.verify(&before).await);
}

#[tokio::test]
async fn unknown_kids_refresh_at_most_once_per_interval() {
    let idp = idp().await;
    let p = providers(&staff_provider(idp.issuer())).await;
    let claims = idp.claims_for("auditor", &["pwd"]).unwrap();
    let fetches = idp.jwks_fetches();
    for (i, kid) in ["made-up-1", "made-up-2", "made-up-3", "made-up-4"]
        .iter()
        .enumerate()
    {
        let header = json!({"alg": "EdDSA", "kid": kid});
        let token = idp.mint_with_header(Alg::EdDSA, &header, &claims).unwrap();
        let r = p.verify(&token).await;
        assert!(matches!(r, Err(OidcError::UnknownKey)), "{i}: {r:?}");
    }
    assert_eq!(
        idp.jwks_fetches(),
        fetches + 1,
        "four unknown kids, one fetch"
    );
    // A token without any kid is refused without a fetch.
    let token = idp
        .mint_with_header(Alg::EdDSA, &json!({"alg": "EdDSA"}), &claims)
        .unwrap();
    assert!(matches!(p.verify(&token).await, Err(OidcError::UnknownKey)));
    assert_eq!(idp.jwks_fetches(), fetches + 1);
}

#[tokio::test]
async fn a_forged_signature_is_refused() {
    let idp = idp().await;
    let other = self::idp().await;
    let p = providers(&staff_provider(idp.issuer())).await;
    let claims = idp.claims_for("auditor", &["pwd"]).unwrap();
    let token = idp.mint(Alg::EdDSA, &claims).unwrap();
    let signature = token.rsplit('.').next().unwrap();
    // Promoted to security officer, with the original signature.
    let mut promoted = claims.clone();
    promoted["groups"] = json!(["security_officer"]);
    promoted["amr"] = json!(["pwd", "otp"]);
    let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": idp.kid(Alg::EdDSA).unwrap()});
    let r = p.verify(&with_parts(&header, &promoted, signature)).await;
    assert!(
        matches!(r, Err(OidcError::Invalid(ErrorKind::InvalidSignature))),
        "{r:?}"
    );
    // Signed by another provider's key under this provider's kid.
    let forged = other
        .mint_with_header(Alg::EdDSA, &header, &promoted)
        .unwrap();
    let r = p.verify(&forged).await;
    assert!(
        matches!(r, Err(OidcError::Invalid(ErrorKind::InvalidSignature))),
        "{r:?}"
    );
    // No signature at all.
    let r = p.verify(&with_parts(&header, &promoted, "")).await;
    assert!(r.is_err(), "{r:?}");
}

#[tokio::test]
async fn alg_none_is_refused() {
    let idp = idp().await;
    let p = providers(&staff_provider(idp.issuer())).await;
    let claims = idp.claims_for("officer", &["pwd", "otp"]).unwrap();
    let kid = idp.kid(Alg::EdDSA).unwrap();
    for alg in ["none", "None", "NONE", ""] {
        let header = json!({"alg": alg, "kid": kid});
        for sig in ["", "AAAA"] {
            let r = p.verify(&with_parts(&header, &claims, sig)).await;
            assert!(
                matches!(r, Err(OidcError::Malformed | OidcError::Algorithm)),
                "{alg}: {r:?}"
            );
        }
    }
}

/// The classic confusion: HS256 keyed with the provider's public key, which anyone can read.
#[tokio::test]
async fn hs256_with_the_public_key_as_secret_is_refused() {
    let idp = idp().await;
    let p = providers(&staff_provider(idp.issuer())).await;
    let claims = idp.claims_for("officer", &["pwd", "otp"]).unwrap();
    let jwks: Value = reqwest::get(format!("{}/jwks", idp.issuer()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for jwk in jwks["keys"].as_array().unwrap() {
        let kid = jwk["kid"].as_str().unwrap();
        let x = URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap();
        let secrets: [Vec<u8>; 3] = [
            x,
            jwk.to_string().into_bytes(),
            jwks.to_string().into_bytes(),
        ];
        for secret in secrets {
            for alg in [
                jsonwebtoken::Algorithm::HS256,
                jsonwebtoken::Algorithm::HS512,
            ] {
                let mut header = jsonwebtoken::Header::new(alg);
                header.kid = Some(kid.to_string());
                let key = jsonwebtoken::EncodingKey::from_secret(&secret).unwrap();
                let token = jsonwebtoken::encode(&header, &claims, &key).unwrap();
                let r = p.verify(&token).await;
                assert!(matches!(r, Err(OidcError::Algorithm)), "{alg:?}: {r:?}");
            }
        }
    }
}

#[tokio::test]
async fn wrong_issuer_audience_or_time_is_refused() {
    let idp = idp().await;
    let second = self::idp().await;
    let text = staff_provider(idp.issuer())
        + &staff_provider(second.issuer()).replace("credgate\"", "second\"");
    let p = providers(&text).await;
    let good = idp.claims_for("auditor", &["pwd"]).unwrap();
    staff(p.verify(&idp.mint(Alg::ES256, &good).unwrap()).await);
    let cases: Vec<(&str, Value)> = vec![
        ("iss", json!("http://127.0.0.1:1")),
        ("iss", json!(second.issuer())),
        ("aud", json!("someone-else")),
        ("aud", json!("second")),
        ("exp", json!(now() - 3600)),
        ("exp", json!(null)),
        ("nbf", json!(now() + 3600)),
    ];
    for (claim, value) in cases {
        let mut c = good.clone();
        if value.is_null() {
            c.as_object_mut().unwrap().remove(claim);
        } else {
            c[claim] = value.clone();
        }
        let r = p.verify(&idp.mint(Alg::ES256, &c).unwrap()).await;
        let expected = match claim {
            "iss" if value == json!(second.issuer()) => matches!(r, Err(OidcError::UnknownKey)),
            "iss" => matches!(r, Err(OidcError::UnknownIssuer)),
            "aud" => matches!(r, Err(OidcError::Invalid(ErrorKind::InvalidAudience))),
            "exp" if value.is_null() => matches!(
                r,
                Err(OidcError::Invalid(ErrorKind::MissingRequiredClaim(_)))
            ),
            "exp" => matches!(r, Err(OidcError::Invalid(ErrorKind::ExpiredSignature))),
            _ => matches!(r, Err(OidcError::Invalid(ErrorKind::ImmatureSignature))),
        };
        assert!(expected, "{claim} = {value}: {r:?}");
    }
}

#[tokio::test]
async fn a_header_that_disagrees_with_the_keys_algorithm_is_refused() {
    let idp = idp().await;
    let p = providers(&staff_provider(idp.issuer())).await;
    let claims = idp.claims_for("auditor", &["pwd"]).unwrap();
    let ed = idp.kid(Alg::EdDSA).unwrap();
    let ec = idp.kid(Alg::ES256).unwrap();
    for (signer, header) in [
        (Alg::EdDSA, json!({"alg": "ES256", "kid": ed})),
        (Alg::ES256, json!({"alg": "EdDSA", "kid": ec})),
        (Alg::ES256, json!({"alg": "RS256", "kid": ec})),
    ] {
        let token = idp.mint_with_header(signer, &header, &claims).unwrap();
        let r = p.verify(&token).await;
        assert!(matches!(r, Err(OidcError::KeyMismatch)), "{header}: {r:?}");
    }
}

#[tokio::test]
async fn an_rs256_only_provider_works() {
    let der = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/oidc-rs256.pk8"
    ))
    .unwrap();
    let idp = DemoIdp::start(Options {
        rsa_pkcs8: Some(der),
        ..Options::default()
    })
    .await
    .unwrap();
    let p = providers(&staff_provider(idp.issuer())).await;
    assert_eq!(p.status()[0].keys, 1);
    let claims = idp.claims_for("auditor", &["pwd"]).unwrap();
    let token = idp.mint(Alg::RS256, &claims).unwrap();
    assert_eq!(
        jsonwebtoken::decode_header(&token).unwrap().alg,
        jsonwebtoken::Algorithm::RS256
    );
    staff(p.verify(&token).await);
    // Claiming PS256 or RS512 over the same key is refused before any signature check.
    for alg in ["PS256", "RS512"] {
        let header = json!({"alg": alg, "kid": idp.kid(Alg::RS256).unwrap()});
        let r = p
            .verify(&idp.mint_with_header(Alg::RS256, &header, &claims).unwrap())
            .await;
        assert!(matches!(r, Err(OidcError::Algorithm)), "{alg}: {r:?}");
    }
}

#[tokio::test]
async fn staff_roles_come_through_the_role_map_only() {
    let idp = idp().await;
    let text = staff_provider(idp.issuer()).replace(
        ROLE_MAP,
        r#"{ "cg-auditors" = "auditor", "cg-handlers" = "objection_handler" }"#,
    );
    let p = providers(&text).await;
    let mut c = idp.claims_for("auditor", &["pwd"]).unwrap();
    c["groups"] = json!(["cg-handlers", "cg-auditors", "admins", "cg-auditors"]);
    let person = staff(p.verify(&idp.mint(Alg::ES256, &c).unwrap()).await);
    assert_eq!(
        person.roles,
        ["auditor", "objection_handler"],
        "sorted, deduplicated, unmapped dropped"
    );
    c["groups"] = json!("cg-auditors");
    assert_eq!(
        staff(p.verify(&idp.mint(Alg::ES256, &c).unwrap()).await).roles,
        ["auditor"]
    );
    for groups in [
        json!(["security_officer", "admins"]),
        json!([]),
        json!(null),
        json!([7]),
        json!({"a": 1}),
    ] {
        c["groups"] = groups.clone();
        let r = p.verify(&idp.mint(Alg::ES256, &c).unwrap()).await;
        assert!(
            matches!(r, Err(OidcError::NoRoles | OidcError::Claim(_))),
            "{groups}: {r:?}"
        );
    }
    // A name with control characters would reach audit records and logs: refused.
    c["groups"] = json!(["cg-auditors"]);
    c["name"] = json!("Eve\n[audit] forged line");
    assert!(matches!(
        p.verify(&idp.mint(Alg::ES256, &c).unwrap()).await,
        Err(OidcError::Claim(_))
    ));
}

#[tokio::test]
async fn a_role_needing_a_second_factor_is_not_granted_without_it() {
    let idp = idp().await;
    let p = providers(&staff_provider(idp.issuer())).await;
    // system_admin requires the two-factor acr; security_officer requires amr otp.
    for user in ["admin", "officer"] {
        let c = idp.claims_for(user, &["pwd"]).unwrap();
        assert_eq!(c["acr"], ACR_PASSWORD);
        let r = p.verify(&idp.mint(Alg::ES256, &c).unwrap()).await;
        assert!(matches!(r, Err(OidcError::Factor)), "{user}: {r:?}");
        let mut no_acr = idp.claims_for(user, &["pwd", "otp"]).unwrap();
        no_acr.as_object_mut().unwrap().remove("acr");
        let r = p.verify(&idp.mint(Alg::ES256, &no_acr).unwrap()).await;
        if user == "admin" {
            assert!(matches!(r, Err(OidcError::Factor)), "missing acr: {r:?}");
        } else {
            staff(r);
        }
    }
    // With two roles and one factor, the role that needs none remains.
    let mut c = idp.claims_for("admin", &["pwd"]).unwrap();
    c["groups"] = json!(["system_admin", "auditor"]);
    assert_eq!(
        staff(p.verify(&idp.mint(Alg::ES256, &c).unwrap()).await).roles,
        ["auditor"]
    );
}

#[tokio::test]
async fn an_unreachable_provider_is_retried_and_status_says_so() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let issuer = format!("http://{addr}");
    let p = providers(&staff_provider(&issuer)).await;
    let status = p.status();
    assert!(!status[0].keys_loaded && !p.ready());
    assert!(status[0].last_error.is_some());
    let task = tokio::spawn(p.clone().run());
    let idp = DemoIdp::start(Options {
        listen: addr,
        ..Options::default()
    })
    .await
    .unwrap();
    let mut waited = Duration::ZERO;
    while !p.ready() && waited < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        waited += Duration::from_millis(200);
    }
    task.abort();
    assert!(p.ready(), "{:?}", p.status());
    let claims = idp.claims_for("auditor", &["pwd"]).unwrap();
    staff(p.verify(&idp.mint(Alg::EdDSA, &claims).unwrap()).await);
}

#[tokio::test]
async fn discovery_naming_another_issuer_is_refused() {
    let idp = idp().await;
    // The same server, under an issuer spelled differently from what its discovery says.
    let p = providers(&staff_provider(&format!("{}/", idp.issuer()))).await;
    let status = p.status();
    assert!(!status[0].keys_loaded, "{status:?}");
    assert!(
        status[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("discovery names issuer"),
        "{status:?}"
    );
}

#[tokio::test]
async fn config_refuses_what_cannot_work() {
    // An https issuer found by discovery names its CA (tests/api/oidc_https.rs): given here so
    // that each case fails for its own reason.
    let staff_provider = |issuer: &str| staff_provider(issuer) + "ca_file = \"ca.pem\"\n";
    let subject_provider = |issuer: &str| {
        let text = subject_provider(issuer);
        if issuer.starts_with("https://") {
            text + "ca_file = \"ca.pem\"\n"
        } else {
            text
        }
    };
    let bad = [
        (
            "identity_providers[0].issuer",
            subject_provider("http://idp.example"),
        ),
        (
            "identity_providers[0].issuer",
            subject_provider("ftp://127.0.0.1"),
        ),
        (
            "identity_providers[0].role_map",
            staff_provider("https://idp.example").replace(ROLE_MAP, "{}"),
        ),
        (
            "identity_providers[0].role_map",
            staff_provider("https://idp.example").replace(ROLE_MAP, r#"{ g = "Not A Role" }"#),
        ),
        (
            "identity_providers[1].issuer",
            subject_provider("https://a.example") + &subject_provider("https://a.example"),
        ),
        (
            "identity_providers[0].require_acr",
            subject_provider("https://a.example") + "require_acr = { subject = [] }\n",
        ),
    ];
    for (key, text) in bad {
        let err = Config::parse(&text, "t")
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{key}: {err}");
    }
    // A pre-OIDC provider (issuer, audience, jwks_file) still parses and validates.
    config(
        "[[identity_providers]]\nissuer = \"test-idp\"\naudience = \"credgate\"\njwks_file = \"idp.jwks.json\"\n",
    );
    assert!(
        Config::parse(
            &(subject_provider("https://a.example") + "kind = \"robot\"\n"),
            "t"
        )
        .is_err()
    );
}

/// A provider configured as before OpenID Connect (a static Ed25519 `jwks_file`, subject
/// tokens from `credgate token subject`) keeps working, without any fetch.
#[tokio::test]
async fn a_static_jwks_file_provider_works_as_before() {
    use credgate_core::{
        auth::subject::{create_demo_provider, mint_demo_token},
        domain::{SubjectId, SubjectType},
    };
    let dir = tempfile::tempdir().unwrap();
    let (key, jwks) = (dir.path().join("idp.p8"), dir.path().join("idp.jwks.json"));
    create_demo_provider(&key, &jwks).unwrap();
    let text = format!(
        "[[identity_providers]]\nissuer = \"test-idp\"\naudience = \"credgate\"\njwks_file = \"{}\"\n\n\
         [demo_identity_provider]\nissuer = \"test-idp\"\naudience = \"credgate\"\nkey_file = \"{}\"\n",
        jwks.display(),
        key.display()
    );
    let c = config(&text);
    let p = Providers::from_config(&c).unwrap();
    assert!(p.ready(), "loaded at construction: {:?}", p.status());
    let id = SubjectId::parse(SubjectType::Legal, "91350100M000100Y43").unwrap();
    let token = mint_demo_token(c.demo_identity_provider.as_ref().unwrap(), &id, 60).unwrap();
    match p.verify(&token).await {
        Ok(Verified::Subject {
            id: got,
            subject_type,
            issuer,
        }) => {
            assert_eq!(got, id);
            assert_eq!(subject_type, SubjectType::Legal);
            assert_eq!(issuer, "test-idp");
        }
        other => panic!("{other:?}"),
    }
    // An unreadable file stops start-up rather than trusting nothing silently.
    std::fs::remove_file(&jwks).unwrap();
    assert!(Providers::from_config(&c).is_err());
}

/// A provider answering with documents over the caps (64 KiB discovery, 256 KiB JWKS), or
/// pointing its keys somewhere plain-HTTP-or-worse, is refused rather than read.
#[tokio::test]
async fn oversized_or_odd_documents_are_refused() {
    use axum::{Router, routing::get};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let (i1, i2, i3) = (issuer.clone(), issuer.clone(), issuer.clone());
    let app = Router::new()
        .route(
            "/big-jwks/.well-known/openid-configuration",
            get(move || async move {
                axum::Json(json!({"issuer": format!("{i1}/big-jwks"), "jwks_uri": format!("{i1}/jwks")}))
            }),
        )
        .route("/jwks", get(|| async { format!("{{\"keys\":[],\"pad\":\"{}\"}}", "x".repeat(300 * 1024)) }))
        .route(
            "/big-discovery/.well-known/openid-configuration",
            get(move || async move {
                let pad = "x".repeat(70 * 1024);
                axum::Json(json!({"issuer": format!("{i2}/big-discovery"), "jwks_uri": format!("{i2}/jwks"), "pad": pad}))
            }),
        )
        .route(
            "/file-keys/.well-known/openid-configuration",
            get(move || async move {
                axum::Json(json!({"issuer": format!("{i3}/file-keys"), "jwks_uri": "file:///etc/passwd"}))
            }),
        );
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    for (path, expected) in [
        ("big-jwks", "over"),
        ("big-discovery", "over"),
        ("file-keys", "jwks_uri"),
    ] {
        let p = providers(&staff_provider(&format!("{issuer}/{path}"))).await;
        let s = &p.status()[0];
        assert!(!s.keys_loaded, "{path}: {s:?}");
        assert!(
            s.last_error.as_deref().unwrap().contains(expected),
            "{path}: {s:?}"
        );
    }
    server.abort();
}
