//! Gateway-issued access tokens: EdDSA JWTs with `kid`, short-lived.

use std::{collections::HashMap, sync::Arc};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::keys::{Ed25519Key, Jwk};
use crate::{config::AuthConfig, storage::clients::ClientRecord};

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
    #[error("signing failed")]
    Sign,
}

struct VerifyingKey {
    decoding: DecodingKey,
    jwk: Jwk,
}

/// Tokens whose signature has been verified, by SHA-256 of the whole token. A signature check
/// costs tens of microseconds; a client sends the same token for its whole lifetime, so each
/// token is verified once and its time claims are checked on every use.
#[derive(Default)]
struct Verified(std::sync::Mutex<HashMap<[u8; 32], GatewayClaims>>);

/// Bound on the cache; past it the cache starts over (the next use of each token re-verifies).
const VERIFIED_MAX: usize = 20_000;

/// Issues and verifies the gateway's tokens. Keys are parsed once at start, never per request.
pub struct TokenService {
    verified: Verified,
    kid: String,
    encoding: EncodingKey,
    verifying: HashMap<String, VerifyingKey>,
    validation: Validation,
    issuer: String,
    audience: String,
    ttl_secs: u64,
}

impl TokenService {
    pub fn new(signing: &Ed25519Key, auth: &AuthConfig) -> Arc<Self> {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&auth.issuer]);
        validation.set_audience(&[&auth.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = auth.leeway_secs;
        let mut verifying = HashMap::new();
        verifying.insert(
            signing.kid.clone(),
            VerifyingKey {
                decoding: signing.decoding_key(),
                jwk: signing.jwk(),
            },
        );
        Arc::new(Self {
            verified: Verified::default(),
            kid: signing.kid.clone(),
            encoding: signing.encoding_key(),
            verifying,
            validation,
            issuer: auth.issuer.clone(),
            audience: auth.audience.clone(),
            ttl_secs: auth.token_ttl_secs,
        })
    }

    /// The public keys that verify our tokens, for `/.well-known/jwks.json`.
    pub fn public_jwks(&self) -> Vec<Jwk> {
        let mut keys: Vec<Jwk> = self.verifying.values().map(|k| k.jwk.clone()).collect();
        keys.sort_by(|a, b| a.kid.cmp(&b.kid));
        keys
    }

    pub fn ttl_secs(&self) -> u64 {
        self.ttl_secs
    }

    pub fn issue(&self, client: &ClientRecord) -> Result<String, TokenError> {
        let now = jsonwebtoken::get_current_timestamp();
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
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding).map_err(|_| TokenError::Sign)
    }

    /// Verifies with the algorithm pinned to EdDSA and the key chosen by `kid` among our own.
    /// The header's `alg` is checked before any key is touched, so `none` and HMAC-with-the-
    /// public-key confusion never reach a verifier.
    pub fn verify(&self, token: &str) -> Result<GatewayClaims, TokenError> {
        let digest: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
            .as_ref()
            .try_into()
            .expect("SHA-256 is 32 bytes");
        let cached = self
            .verified
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&digest)
            .cloned();
        if let Some(claims) = cached {
            let now = jsonwebtoken::get_current_timestamp();
            let leeway = self.validation.leeway;
            if claims.exp + leeway <= now {
                return Err(TokenError::Invalid(
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature,
                ));
            }
            if claims.nbf > now + leeway {
                return Err(TokenError::Invalid(
                    jsonwebtoken::errors::ErrorKind::ImmatureSignature,
                ));
            }
            return Ok(claims);
        }
        let claims = self.verify_signature(token)?;
        let mut cache = self.verified.0.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= VERIFIED_MAX {
            cache.clear();
        }
        cache.insert(digest, claims.clone());
        Ok(claims)
    }

    fn verify_signature(&self, token: &str) -> Result<GatewayClaims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Algorithm);
        }
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.verifying.get(kid))
            .ok_or(TokenError::UnknownKey)?;
        jsonwebtoken::decode::<GatewayClaims>(token, &key.decoding, &self.validation)
            .map(|d| d.claims)
            .map_err(|e| TokenError::Invalid(e.into_kind()))
    }
}
