//! Ed25519 key files. Private keys are PKCS#8 DER files readable by the owner only; a key file
//! that others can read is refused rather than used, as ssh does.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{DecodingKey, EncodingKey};
use ring::{
    rand::SystemRandom,
    signature::{Ed25519KeyPair, KeyPair},
};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key file {path}: {message}")]
    File { path: String, message: String },
    #[error("key generation failed")]
    Generate,
}

fn file_err(path: &Path, message: impl ToString) -> KeyError {
    KeyError::File {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// One Ed25519 key pair with its key id.
pub struct Ed25519Key {
    pub kid: String,
    pub public: Vec<u8>,
    pkcs8: Vec<u8>,
}

impl std::fmt::Debug for Ed25519Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ed25519Key")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl Ed25519Key {
    pub fn generate() -> Result<Self, KeyError> {
        let doc =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| KeyError::Generate)?;
        Self::from_pkcs8(doc.as_ref().to_vec()).ok_or(KeyError::Generate)
    }

    pub fn from_pkcs8(pkcs8: Vec<u8>) -> Option<Self> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8).ok()?;
        let public = pair.public_key().as_ref().to_vec();
        Some(Self {
            kid: kid_of(&public),
            public,
            pkcs8,
        })
    }

    /// Loads `path`, or creates it (mode 0600) when absent. Safe against two processes starting
    /// at once: the file is created exclusively and the loser reads the winner's key.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        if let Some(dir) = path.parent() {
            create_private_dir(dir)?;
        }
        match Self::load(path) {
            Ok(k) => return Ok(k),
            Err(_) if !path.exists() => {}
            Err(e) => return Err(e),
        }
        let key = Self::generate()?;
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(path) {
            Ok(mut f) => {
                f.write_all(&key.pkcs8)
                    .and_then(|_| f.sync_all())
                    .map_err(|e| file_err(path, e))?;
                Ok(key)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::load(path),
            Err(e) => Err(file_err(path, e)),
        }
    }

    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let meta = fs::metadata(path).map_err(|e| file_err(path, e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o077 != 0 {
                return Err(file_err(
                    path,
                    "readable by group or others; run `chmod 600` on it",
                ));
            }
        }
        let _ = meta;
        let bytes = fs::read(path).map_err(|e| file_err(path, e))?;
        Self::from_pkcs8(bytes).ok_or_else(|| file_err(path, "not a PKCS#8 Ed25519 private key"))
    }

    /// The private key's PKCS#8 document, for wrapping it into the keyring.
    pub(crate) fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    pub fn key_pair(&self) -> Ed25519KeyPair {
        Ed25519KeyPair::from_pkcs8_maybe_unchecked(&self.pkcs8).expect("checked when loaded")
    }

    pub fn encoding_key(&self) -> EncodingKey {
        EncodingKey::from_ed_der(&self.pkcs8)
    }

    pub fn decoding_key(&self) -> DecodingKey {
        DecodingKey::from_ed_der(&self.public)
    }

    pub fn jwk(&self) -> Jwk {
        Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: URL_SAFE_NO_PAD.encode(&self.public),
            kid: self.kid.clone(),
            alg: Some("EdDSA".into()),
            use_: Some("sig".into()),
        }
    }
}

/// Key id: the first 16 base64url characters of SHA-256 over the public key, so that the same
/// key always has the same id on every replica.
pub fn kid_of(public: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, public);
    URL_SAFE_NO_PAD.encode(digest.as_ref())[..16].to_string()
}

pub fn create_private_dir(dir: &Path) -> Result<(), KeyError> {
    if dir.as_os_str().is_empty() || dir.exists() {
        return Ok(());
    }
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir).map_err(|e| file_err(dir, e))
}

/// A public JSON Web Key (RFC 8037 OKP) for Ed25519.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    pub crv: String,
    pub x: String,
    pub kid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

impl JwkSet {
    pub fn read(path: &Path) -> Result<Self, KeyError> {
        let text = fs::read_to_string(path).map_err(|e| file_err(path, e))?;
        let set: JwkSet =
            serde_json::from_str(&text).map_err(|e| file_err(path, format!("not a JWKS: {e}")))?;
        for k in &set.keys {
            if k.kty != "OKP" || k.crv != "Ed25519" {
                return Err(file_err(
                    path,
                    format!("key `{}`: only OKP Ed25519 keys are accepted", k.kid),
                ));
            }
            match URL_SAFE_NO_PAD.decode(&k.x) {
                Ok(x) if x.len() == 32 => {}
                _ => {
                    return Err(file_err(
                        path,
                        format!("key `{}`: `x` is not a 32-byte base64url key", k.kid),
                    ));
                }
            }
        }
        Ok(set)
    }
}

/// The gateway's own signing key, kept in the key directory.
pub fn gateway_signing_key_path(key_dir: &Path) -> PathBuf {
    key_dir.join("gateway-signing.ed25519.p8")
}

/// A 256-bit secret kept in its own file (0600), created on first use: the pseudonym key.
pub fn load_or_create_secret(path: &Path) -> Result<[u8; 32], KeyError> {
    use ring::rand::SecureRandom;
    if let Some(dir) = path.parent() {
        create_private_dir(dir)?;
    }
    if !path.exists() {
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| KeyError::Generate)?;
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(path) {
            Ok(mut f) => {
                f.write_all(&bytes)
                    .and_then(|_| f.sync_all())
                    .map_err(|e| file_err(path, e))?;
                return Ok(bytes);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(file_err(path, e)),
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path)
            .map_err(|e| file_err(path, e))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(file_err(
                path,
                format!(
                    "readable by group or others (mode {:o}); run `chmod 600 {}` and start again",
                    mode & 0o777,
                    path.display()
                ),
            ));
        }
    }
    let bytes = fs::read(path).map_err(|e| file_err(path, e))?;
    bytes
        .try_into()
        .map_err(|_| file_err(path, "not a 32-byte secret"))
}

pub fn pseudonym_key_path(key_dir: &Path) -> PathBuf {
    key_dir.join("pseudonym.key")
}

/// The key that signs audit checkpoints: separate from the token key, so that rotating one
/// never touches the other.
pub fn audit_signing_key_path(key_dir: &Path) -> PathBuf {
    key_dir.join("audit-signing.ed25519.p8")
}
