//! Data-subject tokens from trusted identity providers, and the demo provider's minting.

use std::{path::Path, sync::Arc};

use jsonwebtoken::{Algorithm, Header};
use serde::{Deserialize, Serialize};

use super::{
    keys::{Ed25519Key, JwkSet, KeyError},
    limiter::{KeyedLimiter, quota},
};
use crate::{
    config::{Config, DemoIdentityProviderConfig},
    domain::{SubjectId, SubjectType},
};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubjectClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub subject_type: SubjectType,
    pub exp: u64,
    #[serde(default)]
    pub iat: Option<u64>,
}

/// Limits each subject's request rate on `/subject/*`. Their tokens are checked by the
/// identity providers (`auth::oidc::Providers`), static `jwks_file` ones included.
pub struct SubjectVerifier {
    /// Keyed by the subject id, which carries its type: a company and a person with the same
    /// id string are two subjects. Idle subjects are forgotten by the limiter's own task.
    limiter: Arc<KeyedLimiter<SubjectId>>,
    per_minute: u32,
    burst: u32,
}

impl SubjectVerifier {
    pub fn from_config(config: &Config) -> Arc<Self> {
        let limits = &config.subject_limits;
        Arc::new(Self {
            limiter: KeyedLimiter::new(quota(limits.per_minute, limits.burst)),
            per_minute: limits.per_minute,
            burst: limits.burst,
        })
    }

    /// Counts one request of `subject`; `Err(seconds)` to wait when it is over its rate. The
    /// outcome is noted for the answer's `RateLimit` headers (`limits::charging`).
    pub fn check_rate(&self, subject: &SubjectId) -> Result<(), u64> {
        let outcome = self.limiter.check(subject);
        crate::limits::note(crate::limits::Charge::of(
            "subject",
            self.per_minute,
            self.burst,
            outcome,
        ));
        outcome.map(|_| ())
    }
}

/// Mints a subject token with the demo identity provider's key (`credgate token subject`).
pub fn mint_demo_token(
    demo: &DemoIdentityProviderConfig,
    id: &SubjectId,
    ttl_secs: u64,
) -> Result<String, KeyError> {
    let key = Ed25519Key::load(&demo.key_file)?;
    let now = jsonwebtoken::get_current_timestamp();
    let claims = SubjectClaims {
        iss: demo.issuer.clone(),
        aud: demo.audience.clone(),
        sub: id.as_str().to_string(),
        subject_type: id.subject_type(),
        exp: now + ttl_secs,
        iat: Some(now),
    };
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, &claims, &key.encoding_key()).map_err(|_| KeyError::Generate)
}

/// Writes the demo provider's key and the JWKS that a demo config trusts.
pub fn create_demo_provider(key_file: &Path, jwks_file: &Path) -> Result<(), KeyError> {
    let key = Ed25519Key::load_or_create(key_file)?;
    let set = JwkSet {
        keys: vec![key.jwk()],
    };
    std::fs::write(
        jwks_file,
        serde_json::to_vec_pretty(&set).expect("a JWKS serialises"),
    )
    .map_err(|e| KeyError::File {
        path: jwks_file.display().to_string(),
        message: e.to_string(),
    })
}

/// `[subject_limits]`: what one data subject may do, so that one subject cannot flood the
/// objection workflow (and with it every answer about their record).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectLimitConfig {
    /// Requests per minute on `/subject/*`, per subject (type and id).
    #[serde(default = "d_per_minute")]
    pub per_minute: u32,
    /// Requests a subject may send at once before the per-minute rate applies.
    #[serde(default = "d_burst")]
    pub burst: u32,
    /// Open objections one subject may hold, across all records.
    #[serde(default = "d_per_subject")]
    pub max_open_objections_per_subject: u32,
    /// Open objections one record may carry from one subject.
    #[serde(default = "d_per_record")]
    pub max_open_objections_per_record: u32,
}

fn d_per_minute() -> u32 {
    60
}
fn d_burst() -> u32 {
    30
}
fn d_per_subject() -> u32 {
    20
}
fn d_per_record() -> u32 {
    3
}

impl Default for SubjectLimitConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}
