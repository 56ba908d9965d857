//! The one TOML configuration file, with environment overrides.
//!
//! Errors name the key and what is wrong, because the person reading them is an operator at a
//! terminal who must fix the file without reading our source.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use secrecy::SecretString;
use serde::Deserialize;

use crate::domain::SubjectType;

/// Where `serve` and the state-touching subcommands look when `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "credgate.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Threads that serve connections, each with its own event loop and its own connections to
    /// the stores (0, the default: one a CPU core). A connection is handed to one when it is
    /// accepted and stays there: its requests no longer hop between threads (issue 18,
    /// decision 4; `web::workers`).
    #[serde(default)]
    pub io_threads: usize,
    /// `sqlite://FILE` (the embedded default) or `postgres://...`.
    #[serde(default = "default_storage_url")]
    pub storage_url: String,
    #[serde(default = "default_key_dir")]
    pub key_dir: PathBuf,
    #[serde(default = "default_policy_dir")]
    pub policy_dir: PathBuf,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub audit: crate::audit::AuditConfig,
    #[serde(default)]
    pub alerts: crate::audit::alerts::AlertConfig,
    #[serde(default)]
    pub rate_limits: crate::limits::RateLimitConfig,
    /// Per-subject limits on `/subject/*`: request rate and open objections.
    #[serde(default)]
    pub subject_limits: crate::auth::subject::SubjectLimitConfig,
    #[serde(default)]
    pub workflows: crate::workflows::WorkflowConfig,
    /// Identity providers whose data-subject tokens are accepted.
    #[serde(default)]
    pub identity_providers: Vec<IdentityProviderConfig>,
    /// Present only in the demo configuration: the demo identity provider's private key, used by
    /// `credgate token subject`. A production config has no such section, so it cannot mint.
    #[serde(default)]
    pub demo_identity_provider: Option<DemoIdentityProviderConfig>,
    #[serde(default)]
    pub stores: Vec<StoreConfig>,
    /// `[tls]`: present, the listener speaks HTTPS only (no plaintext on that port).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// CIDRs (or single addresses) of the load balancers whose `Forwarded` / `X-Forwarded-For`
    /// is believed. Empty (the default): the TCP peer is the client, whatever headers say.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Where `/metrics` listens: `HOST:PORT`, or `off`. Its own address so that the public
    /// listener never shows operational counters; loopback by default.
    #[serde(default = "default_metrics_listen")]
    pub metrics_listen: String,
    /// `[sessions]`: how long a person signed in to the pages stays signed in.
    #[serde(default)]
    pub sessions: SessionConfig,
}

/// `[sessions]` of the pages (console and portal). A session ends after `*_idle_secs` without a
/// request, and `*_absolute_secs` after sign-in whatever happens: staff sessions are shorter,
/// since they open the audit log and every subject's workflows.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    pub staff_idle_secs: u64,
    pub staff_absolute_secs: u64,
    pub subject_idle_secs: u64,
    pub subject_absolute_secs: u64,
    /// The gateway's address as browsers reach it (`https://credgate.example`), from which the
    /// sign-in's redirect URIs are made (`{public_url}/signin/staff/callback`, `.../subject/...`).
    /// Empty: taken from the request's `Host` (the provider accepts only registered URIs, so a
    /// forged `Host` fails at the provider, not here).
    pub public_url: String,
}

impl SessionConfig {
    /// Timeouts a person can live with and an attacker gains little from; a `public_url` that
    /// is a bare origin, so the callbacks built from it are exactly the registered ones.
    fn validate(&self) -> Result<(), ConfigError> {
        for (kind, idle, absolute) in [
            ("staff", self.staff_idle_secs, self.staff_absolute_secs),
            (
                "subject",
                self.subject_idle_secs,
                self.subject_absolute_secs,
            ),
        ] {
            if !(60..=86_400).contains(&idle) {
                return Err(invalid(
                    format!("sessions.{kind}_idle_secs"),
                    "must be between 60 and 86400 seconds",
                ));
            }
            if absolute < idle || absolute > 7 * 86_400 {
                return Err(invalid(
                    format!("sessions.{kind}_absolute_secs"),
                    "must be at least the idle timeout and at most 604800 seconds (7 days)",
                ));
            }
        }
        let url = self.public_url.trim_end_matches('/');
        let origin = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .is_some_and(|host| !host.is_empty() && !host.contains(['/', '?', '#', '@']));
        if !url.is_empty() && !origin {
            return Err(invalid(
                "sessions.public_url",
                "must be an origin such as https://credgate.example (no path, query or user)",
            ));
        }
        Ok(())
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            staff_idle_secs: 15 * 60,
            staff_absolute_secs: 8 * 3600,
            subject_idle_secs: 30 * 60,
            subject_absolute_secs: 8 * 3600,
            public_url: String::new(),
        }
    }
}

/// `[tls]` of the listener. Key names are a contract (DESIGN.md, "Transport").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first. Re-read on SIGHUP.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1). Re-read on SIGHUP.
    pub key_file: PathBuf,
    /// PEM CA certificates of institutions' client certificates. Present, a client may present
    /// a certificate (mutual TLS) and tokens issued over such a connection are bound to it.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

/// `[audit.ship]`: where this process ships its own audit chain (records and signed
/// checkpoints), as RFC 5424 syslog over TCP with octet-counted framing (RFC 6587 section
/// 3.4.1; RFC 5425 over TLS). See `crate::audit::ship`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ShipConfig {
    /// The receiver as `host:port` (`[v6]:port` for an IPv6 address). Over TLS the host is
    /// also the name its certificate must carry.
    pub address: String,
    /// TLS (RFC 5425): the receiver's certificate is verified against `ca_file` alone.
    #[serde(default)]
    pub tls: bool,
    /// PEM CA certificate(s) of the receiver; required with `tls`, refused without it.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The sink's name: what was shipped is remembered per (writer, sink), so renaming it
    /// ships the chain again from its start; also the `sink` label of the metrics.
    #[serde(default = "default_ship_sink")]
    pub sink: String,
    /// The syslog facility: `auth`, `authpriv`, `security` or `local0` to `local7`.
    #[serde(default = "default_ship_facility")]
    pub facility: String,
    /// A message longer than this is still shipped whole (cutting it would break its hash)
    /// but warned of and counted (`credgate_audit_ship_oversize_total`): a receiver with a
    /// smaller limit (rsyslog's `maxMessageSize`, 64 KiB in the README's setup) truncates
    /// or splits it.
    #[serde(default = "default_ship_max_message")]
    pub max_message_bytes: usize,
}

fn default_ship_max_message() -> usize {
    64 * 1024
}

fn default_ship_sink() -> String {
    "syslog".into()
}

fn default_ship_facility() -> String {
    "local0".into()
}

/// Facilities `[audit.ship] facility` accepts, with their RFC 5424 codes.
pub const SHIP_FACILITIES: &[(&str, u8)] = &[
    ("auth", 4),
    ("authpriv", 10),
    ("security", 13),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

impl ShipConfig {
    /// The host and port of `address`, or why it is not one.
    pub fn host_port(&self) -> Result<(&str, u16), String> {
        let bad = || format!("`{}` is not host:port", self.address);
        let (host, port) = self.address.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().ok().filter(|p| *p > 0).ok_or_else(bad)?;
        let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(v6) if v6.parse::<std::net::Ipv6Addr>().is_ok() => v6,
            Some(_) => return Err(bad()),
            None if host.parse::<std::net::Ipv4Addr>().is_ok() => host,
            None if is_dns_name(host) => host,
            None => return Err(bad()),
        };
        Ok((host, port))
    }

    /// The facility's RFC 5424 code (validated: unknown names were refused at load).
    pub fn facility_code(&self) -> u8 {
        SHIP_FACILITIES
            .iter()
            .find(|(n, _)| *n == self.facility)
            .map_or(16, |(_, c)| *c)
    }

    /// Every rule of the section; the key named is the one to fix.
    fn validate(&self) -> Result<(), ConfigError> {
        self.host_port()
            .map_err(|m| invalid("audit.ship.address", m))?;
        if !is_name(&self.sink) {
            return Err(invalid(
                "audit.ship.sink",
                "must be a name (lowercase letters, digits, `_` and `-`)",
            ));
        }
        if !SHIP_FACILITIES.iter().any(|(n, _)| *n == self.facility) {
            let names: Vec<&str> = SHIP_FACILITIES.iter().map(|(n, _)| *n).collect();
            return Err(invalid(
                "audit.ship.facility",
                format!("must be one of {}", names.join(", ")),
            ));
        }
        match (self.tls, &self.ca_file) {
            (true, None) => Err(invalid(
                "audit.ship.ca_file",
                "tls = true needs the PEM CA the receiver's certificate is verified against",
            )),
            (false, Some(_)) => Err(invalid(
                "audit.ship.ca_file",
                "only with tls = true (a CA would silently go unused over plain TCP)",
            )),
            _ if self.max_message_bytes < 480 => Err(invalid(
                "audit.ship.max_message_bytes",
                "at least 480 (RFC 5424 section 6.1: every receiver takes that much)",
            )),
            _ => Ok(()),
        }
    }
}

/// A DNS host name: dot-separated labels of ASCII letters, digits and inner hyphens.
fn is_dns_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// The `metrics_listen` value that turns the metrics listener off.
pub const METRICS_OFF: &str = "off";

fn default_metrics_listen() -> String {
    "127.0.0.1:9464".into()
}

/// More serving threads than this only adds memory: each holds its own pools and buffers.
pub const MAX_IO_THREADS: usize = 256;

impl Config {
    /// How many threads serve connections: `io_threads`, or one a core when it is 0.
    pub fn io_threads(&self) -> usize {
        match self.io_threads {
            0 => std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(MAX_IO_THREADS),
            n => n,
        }
    }

    /// `trusted_proxies` parsed; a bare address is its own /32 or /128. Invalid entries were
    /// refused by `validate`, so they are skipped here rather than trusted.
    pub fn trusted_proxy_nets(&self) -> Vec<ipnet::IpNet> {
        self.trusted_proxies
            .iter()
            .filter_map(|s| parse_net(s).ok())
            .collect()
    }

    /// The metrics listener's address, or `None` when it is off.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        if self.metrics_listen.trim() == METRICS_OFF {
            return None;
        }
        self.metrics_listen.trim().parse().ok()
    }

    /// `[tls]`, `trusted_proxies` and `metrics_listen`.
    fn validate_edge(&self) -> Result<(), ConfigError> {
        for (i, net) in self.trusted_proxies.iter().enumerate() {
            parse_net(net).map_err(|m| invalid(format!("trusted_proxies[{i}]"), m))?;
        }
        let m = self.metrics_listen.trim();
        if m != METRICS_OFF && m.parse::<SocketAddr>().is_err() {
            return Err(invalid(
                "metrics_listen",
                "must be HOST:PORT (an IP address and port) or \"off\"",
            ));
        }
        if let Some(tls) = &self.tls {
            for (k, p) in [
                ("tls.cert_file", &tls.cert_file),
                ("tls.key_file", &tls.key_file),
            ] {
                if p.as_os_str().is_empty() {
                    return Err(invalid(k, "must name a PEM file"));
                }
            }
        }
        Ok(())
    }
}

fn parse_net(s: &str) -> Result<ipnet::IpNet, String> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map(|n| n.trunc())
        .map_err(|_| format!("`{s}` is not a CIDR (10.0.0.0/8, fd00::/8) or an IP address"))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default = "default_issuer")]
    pub issuer: String,
    #[serde(default = "default_audience")]
    pub audience: String,
    #[serde(default = "default_token_ttl")]
    pub token_ttl_secs: u64,
    /// Clock skew tolerated on `exp`/`nbf`, for institutions whose clocks drift a little.
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            issuer: default_issuer(),
            audience: default_audience(),
            token_ttl_secs: default_token_ttl(),
            leeway_secs: default_leeway(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Cap on any request body the gateway itself reads (token form, JSON bodies).
    #[serde(default = "default_max_body")]
    pub max_request_bytes: usize,
    /// A request's head must arrive within this, counted from the connection's start or the
    /// end of the previous response (so it is also the keep-alive idle limit between requests).
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout_ms: u64,
    /// A request's body must have arrived this long after its head.
    #[serde(default = "default_body_read_timeout")]
    pub body_read_timeout_ms: u64,
    /// A connection on which no byte moves either way while no request is being handled (a
    /// client that stops reading its answer, say) is closed after this.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_ms: u64,
    /// Connections open at once (1 to 1,000,000). At the cap, the oldest connection waiting for
    /// a request head is closed to admit a new one; if every one is busy, the new one is closed.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Connections one source address (IPv6: one /64) may hold open at once (1 to 1,000,000;
    /// above `max_connections` it is no limit); those above are closed as soon as accepted.
    #[serde(default = "default_max_connections_per_address")]
    pub max_connections_per_address: usize,
}

impl LimitsConfig {
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }
    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_millis(self.body_read_timeout_ms)
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_request_bytes: default_max_body(),
            header_read_timeout_ms: default_header_read_timeout(),
            body_read_timeout_ms: default_body_read_timeout(),
            idle_timeout_ms: default_idle_timeout(),
            max_connections: default_max_connections(),
            max_connections_per_address: default_max_connections_per_address(),
        }
    }
}

fn default_header_read_timeout() -> u64 {
    10_000
}
fn default_body_read_timeout() -> u64 {
    30_000
}
fn default_idle_timeout() -> u64 {
    60_000
}
fn default_max_connections() -> usize {
    1024
}
fn default_max_connections_per_address() -> usize {
    64
}

/// One trusted OpenID Connect provider (`[[identity_providers]]`). The key names are a contract
/// (DESIGN.md, "Transport"); the defaults keep a pre-OIDC config, which named only `issuer`,
/// `audience` and `jwks_file`, meaning what it meant: a subject provider with static keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityProviderConfig {
    /// Exactly as the provider writes it in `iss`; discovery lives under it.
    pub issuer: String,
    #[serde(default)]
    pub kind: IdentityProviderKind,
    /// The audience this provider puts in tokens meant for credgate.
    pub audience: String,
    /// A JWKS file for a provider without discovery. Empty (the default) means: discover
    /// `{issuer}/.well-known/openid-configuration`. A path rather than an `Option` so that code
    /// reading it as a path keeps compiling; use [`IdentityProviderConfig::static_jwks`].
    #[serde(default)]
    pub jwks_file: PathBuf,
    /// Subject providers: the subject id; staff providers: the person id.
    #[serde(default = "default_subject_id_claim")]
    pub subject_id_claim: String,
    /// Subject providers: `legal` or `natural`.
    #[serde(default = "default_subject_type_claim")]
    pub subject_type_claim: String,
    /// Staff providers: the claim holding the person's groups or roles (a string or a list).
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// Staff providers: the person's display name and organisation.
    #[serde(default = "default_name_claim")]
    pub name_claim: String,
    #[serde(default = "default_org_claim")]
    pub org_claim: String,
    /// Staff providers: provider group -> credgate role. Groups not named here are dropped.
    #[serde(default)]
    pub role_map: std::collections::BTreeMap<String, String>,
    /// credgate role (or `subject`) -> `acr` values of which the token must carry one.
    #[serde(default)]
    pub require_acr: std::collections::BTreeMap<String, Vec<String>>,
    /// credgate role (or `subject`) -> `amr` values the token must carry all of.
    #[serde(default)]
    pub require_amr: std::collections::BTreeMap<String, Vec<String>>,
    /// How often the keys are fetched again even when every `kid` is known.
    #[serde(default = "default_jwks_refresh_secs")]
    pub jwks_refresh_secs: u64,
    /// The least time between two fetches caused by an unknown `kid`, so that a stream of
    /// made-up kids cannot make credgate hammer the provider.
    #[serde(default = "default_unknown_kid_refresh_secs")]
    pub unknown_kid_refresh_secs: u64,
    /// An `https://` issuer found by discovery: the PEM CA its certificate (and its JWKS
    /// host's) must chain to. Required there, refused elsewhere; the system's roots are never
    /// consulted and nothing turns verification off (point it at a CA bundle to trust those).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl IdentityProviderConfig {
    /// The JWKS file of a provider without discovery.
    pub fn static_jwks(&self) -> Option<&Path> {
        (!self.jwks_file.as_os_str().is_empty()).then_some(self.jwks_file.as_path())
    }
}

/// Whose tokens a provider issues.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentityProviderKind {
    /// Data subjects (companies and persons), about their own records.
    #[default]
    Subject,
    /// People working the gateway: security officers, objection handlers, ...
    Staff,
}

fn default_subject_id_claim() -> String {
    "sub".into()
}
fn default_subject_type_claim() -> String {
    "subject_type".into()
}
fn default_roles_claim() -> String {
    "groups".into()
}
fn default_name_claim() -> String {
    "name".into()
}
fn default_org_claim() -> String {
    "org".into()
}
fn default_jwks_refresh_secs() -> u64 {
    300
}
fn default_unknown_kid_refresh_secs() -> u64 {
    5
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoIdentityProviderConfig {
    pub issuer: String,
    pub audience: String,
    /// PKCS#8 Ed25519 private key of the demo provider.
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    pub name: String,
    /// `http://host:port[/prefix]` or `https://...` (then `ca_file` is required).
    pub upstream: String,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    #[serde(default = "default_response_timeout")]
    pub response_timeout_ms: u64,
    #[serde(default = "default_max_response")]
    pub max_response_bytes: usize,
    #[serde(default = "default_max_store_request")]
    pub max_request_bytes: usize,
    /// What credgate presents to the store; the caller's own credentials never reach it.
    #[serde(default)]
    pub credential: Option<StoreCredential>,
    /// Where the store receives forwarded objections (POST, JSON, `Idempotency-Key`).
    #[serde(default = "default_objections_path")]
    pub objections_path: String,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// `https://` upstreams: the PEM CA the store's certificate must chain to (required; there
    /// is no switch that turns verification off).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// `https://` upstreams: a PEM client certificate chain and key credgate presents.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
}

impl StoreConfig {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
    pub fn response_timeout(&self) -> Duration {
        Duration::from_millis(self.response_timeout_ms)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreCredential {
    /// Header name, e.g. `Authorization`.
    pub header: String,
    /// The header value, inline. Prefer `value_env` so the secret stays out of the file.
    #[serde(default)]
    pub value: Option<SecretString>,
    /// Name of an environment variable holding the header value.
    #[serde(default)]
    pub value_env: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub method: String,
    /// Path on the store, with `{name}` placeholders for whole segments: `/entities/{uscc}`.
    pub path: String,
    pub dataset: String,
    /// The path placeholder that names the data subject.
    #[serde(default)]
    pub subject_path: Option<String>,
    /// The query parameter that names the data subject.
    #[serde(default)]
    pub subject_query: Option<String>,
    #[serde(default)]
    pub subject_type: Option<SubjectType>,
    /// Part of the one-stop profile (`/v1/subjects/{id}/profile`) for its subject type. Only
    /// routes whose one placeholder is the subject can be.
    #[serde(default)]
    pub profile: bool,
    /// The query parameters this route allows (besides `subject_query`); any other is refused
    /// with 400. Absent or empty: the route takes no query parameter at all (fail closed).
    #[serde(default)]
    pub query: Option<Vec<String>>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_storage_url() -> String {
    "sqlite://credgate.db".into()
}
fn default_key_dir() -> PathBuf {
    "keys".into()
}
fn default_policy_dir() -> PathBuf {
    "policies".into()
}
fn default_issuer() -> String {
    "credgate".into()
}
fn default_audience() -> String {
    "credgate-api".into()
}
fn default_token_ttl() -> u64 {
    15 * 60
}
fn default_leeway() -> u64 {
    30
}
fn default_max_body() -> usize {
    64 * 1024
}
fn default_objections_path() -> String {
    "/objections".into()
}
fn default_connect_timeout() -> u64 {
    2_000
}
fn default_response_timeout() -> u64 {
    10_000
}
fn default_max_response() -> usize {
    4 * 1024 * 1024
}
fn default_max_store_request() -> usize {
    64 * 1024
}

impl Default for Config {
    fn default() -> Self {
        toml::from_str("").expect("empty config deserialises to defaults")
    }
}

/// Environment variables that override top-level keys. Each is named after its key.
pub const ENV_OVERRIDES: &[(&str, &str)] = &[
    ("CREDGATE_LISTEN", "listen"),
    ("CREDGATE_METRICS_LISTEN", "metrics_listen"),
    ("CREDGATE_STORAGE_URL", "storage_url"),
    ("CREDGATE_KEY_DIR", "key_dir"),
    ("CREDGATE_POLICY_DIR", "policy_dir"),
    ("CREDGATE_TOKEN_TTL_SECS", "auth.token_ttl_secs"),
];

impl Config {
    /// Loads `path`; a missing file is an error only when the caller named it explicitly.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let (path, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_FILE), false),
        };
        let mut config = match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text, &path.display().to_string())?,
            Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => Config::default(),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        config.apply_env(|k| std::env::var(k).ok())?;
        // Relative paths mean "beside the config file", so a config dir can be moved whole.
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf);
        if let Some(base) = base {
            config.rebase(&base);
        }
        config.validate()?;
        Ok(config)
    }

    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: e.to_string(),
        })
    }

    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        for (var, key) in ENV_OVERRIDES {
            let Some(value) = get(var) else { continue };
            let bad = |what: &str| invalid(*key, format!("from ${var}: {what}"));
            match *key {
                "listen" => {
                    self.listen = value
                        .parse()
                        .map_err(|_| bad("expected an address like 127.0.0.1:8080"))?
                }
                "metrics_listen" => self.metrics_listen = value,
                "storage_url" => self.storage_url = value,
                "key_dir" => self.key_dir = value.into(),
                "policy_dir" => self.policy_dir = value.into(),
                "auth.token_ttl_secs" => {
                    self.auth.token_ttl_secs =
                        value.parse().map_err(|_| bad("expected whole seconds"))?
                }
                _ => unreachable!("every override names a handled key"),
            }
        }
        Ok(())
    }

    fn rebase(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.key_dir);
        fix(&mut self.policy_dir);
        for idp in &mut self.identity_providers {
            if idp.static_jwks().is_some() {
                fix(&mut idp.jwks_file);
            }
            idp.ca_file.iter_mut().for_each(fix);
        }
        if let Some(demo) = &mut self.demo_identity_provider {
            fix(&mut demo.key_file);
        }
        if let Some(ship) = &mut self.audit.ship {
            ship.ca_file.iter_mut().for_each(fix);
        }
        if let Some(tls) = &mut self.tls {
            fix(&mut tls.cert_file);
            fix(&mut tls.key_file);
            tls.client_ca_file.iter_mut().for_each(fix);
        }
        for store in &mut self.stores {
            for p in [
                &mut store.ca_file,
                &mut store.client_cert_file,
                &mut store.client_key_file,
            ] {
                p.iter_mut().for_each(fix);
            }
        }
        if let Some(rest) = self.storage_url.strip_prefix("sqlite://") {
            let file = rest.split('?').next().unwrap_or(rest);
            if !file.is_empty() && !file.starts_with(':') && Path::new(file).is_relative() {
                self.storage_url = format!("sqlite://{}", base.join(rest).display());
            }
        }
    }

    /// Semantic checks serde cannot express. Each part names the key it refuses, so an
    /// operator can fix the file without reading code.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_globals()?;
        self.validate_edge()?;
        self.sessions.validate()?;
        let mut names = std::collections::HashSet::new();
        for (i, store) in self.stores.iter().enumerate() {
            validate_store(i, store, &mut names)?;
            for (j, route) in store.routes.iter().enumerate() {
                validate_route(i, j, route)?;
            }
        }
        self.validate_identity_providers()
    }

    /// `[[identity_providers]]`: issuers usable for discovery, one provider per issuer and
    /// audience (the audience tells a shared issuer's staff and subject tokens apart), and a
    /// staff provider that can map at least one role.
    fn validate_identity_providers(&self) -> Result<(), ConfigError> {
        let mut issuers = std::collections::HashSet::new();
        for (i, idp) in self.identity_providers.iter().enumerate() {
            let key = |k: &str| format!("identity_providers[{i}].{k}");
            validate_issuer(idp).map_err(|m| invalid(key("issuer"), m))?;
            if !issuers.insert((idp.issuer.as_str(), idp.audience.as_str())) {
                return Err(invalid(
                    key("issuer"),
                    "another provider has the same issuer and audience (one issuer may serve \
                     both kinds only under different audiences)",
                ));
            }
            if idp.audience.trim().is_empty() {
                return Err(invalid(key("audience"), "must not be empty"));
            }
            validate_idp_mapping(idp, key)?;
            if idp.jwks_refresh_secs < 10 || idp.unknown_kid_refresh_secs == 0 {
                return Err(invalid(
                    key("jwks_refresh_secs"),
                    "jwks_refresh_secs must be at least 10 and unknown_kid_refresh_secs at least 1",
                ));
            }
            validate_idp_ca(idp).map_err(|m| invalid(key("ca_file"), m))?;
        }
        Ok(())
    }

    /// Storage, token, audit and connection limits.
    fn validate_globals(&self) -> Result<(), ConfigError> {
        if !(self.storage_url.starts_with("sqlite:")
            || self.storage_url.starts_with("postgres://")
            || self.storage_url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "storage_url",
                "must start with sqlite:// or postgres://",
            ));
        }
        if self.auth.token_ttl_secs == 0 || self.auth.token_ttl_secs > 24 * 3600 {
            return Err(invalid(
                "auth.token_ttl_secs",
                "must be between 1 and 86400 seconds; tokens are meant to be short-lived",
            ));
        }
        if self.audit.retention_days < crate::audit::archive::MIN_RETENTION_DAYS {
            return Err(invalid(
                "audit.retention_days",
                "must be at least 183 days (six months); the default is 1826 (five years)",
            ));
        }
        if self.audit.batch_max == 0 || self.audit.checkpoint_every <= 0 {
            return Err(invalid(
                "audit",
                "batch_max and checkpoint_every must be positive",
            ));
        }
        if let Some(id) = &self.audit.writer_id
            && let Err(why) = crate::audit::check_writer_id(id)
        {
            return Err(invalid("audit.writer_id", &why));
        }
        if let Some(ship) = &self.audit.ship {
            ship.validate()?;
            // The default id (host name and listen address) changes with a new pod or port,
            // and a chain whose id changed is only shipped once its lease runs out: refuse
            // rather than ship under an id that may not survive the next deploy.
            if self.audit.writer_id.is_none() {
                return Err(invalid(
                    "audit.writer_id",
                    "[audit.ship] needs an explicit, stable [audit] writer_id (one per replica)",
                ));
            }
        }
        for (k, v) in [
            (
                "limits.header_read_timeout_ms",
                self.limits.header_read_timeout_ms,
            ),
            (
                "limits.body_read_timeout_ms",
                self.limits.body_read_timeout_ms,
            ),
            ("limits.idle_timeout_ms", self.limits.idle_timeout_ms),
        ] {
            if v == 0 || v > 600_000 {
                return Err(invalid(k, "must be between 1 and 600000 ms"));
            }
        }
        if self.io_threads > MAX_IO_THREADS {
            return Err(invalid(
                "io_threads",
                format!("must be between 0 (one a core) and {MAX_IO_THREADS}"),
            ));
        }
        if !(1..=1_000_000).contains(&self.limits.max_connections) {
            return Err(invalid(
                "limits.max_connections",
                "must be between 1 and 1000000",
            ));
        }
        if !(1..=1_000_000).contains(&self.limits.max_connections_per_address) {
            return Err(invalid(
                "limits.max_connections_per_address",
                "must be between 1 and 1000000",
            ));
        }
        if self.auth.leeway_secs > 300 {
            return Err(invalid("auth.leeway_secs", "must be at most 300 seconds"));
        }
        Ok(())
    }
}

/// One store's name, upstream, timeouts and credential.
fn validate_store<'a>(
    i: usize,
    store: &'a StoreConfig,
    names: &mut std::collections::HashSet<&'a str>,
) -> Result<(), ConfigError> {
    let key = |k: &str| format!("stores[{i}].{k}");
    if !is_name(&store.name) {
        return Err(invalid(
            key("name"),
            "must be 1-64 characters of a-z, 0-9, '-' or '_'",
        ));
    }
    if !names.insert(store.name.as_str()) {
        return Err(invalid(
            key("name"),
            format!("duplicate store name `{}`", store.name),
        ));
    }
    let uri: http::Uri = store
        .upstream
        .parse()
        .map_err(|_| invalid(key("upstream"), "not a valid URL"))?;
    if uri.authority().is_none() {
        return Err(invalid(
            key("upstream"),
            "must be an http(s)://host:port URL",
        ));
    }
    validate_store_tls(store, uri.scheme_str(), &key)?;
    if uri.query().is_some() {
        return Err(invalid(key("upstream"), "must not carry a query string"));
    }
    for (k, v) in [
        ("connect_timeout_ms", store.connect_timeout_ms),
        ("response_timeout_ms", store.response_timeout_ms),
    ] {
        if v == 0 || v > 120_000 {
            return Err(invalid(key(k), "must be between 1 and 120000 ms"));
        }
    }
    if store.max_response_bytes == 0 {
        return Err(invalid(key("max_response_bytes"), "must be positive"));
    }
    if let Some(cred) = &store.credential {
        if http::HeaderName::try_from(cred.header.as_str()).is_err() {
            return Err(invalid(key("credential.header"), "not a valid header name"));
        }
        match (&cred.value, &cred.value_env) {
            (Some(_), None) | (None, Some(_)) => {}
            _ => {
                return Err(invalid(
                    key("credential"),
                    "set exactly one of `value` and `value_env`",
                ));
            }
        }
    }
    Ok(())
}

/// An `https://` upstream names the CA to verify it against, and a client certificate comes with
/// its key; an `http://` one carries no TLS keys that would silently go unused.
fn validate_store_tls(
    store: &StoreConfig,
    scheme: Option<&str>,
    key: &impl Fn(&str) -> String,
) -> Result<(), ConfigError> {
    let has_client = (
        store.client_cert_file.is_some(),
        store.client_key_file.is_some(),
    );
    match scheme {
        Some("https") => {
            if store.ca_file.is_none() {
                return Err(invalid(
                    key("ca_file"),
                    "an https:// upstream needs the PEM CA its certificate is verified against",
                ));
            }
            if has_client.0 != has_client.1 {
                return Err(invalid(
                    key("client_cert_file"),
                    "set both client_cert_file and client_key_file, or neither",
                ));
            }
            Ok(())
        }
        Some("http") => {
            if store.ca_file.is_some() || has_client.0 || has_client.1 {
                return Err(invalid(
                    key("ca_file"),
                    "TLS files are only for an https:// upstream",
                ));
            }
            Ok(())
        }
        _ => Err(invalid(
            key("upstream"),
            "must be an http:// or https:// URL",
        )),
    }
}

/// One route of store `i`: its pattern, method, dataset, subject and profile declarations.
/// An identity provider's claim names, role map and factor requirements: what turns a
/// verified token into a person.
fn validate_idp_mapping(
    idp: &IdentityProviderConfig,
    key: impl Fn(&str) -> String,
) -> Result<(), ConfigError> {
    for (k, v) in [
        ("subject_id_claim", &idp.subject_id_claim),
        ("subject_type_claim", &idp.subject_type_claim),
        ("roles_claim", &idp.roles_claim),
        ("name_claim", &idp.name_claim),
        ("org_claim", &idp.org_claim),
    ] {
        if v.trim().is_empty() {
            return Err(invalid(key(k), "must not be empty"));
        }
    }
    if idp.kind == IdentityProviderKind::Staff && idp.role_map.is_empty() {
        return Err(invalid(
            key("role_map"),
            "a staff provider needs at least one `group = \"role\"` entry",
        ));
    }
    if let Some((g, _)) = idp
        .role_map
        .iter()
        .find(|(g, r)| g.is_empty() || !is_role_name(r))
    {
        return Err(invalid(
            key("role_map"),
            format!("entry `{g}` must map a non-empty group to a role name (a-z, 0-9, _)"),
        ));
    }
    for (k, map) in [
        ("require_acr", &idp.require_acr),
        ("require_amr", &idp.require_amr),
    ] {
        if let Some((r, _)) = map.iter().find(|(r, v)| !is_role_name(r) || v.is_empty()) {
            return Err(invalid(
                key(k),
                format!("entry `{r}` must name a role and at least one value"),
            ));
        }
    }
    Ok(())
}

/// An issuer credgate can discover: `https://...`, or `http://` on loopback only (the demo and
/// tests), since keys fetched over plain HTTP from elsewhere could be swapped on the way. A
/// provider with a static `jwks_file` is never fetched, so its issuer is only a name.
fn validate_issuer(idp: &IdentityProviderConfig) -> Result<(), String> {
    let issuer = idp.issuer.as_str();
    if issuer.trim().is_empty() || issuer != issuer.trim() {
        return Err("must not be empty or padded with spaces".into());
    }
    if idp.static_jwks().is_some() {
        return Ok(());
    }
    let uri: http::Uri = issuer
        .parse()
        .map_err(|_| format!("`{issuer}` is not a URL (needed for discovery; or set jwks_file)"))?;
    let loopback = uri.host().is_some_and(|h| {
        h == "localhost"
            || h.trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    });
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if loopback => {}
        _ => {
            return Err(format!(
                "`{issuer}` must be an https:// URL (http:// only on loopback)"
            ));
        }
    }
    if uri.query().is_some() {
        return Err("must not have a query".into());
    }
    Ok(())
}

/// An issuer fetched over https names the CA to verify it against; a CA anywhere else (a
/// plain-HTTP loopback issuer, a static `jwks_file`) would silently go unused.
fn validate_idp_ca(idp: &IdentityProviderConfig) -> Result<(), String> {
    let fetched_over_tls = idp.static_jwks().is_none() && idp.issuer.starts_with("https://");
    match (fetched_over_tls, &idp.ca_file) {
        (true, None) => Err(
            "an https:// issuer found by discovery needs the PEM CA its certificate is verified against"
                .into(),
        ),
        (false, Some(_)) => {
            Err("only for an https:// issuer found by discovery (no jwks_file)".into())
        }
        _ => Ok(()),
    }
}

fn is_role_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn validate_route(i: usize, j: usize, route: &RouteConfig) -> Result<(), ConfigError> {
    let key = |k: &str| format!("stores[{i}].routes[{j}].{k}");
    crate::proxy::route::RoutePattern::parse(&route.path).map_err(|m| invalid(key("path"), m))?;
    if http::Method::from_bytes(route.method.as_bytes()).is_err()
        || route.method != route.method.to_ascii_uppercase()
    {
        return Err(invalid(
            key("method"),
            "must be an upper-case HTTP method such as GET",
        ));
    }
    if !is_name(&route.dataset) {
        return Err(invalid(
            key("dataset"),
            "must be 1-64 characters of a-z, 0-9, '-' or '_'",
        ));
    }
    let pattern = crate::proxy::route::RoutePattern::parse(&route.path).expect("checked above");
    if let Some(p) = &route.subject_path
        && !pattern.params().any(|n| n == p)
    {
        return Err(invalid(
            key("subject_path"),
            format!("`{p}` is not a placeholder of path `{}`", route.path),
        ));
    }
    if route.subject_path.is_some() && route.subject_query.is_some() {
        return Err(invalid(
            key("subject_query"),
            "set at most one of `subject_path` and `subject_query`",
        ));
    }
    if (route.subject_path.is_some() || route.subject_query.is_some())
        != route.subject_type.is_some()
    {
        return Err(invalid(
            key("subject_type"),
            "a route that names a subject needs `subject_type` (legal or natural), and only then",
        ));
    }
    if let Some(q) = route.query.iter().flatten().find(|q| !is_name(q)) {
        return Err(invalid(
            key("query"),
            format!("`{q}`: parameter names are 1-64 characters of a-z, 0-9, '-' or '_'"),
        ));
    }
    if route.profile
        && (route.method != "GET" || route.subject_path.is_none() || pattern.params().count() != 1)
    {
        return Err(invalid(
            key("profile"),
            "a profile section must be a GET route whose only placeholder is its subject_path",
        ));
    }
    Ok(())
}

pub use crate::domain::names::is_name;

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        let c = Config::parse(text, "t.toml");
        match c {
            Err(e) => e.to_string(),
            Ok(c) => c.validate().unwrap_err().to_string(),
        }
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let e = err("listen = \"127.0.0.1:1\"\nlisten_adress = 3\n");
        assert!(e.contains("listen_adress"), "{e}");
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn bad_upstream_names_the_store_key() {
        let e = err("[[stores]]\nname = \"power\"\nupstream = \"ftp://x\"\n");
        assert!(e.contains("stores[0].upstream"), "{e}");
    }

    #[test]
    fn subject_placeholder_must_exist() {
        let e = err(
            "[[stores]]\nname='p'\nupstream='http://127.0.0.1:1'\n[[stores.routes]]\nmethod='GET'\npath='/entities/{uscc}'\ndataset='entity'\nsubject_path='id'\nsubject_type='legal'\n",
        );
        assert!(e.contains("stores[0].routes[0].subject_path"), "{e}");
    }

    #[test]
    fn env_overrides_win_and_bad_values_name_the_variable() {
        let mut c = Config::default();
        c.apply_env(|k| (k == "CREDGATE_STORAGE_URL").then(|| "sqlite://x.db".to_string()))
            .unwrap();
        assert_eq!(c.storage_url, "sqlite://x.db");
        let e = c
            .apply_env(|k| (k == "CREDGATE_LISTEN").then(|| "nope".to_string()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("CREDGATE_LISTEN") && e.contains("`listen`"),
            "{e}"
        );
    }

    #[test]
    fn credential_secret_is_not_printed_by_debug() {
        let c = Config::parse(
            "[[stores]]\nname='p'\nupstream='http://127.0.0.1:1'\ncredential={header='Authorization', value='Bearer s3cr3t'}\n",
            "t",
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }

    #[test]
    fn the_shipped_example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../credgate.example.toml");
        let c = Config::load(Some(&path)).unwrap();
        assert_eq!(c.stores[0].routes[0].subject_type, Some(SubjectType::Legal));
    }

    #[test]
    fn edge_keys_are_checked_and_tls_paths_follow_the_config_file() {
        let e = err("trusted_proxies = [\"10.0.0.0/33\"]\n");
        assert!(e.contains("trusted_proxies[0]"), "{e}");
        let e = err("trusted_proxies = [\"everyone\"]\n");
        assert!(e.contains("trusted_proxies[0]"), "{e}");
        let e = err("metrics_listen = \"localhost\"\n");
        assert!(e.contains("metrics_listen"), "{e}");
        let e = err("[[stores]]\nname = \"s\"\nupstream = \"http://h:1\"\nca_file = \"ca.pem\"\n");
        assert!(e.contains("only for an https"), "{e}");
        let e = err("[[stores]]\nname = \"s\"\nupstream = \"ftp://h:1\"\n");
        assert!(e.contains("upstream"), "{e}");
        let c = Config::parse(
            "metrics_listen = \"off\"\ntrusted_proxies = [\"10.1.2.3\", \"fd00::/8\"]\n",
            "t",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.metrics_addr(), None);
        assert_eq!(c.trusted_proxy_nets().len(), 2);
        assert_eq!(
            Config::default().metrics_addr(),
            Some("127.0.0.1:9464".parse().unwrap())
        );

        let dir = std::env::temp_dir().join(format!("credgate-cfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "[tls]\ncert_file = \"tls/c.pem\"\nkey_file = \"/abs/k.pem\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&file)).unwrap();
        let tls = c.tls.unwrap();
        assert_eq!(tls.cert_file, dir.join("tls/c.pem"));
        assert_eq!(tls.key_file, PathBuf::from("/abs/k.pem"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
