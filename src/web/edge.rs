//! What the connection loop needs to know about the edge: the TLS server configuration (swapped
//! on SIGHUP without touching open connections), the client certificate a connection
//! presented, and which address is the client's when load balancers stand in front.

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    sync::{Arc, RwLock},
};

use anyhow::Context as _;
use base64::Engine as _;
use http::HeaderMap;
use ipnet::IpNet;
use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};

use crate::config::{Config, TlsConfig};

/// The TCP peer of a request, whatever `ConnectInfo` says the client is (behind a trusted proxy
/// `ConnectInfo` holds the first untrusted hop instead).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// The SHA-256 thumbprint (base64url, RFC 8705 `x5t#S256`) of the certificate the client
/// presented on this request's connection; absent when it presented none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert(pub String);

impl ClientCert {
    pub fn of(der: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        Self(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref()))
    }
}

/// Marks a request that arrived over TLS on this listener (not over a proxy's TLS).
#[derive(Debug, Clone, Copy)]
pub struct Https;

/// The edge settings the accept loop reads: TLS (if any) and whose forwarding headers count.
#[derive(Clone, Default)]
pub struct Edge {
    pub tls: Option<Arc<TlsHolder>>,
    pub proxies: Arc<Vec<IpNet>>,
}

impl Edge {
    /// Loads the certificate files now, so that a bad `[tls]` stops the start rather than the
    /// first handshake.
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let tls = match &config.tls {
            Some(t) => Some(Arc::new(TlsHolder::load(t.clone())?)),
            None => None,
        };
        Ok(Self {
            tls,
            proxies: Arc::new(config.trusted_proxy_nets()),
        })
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.proxies.iter().any(|n| n.contains(&ip))
    }

    /// The client's address: the TCP peer, unless the peer is a trusted proxy; then the first
    /// untrusted hop from the right of its forwarding header. A hop that cannot be read stops
    /// the walk at the last trusted address (a client cannot hide behind garbage: it only
    /// lands in its proxy's bucket). Both headers at once are ambiguous (which one did our
    /// proxy write?), and so are more than `MAX_HOPS` trusted hops: the proxy's address again.
    pub fn client_addr(&self, peer: SocketAddr, headers: &HeaderMap) -> SocketAddr {
        if self.proxies.is_empty() || !self.trusts(peer.ip()) {
            return peer;
        }
        let forwarded = joined(headers, "forwarded");
        let xff = joined(headers, "x-forwarded-for");
        let hops: Vec<Option<SocketAddr>> = match (forwarded, xff) {
            (Some(f), None) => forwarded_for(&f),
            (None, Some(x)) => x.split(',').map(|h| parse_hop(h.trim())).collect(),
            _ => return peer,
        };
        let mut client = peer;
        for hop in hops.iter().rev().take(MAX_HOPS) {
            let Some(addr) = hop else { return client };
            client = SocketAddr::new(canonical(addr.ip()), addr.port());
            if !self.trusts(client.ip()) {
                return client;
            }
        }
        client
    }
}

/// Proxies in a chain the gateway follows; a longer chain of trusted hops is not believed.
const MAX_HOPS: usize = 16;

/// Every line of header `name`, in order, joined with commas (RFC 9110 list semantics); `None`
/// when absent or not text.
fn joined(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut parts = Vec::new();
    for v in headers.get_all(name) {
        parts.push(v.to_str().ok()?.to_owned());
    }
    (!parts.is_empty()).then(|| parts.join(","))
}

/// The `for=` of each element of a `Forwarded` header (RFC 7239), left to right; an element
/// without a readable `for=` is a `None` hop.
fn forwarded_for(value: &str) -> Vec<Option<SocketAddr>> {
    value
        .split(',')
        .map(|element| {
            element
                .split(';')
                .filter_map(|pair| pair.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("for"))
                .and_then(|(_, v)| parse_hop(v.trim().trim_matches('"')))
        })
        .collect()
}

/// One hop: `1.2.3.4`, `1.2.3.4:80`, `::1`, `[::1]`, `[::1]:80`. Port 0 when none is given.
/// Anything else (`unknown`, obfuscated names, garbage) is `None`.
fn parse_hop(hop: &str) -> Option<SocketAddr> {
    if hop.is_empty() || hop.len() > 64 {
        return None;
    }
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, 0));
    }
    if let Some(inner) = hop.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner
            .parse::<std::net::Ipv6Addr>()
            .ok()
            .map(|ip| SocketAddr::new(ip.into(), 0));
    }
    hop.parse::<SocketAddr>().ok()
}

/// An IPv4-mapped IPv6 address is the IPv4 address: one client, one bucket, one CIDR match.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The current TLS server configuration; SIGHUP swaps it, open connections keep theirs.
pub struct TlsHolder {
    files: TlsConfig,
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsHolder {
    pub fn load(files: TlsConfig) -> anyhow::Result<Self> {
        let config = server_config(&files)?;
        Ok(Self {
            files,
            current: RwLock::new(config),
        })
    }

    pub fn current(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-reads the files; on any error the old configuration stays and the error is logged,
    /// so that a half-copied certificate never takes the listener down.
    pub fn reload(&self) {
        match server_config(&self.files) {
            Ok(config) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = config;
                tracing::info!("TLS certificate reloaded");
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "TLS reload failed; the previous certificate stays")
            }
        }
    }

    pub fn mutual(&self) -> bool {
        self.files.client_ca_file.is_some()
    }
}

/// TLS 1.3 and 1.2 with ring's suites (AEAD only, forward secret), HTTP/1.1 by ALPN, and, with
/// `client_ca_file`, an optional client certificate verified against that CA.
fn server_config(files: &TlsConfig) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certs(&files.cert_file).context("tls.cert_file")?;
    let key = PrivateKeyDer::from_pem_file(&files.key_file).with_context(|| {
        format!(
            "tls.key_file {}: no readable private key",
            files.key_file.display()
        )
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match &files.client_ca_file {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certs(ca).context("tls.client_ca_file")? {
                roots
                    .add(cert)
                    .context("tls.client_ca_file: not a CA certificate")?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .context("tls.client_ca_file")?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .context("tls.cert_file and tls.key_file do not make a usable pair")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Every certificate in a PEM file; none at all is an error.
pub fn certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: not PEM", path.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{}: no certificate in it",
        path.display()
    );
    Ok(certs)
}

/// Reloads the certificate on every SIGHUP until the returned task is aborted.
pub fn spawn_reload(tls: Arc<TlsHolder>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("no SIGHUP handler: TLS certificates will not be reloaded");
            return;
        };
        while hup.recv().await.is_some() {
            let tls = tls.clone();
            // File reads and key parsing off the async threads.
            let _ = tokio::task::spawn_blocking(move || tls.reload()).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(nets: &[&str]) -> Edge {
        Edge {
            tls: None,
            proxies: Arc::new(nets.iter().map(|n| n.parse().unwrap()).collect()),
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn client(e: &Edge, peer: &str, pairs: &[(&str, &str)]) -> IpAddr {
        e.client_addr(peer.parse().unwrap(), &headers(pairs)).ip()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_cannot_name_another_address() {
        let e = edge(&["10.0.0.0/8"]);
        let spoof = [("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=5.6.7.8")];
        assert_eq!(
            client(&e, "203.0.113.9:5000", &spoof[..1]),
            ip("203.0.113.9")
        );
        assert_eq!(
            client(&e, "203.0.113.9:5000", &spoof[1..]),
            ip("203.0.113.9")
        );
        // No proxies configured: nobody is believed, not even loopback.
        assert_eq!(
            client(&edge(&[]), "127.0.0.1:1", &spoof[..1]),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn the_first_untrusted_hop_from_the_right_is_the_client() {
        let e = edge(&["10.0.0.0/8", "fd00::/8"]);
        // The client wrote "1.1.1.1" itself; our proxy appended what it saw, 198.51.100.7.
        let xff = [("x-forwarded-for", "1.1.1.1, 198.51.100.7, 10.0.0.2")];
        assert_eq!(client(&e, "10.0.0.1:80", &xff), ip("198.51.100.7"));
        let split = [
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "198.51.100.7"),
        ];
        assert_eq!(client(&e, "10.0.0.1:80", &split), ip("198.51.100.7"));
        // All hops trusted: the leftmost is as far as we can see.
        let inner = [("x-forwarded-for", "10.9.9.9, 10.0.0.2")];
        assert_eq!(client(&e, "10.0.0.1:80", &inner), ip("10.9.9.9"));
        // A trusted peer that forwarded nothing is itself the client.
        assert_eq!(client(&e, "10.0.0.1:80", &[]), ip("10.0.0.1"));
    }

    #[test]
    fn garbage_in_the_chain_stops_at_the_last_trusted_address() {
        let e = edge(&["10.0.0.0/8"]);
        for junk in [
            "unknown",
            "_hidden",
            "999.1.1.1",
            "1.2.3.4.5",
            "",
            "[::1",
            "a b",
        ] {
            let chain = format!("1.2.3.4, {junk}, 10.0.0.7");
            assert_eq!(
                client(&e, "10.0.0.1:80", &[("x-forwarded-for", chain.as_str())]),
                ip("10.0.0.7"),
                "{junk:?}"
            );
        }
        // Garbage to the left of an untrusted hop is never reached.
        let left = [("x-forwarded-for", "%%%, 198.51.100.7")];
        assert_eq!(client(&e, "10.0.0.1:80", &left), ip("198.51.100.7"));
    }

    #[test]
    fn ipv6_forms_and_rfc7239_quoting() {
        let e = edge(&["::1/128", "10.0.0.0/8"]);
        let f = [(
            "forwarded",
            "for=\"[2001:db8::7]:4711\";proto=https, for=\"[::1]:80\"",
        )];
        assert_eq!(client(&e, "[::1]:9000", &f), ip("2001:db8::7"));
        let bare = [("x-forwarded-for", "2001:db8::8, ::1")];
        assert_eq!(client(&e, "10.0.0.1:1", &bare), ip("2001:db8::8"));
        let bracketed = [("x-forwarded-for", "[2001:db8::9]")];
        assert_eq!(client(&e, "10.0.0.1:1", &bracketed), ip("2001:db8::9"));
        // Only loopback forwarded: trusted all the way, so loopback it is.
        let only = [("forwarded", "for=\"[::1]:80\"")];
        assert_eq!(client(&e, "10.0.0.1:1", &only), ip("::1"));
        // An IPv4-mapped peer is the IPv4 address it maps.
        assert_eq!(
            client(
                &e,
                "[::ffff:10.0.0.1]:1",
                &[("x-forwarded-for", "198.51.100.1")]
            ),
            ip("198.51.100.1")
        );
        let upper = [("forwarded", "For=192.0.2.60;Proto=http;By=203.0.113.43")];
        assert_eq!(client(&e, "10.0.0.1:1", &upper), ip("192.0.2.60"));
    }

    #[test]
    fn many_hops_and_both_headers_fall_back_to_the_proxy() {
        let e = edge(&["10.0.0.0/8"]);
        let long = vec!["10.1.1.1"; 500].join(",") + ",10.0.0.9";
        // More trusted hops than MAX_HOPS: the walk stops, still at a trusted address.
        let got = client(&e, "10.0.0.1:1", &[("x-forwarded-for", long.as_str())]);
        assert!(e.trusts(got), "{got}");
        let spoofed = format!("{}, 198.51.100.3", vec!["7.7.7.7"; 500].join(","));
        assert_eq!(
            client(&e, "10.0.0.1:1", &[("x-forwarded-for", spoofed.as_str())]),
            ip("198.51.100.3")
        );
        let both = [("forwarded", "for=1.2.3.4"), ("x-forwarded-for", "5.6.7.8")];
        assert_eq!(client(&e, "10.0.0.1:1", &both), ip("10.0.0.1"));
    }
}
