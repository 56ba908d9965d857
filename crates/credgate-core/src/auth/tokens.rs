//! Gateway-issued access tokens: EdDSA JWTs with `kid`, short-lived.

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::{
    keyring::StoredKey,
    keys::{Ed25519Key, Jwk},
};
use crate::{clock::Clock, config::AuthConfig, storage::clients::ClientRecord};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GatewayClaims {
    pub iss: String,
    pub aud: String,
    /// The client id.
    pub sub: String,
    pub org: String,
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub exp: u64,
    pub iat: u64,
    pub nbf: u64,
    pub jti: String,
    /// RFC 8705: the client certificate the token was issued over; the token is only good on a
    /// connection presenting that certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
}

/// RFC 8705 section 3.1 confirmation: the certificate's SHA-256 thumbprint, base64url.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    #[serde(rename = "x5t#S256")]
    pub x5t_s256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("algorithm other than EdDSA")]
    Algorithm,
    #[error("no kid, or a kid we do not know")]
    UnknownKey,
    #[error("{0:?}")]
    Invalid(jsonwebtoken::errors::ErrorKind),
    #[error("lifetime longer than the gateway issues")]
    Lifetime,
    #[error("signing failed")]
    Sign,
}

struct VerifyingKey {
    decoding: DecodingKey,
    jwk: Jwk,
    /// Unix seconds after which this key no longer verifies: set once a newer generation has
    /// signed for longer than a token lives. `None` for the newest key.
    retires_at: Option<u64>,
}

/// The keys in force: the newest signs, every unretired one verifies.
struct KeySet {
    kid: String,
    encoding: EncodingKey,
    verifying: HashMap<String, VerifyingKey>,
}

impl KeySet {
    /// Is `kid` one of ours, not retired at `now`?
    fn verifies(&self, kid: &str, now: u64) -> bool {
        self.verifying
            .get(kid)
            .is_some_and(|k| k.retires_at.is_none_or(|t| now <= t))
    }

    /// Opens the stored generations (oldest first, not empty): the newest signs, and each older
    /// one verifies until `keep_for` seconds after its successor was made, or after this
    /// process first saw the successor (`first_seen`, on `Clock::measured_secs`) if that is
    /// earlier. The successor's `created_at` is the wall clock of the host that rotated: made
    /// during a forward glitch, it alone would keep a key rotated away (a leaked one, say)
    /// verifying for as long as the glitch was ahead (rev4 R4).
    fn open(
        keys: &[StoredKey],
        keep_for: u64,
        first_seen: &mut HashMap<String, u64>,
        measured_now: u64,
    ) -> Result<Self, TokenError> {
        let opened: Vec<(Ed25519Key, u64)> = keys
            .iter()
            .map(|k| {
                let seen = *first_seen.entry(k.kid.clone()).or_insert(measured_now);
                let made = u64::try_from(k.created_at / 1_000_000).unwrap_or(0);
                k.ed25519().map(|e| (e, made.min(seen)))
            })
            .collect::<Option<_>>()
            .ok_or(TokenError::Sign)?;
        let Some((newest, _)) = opened.last() else {
            return Err(TokenError::Sign);
        };
        let mut verifying = HashMap::new();
        for (i, (key, _)) in opened.iter().enumerate() {
            let retires_at = opened
                .get(i + 1)
                .map(|(_, successor_since)| successor_since + keep_for);
            verifying.insert(
                key.kid.clone(),
                VerifyingKey {
                    decoding: key.decoding_key(),
                    jwk: key.jwk(),
                    retires_at,
                },
            );
        }
        Ok(Self {
            kid: newest.kid.clone(),
            encoding: newest.encoding_key(),
            verifying,
        })
    }
}

/// Tokens whose signature has been verified. A signature check costs tens of microseconds; a
/// client sends the same token for its whole lifetime, so each token is verified once and its
/// time claims are checked on every use. Each entry carries the kid that verified it: an entry
/// dies with its key, not with its `exp`.
///
/// Keyed by the token's signature segment, and a hit counts only when the whole token is byte
/// for byte the one verified: a forged payload under a copied signature finds the entry, fails
/// the comparison and goes to the signature check. (The key was SHA-256 of the whole token: 17k
/// instructions a request, about 4% of the gateway's, to find an entry a comparison confirms.)
#[derive(Default)]
struct Verified(std::sync::Mutex<HashMap<Box<str>, Entry>>);

/// A verified token, the kid that verified it and its claims.
struct Entry {
    token: Box<str>,
    kid: String,
    claims: GatewayClaims,
}

/// The cache's key: the signature, the segment after the last dot (the whole token when it has
/// none, which then never verifies).
fn signature_of(token: &str) -> &str {
    token.rsplit_once('.').map_or(token, |(_, sig)| sig)
}

/// Bound on the cache; past it the cache starts over (the next use of each token re-verifies).
const VERIFIED_MAX: usize = 20_000;

/// How long a replica may lag behind a rotation before it sees the new key: a retired key keeps
/// verifying this much longer than the tokens it signed could live.
const ROTATION_LAG_SECS: u64 = 5;

/// Issues and verifies the gateway's tokens. Keys are parsed when they change (at start and on
/// a rotation), never per request.
pub struct TokenService {
    verified: Verified,
    keys: RwLock<Arc<KeySet>>,
    /// When this process first saw each key (`Clock::measured_secs`), for `KeySet::open`.
    first_seen: std::sync::Mutex<HashMap<String, u64>>,
    validation: Validation,
    issuer: String,
    audience: String,
    ttl_secs: u64,
    /// The core's clock, read as `steady`: `iat`/`exp` of issued tokens and every time check of
    /// a presented one read it, so a test moves a token past its expiry instead of sleeping
    /// across a second boundary it would race.
    clock: Arc<Clock>,
    /// Unix millis of the last refresh forced by an unknown `kid`, to bound how often a stream
    /// of forged `kid`s can make the gateway reread its keys.
    last_forced_refresh: AtomicU64,
}

impl TokenService {
    /// `keys`: every stored generation of the token-signing key, oldest first (not empty).
    pub fn new(
        keys: &[StoredKey],
        auth: &AuthConfig,
        clock: Arc<Clock>,
    ) -> Result<Arc<Self>, TokenError> {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&auth.issuer]);
        validation.set_audience(&[&auth.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        // The library reads the system time for `exp`/`nbf`; `time_ok` checks them against the
        // core's clock instead, on first verification and on every cached use alike.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = auth.leeway_secs;
        let keep_for = auth.token_ttl_secs + auth.leeway_secs + ROTATION_LAG_SECS;
        let mut first_seen = HashMap::new();
        let set = KeySet::open(keys, keep_for, &mut first_seen, clock.measured_secs())?;
        Ok(Arc::new(Self {
            verified: Verified::default(),
            keys: RwLock::new(Arc::new(set)),
            first_seen: std::sync::Mutex::new(first_seen),
            validation,
            issuer: auth.issuer.clone(),
            audience: auth.audience.clone(),
            ttl_secs: auth.token_ttl_secs,
            clock,
            last_forced_refresh: AtomicU64::new(0),
        }))
    }

    /// Swaps in the stored generations (oldest first): the newest signs from now on.
    pub fn replace_keys(&self, keys: &[StoredKey]) -> Result<(), TokenError> {
        let keep_for = self.ttl_secs + self.validation.leeway + ROTATION_LAG_SECS;
        let now = self.clock.measured_secs();
        let mut first_seen = self.first_seen.lock().unwrap_or_else(|p| p.into_inner());
        let set = KeySet::open(keys, keep_for, &mut first_seen, now)?;
        drop(first_seen);
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
        Ok(())
    }

    fn key_set(&self) -> Arc<KeySet> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The kid that signs now.
    pub fn signing_kid(&self) -> String {
        self.key_set().kid.clone()
    }

    /// May an unknown `kid` make us reread the keys now? At most once a second: a rotation
    /// elsewhere is seen by the poll within a second anyway, and forged kids cost nothing more.
    pub fn may_force_refresh(&self) -> bool {
        let now = (crate::storage::now_micros() / 1000) as u64;
        let last = self.last_forced_refresh.load(Ordering::Relaxed);
        // A `last` ahead of `now`: the wall clock was stepped back since. Saturating to "no
        // time passed" would refuse every forced refresh until the clock caught up.
        now.checked_sub(last).is_none_or(|ms| ms >= 1000)
            && self
                .last_forced_refresh
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// The public keys that verify our tokens, for `/.well-known/jwks.json`.
    pub fn public_jwks(&self) -> Vec<Jwk> {
        let now = self.clock.steady_secs();
        let set = self.key_set();
        let mut keys: Vec<Jwk> = set
            .verifying
            .values()
            .filter(|k| k.retires_at.is_none_or(|t| now <= t))
            .map(|k| k.jwk.clone())
            .collect();
        keys.sort_by(|a, b| a.kid.cmp(&b.kid));
        keys
    }

    pub fn ttl_secs(&self) -> u64 {
        self.ttl_secs
    }

    pub fn issue(&self, client: &ClientRecord) -> Result<String, TokenError> {
        self.issue_bound(client, None)
    }

    /// A token bound (RFC 8705) to the client certificate with thumbprint `x5t_s256`, when the
    /// token request came over a connection that presented one.
    pub fn issue_bound(
        &self,
        client: &ClientRecord,
        x5t_s256: Option<&str>,
    ) -> Result<String, TokenError> {
        let now = self.clock.steady_secs();
        let claims = GatewayClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: client.id.clone(),
            org: client.org.clone(),
            role: client.role.clone(),
            region: client.region.clone(),
            exp: now + self.ttl_secs,
            iat: now,
            nbf: now,
            jti: uuid::Uuid::new_v4().to_string(),
            cnf: x5t_s256.map(|t| Confirmation {
                x5t_s256: t.to_owned(),
            }),
        };
        let set = self.key_set();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(set.kid.clone());
        jsonwebtoken::encode(&header, &claims, &set.encoding).map_err(|_| TokenError::Sign)
    }

    /// Verifies with the algorithm pinned to EdDSA and the key chosen by `kid` among our own.
    /// The header's `alg` is checked before any key is touched, so `none` and HMAC-with-the-
    /// public-key confusion never reach a verifier.
    pub fn verify(&self, token: &str) -> Result<GatewayClaims, TokenError> {
        let key = signature_of(token);
        let cached = self
            .verified
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .filter(|e| &*e.token == token)
            .map(|e| (e.kid.clone(), e.claims.clone()));
        if let Some((kid, claims)) = cached {
            let now = self.clock.steady_secs();
            if !self.key_set().verifies(&kid, now) {
                self.forget(key);
                return Err(TokenError::UnknownKey);
            }
            self.time_ok(&claims, now)?;
            return Ok(claims);
        }
        let (kid, claims) = self.verify_signature(token)?;
        let mut cache = self.verified.0.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= VERIFIED_MAX {
            cache.clear();
        }
        let entry = Entry {
            token: token.into(),
            kid,
            claims: claims.clone(),
        };
        cache.insert(key.into(), entry);
        Ok(claims)
    }

    /// `exp` and `nbf` against the core's steady clock (`Clock::steady`, which a step back does
    /// not move back), with the configured leeway: a token lives its lifetime in real time, a
    /// step back neither revives an expired one nor refuses a good one, and a token from
    /// beyond the leeway ahead is refused (that is what a leaked key's forgery looks like).
    fn time_ok(&self, claims: &GatewayClaims, now: u64) -> Result<(), TokenError> {
        use jsonwebtoken::errors::ErrorKind;
        let leeway = self.validation.leeway;
        if claims.exp + leeway <= now {
            return Err(TokenError::Invalid(ErrorKind::ExpiredSignature));
        }
        if claims.nbf > now + leeway {
            return Err(TokenError::Invalid(ErrorKind::ImmatureSignature));
        }
        Ok(())
    }

    fn forget(&self, key: &str) {
        self.verified
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// Our own tokens never live longer than the configured lifetime: one whose `exp - iat` is
    /// longer, or whose `iat` is in the future, was not issued by this gateway's rules (a key
    /// that leaked, then signed a year-long token), however good its signature.
    fn lifetime_ok(&self, claims: &GatewayClaims, now: u64) -> bool {
        let leeway = self.validation.leeway;
        claims.iat <= now + leeway
            && claims.exp >= claims.iat
            && claims.exp - claims.iat <= self.ttl_secs + leeway
    }

    /// The verified claims and the kid that verified them.
    fn verify_signature(&self, token: &str) -> Result<(String, GatewayClaims), TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Algorithm);
        }
        let set = self.key_set();
        let now = self.clock.steady_secs();
        let kid = header
            .kid
            .filter(|kid| set.verifies(kid, now))
            .ok_or(TokenError::UnknownKey)?;
        let key = &set.verifying[&kid];
        let claims = jsonwebtoken::decode::<GatewayClaims>(token, &key.decoding, &self.validation)
            .map(|d| d.claims)
            .map_err(|e| TokenError::Invalid(e.into_kind()))?;
        self.time_ok(&claims, now)?;
        if !self.lifetime_ok(&claims, now) {
            return Err(TokenError::Lifetime);
        }
        Ok((kid, claims))
    }
}
