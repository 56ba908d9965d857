//! `credgate demo --tls`: a throwaway certificate authority, made at run time, that signs the
//! gateway's loopback certificate. The CA goes to `DIR/ca.pem` (`ca_file` in `demo.json`) so that
//! clients trust exactly this demo, and nothing the system trusts is touched. rcgen is a normal
//! dependency for this, not only a test one: the demo makes its certificates when it starts.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use clap::Args;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use serde_json::Value;

/// The demo's edge flags (flattened into `DemoArgs`).
#[derive(Args, Debug, Clone, Default)]
pub struct DemoTlsArgs {
    /// Serve the gateway over HTTPS with a certificate from a CA made for this run, written to
    /// DIR/ca.pem (demo.json names it `ca_file`; give it to clients, e.g. `curl --cacert`).
    #[arg(long)]
    pub tls: bool,
}

/// A certificate authority held in memory: the demo's, and the tests'.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its private key, PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

impl Ca {
    pub fn new(name: &str) -> anyhow::Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate()?;
        Ok(Self {
            issuer: CertifiedIssuer::self_signed(params, key)?,
        })
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `names` (DNS names or IP addresses), valid from a day ago for
    /// `days` days (negative: already expired, for tests).
    pub fn server(&self, names: &[&str], days: i64) -> anyhow::Result<Issued> {
        self.leaf(names, "credgate", ExtendedKeyUsagePurpose::ServerAuth, days)
    }

    /// A client certificate for an institution, as mutual TLS expects.
    pub fn client(&self, name: &str) -> anyhow::Result<Issued> {
        self.leaf(&[], name, ExtendedKeyUsagePurpose::ClientAuth, 30)
    }

    fn leaf(
        &self,
        names: &[&str],
        cn: &str,
        usage: ExtendedKeyUsagePurpose,
        days: i64,
    ) -> anyhow::Result<Issued> {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names)?;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = time::OffsetDateTime::now_utc();
        if days < 0 {
            params.not_before = now + time::Duration::days(days * 2);
        } else {
            params.not_before = now - time::Duration::days(1);
        }
        params.not_after = now + time::Duration::days(days);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        })
    }
}

/// What `--tls` adds to the demo: the files, the config section, the URLs' scheme.
#[derive(Default)]
pub struct DemoTls {
    ca_file: Option<PathBuf>,
    section: String,
}

/// With `--tls`: makes the CA and a certificate for `listen`'s address, `localhost`, 127.0.0.1
/// and ::1, and writes `ca.pem`, `keys/tls-cert.pem` and `keys/tls-key.pem` (owner-only).
/// Without it: nothing, and the demo stays plain HTTP.
pub fn prepare(dir: &Path, listen: SocketAddr, args: &DemoTlsArgs) -> anyhow::Result<DemoTls> {
    if !args.tls {
        return Ok(DemoTls::default());
    }
    let ca = Ca::new("credgate demo CA (this run only)")?;
    let ip = listen.ip().to_string();
    let mut names = vec!["localhost", "127.0.0.1", "::1"];
    if !listen.ip().is_unspecified() && !names.contains(&ip.as_str()) {
        names.push(&ip);
    }
    let server = ca.server(&names, 30)?;
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).with_context(|| format!("writing {}", ca_file.display()))?;
    let cert = dir.join("keys/tls-cert.pem");
    let key = dir.join("keys/tls-key.pem");
    std::fs::write(&cert, &server.cert_pem)?;
    write_private(&key, &server.key_pem)?;
    let section = "\n[tls]\ncert_file = \"keys/tls-cert.pem\"\nkey_file = \"keys/tls-key.pem\"\n";
    let ca_file = ca_file.canonicalize().unwrap_or(ca_file);
    Ok(DemoTls {
        ca_file: Some(ca_file),
        section: section.into(),
    })
}

impl DemoTls {
    /// The demo config with the `[tls]` section (if any) and the metrics listener on a loopback
    /// port of its own (two demos, or a demo and a gateway, must not fight over one port).
    pub fn config(&self, text: String) -> String {
        format!("metrics_listen = \"127.0.0.1:0\"\n{text}{}", self.section)
    }

    pub fn scheme(&self) -> &'static str {
        if self.ca_file.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// `demo.json` gains `ca_file` (with `--tls`) and `metrics_url`.
    pub fn annotate(&self, mut demo: Value, metrics: Option<SocketAddr>) -> Value {
        if let Some(ca) = &self.ca_file {
            demo["ca_file"] = Value::String(ca.display().to_string());
        }
        if let Some(m) = metrics {
            demo["metrics_url"] = Value::String(format!("http://{m}/metrics"));
        }
        demo
    }
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_ca_signs_a_loopback_server_certificate() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("keys")).unwrap();
        let tls = prepare(
            dir.path(),
            "127.0.0.1:0".parse().unwrap(),
            &DemoTlsArgs { tls: true },
        )
        .unwrap();
        assert_eq!(tls.scheme(), "https");
        let files = crate::config::TlsConfig {
            cert_file: dir.path().join("keys/tls-cert.pem"),
            key_file: dir.path().join("keys/tls-key.pem"),
            client_ca_file: None,
        };
        crate::web::edge::TlsHolder::load(files).expect("a usable server certificate");
        let text = tls.config("listen = \"127.0.0.1:0\"\n".into());
        let config = crate::config::Config::parse(&text, "demo").unwrap();
        assert!(config.tls.is_some());
        let demo = tls.annotate(serde_json::json!({}), None);
        assert!(demo["ca_file"].as_str().unwrap().ends_with("ca.pem"));
    }
}
