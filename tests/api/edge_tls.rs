//! The edge over real TLS on loopback: the HTTPS listener with a test CA, mutual TLS and
//! certificate-bound tokens, certificate reload on SIGHUP (a real process), trusted proxies,
//! the metrics listener, the discovery documents, an https store upstream, and an OAuth
//! client's view (metadata, token endpoint, JWKS) written with independent client code.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use credgate::{
    config::{Config, TlsConfig},
    demo_tls::{Ca, Issued},
};
use serde_json::Value;

use crate::helpers::{
    self, FakeStore, GatewayProcess, TestApp, assert_problem, purpose_of, serially,
};

/// A test CA with the files of one server certificate for 127.0.0.1.
pub(crate) struct Pki {
    pub(crate) ca: Ca,
    dir: tempfile::TempDir,
}

impl Pki {
    pub(crate) fn new() -> Self {
        Self {
            ca: Ca::new("credgate test CA").unwrap(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub(crate) fn ca_file(&self) -> PathBuf {
        let p = self.dir.path().join("ca.pem");
        std::fs::write(&p, self.ca.pem()).unwrap();
        p
    }

    /// Server certificate files valid for `days` (negative: expired).
    pub(crate) fn server(&self, name: &str, days: i64) -> (PathBuf, PathBuf, Issued) {
        let issued = self.ca.server(&["127.0.0.1", "localhost"], days).unwrap();
        let cert = self.dir.path().join(format!("{name}.pem"));
        let key = self.dir.path().join(format!("{name}.key"));
        std::fs::write(&cert, &issued.cert_pem).unwrap();
        std::fs::write(&key, &issued.key_pem).unwrap();
        (cert, key, issued)
    }

    fn tls(&self, days: i64, mutual: bool) -> TlsConfig {
        let (cert_file, key_file, _) = self.server("server", days);
        TlsConfig {
            cert_file,
            key_file,
            client_ca_file: mutual.then(|| self.ca_file()),
        }
    }
}

/// An HTTPS client trusting only `ca` (no system roots), with an optional client certificate.
fn https(ca: &Ca, identity: Option<&Issued>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap());
    if let Some(id) = identity {
        let pem = format!("{}{}", id.cert_pem, id.key_pem);
        b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    b.build().unwrap()
}

async fn spawn_tls(pki: &Pki, mutual: bool) -> (TestApp, String) {
    let tls = pki.tls(30, mutual);
    let app = TestApp::spawn_with(|c| c.tls = Some(tls)).await;
    let url = format!("https://{}", app.addr);
    (app, url)
}

async fn token_over(client: &reqwest::Client, url: &str, id: &str, secret: &str) -> String {
    let res = client
        .post(format!("{url}/oauth/token"))
        .basic_auth(id, Some(secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string()
}

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

#[tokio::test]
async fn the_listener_speaks_https_only_and_clients_verify_it() {
    let pki = Pki::new();
    let (app, url) = spawn_tls(&pki, false).await;
    let res = https(&pki.ca, None)
        .get(format!("{url}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // No plaintext fallback on the TLS port.
    let plain = app.http.get(format!("{}/healthz", app.url)).send().await;
    assert!(plain.is_err(), "plaintext got an answer: {plain:?}");
    // A client trusting another CA refuses the gateway's certificate.
    let stranger = Ca::new("someone else").unwrap();
    assert!(
        https(&stranger, None)
            .get(format!("{url}/healthz"))
            .send()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn an_expired_server_certificate_is_refused_by_clients() {
    let pki = Pki::new();
    let tls = pki.tls(-1, false);
    let app = TestApp::spawn_with(|c| c.tls = Some(tls)).await;
    let err = https(&pki.ca, None)
        .get(format!("https://{}/healthz", app.addr))
        .send()
        .await
        .unwrap_err();
    assert!(
        format!("{err:?}").to_lowercase().contains("expired"),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_bad_tls_config_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let mut config =
        Config::parse("listen = \"127.0.0.1:0\"\nmetrics_listen = \"off\"\n", "t").unwrap();
    config.storage_url = format!("sqlite://{}/db", dir.path().display());
    config.tls = Some(TlsConfig {
        cert_file: junk.clone(),
        key_file: junk,
        client_ca_file: None,
    });
    let err = credgate::web::App::build(config)
        .await
        .err()
        .expect("refused");
    assert!(format!("{err:#}").contains("tls.cert_file"), "{err:#}");
}

/// An OAuth client library's view: one metadata URL over HTTPS, the token endpoint it names,
/// and the token verified from the JWKS it names, with jsonwebtoken, not credgate's code.
#[tokio::test]
async fn an_oauth_client_finds_the_token_endpoint_from_metadata_over_https() {
    let pki = Pki::new();
    let (app, url) = spawn_tls(&pki, false).await;
    let (id, secret) = app.add_client("regulator").await;
    let client = https(&pki.ca, None);
    let meta: Value = client
        .get(format!("{url}/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // The issuer is the setting, as in the tokens; the endpoints follow this connection.
    assert_eq!(meta["issuer"], app.state.config.auth.issuer.as_str());
    assert_eq!(
        meta["grant_types_supported"],
        serde_json::json!(["client_credentials"])
    );
    let methods = meta["token_endpoint_auth_methods_supported"]
        .as_array()
        .unwrap();
    assert!(methods.iter().any(|m| m == "client_secret_basic"));
    assert!(
        meta.get("tls_client_certificate_bound_access_tokens")
            .is_none()
    );
    let endpoint = meta["token_endpoint"].as_str().unwrap();
    assert!(endpoint.starts_with("https://"), "{endpoint}");
    let res = client
        .post(endpoint)
        .basic_auth(&id, Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let token = res.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let jwks: jsonwebtoken::jwk::JwkSet = client
        .get(meta["jwks_uri"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
    let jwk = jwks.find(&kid).expect("the token's key is in the JWKS");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_audience(&[app.state.config.auth.audience.as_str()]);
    let data = jsonwebtoken::decode::<Value>(
        &token,
        &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(),
        &validation,
    )
    .unwrap();
    assert_eq!(data.claims["sub"], id.as_str());
    assert_eq!(data.claims["iss"], meta["issuer"]);
}

/// RFC 8705: a token issued over a client-certificate connection carries the certificate's
/// thumbprint and works only over a connection presenting that certificate.
#[tokio::test]
async fn a_bound_token_replayed_without_its_certificate_is_401() {
    let pki = Pki::new();
    let (app, url) = spawn_tls(&pki, true).await;
    let cert = pki.ca.client("demo-bank").unwrap();
    let holder = https(&pki.ca, Some(&cert));
    let (id, secret) = app.add_client("regulator").await;
    let token = token_over(&holder, &url, &id, &secret).await;
    let expected = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, &cert.der));
    assert_eq!(claims(&token)["cnf"]["x5t#S256"], expected.as_str());

    let uscc = app.sample().entities[0]["uscc"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("{url}/v1/stores/fake/entities/{uscc}");
    let call = |c: &reqwest::Client| {
        c.get(&path)
            .bearer_auth(&token)
            .header("X-Purpose", purpose_of(&token))
            .send()
    };
    assert_eq!(call(&holder).await.unwrap().status(), 200);
    // Stolen: replayed without a certificate, or with another certificate of the same CA.
    let thief = https(&pki.ca, None);
    assert_problem(call(&thief).await.unwrap(), 401).await;
    let other = https(&pki.ca, Some(&pki.ca.client("thief").unwrap()));
    assert_problem(call(&other).await.unwrap(), 401).await;
    // Without a certificate, tokens are unbound and work as before.
    let plain = token_over(&thief, &url, &id, &secret).await;
    assert!(claims(&plain).get("cnf").is_none());
    let meta: Value = thief
        .get(format!("{url}/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["tls_client_certificate_bound_access_tokens"], true);
}

/// The leaf certificate a fresh TLS handshake with `addr` gets.
async fn served_certificate(ca: &Ca, addr: SocketAddr) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let ca_der = CertificateDer::from_pem_slice(ca.pem().as_bytes()).unwrap();
    roots.add(ca_der).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// A real process: SIGHUP swaps the certificate for new handshakes; a broken new file keeps
/// the old one and the process serving.
#[tokio::test]
async fn sighup_reloads_the_certificate_and_a_bad_file_keeps_the_old_one() {
    serially().await;
    let sample = helpers::sample_store_with(10).await;
    let fake = helpers::serve(helpers::fake_router(FakeStore::default())).await;
    let gw = GatewayProcess::prepare(sample, fake);
    let pki = Pki::new();
    let (cert, key, first) = pki.server("live", 30);
    let mut text = std::fs::read_to_string(&gw.cfg).unwrap();
    text = text.replacen(
        "metrics_listen = \"127.0.0.1:0\"\n",
        "metrics_listen = \"off\"\n",
        1,
    );
    text.push_str(&format!(
        "\n[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        cert.display(),
        key.display()
    ));
    std::fs::write(&gw.cfg, text).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_credgate"))
        .args(["serve", "--config", &gw.cfg.display().to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let addr = tokio::time::timeout(Duration::from_secs(60), first_listening_line(stdout))
        .await
        .expect("the gateway reported its port");
    assert_eq!(served_certificate(&pki.ca, addr).await, first.der);

    let second = pki.ca.server(&["127.0.0.1"], 30).unwrap();
    replace(&cert, &second.cert_pem);
    replace(&key, &second.key_pem);
    hup(&child);
    wait_for_cert(&pki.ca, addr, &second.der).await;

    replace(&cert, "-----BEGIN CERTIFICATE-----\ngarbage\n");
    hup(&child);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(served_certificate(&pki.ca, addr).await, second.der);
    assert!(
        child.try_wait().unwrap().is_none(),
        "the gateway kept running"
    );
    child.kill().await.unwrap();
}

async fn first_listening_line(stdout: tokio::process::ChildStdout) -> SocketAddr {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    while let Some(line) = lines.next_line().await.unwrap() {
        if let Some(a) = line.strip_prefix("listening on ") {
            return a.trim().parse().unwrap();
        }
    }
    panic!("the gateway exited before listening");
}

fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn hup(child: &tokio::process::Child) {
    let pid = child.id().unwrap() as i32;
    // SAFETY: kill(2) with a pid we spawned and still hold.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
}

async fn wait_for_cert(ca: &Ca, addr: SocketAddr, want: &[u8]) {
    for _ in 0..100 {
        if served_certificate(ca, addr).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the new certificate was never served");
}

/// Behind a trusted proxy each forwarded client has its own bucket and its own address in
/// the audit record; from an untrusted peer the same headers change nothing.
#[tokio::test]
async fn trusted_proxies_name_the_client_and_untrusted_peers_cannot() {
    let tweak = |c: &mut Config| c.rate_limits.receipts_per_address_per_minute = 1;
    let behind = TestApp::spawn_with(|c| {
        tweak(c);
        c.trusted_proxies = vec!["127.0.0.0/8".into()];
    })
    .await;
    let receipt = |app: &TestApp, xff: &str| {
        app.http
            .get(format!("{}/public/reports/nothing-here", app.url))
            .header("X-Forwarded-For", xff)
            .send()
    };
    assert_ne!(
        receipt(&behind, "198.51.100.1").await.unwrap().status(),
        429
    );
    assert_eq!(
        receipt(&behind, "198.51.100.1").await.unwrap().status(),
        429
    );
    assert_ne!(
        receipt(&behind, "198.51.100.2").await.unwrap().status(),
        429
    );
    // A client that wrote its own header lands in its real (forwarded) bucket.
    assert_eq!(
        receipt(&behind, "203.0.113.5, 198.51.100.2")
            .await
            .unwrap()
            .status(),
        429
    );

    let res = behind
        .http
        .post(format!("{}/oauth/token", behind.url))
        .header("X-Forwarded-For", "1.1.1.1, 2001:db8::42")
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "x"),
            ("client_secret", "y"),
        ])
        .send()
        .await
        .unwrap();
    let audit_id = res.headers()["x-audit-id"].to_str().unwrap().to_string();
    assert_eq!(behind.record(&audit_id).await.client_addr, "2001:db8::42");

    let direct = TestApp::spawn_with(tweak).await;
    assert_ne!(
        receipt(&direct, "198.51.100.1").await.unwrap().status(),
        429
    );
    assert_eq!(
        receipt(&direct, "198.51.100.9").await.unwrap().status(),
        429,
        "a spoofed X-Forwarded-For from an untrusted peer opened a new bucket"
    );
    let res = direct
        .http
        .post(format!("{}/oauth/token", direct.url))
        .header("Forwarded", "for=\"[2001:db8::1]:80\"")
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "x"),
            ("client_secret", "y"),
        ])
        .send()
        .await
        .unwrap();
    let audit_id = res.headers()["x-audit-id"].to_str().unwrap().to_string();
    assert_eq!(direct.record(&audit_id).await.client_addr, "127.0.0.1");
}

#[tokio::test]
async fn metrics_live_on_their_own_listener_only() {
    let app = TestApp::spawn().await;
    let main = app
        .http
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .unwrap();
    assert_problem(main, 404).await;
    assert!(
        app.metrics_url.starts_with("http://127.0.0.1:"),
        "{}",
        app.metrics_url
    );
    let res = app
        .http
        .get(format!("{}/metrics", app.metrics_url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("credgate_"));
    let other = app
        .http
        .get(format!("{}/healthz", app.metrics_url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        other.status(),
        404,
        "the metrics listener serves nothing else"
    );
}

/// Every row of the route table is an operation of the OpenAPI document, with its security and
/// problem responses; the metadata names this gateway's endpoints.
#[tokio::test]
async fn openapi_describes_every_route_and_metadata_is_served() {
    let app = TestApp::spawn().await;
    let doc: Value = app
        .http
        .get(format!("{}/openapi.json", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut missing = Vec::new();
    for row in credgate::web::route_table() {
        let path = row.path.replace("{*", "{");
        let method = row
            .method
            .as_ref()
            .map_or("get", |m| m.as_str())
            .to_ascii_lowercase();
        let op = &doc["paths"][&path][&method];
        if !op.is_object() || !op["responses"]["default"].is_object() && path != "/oauth/token" {
            missing.push(format!("{method} {path}"));
        }
    }
    assert!(
        missing.is_empty(),
        "routes missing from /openapi.json: {missing:?}"
    );
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(
        schemes["oauth2"]["flows"]["clientCredentials"]["tokenUrl"],
        "/oauth/token"
    );
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert!(
        doc["paths"]["/v1/stores/{store}/{path}"]["get"]["parameters"]
            .to_string()
            .contains("XPurpose")
    );
    assert!(doc["paths"].get("/metrics").is_none());
    // A 429 says when to retry and which policy refused it, on the data path and at a door.
    for (path, method) in [
        ("/v1/stores/{store}/{path}", "get"),
        ("/subject/me", "get"),
        ("/public/stores/{store}/{path}", "get"),
    ] {
        let headers = &doc["paths"][path][method]["responses"]["429"]["headers"];
        for name in ["Retry-After", "RateLimit", "RateLimit-Policy"] {
            assert!(headers[name].is_object(), "{method} {path} 429: {name}");
        }
    }

    let meta: Value = app
        .http
        .get(format!(
            "{}/.well-known/oauth-authorization-server",
            app.url
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["token_endpoint"], format!("{}/oauth/token", app.url));
    assert_eq!(
        meta["jwks_uri"],
        format!("{}/.well-known/jwks.json", app.url)
    );
    // A Host header that is not a host is refused, never echoed into the URLs.
    let res = app
        .http
        .get(format!(
            "{}/.well-known/oauth-authorization-server",
            app.url
        ))
        .header("Host", "evil.example/\"><script>")
        .send()
        .await
        .unwrap();
    assert_problem(res, 400).await;
}

/// An `https://` store verified against its configured CA; a store whose certificate does not
/// chain to that CA is a 502, and nothing is released.
#[tokio::test]
async fn an_https_store_is_verified_against_its_ca() {
    let pki = Pki::new();
    let (cert, key, _) = pki.server("store", 30);
    let store_addr = serve_tls(
        helpers::fake_router(FakeStore::default()),
        TlsConfig {
            cert_file: cert,
            key_file: key,
            client_ca_file: None,
        },
    )
    .await;
    let ca_file = pki.ca_file();
    let wrong = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(wrong.path(), Ca::new("wrong").unwrap().pem()).unwrap();
    for (ca, status) in [(ca_file, 200), (wrong.path().to_path_buf(), 502)] {
        let app = TestApp::spawn_with(|c| {
            let fake = c.stores.iter_mut().find(|s| s.name == "fake").unwrap();
            fake.upstream = format!("https://{store_addr}");
            fake.ca_file = Some(ca);
        })
        .await;
        let (_, token) = app.token("regulator").await;
        let uscc = app.sample().entities[0]["uscc"]
            .as_str()
            .unwrap()
            .to_string();
        let res = app
            .data(&token, &format!("/v1/stores/fake/entities/{uscc}"))
            .await;
        assert_eq!(res.status(), status);
    }
}

#[test]
fn an_https_store_without_a_ca_file_is_refused() {
    let text = "[[stores]]\nname = \"s\"\nupstream = \"https://127.0.0.1:1\"\n";
    let err = Config::parse(text, "t").unwrap().validate().unwrap_err();
    assert!(err.to_string().contains("ca_file"), "{err}");
}

/// Serves `router` over TLS with the given files, on a loopback port.
pub(crate) async fn serve_tls(router: axum::Router, files: TlsConfig) -> SocketAddr {
    use tower::ServiceExt;
    let config = credgate::web::edge::TlsHolder::load(files)
        .unwrap()
        .current();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, router) = (acceptor.clone(), router.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        router.clone().oneshot(req.map(axum::body::Body::new))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

/// `credgate demo --tls`: HTTPS with the CA it wrote to `DIR/ca.pem`, named in `demo.json`,
/// and an OAuth client obtains a token from its metadata with nothing but that CA.
#[tokio::test]
async fn the_demo_serves_https_with_the_ca_it_writes() {
    serially().await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_credgate"))
        .current_dir(dir.path())
        .args(["demo", "--tls", "--dir", "demo", "--listen", "127.0.0.1:0"])
        // Every port free-chosen: a demo already running on this host holds the defaults.
        .args([
            "--store-listen",
            "127.0.0.1:0",
            "--idp-listen",
            "127.0.0.1:0",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let demo_json = dir.path().join("demo/demo.json");
    let mut demo = None;
    for _ in 0..600 {
        if let Ok(text) = std::fs::read_to_string(&demo_json)
            && let Ok(v) = serde_json::from_str::<Value>(&text)
        {
            demo = Some(v);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let demo = demo.expect("the demo wrote demo.json");
    let url = demo["gateway_url"].as_str().unwrap().to_string();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let ca_file = demo["ca_file"].as_str().unwrap();
    assert_eq!(
        Path::new(ca_file),
        dir.path().join("demo/ca.pem").canonicalize().unwrap()
    );
    let pem = std::fs::read(ca_file).unwrap();
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let meta_url = format!("{url}/.well-known/oauth-authorization-server");
    let mut meta = None;
    for _ in 0..300 {
        if let Ok(res) = client.get(&meta_url).send().await {
            meta = Some(res.json::<Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let meta = meta.expect("the demo answered over HTTPS");
    let regulator = demo["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["role"] == "regulator")
        .unwrap();
    let res = client
        .post(meta["token_endpoint"].as_str().unwrap())
        .basic_auth(
            regulator["client_id"].as_str().unwrap(),
            regulator["client_secret"].as_str(),
        )
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // The demo's issuer is its public URL: metadata and token agree with it.
    assert_eq!(meta["issuer"], url.as_str());
    let token = res.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(claims(&token)["iss"], url.as_str());
    child.kill().await.unwrap();
}

// ---- RFC 8705 section 2.1 tls_client_auth (issue 16 items 4 and 7) ----

/// Registers a `tls_client_auth` client for `cert` and returns its id.
async fn add_tls_client(app: &TestApp, role: &str, cert: &Issued) -> String {
    let thumbprint = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, &cert.der));
    credgate::cli::add_tls_client(
        &app.state.db,
        "Cert bank",
        "cert-bank",
        role,
        None,
        &thumbprint,
    )
    .await
    .unwrap()
    .id
}

/// A token request with `form` (grant_type added) and, if given, HTTP Basic credentials.
async fn token_request(
    client: &reqwest::Client,
    url: &str,
    form: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> (u16, Value) {
    let mut pairs = vec![("grant_type", "client_credentials")];
    pairs.extend_from_slice(form);
    let mut req = client.post(format!("{url}/oauth/token")).form(&pairs);
    if let Some((id, secret)) = basic {
        req = req.basic_auth(id, Some(secret));
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// The certificate alone gets the registered client a token, bound to that certificate; every
/// other combination of client, certificate and secret is refused as RFC 6749 section 5.2 says.
#[tokio::test]
async fn a_tls_client_gets_a_bound_token_with_its_certificate_alone_and_nothing_else_does() {
    let pki = Pki::new();
    let (app, url) = spawn_tls(&pki, true).await;
    let cert = pki.ca.client("cert-bank").unwrap();
    let id = add_tls_client(&app, "regulator", &cert).await;
    let holder = https(&pki.ca, Some(&cert));

    let (status, body) = token_request(&holder, &url, &[("client_id", &id)], None).await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap().to_string();
    let expected = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, &cert.der));
    assert_eq!(claims(&token)["cnf"]["x5t#S256"], expected.as_str());
    assert_eq!(claims(&token)["sub"], id.as_str());
    let uscc = app.sample().entities[0]["uscc"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("{url}/v1/stores/fake/entities/{uscc}");
    let call = |c: &reqwest::Client| {
        c.get(&path)
            .bearer_auth(&token)
            .header("X-Purpose", purpose_of(&token))
            .send()
    };
    assert_eq!(call(&holder).await.unwrap().status(), 200);
    let bare = https(&pki.ca, None);
    assert_problem(call(&bare).await.unwrap(), 401).await;

    let refused = |(status, body): (u16, Value), code: &str, why: &str| {
        assert_eq!(
            status,
            if code == "invalid_request" { 400 } else { 401 },
            "{why}: {body}"
        );
        assert_eq!(body["error"], code, "{why}: {body}");
        assert!(body.get("access_token").is_none(), "{why}: {body}");
    };
    let only_id = [("client_id", id.as_str())];
    // Another certificate of the same CA, and no certificate at all.
    let other = https(&pki.ca, Some(&pki.ca.client("cert-bank").unwrap()));
    refused(
        token_request(&other, &url, &only_id, None).await,
        "invalid_client",
        "other cert",
    );
    refused(
        token_request(&bare, &url, &only_id, None).await,
        "invalid_client",
        "no cert",
    );
    // The tls client sending a secret, with its own certificate: a secret is not its method.
    let with_secret = [
        ("client_id", id.as_str()),
        ("client_secret", "!tls_client_auth"),
    ];
    refused(
        token_request(&holder, &url, &with_secret, None).await,
        "invalid_client",
        "post",
    );
    let basic = Some((id.as_str(), ""));
    refused(
        token_request(&holder, &url, &[], basic).await,
        "invalid_client",
        "basic",
    );
    refused(
        token_request(&bare, &url, &with_secret, None).await,
        "invalid_client",
        "no cert",
    );
    // Both methods at once: Basic and a client_id in the form.
    refused(
        token_request(&holder, &url, &only_id, Some((id.as_str(), "x"))).await,
        "invalid_request",
        "two methods",
    );
    // A client id that is not of credgate's form, with a good certificate.
    let odd = [("client_id", "cg_nobody")];
    refused(
        token_request(&holder, &url, &odd, None).await,
        "invalid_client",
        "malformed id",
    );

    // Disabled: its certificate gets nothing.
    credgate::storage::clients::disable(&app.state.db, &id)
        .await
        .unwrap();
    refused(
        token_request(&holder, &url, &only_id, None).await,
        "invalid_client",
        "disabled",
    );

    // Every attempt is recorded under the claimed id; the first names the org; no record holds
    // what was sent as a secret.
    let all = credgate::audit::store::page_after(&app.state.db, 0, 100_000)
        .await
        .unwrap();
    let tokens: Vec<_> = all.iter().filter(|r| r.path == "/oauth/token").collect();
    let (first, last) = (tokens.first().unwrap(), tokens.last().unwrap());
    assert_eq!(
        (first.status, first.client_id.as_deref()),
        (200, Some(id.as_str()))
    );
    assert_eq!(first.org.as_deref(), Some("cert-bank"));
    assert_eq!(
        (last.status, last.rule.as_deref()),
        (401, Some("client-disabled"))
    );
    let text = format!("{tokens:?}");
    assert!(
        !text.contains("!tls_client_auth"),
        "a sent secret reached the log"
    );
}

/// A client registered with a secret gets nothing for a certificate alone (even one of the CA),
/// and still gets a bound token with its secret over the same connection.
#[tokio::test]
async fn a_secret_client_presenting_a_certificate_without_its_secret_is_refused() {
    let pki = Pki::new();
    let (app, url) = spawn_tls(&pki, true).await;
    let (id, secret) = app.add_client("regulator").await;
    let cert = pki.ca.client("demo-bank").unwrap();
    let holder = https(&pki.ca, Some(&cert));
    let (status, body) = token_request(&holder, &url, &[("client_id", &id)], None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client")),
        "{body}"
    );
    // Registering another client for that certificate does not make it this client's.
    add_tls_client(&app, "regulator", &cert).await;
    let (status, body) = token_request(&holder, &url, &[("client_id", &id)], None).await;
    assert_eq!(status, 401, "{body}");
    let token = token_over(&holder, &url, &id, &secret).await;
    assert!(claims(&token)["cnf"]["x5t#S256"].is_string());
    // One certificate names at most one client.
    let again = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, &cert.der));
    assert!(
        credgate::cli::add_tls_client(&app.state.db, "B", "b", "regulator", None, &again)
            .await
            .is_err()
    );
}

/// Without mutual TLS, the metadata does not offer tls_client_auth and a tls client has no way
/// in; with it, the metadata offers it.
#[tokio::test]
async fn the_metadata_offers_tls_client_auth_only_where_mutual_tls_is_on() {
    let pki = Pki::new();
    for mutual in [false, true] {
        let (app, url) = spawn_tls(&pki, mutual).await;
        let meta: Value = https(&pki.ca, None)
            .get(format!("{url}/.well-known/oauth-authorization-server"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let methods = meta["token_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap();
        assert_eq!(
            methods.iter().any(|m| m == "tls_client_auth"),
            mutual,
            "{meta}"
        );
        if !mutual {
            let cert = pki.ca.client("cert-bank").unwrap();
            let id = add_tls_client(&app, "regulator", &cert).await;
            let c = https(&pki.ca, Some(&cert));
            let (status, _) = token_request(&c, &url, &[("client_id", &id)], None).await;
            assert_eq!(status, 401);
        }
    }
}
