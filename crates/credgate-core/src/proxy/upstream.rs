//! Phase 4, forward: pooled hyper-util clients per store (the connect timeout is a property
//! of the connector, so each store gets its own) and per thread, strict header hygiene both
//! ways, a deadline on the whole exchange, and a size cap that refuses rather than truncates.

use std::{
    cell::RefCell,
    collections::HashMap,
    net::IpAddr,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, ResponseFuture, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};
use secrecy::ExposeSecret;

use super::DataError as Error;
use super::route::RoutePattern;
use crate::{
    config::{RouteConfig, StoreConfig},
    domain::SubjectType,
};

/// Request headers a caller may pass to a store. Everything else (Authorization, Cookie,
/// X-Forwarded-*, hop-by-hop headers, anything unknown) is dropped: an allow-list fails closed.
const FORWARDED_REQUEST_HEADERS: &[HeaderName] = &[
    header::ACCEPT,
    header::ACCEPT_LANGUAGE,
    header::CONTENT_TYPE,
];

/// Where the data subject of a route is named.
#[derive(Debug, Clone)]
pub enum SubjectLocator {
    Path(String),
    Query(String),
}

#[derive(Debug)]
pub struct Route {
    pub method: Method,
    pub template: String,
    pub pattern: RoutePattern,
    pub dataset: String,
    pub subject: Option<(SubjectLocator, SubjectType)>,
    pub profile: bool,
    /// The query parameters the route allows besides the subject's. A route that names none
    /// takes none: an absent list fails closed.
    pub query: Vec<String>,
}

impl Route {
    /// Whether a query parameter other than the subject's may be forwarded on this route.
    pub fn allows_query(&self, key: &str) -> bool {
        self.query.iter().any(|n| n == key)
    }

    /// The names that say who the request is about (placeholders, the subject's parameter),
    /// normalised as `query::normalised_key` does.
    pub fn subject_names(&self) -> impl Iterator<Item = String> + '_ {
        let query_subject = match &self.subject {
            Some((SubjectLocator::Query(name), _)) => Some(name.as_str()),
            _ => None,
        };
        self.pattern
            .params()
            .chain(query_subject)
            .map(super::query::normalised_key)
    }
}

pub struct Store {
    pub name: String,
    base: Uri,
    base_path: String,
    /// Tells this store's clients apart in each thread's `POOLS`: an address could be reused
    /// by a store built later (another gateway in the same process) with another connector.
    id: u64,
    connector: HttpsConnector<HttpConnector>,
    credential: Option<(HeaderName, HeaderValue)>,
    pub routes: Vec<Route>,
    response_timeout: Duration,
    objections_path: String,
    pub max_request_bytes: usize,
    max_response_bytes: usize,
}

/// All configured stores by name, built once at start.
#[derive(Default)]
pub struct Stores {
    by_name: HashMap<String, Store>,
}

impl Stores {
    pub fn build(configs: &[StoreConfig]) -> anyhow::Result<Self> {
        let mut by_name = HashMap::new();
        for c in configs {
            by_name.insert(c.name.clone(), Store::build(c)?);
        }
        Ok(Self { by_name })
    }

    pub fn get(&self, name: &str) -> Option<&Store> {
        self.by_name.get(name)
    }

    /// Routes that are one-stop profile sections for this subject type, in a stable order.
    pub fn profile_sections(&self, kind: SubjectType) -> Vec<(&Store, &Route)> {
        let mut v: Vec<_> = self
            .by_name
            .values()
            .flat_map(|s| s.routes.iter().map(move |r| (s, r)))
            .filter(|(_, r)| r.profile && r.subject.as_ref().is_some_and(|(_, t)| *t == kind))
            .collect();
        v.sort_by(|a, b| (&a.0.name, &a.1.dataset).cmp(&(&b.0.name, &b.1.dataset)));
        v
    }

    pub fn datasets(&self) -> impl Iterator<Item = (&str, &str)> {
        self.by_name.values().flat_map(|s| {
            s.routes
                .iter()
                .map(move |r| (s.name.as_str(), r.dataset.as_str()))
        })
    }
}

/// The store's connector: for `https://`, TLS only (no downgrade), verified against the store's
/// `ca_file` alone (the system's roots are not consulted: a store is a known party), with the
/// optional client certificate; for `http://`, plain TCP (the TLS config is never used).
fn tls_connector(
    c: &StoreConfig,
    https: bool,
    http: HttpConnector,
) -> anyhow::Result<HttpsConnector<HttpConnector>> {
    use anyhow::Context as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = c.ca_file.as_ref().filter(|_| https) {
        let what = || format!("stores `{}`: ca_file {}", c.name, ca.display());
        for cert in CertificateDer::pem_file_iter(ca).with_context(what)? {
            roots.add(cert.with_context(what)?).with_context(what)?;
        }
        anyhow::ensure!(!roots.is_empty(), "{}: no CA certificate in it", what());
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots);
    let config = match (&c.client_cert_file, &c.client_key_file) {
        (Some(cert), Some(key)) if https => {
            let what = || format!("stores `{}`: client certificate", c.name);
            let chain = CertificateDer::pem_file_iter(cert)
                .with_context(what)?
                .collect::<Result<Vec<_>, _>>()
                .with_context(what)?;
            let key = PrivateKeyDer::from_pem_file(key).with_context(what)?;
            builder
                .with_client_auth_cert(chain, key)
                .with_context(what)?
        }
        _ => builder.with_no_client_auth(),
    };
    let b = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config);
    let b = if https {
        b.https_only()
    } else {
        b.https_or_http()
    };
    Ok(b.enable_http1().wrap_connector(http))
}

type StoreClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

thread_local! {
    /// Each thread's clients, by store id. A pooled connection's task runs on the loop that
    /// opened it; shared among the serving threads, a request on one thread took a connection
    /// driven by another, and every exchange crossed threads twice. A pool a thread: 15,600
    /// -> 19,000 req/s and 89 -> 73 us of CPU a request (no-op audit, a prototype with a
    /// thread a core; commit b80018f has the table). Entries of a store dropped in a process
    /// that builds another gateway stay until the thread ends (tests; a server builds its
    /// stores once).
    static POOLS: RefCell<HashMap<u64, StoreClient>> = RefCell::new(HashMap::new());
}

impl Store {
    /// Sends `req` on this thread's client of the store, made on first use.
    fn send(&self, req: Request<Full<Bytes>>) -> ResponseFuture {
        POOLS.with_borrow_mut(|pools| {
            pools
                .entry(self.id)
                .or_insert_with(|| {
                    Client::builder(TokioExecutor::new())
                        .pool_timer(TokioTimer::new())
                        .pool_idle_timeout(Duration::from_secs(60))
                        .pool_max_idle_per_host(256)
                        .build(self.connector.clone())
                })
                .request(req)
        })
    }

    fn build(c: &StoreConfig) -> anyhow::Result<Self> {
        let base: Uri = c.upstream.parse()?;
        let base_path = base.path().trim_end_matches('/').to_string();
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(c.connect_timeout()));
        connector.set_nodelay(true);
        connector.enforce_http(false);
        let connector = tls_connector(c, base.scheme_str() == Some("https"), connector)?;
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let credential = match &c.credential {
            None => None,
            Some(cred) => {
                let value = match (&cred.value, &cred.value_env) {
                    (Some(v), _) => v.expose_secret().to_string(),
                    (None, Some(var)) => std::env::var(var).map_err(|_| {
                        anyhow::anyhow!(
                            "stores `{}`: credential.value_env names ${var}, which is not set",
                            c.name
                        )
                    })?,
                    (None, None) => unreachable!("config validation requires one"),
                };
                let mut value = HeaderValue::try_from(value).map_err(|_| {
                    anyhow::anyhow!(
                        "stores `{}`: credential value is not a valid header",
                        c.name
                    )
                })?;
                value.set_sensitive(true);
                Some((HeaderName::try_from(cred.header.as_str())?, value))
            }
        };
        Ok(Self {
            name: c.name.clone(),
            base,
            base_path,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            connector,
            credential,
            routes: c.routes.iter().map(Route::build).collect(),
            response_timeout: c.response_timeout(),
            objections_path: c.objections_path.clone(),
            max_request_bytes: c.max_request_bytes,
            max_response_bytes: c.max_response_bytes,
        })
    }

    /// The first route with this method whose pattern matches the decoded segments.
    pub fn find_route(&self, method: &Method, segs: &[String]) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| r.method == *method && r.pattern.is_match(segs))
    }

    /// What the store is sent besides the body: the allow-listed caller headers, the store's
    /// own host, the gateway's request id, the client's address, the purpose, the trace (as
    /// the gateway's span) and the store's credential. Nothing else of the caller's. No
    /// `X-Forwarded-Proto`: it said `http` whatever the caller used, and the store's client is
    /// the gateway.
    fn outbound_headers(&self, headers: &mut http::HeaderMap, out: &Outbound<'_>) {
        // A header the caller named in `Connection` is hop-by-hop for that hop (RFC 9110,
        // 7.6.1): it stops here, even when the allow-list would pass it.
        let hop_by_hop = |name: &HeaderName| {
            out.caller_headers
                .get_all(header::CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case(name.as_str()))
        };
        for name in FORWARDED_REQUEST_HEADERS.iter().filter(|n| !hop_by_hop(n)) {
            for v in out.caller_headers.get_all(name) {
                headers.append(name.clone(), v.clone());
            }
        }
        if let Some(authority) = self.base.authority()
            && let Ok(host) = HeaderValue::from_str(authority.as_str())
        {
            headers.insert(header::HOST, host);
        }
        if let Ok(v) = HeaderValue::from_str(out.request_id) {
            headers.insert("x-request-id", v);
        }
        if let Ok(v) = HeaderValue::from_str(&out.client_ip.to_string()) {
            headers.insert("x-forwarded-for", v);
        }
        if let Ok(v) = HeaderValue::from_str(out.purpose) {
            headers.insert("x-purpose", v);
        }
        // The caller's trace goes on with the gateway as the parent span; an invalid one is
        // not forwarded at all (`trace`).
        if let Some(trace) = super::trace::TraceContext::from_headers(out.caller_headers) {
            trace.propagate(headers);
        }
        if let Some((name, value)) = &self.credential {
            headers.insert(name.clone(), value.clone());
        }
    }

    /// Sends one request and reads the whole answer within the store's deadline.
    pub async fn forward(&self, out: Outbound<'_>) -> Result<UpstreamResponse, Error> {
        let uri = self.upstream_uri(out.path, out.query)?;
        let mut req = Request::builder()
            .method(out.method.clone())
            .uri(uri)
            .body(Full::new(out.body.clone()))
            .map_err(|e| Error::Internal(e.into()))?;
        self.outbound_headers(req.headers_mut(), &out);

        let started = std::time::Instant::now();
        let exchange = async {
            let res = self.send(req).await.map_err(|e| {
                metrics::counter!("credgate_upstream_errors_total", "store" => self.name.clone(),
                    "kind" => if e.is_connect() { "connect" } else { "request" }).increment(1);
                tracing::warn!(store = %self.name, error = %e, connect = e.is_connect(), "store request failed");
                Error::BadGateway(if e.is_connect() {
                    "the store could not be reached"
                } else {
                    "the store failed to answer"
                })
            })?;
            let (parts, body) = res.into_parts();
            if let Some(len) = parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                && len > self.max_response_bytes as u64
            {
                return Err(too_large(&self.name));
            }
            let body = Limited::new(body, self.max_response_bytes)
                .collect()
                .await
                .map_err(|e| {
                    if e.downcast_ref::<LengthLimitError>().is_some() {
                        too_large(&self.name)
                    } else {
                        tracing::warn!(store = %self.name, error = %e, "store body failed");
                        Error::BadGateway("the store's answer broke off")
                    }
                })?
                .to_bytes();
            Ok(UpstreamResponse {
                status: parts.status,
                content_type: parts.headers.get(header::CONTENT_TYPE).cloned(),
                body,
                elapsed: Duration::ZERO,
            })
        };
        match tokio::time::timeout(self.response_timeout, exchange).await {
            Ok(Ok(mut r)) => {
                r.elapsed = started.elapsed();
                Ok(r)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => {
                metrics::counter!("credgate_upstream_errors_total", "store" => self.name.clone(), "kind" => "timeout").increment(1);
                tracing::warn!(store = %self.name, "store timed out");
                Err(Error::Timeout)
            }
        }
    }

    /// Delivers one objection to the store; the store's ticket id, or why it failed.
    /// The most one exchange with this store may take, answer included.
    pub fn response_timeout(&self) -> Duration {
        self.response_timeout
    }

    pub async fn deliver_objection(
        &self,
        idempotency_key: &str,
        body: Vec<u8>,
    ) -> Result<String, String> {
        let uri = self
            .upstream_uri(&self.objections_path, None)
            .map_err(|e| e.to_string())?;
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", idempotency_key)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        if let Some(authority) = self.base.authority()
            && let Ok(host) = HeaderValue::from_str(authority.as_str())
        {
            req.headers_mut().insert(header::HOST, host);
        }
        if let Some((name, value)) = &self.credential {
            req.headers_mut().insert(name.clone(), value.clone());
        }
        let exchange = async {
            let res = self
                .send(req)
                .await
                .map_err(|e| format!("store unreachable: {e}"))?;
            let status = res.status();
            let body = Limited::new(res.into_body(), 64 * 1024)
                .collect()
                .await
                .map_err(|_| "the store's answer broke off or was too large".to_string())?
                .to_bytes();
            if !status.is_success() {
                return Err(format!("the store answered {status}"));
            }
            let v: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|_| "the store's answer is not JSON".to_string())?;
            v.get("ticket_id")
                .and_then(|t| t.as_str())
                .map(|t| t.chars().take(128).collect())
                .ok_or_else(|| "the store's answer has no ticket_id".to_string())
        };
        tokio::time::timeout(self.response_timeout, exchange)
            .await
            .map_err(|_| "the store did not answer in time".to_string())?
    }

    fn upstream_uri(&self, path: &str, query: Option<&str>) -> Result<Uri, Error> {
        let mut pq = format!("{}{}", self.base_path, path);
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            pq.push('?');
            pq.push_str(q);
        }
        let mut parts = self.base.clone().into_parts();
        parts.path_and_query = Some(
            pq.parse()
                .map_err(|_| Error::BadRequest("the path or query is not valid".into()))?,
        );
        Uri::from_parts(parts).map_err(|e| Error::Internal(e.into()))
    }
}

fn too_large(store: &str) -> Error {
    metrics::counter!("credgate_upstream_errors_total", "store" => store.to_string(), "kind" => "too_large").increment(1);
    tracing::warn!(store, "store answer exceeds the size cap; refused");
    Error::BadGateway("the store's answer exceeds the size limit")
}

impl Route {
    fn build(c: &RouteConfig) -> Self {
        let subject = match (&c.subject_path, &c.subject_query, c.subject_type) {
            (Some(p), _, Some(t)) => Some((SubjectLocator::Path(p.clone()), t)),
            (None, Some(q), Some(t)) => Some((SubjectLocator::Query(q.clone()), t)),
            _ => None,
        };
        Self {
            method: Method::from_bytes(c.method.as_bytes()).expect("validated at load"),
            template: c.path.clone(),
            pattern: RoutePattern::parse(&c.path).expect("validated at load"),
            dataset: c.dataset.clone(),
            subject,
            profile: c.profile,
            query: c.query.clone().unwrap_or_default(),
        }
    }
}

/// What phase 4 sends: already routed, normalised and decided.
pub struct Outbound<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub body: Bytes,
    pub caller_headers: &'a HeaderMap,
    pub request_id: &'a str,
    pub client_ip: IpAddr,
    pub purpose: &'a str,
}

pub struct UpstreamResponse {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    pub body: Bytes,
    pub elapsed: Duration,
}
