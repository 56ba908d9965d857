//! A demo OpenID Connect provider: what `credgate demo` starts on loopback and what the tests
//! sign in at. Discovery, a JWKS with two algorithms (ES256 and EdDSA, generated at start,
//! rotated on request), the authorization code flow with PKCE (S256 only) behind a
//! server-rendered login page with a one-time-code step for users with a TOTP secret, and a
//! token endpoint. Not a production provider: users live in memory and are made at start.

pub mod keys;
pub mod totp;
pub mod users;

mod flow;
mod html;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex, atomic::AtomicUsize},
};

use ring::rand::SystemRandom;
use serde_json::Value;
use tokio::{net::TcpListener, task::JoinHandle};

pub use keys::Alg;
use keys::SigningKey;
pub use users::DemoUser;

/// `acr` of a sign-in with a password only, and with a password and a one-time code.
pub const ACR_PASSWORD: &str = "urn:credgate:demo:acr:password";
pub const ACR_TWO_FACTOR: &str = "urn:credgate:demo:acr:two-factor";

/// How the provider is started.
#[derive(Debug, Clone)]
pub struct Options {
    /// Port 0 picks a free one; see [`DemoIdp::addr`].
    pub listen: SocketAddr,
    /// The `aud` of claims from [`DemoIdp::claims_for`]. Tokens from the sign-in carry the
    /// client_id of the app that asked: register one client per gateway app (console, portal)
    /// and name its client_id as `audience` in that app's `[[identity_providers]]` entry.
    pub audience: String,
    /// Lifetime of issued tokens.
    pub token_ttl_secs: u64,
    /// PKCS#8 DER of an RSA key: the provider then signs RS256 only, with that key, and never
    /// rotates (tests of RS256-only providers).
    pub rsa_pkcs8: Option<Vec<u8>>,
    /// The host name in the issuer URL instead of the bound address (`localhost`): tests of the
    /// pages put the provider on another site than the gateway (`127.0.0.1`), as in real life.
    pub host: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            audience: "credgate".into(),
            token_ttl_secs: 300,
            rsa_pkcs8: None,
            host: None,
        }
    }
}

/// What a test may do to the next id tokens: edit their claims (then they are signed as usual)
/// or return a whole token of its own to hand out instead (forgeries). Test hook only.
pub type Tamper = Arc<dyn Fn(&mut Value) -> Option<String> + Send + Sync>;

/// A running provider. Dropping it stops the server.
pub struct DemoIdp {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

/// The current key generation and the one before it (still published after a rotation).
struct KeyRing {
    current: Vec<SigningKey>,
    previous: Vec<SigningKey>,
}

pub(crate) struct Shared {
    issuer: String,
    audience: String,
    ttl: u64,
    rng: SystemRandom,
    keys: Mutex<KeyRing>,
    users: Vec<DemoUser>,
    /// client_id -> the redirect URIs registered for it (compared exactly).
    clients: Mutex<HashMap<String, Vec<String>>>,
    flows: Mutex<flow::Flows>,
    jwks_fetches: AtomicUsize,
    tamper: Mutex<Option<Tamper>>,
}

impl DemoIdp {
    /// Binds, generates keys and users, and serves until dropped.
    pub async fn start(options: Options) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(options.listen).await?;
        let addr = listener.local_addr()?;
        let rng = SystemRandom::new();
        let current = match &options.rsa_pkcs8 {
            Some(der) => vec![SigningKey::rsa(der, &rng)?],
            None => vec![
                SigningKey::generate(Alg::ES256, &rng)?,
                SigningKey::generate(Alg::EdDSA, &rng)?,
            ],
        };
        let shared = Arc::new(Shared {
            issuer: match &options.host {
                Some(host) => format!("http://{host}:{}", addr.port()),
                None => format!("http://{addr}"),
            },
            audience: options.audience,
            ttl: options.token_ttl_secs,
            users: users::generate(&rng),
            rng,
            keys: Mutex::new(KeyRing {
                current,
                previous: Vec::new(),
            }),
            clients: Mutex::new(HashMap::new()),
            flows: Mutex::new(flow::Flows::default()),
            jwks_fetches: AtomicUsize::new(0),
            tamper: Mutex::new(None),
        });
        let app = flow::router(shared.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "demo identity provider stopped");
            }
        });
        Ok(Self { addr, shared, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, exactly as it appears in `iss` and discovery.
    pub fn issuer(&self) -> &str {
        &self.shared.issuer
    }

    /// The demo users, as `demo.json` lists them.
    pub fn users(&self) -> Vec<DemoUser> {
        self.shared.users.clone()
    }

    /// Lets `client_id` (a public client: PKCE, no secret) come back to `redirect_uri`.
    pub fn register_client(&self, client_id: &str, redirect_uri: &str) {
        let mut clients = self.shared.clients.lock().expect("clients lock");
        clients
            .entry(client_id.to_string())
            .or_default()
            .push(redirect_uri.to_string());
    }

    /// From now on, every id token the token endpoint issues passes through `tamper` (hostile
    /// tests of relying parties: a wrong nonce, an expired token, a forged signature). `None`
    /// restores honest tokens.
    pub fn tamper_id_tokens(&self, tamper: Option<Tamper>) {
        *self.shared.tamper.lock().expect("tamper lock") = tamper;
    }

    /// A new key generation; the previous one stays published, older ones go. Also
    /// `POST /rotate`. An RS256-only provider keeps its one key.
    pub fn rotate(&self) -> anyhow::Result<()> {
        self.shared.rotate()
    }

    /// How many times the JWKS was fetched: tests of refresh rate limits count with this.
    pub fn jwks_fetches(&self) -> usize {
        self.shared
            .jwks_fetches
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The current key id for `alg`, if the provider signs with it.
    pub fn kid(&self, alg: Alg) -> Option<String> {
        let keys = self.shared.keys.lock().expect("keys lock");
        keys.current
            .iter()
            .find(|k| k.alg == alg)
            .map(|k| k.kid.clone())
    }

    /// A token with these claims, signed by the current `alg` key (tests: any claims).
    pub fn mint(&self, alg: Alg, claims: &Value) -> Option<String> {
        let keys = self.shared.keys.lock().expect("keys lock");
        let key = keys.current.iter().find(|k| k.alg == alg)?;
        Some(key.sign(claims, &self.shared.rng))
    }

    /// A token under a header of the caller's choosing, signed by the current `alg` key
    /// (hostile tests: headers that lie about the algorithm or the key).
    pub fn mint_with_header(&self, alg: Alg, header: &Value, claims: &Value) -> Option<String> {
        let keys = self.shared.keys.lock().expect("keys lock");
        let key = keys.current.iter().find(|k| k.alg == alg)?;
        Some(key.sign_raw(header, claims, &self.shared.rng))
    }

    /// The claims the provider would issue to `username` after signing in with `amr`
    /// (`["pwd"]` or `["pwd", "otp"]`), for tests that then alter them.
    pub fn claims_for(&self, username: &str, amr: &[&str]) -> Option<Value> {
        let user = self.shared.users.iter().find(|u| u.username == username)?;
        Some(self.shared.claims(user, &self.shared.audience, amr, None))
    }
}

impl Drop for DemoIdp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Shared {
    fn rotate(&self) -> anyhow::Result<()> {
        let mut keys = self.keys.lock().expect("keys lock");
        if keys.current.iter().any(|k| k.alg == Alg::RS256) {
            return Ok(());
        }
        let next = vec![
            SigningKey::generate(Alg::ES256, &self.rng)?,
            SigningKey::generate(Alg::EdDSA, &self.rng)?,
        ];
        keys.previous = std::mem::replace(&mut keys.current, next);
        Ok(())
    }

    fn jwks(&self) -> Value {
        let keys = self.keys.lock().expect("keys lock");
        let all: Vec<Value> = keys
            .current
            .iter()
            .chain(&keys.previous)
            .map(SigningKey::jwk)
            .collect();
        serde_json::json!({ "keys": all })
    }

    /// Signs with the current key of `alg`, or of whatever the provider has (RS256-only).
    fn sign(&self, alg: Alg, claims: &Value) -> String {
        let keys = self.keys.lock().expect("keys lock");
        let key = keys
            .current
            .iter()
            .find(|k| k.alg == alg)
            .unwrap_or(&keys.current[0]);
        key.sign(claims, &self.rng)
    }

    /// The claims of a token for `user` signed in with the factors `amr`, for audience `aud`.
    fn claims(&self, user: &DemoUser, aud: &str, amr: &[&str], nonce: Option<&str>) -> Value {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let two_factor = amr.contains(&"otp");
        let mut amr: Vec<&str> = amr.to_vec();
        if two_factor {
            amr.push("mfa");
        }
        let mut c = serde_json::json!({
            "iss": self.issuer, "aud": aud, "iat": now, "nbf": now, "auth_time": now,
            "exp": now + self.ttl, "preferred_username": user.username, "amr": amr,
            "acr": if two_factor { ACR_TWO_FACTOR } else { ACR_PASSWORD },
        });
        if let (Some(id), Some(ty)) = (&user.subject_id, user.subject_type) {
            c["sub"] = id.as_str().into();
            c["subject_type"] = ty.into();
        } else {
            c["sub"] = format!("staff:{}", user.username).into();
            c["name"] = user.display_name.as_str().into();
            c["org"] = users::STAFF_ORG.into();
            c["groups"] = serde_json::json!([user.role]);
        }
        if let Some(n) = nonce {
            c["nonce"] = n.into();
        }
        c
    }
}
