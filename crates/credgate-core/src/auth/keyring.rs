//! The gateway's keys live in the database, so every replica signs and verifies with the same
//! ones. Each key is stored wrapped (AES-256-GCM) under the master key: a 256-bit secret that
//! every replica holds in its key directory (`master.key`, 0600). A dump of the database alone
//! gives no key away, and one secret is all a new replica needs to be handed.
//!
//! The token-signing key rotates (`credgate keys rotate`): the newest generation signs, and older
//! ones keep verifying until the tokens they signed have expired. The pseudonym and report keys
//! never rotate here: a new pseudonym key would break every join made on the old pseudonyms, and
//! a new report key would need every sealed contact re-sealed.

use std::path::{Path, PathBuf};

use base64::{Engine, engine::general_purpose::STANDARD};
use ring::rand::{SecureRandom, SystemRandom};
use sqlx::Row;

use super::{
    keys::{
        Ed25519Key, KeyError, audit_signing_key_path, gateway_signing_key_path,
        load_or_create_secret, pseudonym_key_path,
    },
    sealer::Sealer,
};
use crate::storage::{Db, StorageError, now_micros, signals};

/// What a key is used for. Not a processing purpose (`policy::Purpose`, the X-Purpose an
/// institution declares): in a privacy product the two must never be confused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUse {
    /// Signs the access tokens the gateway issues (Ed25519).
    TokenSigning,
    /// Signs audit checkpoints (Ed25519); separate, so rotating one never touches the other.
    AuditSigning,
    /// The HMAC key of the pseudonym mask (32 bytes).
    Pseudonym,
    /// Seals whistleblowers' contacts (AES-256-GCM, 32 bytes).
    Reports,
}

impl KeyUse {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyUse::TokenSigning => "token-signing",
            KeyUse::AuditSigning => "audit-signing",
            KeyUse::Pseudonym => "pseudonym",
            KeyUse::Reports => "reports",
        }
    }

    fn is_ed25519(self) -> bool {
        matches!(self, KeyUse::TokenSigning | KeyUse::AuditSigning)
    }

    /// Where a gateway from before the keyring kept this key. Imported once when present, so
    /// an upgrade keeps its tokens, pseudonyms, sealed contacts and checkpoints valid.
    fn legacy_file(self, key_dir: &Path) -> PathBuf {
        match self {
            KeyUse::TokenSigning => gateway_signing_key_path(key_dir),
            KeyUse::AuditSigning => audit_signing_key_path(key_dir),
            KeyUse::Pseudonym => pseudonym_key_path(key_dir),
            KeyUse::Reports => key_dir.join("reports.key"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(
        "key `{kid}` in the database does not open with the master key {path}; every replica needs the same master key"
    )]
    Unwrap { kid: String, path: String },
    #[error("key `{kid}` in the database is not a valid {purpose} key")]
    Corrupt { kid: String, purpose: &'static str },
    #[error("{0} keys do not rotate")]
    NotRotatable(&'static str),
    #[error("another rotation took each generation first, three times; run it again")]
    RotationRaced,
}

impl From<sqlx::Error> for KeyringError {
    fn from(e: sqlx::Error) -> Self {
        Self::Storage(e.into())
    }
}

/// One stored key, unwrapped. Its material never leaves through `Debug`.
pub struct StoredKey {
    pub kid: String,
    pub generation: i64,
    pub created_at: i64,
    material: Vec<u8>,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl StoredKey {
    /// The key pair, for the Ed25519 purposes (checked when loaded).
    pub fn ed25519(&self) -> Option<Ed25519Key> {
        Ed25519Key::from_pkcs8(self.material.clone())
    }

    /// The secret, for the 32-byte purposes (checked when loaded).
    pub fn secret(&self) -> Option<[u8; 32]> {
        self.material.as_slice().try_into().ok()
    }
}

/// The master key and the key directory it was read from.
pub struct Keyring {
    master: Sealer,
    master_path: PathBuf,
    key_dir: PathBuf,
}

pub fn master_key_path(key_dir: &Path) -> PathBuf {
    key_dir.join("master.key")
}

/// Binds a wrapped key to its purpose and id: moved to another row, it does not open.
fn aad(purpose: KeyUse, kid: &str) -> String {
    format!("credgate-key/{}/{kid}", purpose.as_str())
}

impl Keyring {
    /// Reads `key_dir/master.key`, creating it (0600) on the very first start. Replicas must be
    /// given the same file; one that has another master key cannot open the stored keys and
    /// refuses to start.
    pub fn open(key_dir: &Path) -> Result<Self, KeyError> {
        let master_path = master_key_path(key_dir);
        let master = Sealer::new(&load_or_create_secret(&master_path)?);
        Ok(Self {
            master,
            master_path,
            key_dir: key_dir.to_path_buf(),
        })
    }

    /// Every generation of `purpose`, oldest first. With none stored, generation 1 is made:
    /// imported from the pre-keyring key file if there is one, else generated. Replicas that
    /// start at once race on the unique (purpose, generation); the loser reads the winner's.
    pub async fn ensure(&self, db: &Db, purpose: KeyUse) -> Result<Vec<StoredKey>, KeyringError> {
        let keys = self.load(db, purpose).await?;
        if !keys.is_empty() {
            return Ok(keys);
        }
        let legacy = purpose.legacy_file(&self.key_dir);
        let material = if legacy.exists() {
            tracing::info!(purpose = purpose.as_str(), file = %legacy.display(), "importing key file into the keyring");
            if purpose.is_ed25519() {
                Ed25519Key::load(&legacy)?.pkcs8().to_vec()
            } else {
                load_or_create_secret(&legacy)?.to_vec()
            }
        } else {
            generate(purpose)?
        };
        let mut tx = db.pool().begin().await?;
        self.insert(&mut tx, purpose, 1, &material).await?;
        tx.commit().await?;
        let keys = self.load(db, purpose).await?;
        if keys.is_empty() {
            return Err(KeyringError::Corrupt {
                kid: "-".into(),
                purpose: purpose.as_str(),
            });
        }
        Ok(keys)
    }

    /// The stored generations of `purpose`, oldest first, unwrapped and checked.
    pub async fn load(&self, db: &Db, purpose: KeyUse) -> Result<Vec<StoredKey>, KeyringError> {
        let rows = sqlx::query(
            "SELECT kid, generation, wrapped, created_at FROM gateway_keys \
             WHERE purpose = $1 ORDER BY generation",
        )
        .bind(purpose.as_str())
        .fetch_all(db.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let kid: String = r.try_get("kid")?;
                let wrapped: String = r.try_get("wrapped")?;
                let material = self
                    .master
                    .open(&aad(purpose, &kid), &wrapped)
                    .and_then(|b64| STANDARD.decode(b64).ok())
                    .ok_or_else(|| KeyringError::Unwrap {
                        kid: kid.clone(),
                        path: self.master_path.display().to_string(),
                    })?;
                let sound = if purpose.is_ed25519() {
                    Ed25519Key::from_pkcs8(material.clone()).is_some_and(|k| k.kid == kid)
                } else {
                    material.len() == 32
                };
                if !sound {
                    return Err(KeyringError::Corrupt {
                        kid,
                        purpose: purpose.as_str(),
                    });
                }
                Ok(StoredKey {
                    kid,
                    generation: r.try_get("generation")?,
                    created_at: r.try_get("created_at")?,
                    material,
                })
            })
            .collect()
    }

    /// Adds the next generation of the token-signing key and tells every replica. Replicas
    /// sign with it once they see it (within a second); tokens signed by the older key stay
    /// valid until they expire.
    pub async fn rotate(&self, db: &Db, purpose: KeyUse) -> Result<StoredKey, KeyringError> {
        if purpose != KeyUse::TokenSigning {
            return Err(KeyringError::NotRotatable(purpose.as_str()));
        }
        self.ensure(db, purpose).await?;
        // Two rotations at once race on (purpose, generation); the loser tries the next one.
        for _ in 0..3 {
            let next = self
                .load(db, purpose)
                .await?
                .last()
                .map_or(1, |k| k.generation + 1);
            let material = generate(purpose)?;
            let mut tx = db.pool().begin().await?;
            if self.insert(&mut tx, purpose, next, &material).await? {
                signals::bump(&mut *tx, signals::KEYS, None).await?;
                tx.commit().await?;
                if let Some(k) = self
                    .load(db, purpose)
                    .await?
                    .into_iter()
                    .find(|k| k.generation == next)
                {
                    return Ok(k);
                }
            }
        }
        Err(KeyringError::RotationRaced)
    }

    /// Inserts one generation unless that generation exists. True when this call stored it.
    async fn insert(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        purpose: KeyUse,
        generation: i64,
        material: &[u8],
    ) -> Result<bool, KeyringError> {
        let (kid, public) = if purpose.is_ed25519() {
            let key = Ed25519Key::from_pkcs8(material.to_vec()).ok_or(KeyringError::Corrupt {
                kid: "-".into(),
                purpose: purpose.as_str(),
            })?;
            (key.kid.clone(), Some(STANDARD.encode(&key.public)))
        } else {
            let mut id = [0u8; 8];
            SystemRandom::new()
                .fill(&mut id)
                .map_err(|_| KeyError::Generate)?;
            let id = hex::encode(id);
            (format!("{}-{id}", purpose.as_str()), None)
        };
        let wrapped = self
            .master
            .seal(&aad(purpose, &kid), &STANDARD.encode(material));
        let done = sqlx::query(
            "INSERT INTO gateway_keys (kid, purpose, generation, public_key, wrapped, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(&kid)
        .bind(purpose.as_str())
        .bind(generation)
        .bind(public)
        .bind(wrapped)
        .bind(now_micros())
        .execute(&mut **tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

fn generate(purpose: KeyUse) -> Result<Vec<u8>, KeyError> {
    if purpose.is_ed25519() {
        return Ok(Ed25519Key::generate()?.pkcs8().to_vec());
    }
    let mut bytes = vec![0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| KeyError::Generate)?;
    Ok(bytes)
}

/// The gateway's keys as a running replica holds them.
pub struct GatewayKeys {
    pub token_signing: Vec<StoredKey>,
    pub audit_signing: Ed25519Key,
    pub pseudonym: [u8; 32],
    pub reports: [u8; 32],
}

impl Keyring {
    /// Everything a replica needs at start, creating what is missing.
    pub async fn gateway_keys(&self, db: &Db) -> Result<GatewayKeys, KeyringError> {
        let newest = |mut keys: Vec<StoredKey>, purpose: KeyUse| {
            keys.pop().ok_or(KeyringError::Corrupt {
                kid: "-".into(),
                purpose: purpose.as_str(),
            })
        };
        let corrupt = |k: &StoredKey, purpose: KeyUse| KeyringError::Corrupt {
            kid: k.kid.clone(),
            purpose: purpose.as_str(),
        };
        let audit = newest(
            self.ensure(db, KeyUse::AuditSigning).await?,
            KeyUse::AuditSigning,
        )?;
        let pseudonym = newest(self.ensure(db, KeyUse::Pseudonym).await?, KeyUse::Pseudonym)?;
        let reports = newest(self.ensure(db, KeyUse::Reports).await?, KeyUse::Reports)?;
        Ok(GatewayKeys {
            token_signing: self.ensure(db, KeyUse::TokenSigning).await?,
            audit_signing: audit
                .ed25519()
                .ok_or_else(|| corrupt(&audit, KeyUse::AuditSigning))?,
            pseudonym: pseudonym
                .secret()
                .ok_or_else(|| corrupt(&pseudonym, KeyUse::Pseudonym))?,
            reports: reports
                .secret()
                .ok_or_else(|| corrupt(&reports, KeyUse::Reports))?,
        })
    }
}
