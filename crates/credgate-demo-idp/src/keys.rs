//! The provider's signing keys: an ES256 and an EdDSA key per generation (or one fixed RSA key
//! for an RS256-only provider), published as a JWKS; rotation keeps the previous generation
//! published so tokens signed a moment ago still verify.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ring::{
    rand::{SecureRandom, SystemRandom},
    rsa,
    signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair},
};
use serde_json::{Value, json};

/// The algorithms this provider signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    ES256,
    EdDSA,
    RS256,
}

impl Alg {
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::ES256 => "ES256",
            Alg::EdDSA => "EdDSA",
            Alg::RS256 => "RS256",
        }
    }
}

enum Pair {
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
    Rsa(RsaKeyPair),
}

pub struct SigningKey {
    pub kid: String,
    pub alg: Alg,
    pair: Pair,
}

impl SigningKey {
    pub fn generate(alg: Alg, rng: &SystemRandom) -> anyhow::Result<Self> {
        let bad = |_| anyhow::anyhow!("key generation failed");
        let pair = match alg {
            Alg::ES256 => {
                let algo = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
                let pkcs8 = EcdsaKeyPair::generate_pkcs8(algo, rng).map_err(bad)?;
                Pair::Ec(
                    EcdsaKeyPair::from_pkcs8(algo, pkcs8.as_ref(), rng)
                        .map_err(|e| anyhow::anyhow!("{e}"))?,
                )
            }
            Alg::EdDSA => {
                let pkcs8 = Ed25519KeyPair::generate_pkcs8(rng).map_err(bad)?;
                Pair::Ed(
                    Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
                        .map_err(|e| anyhow::anyhow!("{e}"))?,
                )
            }
            Alg::RS256 => anyhow::bail!("RSA keys are loaded, not generated"),
        };
        Ok(Self {
            kid: random_id(rng, 8),
            alg,
            pair,
        })
    }

    /// An RSA key from PKCS#8 DER (`openssl genpkey -algorithm RSA ... -outform DER`).
    pub fn rsa(pkcs8_der: &[u8], rng: &SystemRandom) -> anyhow::Result<Self> {
        let pair =
            RsaKeyPair::from_pkcs8(pkcs8_der).map_err(|e| anyhow::anyhow!("RSA key: {e}"))?;
        Ok(Self {
            kid: random_id(rng, 8),
            alg: Alg::RS256,
            pair: Pair::Rsa(pair),
        })
    }

    /// The public half as a JWK, with the `alg` it is used for.
    pub fn jwk(&self) -> Value {
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        let common = json!({"kid": self.kid, "alg": self.alg.as_str(), "use": "sig"});
        let mut jwk = match &self.pair {
            Pair::Ec(p) => {
                // Uncompressed SEC1: 0x04 || x || y.
                let pt = p.public_key().as_ref();
                json!({"kty": "EC", "crv": "P-256", "x": b64(&pt[1..33]), "y": b64(&pt[33..65])})
            }
            Pair::Ed(p) => {
                json!({"kty": "OKP", "crv": "Ed25519", "x": b64(p.public_key().as_ref())})
            }
            Pair::Rsa(p) => {
                let c: rsa::PublicKeyComponents<Vec<u8>> = p.public().into();
                json!({"kty": "RSA", "n": b64(&c.n), "e": b64(&c.e)})
            }
        };
        for (k, v) in common.as_object().expect("object") {
            jwk[k] = v.clone();
        }
        jwk
    }

    /// A compact JWS of `claims` under `header` (whatever it says: tests forge headers).
    pub fn sign_raw(&self, header: &Value, claims: &Value, rng: &SystemRandom) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = match &self.pair {
            Pair::Ec(p) => p
                .sign(rng, input.as_bytes())
                .expect("ECDSA signs")
                .as_ref()
                .to_vec(),
            Pair::Ed(p) => p.sign(input.as_bytes()).as_ref().to_vec(),
            Pair::Rsa(p) => {
                let mut sig = vec![0; p.public().modulus_len()];
                p.sign(
                    &signature::RSA_PKCS1_SHA256,
                    rng,
                    input.as_bytes(),
                    &mut sig,
                )
                .expect("RSA signs");
                sig
            }
        };
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    /// A JWT with this key's own `alg` and `kid`.
    pub fn sign(&self, claims: &Value, rng: &SystemRandom) -> String {
        let header = json!({"alg": self.alg.as_str(), "typ": "JWT", "kid": self.kid});
        self.sign_raw(&header, claims, rng)
    }
}

/// Hex of `bytes` random bytes: kids, codes, form handles.
pub fn random_id(rng: &SystemRandom, bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rng.fill(&mut b).expect("the system RNG works");
    b.iter().map(|x| format!("{x:02x}")).collect()
}
