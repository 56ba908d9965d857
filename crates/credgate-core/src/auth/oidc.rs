//! OpenID Connect providers: the people behind a token, from the issuers the config trusts.
//!
//! Every provider is found by discovery (or, without it, a static `jwks_file`); its keys are
//! cached and fetched again on a timer, on an unknown `kid` (at most once per
//! `unknown_kid_refresh_secs`, so made-up kids cannot turn credgate into a flood against the
//! provider) and, while a provider has never answered, with backoff in the background.
//!
//! A key is used only for the one algorithm its JWKS entry implies: RSA keys for RS256, P-256
//! keys for ES256, Ed25519 keys for EdDSA, and the entry's `alg`, when present, must say the
//! same. `none` and HMAC are never accepted: a token can therefore never choose how it is
//! checked (the classic "HS256 with the public key as secret" confusion fails here).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use jsonwebtoken::{
    Algorithm, DecodingKey, Validation,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse},
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{
    config::{Config, IdentityProviderConfig, IdentityProviderKind},
    domain::{SubjectId, SubjectType},
};

/// The only algorithms a provider's token may use.
pub const ALGORITHMS: [Algorithm; 3] = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];
/// Caps on what a provider may send: discovery documents and JWKS are small; anything larger
/// is a misconfiguration or an attack, refused rather than truncated.
const MAX_DISCOVERY_BYTES: usize = 64 * 1024;
const MAX_JWKS_BYTES: usize = 256 * 1024;
const MAX_KEYS: usize = 32;
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Claims that end up in audit records and logs: short, printable text only.
const MAX_CLAIM_CHARS: usize = 256;
/// RSA keys below this are refused even if a provider publishes them.
const MIN_RSA_MODULUS_BYTES: usize = 256;
const MAX_LEEWAY_SECS: u64 = 60;
/// Background retries of a provider that never answered: from 1 s, doubling, up to this.
const MAX_RETRY: Duration = Duration::from_secs(30);

/// Who a valid token names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Verified {
    Subject {
        id: SubjectId,
        subject_type: SubjectType,
        issuer: String,
    },
    Staff(StaffPerson),
}

/// A person working the gateway, as their provider asserts them: what audit records name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StaffPerson {
    pub id: String,
    pub name: String,
    pub org: String,
    /// credgate roles (after `role_map` and the factor requirements), sorted, never empty.
    pub roles: Vec<String>,
    pub acr: Option<String>,
    pub amr: Vec<String>,
    pub issuer: String,
}

/// Why a token was refused. Every variant is a 401 to the caller; the text is for logs.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("malformed token")]
    Malformed,
    #[error("algorithm not accepted")]
    Algorithm,
    #[error("issuer is not a configured identity provider")]
    UnknownIssuer,
    #[error("no key with this kid")]
    UnknownKey,
    #[error("the key's type or declared algorithm disagrees with the token header")]
    KeyMismatch,
    #[error("invalid token: {0:?}")]
    Invalid(jsonwebtoken::errors::ErrorKind),
    #[error("claim `{0}` missing or not acceptable")]
    Claim(String),
    #[error("no credgate role for this person")]
    NoRoles,
    #[error("the required second factor (acr/amr) is missing")]
    Factor,
    /// Separation of duties (DESIGN.md, level-3 systems): whoever administers does not audit.
    #[error("this person would both administer and audit")]
    ConflictingDuties,
}

/// Roles that administer the system, and roles that audit it: no session holds one of each.
const ADMINISTERS: &[&str] = &["system_admin"];
const AUDITS: &[&str] = &["auditor", "security_officer"];

/// Building the registry: a static `jwks_file` that cannot be read is an operator error that
/// must stop start-up; an unreachable provider is not (it is retried).
#[derive(Debug, thiserror::Error)]
#[error("identity provider `{issuer}`: {message}")]
pub struct ProviderError {
    pub issuer: String,
    pub message: String,
}

/// One provider's state for `/readyz` and operators.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderStatus {
    pub issuer: String,
    pub kind: &'static str,
    pub keys_loaded: bool,
    pub keys: usize,
    pub last_error: Option<String>,
}

/// How documents are fetched: [`HyperFetch`], or a test's own.
pub trait Fetch: Send + Sync {
    /// The body of a 200 answer to `GET url`, at most `max_bytes` long.
    fn get<'a>(&'a self, url: &'a str, max_bytes: usize) -> BoxFuture<'a, Result<Bytes, String>>;
}

/// [`Fetch`] over hyper-util's client, with a deadline on the whole exchange. It never follows
/// redirects (hyper does not), so a provider cannot send credgate elsewhere. Plain HTTP always
/// (loopback issuers only, by config); `https://` only when built with the provider's CA, the
/// only one its certificate may chain to (TLS 1.3 or 1.2, no system roots).
pub struct HyperFetch {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
    tls: bool,
}

impl HyperFetch {
    /// Plain HTTP only.
    pub fn new(timeout: Duration) -> Self {
        Self::build(timeout, rustls::RootCertStore::empty(), false)
            .expect("a TLS config without roots builds")
    }

    /// HTTP and HTTPS, HTTPS verified against the PEM CA certificates in `ca_file` alone.
    pub fn with_ca(timeout: Duration, ca_file: &std::path::Path) -> Result<Self, String> {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let what = |e: &dyn std::fmt::Display| format!("ca_file {}: {e}", ca_file.display());
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| what(&e))? {
            let cert = cert.map_err(|e| what(&e))?;
            roots.add(cert).map_err(|e| what(&e))?;
        }
        if roots.is_empty() {
            return Err(what(&"no CA certificate in it"));
        }
        Self::build(timeout, roots, true)
    }

    fn build(timeout: Duration, roots: rustls::RootCertStore, tls: bool) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(timeout));
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout,
            tls,
        })
    }

    /// `url` if this fetcher may call it: plain HTTP, or HTTPS when built with a CA.
    fn reachable(&self, url: &str) -> Result<http::Uri, String> {
        let uri: http::Uri = url.parse().map_err(|_| format!("`{url}` is not a URL"))?;
        match uri.scheme_str() {
            Some("http") => Ok(uri),
            Some("https") if self.tls => Ok(uri),
            Some("https") => Err(format!("`{url}`: https needs the provider's ca_file")),
            _ => Err(format!("`{url}`: not an http(s) URL")),
        }
    }

    /// `POST url` with a form body (a relying party's token request, RFC 6749 section 4.1.3):
    /// the status and a body of at most `max_bytes`, whatever the status, under the same
    /// scheme rules, CA and deadline as [`Fetch::get`]. Public so that the pages' sign-in
    /// speaks to providers through this one client, not a second TLS stack.
    pub async fn post_form(
        &self,
        url: &str,
        form: String,
        max_bytes: usize,
    ) -> Result<(http::StatusCode, Bytes), String> {
        let uri = self.reachable(url)?;
        let req = http::Request::post(uri)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(form)))
            .map_err(|e| e.to_string())?;
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| chain(&e))?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), max_bytes).collect().await;
            body.map(|b| (status, b.to_bytes()))
                .map_err(|_| format!("`{url}`: body unreadable or over {max_bytes} bytes"))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| format!("`{url}` did not answer within {:?}", self.timeout))?
    }
}

impl Fetch for HyperFetch {
    fn get<'a>(&'a self, url: &'a str, max_bytes: usize) -> BoxFuture<'a, Result<Bytes, String>> {
        Box::pin(async move {
            let uri = self.reachable(url)?;
            let req = http::Request::get(uri)
                .header(http::header::ACCEPT, "application/json")
                .body(Full::new(Bytes::new()))
                .map_err(|e| e.to_string())?;
            let exchange = async {
                let resp = self.client.request(req).await.map_err(|e| chain(&e))?;
                if resp.status() != http::StatusCode::OK {
                    return Err(format!("`{url}` answered {}", resp.status()));
                }
                let body = Limited::new(resp.into_body(), max_bytes).collect().await;
                body.map(|b| b.to_bytes())
                    .map_err(|_| format!("`{url}`: body unreadable or over {max_bytes} bytes"))
            };
            tokio::time::timeout(self.timeout, exchange)
                .await
                .map_err(|_| format!("`{url}` did not answer within {:?}", self.timeout))?
        })
    }
}

/// An error with its causes, so that "client error (Connect)" says which certificate failed.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// A verification key and the one algorithm it may be used with.
struct Key {
    alg: Algorithm,
    key: DecodingKey,
}

#[derive(Default)]
struct FetchState {
    loaded: bool,
    last_attempt: Option<Instant>,
    last_success: Option<Instant>,
    last_forced: Option<Instant>,
    failures: u32,
    error: Option<String>,
}

struct Provider {
    config: IdentityProviderConfig,
    /// This provider's own fetcher (an https issuer's, with its CA), else the registry's.
    fetch: Option<Arc<dyn Fetch>>,
    keys: RwLock<Arc<HashMap<String, Key>>>,
    state: Mutex<FetchState>,
    /// One fetch at a time per provider: concurrent unknown kids wait for the same answer.
    fetching: tokio::sync::Mutex<()>,
}

/// The configured providers and their cached keys. Cheap to share (`Arc`); rebuild and swap it
/// to apply a changed config (SIGHUP).
pub struct Providers {
    list: Vec<Provider>,
    fetch: Arc<dyn Fetch>,
    leeway: u64,
}

impl Providers {
    /// Providers with hyper fetchers (5 s deadline per document): plain HTTP, and for each
    /// provider with a `ca_file` one that also speaks HTTPS verified against that CA. A CA file
    /// that cannot be read stops the start (or the reload).
    pub fn from_config(config: &Config) -> Result<Arc<Self>, ProviderError> {
        let timeout = Duration::from_secs(5);
        Self::build(config, Arc::new(HyperFetch::new(timeout)), |c| {
            let Some(ca) = &c.ca_file else {
                return Ok(None);
            };
            let fetch = HyperFetch::with_ca(timeout, ca)?;
            Ok(Some(Arc::new(fetch) as Arc<dyn Fetch>))
        })
    }

    /// Loads static `jwks_file` keys now; discovery providers start empty until
    /// [`Providers::refresh_all`] or [`Providers::run`] reaches them. Every provider fetches
    /// through `fetch`.
    pub fn with_fetch(config: &Config, fetch: Arc<dyn Fetch>) -> Result<Arc<Self>, ProviderError> {
        Self::build(config, fetch, |_| Ok(None))
    }

    /// The registry, each provider with the fetcher `own` gives it (or the shared `fetch`).
    fn build(
        config: &Config,
        fetch: Arc<dyn Fetch>,
        own: impl Fn(&IdentityProviderConfig) -> Result<Option<Arc<dyn Fetch>>, String>,
    ) -> Result<Arc<Self>, ProviderError> {
        let mut list = Vec::new();
        for c in &config.identity_providers {
            let p = Provider {
                fetch: own(c).map_err(|message| ProviderError {
                    issuer: c.issuer.clone(),
                    message,
                })?,
                config: c.clone(),
                keys: RwLock::new(Arc::new(HashMap::new())),
                state: Mutex::new(FetchState::default()),
                fetching: tokio::sync::Mutex::new(()),
            };
            if let Some(path) = c.static_jwks() {
                let err = |message: String| ProviderError {
                    issuer: c.issuer.clone(),
                    message,
                };
                let text = std::fs::read(path)
                    .map_err(|e| err(format!("cannot read {}: {e}", path.display())))?;
                p.install(parse_jwks(&text).map_err(err)?);
            }
            list.push(p);
        }
        Ok(Arc::new(Self {
            list,
            fetch,
            leeway: config.auth.leeway_secs.min(MAX_LEEWAY_SECS),
        }))
    }

    /// Per provider: whether it has keys, for `/readyz` and the logs.
    pub fn status(&self) -> Vec<ProviderStatus> {
        self.list
            .iter()
            .map(|p| {
                let st = p.state.lock().expect("state lock");
                ProviderStatus {
                    issuer: p.config.issuer.clone(),
                    kind: match p.config.kind {
                        IdentityProviderKind::Subject => "subject",
                        IdentityProviderKind::Staff => "staff",
                    },
                    keys_loaded: st.loaded,
                    keys: p.keys.read().expect("keys lock").len(),
                    last_error: st.error.clone(),
                }
            })
            .collect()
    }

    /// Whether every provider has keys.
    pub fn ready(&self) -> bool {
        self.status().iter().all(|s| s.keys_loaded)
    }

    /// One attempt at every discovery provider (start-up; tests).
    pub async fn refresh_all(&self) {
        for p in self
            .list
            .iter()
            .filter(|p| p.config.static_jwks().is_none())
        {
            self.refresh(p).await;
        }
    }

    /// The background task the composition root spawns: refreshes every discovery provider on
    /// its `jwks_refresh_secs`, and retries one without keys from 1 s, doubling to 30 s. Runs
    /// until the task is aborted.
    pub async fn run(self: Arc<Self>) {
        loop {
            let mut sleep = Duration::from_secs(3600);
            for p in self
                .list
                .iter()
                .filter(|p| p.config.static_jwks().is_none())
            {
                if p.wait().is_zero() {
                    self.refresh(p).await;
                }
                sleep = sleep.min(p.wait());
            }
            tokio::time::sleep(sleep.max(Duration::from_millis(100))).await;
        }
    }

    /// Discovery, then the JWKS; on failure the old keys stay (a provider that is down for a
    /// moment should not lock everyone out) and the error is kept for `status`.
    async fn refresh(&self, p: &Provider) {
        let _one = p.fetching.lock().await;
        p.state.lock().expect("state lock").last_attempt = Some(Instant::now());
        let result = self.fetch_keys(p).await;
        let mut st = p.state.lock().expect("state lock");
        match result {
            Ok(keys) => {
                drop(st);
                p.install(keys);
            }
            Err(e) => {
                tracing::warn!(issuer = %p.config.issuer, error = %e, "identity provider keys not refreshed");
                st.failures = st.failures.saturating_add(1);
                st.error = Some(e);
            }
        }
    }

    async fn fetch_keys(&self, p: &Provider) -> Result<HashMap<String, Key>, String> {
        let c = &p.config;
        let fetch = p.fetch.as_ref().unwrap_or(&self.fetch);
        let url = format!(
            "{}/.well-known/openid-configuration",
            c.issuer.trim_end_matches('/')
        );
        let body = fetch.get(&url, MAX_DISCOVERY_BYTES).await?;
        let jwks_uri = discovered_jwks_uri(&body, &c.issuer)?;
        let body = fetch.get(&jwks_uri, MAX_JWKS_BYTES).await?;
        parse_jwks(&body)
    }

    /// Checks a bearer token from any configured provider and maps its claims.
    pub async fn verify(&self, token: &str) -> Result<Verified, OidcError> {
        let (p, kid, alg) = self.target(token)?;
        let mut keys = p.current();
        if !keys.contains_key(&kid) && p.config.static_jwks().is_none() && p.may_force() {
            self.refresh(p).await;
            keys = p.current();
        }
        self.check(p, &keys, &kid, alg, token)
    }

    /// Whether `token` claims to come from a configured provider (its unverified `iss`): which
    /// verifier should look at it, not whether it is valid.
    pub fn claims_issuer(&self, token: &str) -> bool {
        unverified_target(token)
            .is_ok_and(|(iss, _)| self.list.iter().any(|p| p.config.issuer == iss))
    }

    /// The provider, key id and algorithm a token names, before anything is trusted.
    fn target(&self, token: &str) -> Result<(&Provider, String, Algorithm), OidcError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(OidcError::Malformed);
        }
        // An `alg` outside jsonwebtoken's list (`none`, say) already fails to parse here.
        let header = jsonwebtoken::decode_header(token).map_err(|_| OidcError::Malformed)?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(OidcError::Algorithm);
        }
        let p = self.pick(token)?;
        let kid = header.kid.ok_or(OidcError::UnknownKey)?;
        Ok((p, kid, header.alg))
    }

    fn check(
        &self,
        p: &Provider,
        keys: &HashMap<String, Key>,
        kid: &str,
        alg: Algorithm,
        token: &str,
    ) -> Result<Verified, OidcError> {
        let key = keys.get(kid).ok_or(OidcError::UnknownKey)?;
        if key.alg != alg {
            return Err(OidcError::KeyMismatch);
        }
        let mut validation = Validation::new(key.alg);
        validation.set_issuer(&[&p.config.issuer]);
        validation.set_audience(&[&p.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = self.leeway;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(|e| OidcError::Invalid(e.into_kind()))?;
        map_claims(&p.config, &data.claims)
    }
}

impl Providers {
    /// The provider a token claims to come from: by `iss`, and where two providers share an
    /// issuer (one provider's staff and subject clients), by `aud`, which must then name
    /// exactly one of them. The signature and these claims are checked afterwards.
    fn pick(&self, token: &str) -> Result<&Provider, OidcError> {
        let (iss, aud) = unverified_target(token)?;
        let same: Vec<&Provider> = self
            .list
            .iter()
            .filter(|p| p.config.issuer == iss)
            .collect();
        match same.as_slice() {
            [] => Err(OidcError::UnknownIssuer),
            [one] => Ok(one),
            many => {
                let mut by_aud = many.iter().filter(|p| aud.contains(&p.config.audience));
                match (by_aud.next(), by_aud.next()) {
                    (Some(p), None) => Ok(p),
                    _ => Err(OidcError::Invalid(
                        jsonwebtoken::errors::ErrorKind::InvalidAudience,
                    )),
                }
            }
        }
    }
}

impl Provider {
    fn current(&self) -> Arc<HashMap<String, Key>> {
        self.keys.read().expect("keys lock").clone()
    }

    fn install(&self, keys: HashMap<String, Key>) {
        *self.keys.write().expect("keys lock") = Arc::new(keys);
        let mut st = self.state.lock().expect("state lock");
        st.loaded = true;
        st.failures = 0;
        st.error = None;
        st.last_success = Some(Instant::now());
    }

    /// Whether an unknown kid may cause a fetch now; counts it if so.
    fn may_force(&self) -> bool {
        let mut st = self.state.lock().expect("state lock");
        let min = Duration::from_secs(self.config.unknown_kid_refresh_secs);
        if st.last_forced.is_some_and(|t| t.elapsed() < min) {
            return false;
        }
        st.last_forced = Some(Instant::now());
        true
    }

    /// Time until this provider's next scheduled fetch.
    fn wait(&self) -> Duration {
        let st = self.state.lock().expect("state lock");
        let (since, every) = match (st.loaded, st.last_success) {
            (true, Some(t)) => (t, Duration::from_secs(self.config.jwks_refresh_secs)),
            _ => {
                let Some(t) = st.last_attempt else {
                    return Duration::ZERO;
                };
                let backoff = Duration::from_secs(1) * 2u32.saturating_pow(st.failures.min(6));
                (t, backoff.min(MAX_RETRY))
            }
        };
        every.saturating_sub(since.elapsed())
    }
}

/// The `jwks_uri` of a discovery document whose `issuer` is exactly the configured one (OpenID
/// Connect Discovery 1.0 section 4.3: otherwise anyone who can serve a document under the
/// issuer's URL could name keys for another issuer).
fn discovered_jwks_uri(body: &[u8], issuer: &str) -> Result<String, String> {
    #[derive(Deserialize)]
    struct Discovery {
        issuer: String,
        jwks_uri: String,
    }
    let d: Discovery =
        serde_json::from_slice(body).map_err(|e| format!("discovery document unreadable: {e}"))?;
    if d.issuer != issuer {
        return Err(format!(
            "discovery names issuer `{}`, not `{issuer}`",
            d.issuer
        ));
    }
    let uri: http::Uri = d.jwks_uri.parse().map_err(|_| "jwks_uri is not a URL")?;
    // An https issuer may not point at plain-HTTP keys; an http one is loopback (config).
    let same_or_better = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => issuer.starts_with("http://"),
        _ => false,
    };
    if !same_or_better || uri.host().is_none() {
        return Err(format!("jwks_uri `{}` not acceptable", d.jwks_uri));
    }
    Ok(d.jwks_uri)
}

/// The signing keys of a JWKS. Keys credgate cannot use (encryption keys, HMAC, other curves,
/// short RSA, no kid, an `alg` that disagrees with the key type) are skipped with a warning;
/// a set left with no key at all is an error.
fn parse_jwks(body: &[u8]) -> Result<HashMap<String, Key>, String> {
    #[derive(Deserialize)]
    struct Set {
        keys: Vec<Value>,
    }
    let set: Set = serde_json::from_slice(body).map_err(|e| format!("not a JWKS: {e}"))?;
    if set.keys.len() > MAX_KEYS {
        return Err(format!("JWKS has more than {MAX_KEYS} keys"));
    }
    let mut keys = HashMap::new();
    for v in set.keys {
        match serde_json::from_value::<Jwk>(v)
            .map_err(|e| e.to_string())
            .and_then(|jwk| usable_key(&jwk))
        {
            Ok((kid, key)) => {
                keys.insert(kid, key);
            }
            Err(e) => tracing::warn!(reason = %e, "JWKS key skipped"),
        }
    }
    if keys.is_empty() {
        return Err("JWKS has no usable signing key".into());
    }
    Ok(keys)
}

fn usable_key(jwk: &Jwk) -> Result<(String, Key), String> {
    let kid = jwk.common.key_id.clone().ok_or("key without kid")?;
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return Err(format!("key `{kid}` is not for signatures"));
    }
    let (alg, declared) = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => {
            let n = URL_SAFE_NO_PAD
                .decode(&p.n)
                .map_err(|_| "bad RSA modulus")?;
            let len = n.len() - n.iter().take_while(|b| **b == 0).count();
            if len < MIN_RSA_MODULUS_BYTES {
                return Err(format!("RSA key `{kid}` is shorter than 2048 bits"));
            }
            (Algorithm::RS256, KeyAlgorithm::RS256)
        }
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
            (Algorithm::ES256, KeyAlgorithm::ES256)
        }
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            (Algorithm::EdDSA, KeyAlgorithm::EdDSA)
        }
        _ => return Err(format!("key `{kid}` has an unsupported type or curve")),
    };
    if jwk.common.key_algorithm.is_some_and(|a| a != declared) {
        return Err(format!("key `{kid}` declares an alg its type cannot have"));
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key `{kid}`: {e}"))?;
    Ok((kid, Key { alg, key }))
}

/// `iss` and `aud` before the signature is checked: only to pick the provider whose keys and
/// validation then check them.
fn unverified_target(token: &str) -> Result<(String, Vec<String>), OidcError> {
    #[derive(Deserialize)]
    struct Peek {
        iss: String,
        #[serde(default)]
        aud: Value,
    }
    let payload = token.split('.').nth(1).ok_or(OidcError::Malformed)?;
    let bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| OidcError::Malformed)?;
    let peek: Peek = serde_json::from_slice(&bytes).map_err(|_| OidcError::Malformed)?;
    let aud = match peek.aud {
        Value::String(s) => vec![s],
        Value::Array(items) => items
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    Ok((peek.iss, aud))
}

/// The verified claims as credgate's caller, per the provider's kind and claim names.
fn map_claims(
    c: &IdentityProviderConfig,
    claims: &Map<String, Value>,
) -> Result<Verified, OidcError> {
    let acr = optional_text(claims, "acr")?;
    let amr = strings(claims, "amr")?;
    match c.kind {
        IdentityProviderKind::Subject => {
            let id = text(claims, &c.subject_id_claim)?;
            let claim = || OidcError::Claim(c.subject_type_claim.clone());
            let subject_type: SubjectType = text(claims, &c.subject_type_claim)?
                .parse()
                .map_err(|_| claim())?;
            let id = SubjectId::parse(subject_type, &id)
                .map_err(|_| OidcError::Claim(c.subject_id_claim.clone()))?;
            if !factors_met(c, "subject", acr.as_deref(), &amr) {
                return Err(OidcError::Factor);
            }
            Ok(Verified::Subject {
                id,
                subject_type,
                issuer: c.issuer.clone(),
            })
        }
        IdentityProviderKind::Staff => {
            let mut roles: Vec<String> = strings(claims, &c.roles_claim)?
                .iter()
                .filter_map(|g| c.role_map.get(g).cloned())
                .collect();
            roles.sort();
            roles.dedup();
            if roles.is_empty() {
                return Err(OidcError::NoRoles);
            }
            let before = roles.len();
            roles.retain(|r| factors_met(c, r, acr.as_deref(), &amr));
            if roles.is_empty() {
                return Err(OidcError::Factor);
            }
            if roles.len() < before {
                tracing::info!(issuer = %c.issuer, "roles without their required factor dropped");
            }
            let holds = |set: &[&str]| roles.iter().any(|r| set.contains(&r.as_str()));
            if holds(ADMINISTERS) && holds(AUDITS) {
                tracing::warn!(issuer = %c.issuer, "a person mapped to both administering and auditing roles refused");
                return Err(OidcError::ConflictingDuties);
            }
            Ok(Verified::Staff(StaffPerson {
                id: text(claims, &c.subject_id_claim)?,
                name: text(claims, &c.name_claim)?,
                org: text(claims, &c.org_claim)?,
                roles,
                acr,
                amr,
                issuer: c.issuer.clone(),
            }))
        }
    }
}

/// Whether the token's `acr`/`amr` satisfy what the config requires of `role`: one of the
/// listed `acr` values, and every listed `amr` value.
fn factors_met(c: &IdentityProviderConfig, role: &str, acr: Option<&str>, amr: &[String]) -> bool {
    let acr_ok = c
        .require_acr
        .get(role)
        .is_none_or(|allowed| acr.is_some_and(|a| allowed.iter().any(|x| x == a)));
    let amr_ok = c
        .require_amr
        .get(role)
        .is_none_or(|needed| needed.iter().all(|n| amr.contains(n)));
    acr_ok && amr_ok
}

/// A required text claim: non-empty, short and printable, since it reaches audit records.
fn text(claims: &Map<String, Value>, name: &str) -> Result<String, OidcError> {
    optional_text(claims, name)?.ok_or_else(|| OidcError::Claim(name.to_string()))
}

fn optional_text(claims: &Map<String, Value>, name: &str) -> Result<Option<String>, OidcError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if is_clean(s) => Ok(Some(s.clone())),
        Some(_) => Err(OidcError::Claim(name.to_string())),
    }
}

/// A claim that is a string or a list of strings (providers differ); absent is empty.
fn strings(claims: &Map<String, Value>, name: &str) -> Result<Vec<String>, OidcError> {
    let bad = || OidcError::Claim(name.to_string());
    match claims.get(name) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if is_clean(s) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) if items.len() <= 64 => items
            .iter()
            .map(|v| match v {
                Value::String(s) if is_clean(s) => Ok(s.clone()),
                _ => Err(bad()),
            })
            .collect(),
        Some(_) => Err(bad()),
    }
}

fn is_clean(s: &str) -> bool {
    !s.trim().is_empty() && s.chars().count() <= MAX_CLAIM_CHARS && !s.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const ED_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

    fn jwks(keys: Value) -> Vec<u8> {
        json!({ "keys": keys }).to_string().into_bytes()
    }

    fn rsa_n(bytes: usize) -> String {
        URL_SAFE_NO_PAD.encode(vec![0xc5u8; bytes])
    }

    #[test]
    fn only_signing_keys_whose_alg_fits_their_type_are_kept() {
        let body = jwks(json!([
            {"kty": "OKP", "crv": "Ed25519", "x": ED_X, "kid": "ed", "alg": "EdDSA"},
            {"kty": "OKP", "crv": "Ed25519", "x": ED_X, "kid": "no-alg"},
            {"kty": "OKP", "crv": "Ed25519", "x": ED_X, "kid": "liar", "alg": "ES256"},
            {"kty": "OKP", "crv": "Ed25519", "x": ED_X, "kid": "hmac-claim", "alg": "HS256"},
            {"kty": "OKP", "crv": "Ed25519", "x": ED_X, "kid": "enc", "use": "enc"},
            {"kty": "OKP", "crv": "Ed25519", "x": ED_X},
            {"kty": "oct", "k": "c2VjcmV0", "kid": "oct", "alg": "HS256"},
            {"kty": "RSA", "n": rsa_n(128), "e": "AQAB", "kid": "rsa-1024", "alg": "RS256"},
            {"kty": "RSA", "n": rsa_n(256), "e": "AQAB", "kid": "rsa", "alg": "RS256"},
            {"kty": "RSA", "n": rsa_n(256), "e": "AQAB", "kid": "rsa-ps", "alg": "PS256"},
            {"kty": "EC", "crv": "P-384", "x": ED_X, "y": ED_X, "kid": "p384", "alg": "ES384"},
            {"kty": "XYZ", "kid": "odd"},
        ]));
        let keys = parse_jwks(&body).unwrap();
        let mut kids: Vec<&str> = keys.keys().map(String::as_str).collect();
        kids.sort();
        assert_eq!(kids, ["ed", "no-alg", "rsa"]);
        assert_eq!(keys["ed"].alg, Algorithm::EdDSA);
        assert_eq!(keys["rsa"].alg, Algorithm::RS256);
    }

    #[test]
    fn a_jwks_without_usable_keys_or_with_too_many_is_an_error() {
        assert!(parse_jwks(&jwks(json!([]))).is_err());
        assert!(parse_jwks(&jwks(json!([{"kty": "oct", "k": "c2VjcmV0", "kid": "o"}]))).is_err());
        assert!(parse_jwks(b"<html>").is_err());
        let many: Vec<Value> = (0..=MAX_KEYS)
            .map(|i| json!({"kty": "OKP", "crv": "Ed25519", "x": ED_X, "kid": i.to_string()}))
            .collect();
        assert!(parse_jwks(&jwks(Value::Array(many))).is_err());
    }

    #[test]
    fn discovery_must_name_the_issuer_exactly_and_not_downgrade() {
        let doc = |iss: &str, uri: &str| json!({"issuer": iss, "jwks_uri": uri}).to_string();
        let ok = discovered_jwks_uri(
            doc("https://idp", "https://idp/k").as_bytes(),
            "https://idp",
        );
        assert_eq!(ok.unwrap(), "https://idp/k");
        for (iss, uri) in [
            ("https://idp/", "https://idp/k"),
            ("https://IDP", "https://idp/k"),
            ("https://evil", "https://idp/k"),
            ("https://idp", "http://idp/k"),
            ("https://idp", "file:///etc/passwd"),
            ("https://idp", "/relative"),
        ] {
            let r = discovered_jwks_uri(doc(iss, uri).as_bytes(), "https://idp");
            assert!(r.is_err(), "{iss} {uri}");
        }
        assert!(discovered_jwks_uri(b"{}", "https://idp").is_err());
    }

    fn staff_config() -> IdentityProviderConfig {
        let text = r#"
            issuer = "https://idp"
            kind = "staff"
            audience = "credgate"
            role_map = { admins = "system_admin", auditors = "auditor" }
            require_acr = { system_admin = ["mfa-acr"] }
            require_amr = { system_admin = ["otp", "pwd"] }
        "#;
        toml::from_str(text).unwrap()
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn factors_are_checked_per_role() {
        let c = staff_config();
        let base = json!({"sub": "p1", "name": "P", "org": "o", "groups": ["admins", "auditors"]});
        let with = |acr: Value, amr: Value| {
            let mut v = base.clone();
            v["acr"] = acr;
            v["amr"] = amr;
            map_claims(&c, &claims(v))
        };
        let roles = |r: Result<Verified, OidcError>| match r {
            Ok(Verified::Staff(p)) => p.roles,
            other => panic!("{other:?}"),
        };
        // Both groups with both factors would administer and audit at once: refused.
        assert!(matches!(
            with(json!("mfa-acr"), json!(["pwd", "otp"])),
            Err(OidcError::ConflictingDuties)
        ));
        assert_eq!(roles(with(json!("mfa-acr"), json!(["pwd"]))), ["auditor"]);
        assert_eq!(
            roles(with(json!("other"), json!(["pwd", "otp"]))),
            ["auditor"]
        );
        assert_eq!(roles(with(Value::Null, json!(["otp", "pwd"]))), ["auditor"]);
        assert!(matches!(
            with(json!(["mfa-acr"]), json!([])),
            Err(OidcError::Claim(_))
        ));
        let mut only_admin = base.clone();
        only_admin["groups"] = json!(["admins"]);
        assert!(matches!(
            map_claims(&c, &claims(only_admin)),
            Err(OidcError::Factor)
        ));
    }

    #[test]
    fn staff_claims_must_be_present_short_and_printable() {
        let c = staff_config();
        let good = json!({"sub": "p1", "name": "P", "org": "o", "groups": "auditors"});
        assert!(map_claims(&c, &claims(good.clone())).is_ok());
        for (k, v) in [
            ("name", Value::Null),
            ("org", json!("")),
            ("sub", json!(42)),
            ("name", json!("x".repeat(MAX_CLAIM_CHARS + 1))),
            ("org", json!("ops\u{1b}[31m")),
        ] {
            let mut bad = good.clone();
            bad[k] = v;
            assert!(map_claims(&c, &claims(bad)).is_err(), "{k}");
        }
    }

    #[test]
    fn the_issuer_is_read_from_the_payload_only_to_pick_a_provider() {
        let payload = URL_SAFE_NO_PAD.encode(r#"{"iss":"https://idp"}"#);
        let (iss, aud) = unverified_target(&format!("h.{payload}.s")).unwrap();
        assert_eq!((iss.as_str(), aud.len()), ("https://idp", 0));
        let payload = URL_SAFE_NO_PAD.encode(r#"{"iss":"i","aud":["a",7,"b"]}"#);
        assert_eq!(
            unverified_target(&format!("h.{payload}.s")).unwrap().1,
            ["a", "b"]
        );
        for t in [
            "",
            "a",
            "a.!!!.c",
            &format!("h.{}.s", URL_SAFE_NO_PAD.encode("{}")),
        ] {
            assert!(unverified_target(t).is_err(), "{t}");
        }
    }
}
