//! OpenID Connect providers over HTTPS (issue 16 item 1 with item 4's TLS): discovery and the
//! JWKS are fetched from an `https://` issuer verified against the provider's `ca_file` only
//! (never the system's roots, and no switch turns verification off). The provider here is a
//! tiny TLS server on loopback (rcgen certificates) that publishes the demo provider's keys
//! under its own https issuer, so tokens the demo provider signs verify through it.

use credgate::{
    config::{Config, TlsConfig},
    demo_tls::Ca,
};
use credgate_core::auth::oidc::{Providers, Verified};
use credgate_demo_idp::{Alg, DemoIdp, Options};
use serde_json::{Value, json};

use crate::{
    edge_tls::{Pki, serve_tls},
    helpers::TestApp,
};

/// An https provider on loopback serving the demo provider's JWKS: `(issuer, demo provider)`.
/// Its discovery names the issuer from the `Host` it is asked under, as a provider behind one
/// name does.
async fn https_provider(pki: &Pki) -> (String, DemoIdp) {
    let idp = DemoIdp::start(Options::default()).await.unwrap();
    let plain = reqwest::Client::new();
    let discovery: Value = plain
        .get(format!("{}/.well-known/openid-configuration", idp.issuer()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwks: Value = plain
        .get(discovery["jwks_uri"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let router = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(|headers: http::HeaderMap| async move {
                let host = headers["host"].to_str().unwrap().to_string();
                axum::Json(json!({
                    "issuer": format!("https://{host}"),
                    "jwks_uri": format!("https://{host}/jwks"),
                }))
            }),
        )
        .route(
            "/jwks",
            axum::routing::get(move || {
                let jwks = jwks.clone();
                async move { axum::Json(jwks) }
            }),
        );
    let (cert_file, key_file, _) = pki.server("idp", 30);
    let addr = serve_tls(
        router,
        TlsConfig {
            cert_file,
            key_file,
            client_ca_file: None,
        },
    )
    .await;
    (format!("https://{addr}"), idp)
}

fn provider_config(issuer: &str, ca_file: Option<&std::path::Path>) -> String {
    let ca = ca_file.map_or(String::new(), |p| {
        format!("ca_file = \"{}\"\n", p.display())
    });
    format!("[[identity_providers]]\nissuer = \"{issuer}\"\naudience = \"credgate\"\n{ca}")
}

/// A subject token of the demo provider's `company1`, issued under `issuer`.
fn token(idp: &DemoIdp, issuer: &str) -> (String, String) {
    let mut claims = idp.claims_for("company1", &["pwd"]).unwrap();
    claims["iss"] = issuer.into();
    claims["aud"] = "credgate".into();
    let sub = claims["sub"].as_str().unwrap().to_string();
    (idp.mint(Alg::ES256, &claims).unwrap(), sub)
}

#[tokio::test]
async fn an_https_provider_is_discovered_through_its_ca_and_its_tokens_verify() {
    let pki = Pki::new();
    let (issuer, idp) = https_provider(&pki).await;
    let text = provider_config(&issuer, Some(&pki.ca_file()));
    let config = Config::parse(&text, "t").unwrap();
    config.validate().unwrap();
    let p = Providers::from_config(&config).unwrap();
    p.refresh_all().await;
    assert!(p.ready(), "{:?}", p.status());
    let (token, sub) = token(&idp, &issuer);
    match p.verify(&token).await {
        Ok(Verified::Subject {
            id, issuer: iss, ..
        }) => {
            assert_eq!(id.as_str(), sub);
            assert_eq!(iss, issuer);
        }
        other => panic!("{other:?}"),
    }
}

/// A provider whose certificate does not chain to its `ca_file` gets no keys: its tokens are
/// refused and `/readyz` names it.
#[tokio::test]
async fn an_https_provider_under_another_ca_is_refused_and_readyz_names_it() {
    let pki = Pki::new();
    let (issuer, idp) = https_provider(&pki).await;
    let wrong = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(wrong.path(), Ca::new("wrong").unwrap().pem()).unwrap();
    let text = provider_config(&issuer, Some(wrong.path()));
    let config = Config::parse(&text, "t").unwrap();
    let p = Providers::from_config(&config).unwrap();
    p.refresh_all().await;
    let status = p.status();
    assert!(!status[0].keys_loaded, "{status:?}");
    let error = status[0].last_error.clone().unwrap_or_default();
    assert!(error.to_lowercase().contains("certificate"), "{error}");
    assert!(p.verify(&token(&idp, &issuer).0).await.is_err());
    let providers = config.identity_providers.clone();
    let app = TestApp::spawn_with(|c| c.identity_providers.extend(providers)).await;
    let res = app
        .http
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    let body = res.text().await.unwrap();
    assert!(body.contains(&issuer), "{body}");
}

/// An https issuer fetched by discovery names its CA; a CA for an http issuer or a static
/// JWKS would go unused and is refused too; a CA file that holds no certificate stops the start.
#[tokio::test]
async fn an_https_provider_needs_a_ca_file_and_only_it_takes_one() {
    let err = |text: &str| {
        Config::parse(text, "t")
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string()
    };
    let e = err(&provider_config("https://idp.example", None));
    assert!(e.contains("ca_file"), "{e}");
    let pki = Pki::new();
    let e = err(&provider_config("http://127.0.0.1:9", Some(&pki.ca_file())));
    assert!(e.contains("ca_file"), "{e}");
    let empty = tempfile::NamedTempFile::new().unwrap();
    let config = Config::parse(
        &provider_config("https://idp.example", Some(empty.path())),
        "t",
    )
    .unwrap();
    config.validate().unwrap();
    let e = Providers::from_config(&config)
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("ca_file"), "{e}");
}
