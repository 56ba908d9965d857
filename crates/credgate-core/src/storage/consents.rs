//! The `consents` table, and the consent as evidence (issue 15 item 6): what the person agreed
//! to (dataset scope, the notice's version and SHA-256, separate consent or not), how it ends,
//! and the signed receipt they keep. The receipt's canonical form is defined in SECURITY.md
//! ("Consent receipts") and below, in `canonical`.

use std::collections::BTreeMap;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::Row;

use super::{Db, StorageError, micros_to_rfc3339};
use crate::domain::SubjectId;

#[derive(Debug, Clone)]
pub struct ConsentRecord {
    pub id: String,
    pub subject_id: String,
    pub subject_type: String,
    pub grantee_org: String,
    pub purpose: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    /// Datasets the consent covers, sorted; `None`: every dataset the purpose reads.
    pub scope: Option<Vec<String>>,
    pub notice_version: Option<String>,
    /// Lower-case hex SHA-256 of the notice text the person was shown.
    pub notice_sha256: Option<String>,
    /// Separate consent (单独同意, PIPL art. 29) rather than consent within a wider agreement.
    pub separate_consent: bool,
    pub ends_with: EndsWith,
    /// Who revoked it (`subject:<id>`), with `revoked_at`.
    pub revoked_by: Option<String>,
    /// The signed receipt as issued (JSON text), kept so the subject can fetch it again.
    pub receipt: Option<String>,
}

/// How a consent ends besides revocation: at `expires_at`, or with the business relationship
/// it was given for (and at the latest at `expires_at`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndsWith {
    Expiry,
    BusinessRelationship,
}

impl EndsWith {
    pub fn as_str(self) -> &'static str {
        match self {
            EndsWith::Expiry => "expiry",
            EndsWith::BusinessRelationship => "business_relationship",
        }
    }

    fn parse(s: Option<&str>) -> Self {
        match s {
            Some("business_relationship") => EndsWith::BusinessRelationship,
            _ => EndsWith::Expiry,
        }
    }
}

impl ConsentRecord {
    /// Live at `now`: neither revoked nor expired.
    pub fn is_live(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at > now
    }

    /// Given by this subject: the same type and the same id.
    pub fn is_for(&self, subject: &SubjectId) -> bool {
        subject.is_named(&self.subject_id, &self.subject_type)
    }

    pub fn view(&self, now: i64) -> ConsentView {
        ConsentView {
            id: self.id.clone(),
            subject: self.subject_id.clone(),
            grantee_org: self.grantee_org.clone(),
            purpose: self.purpose.clone(),
            created_at: micros_to_rfc3339(self.created_at),
            expires_at: micros_to_rfc3339(self.expires_at),
            revoked_at: self.revoked_at.map(micros_to_rfc3339),
            revoked_by: self.revoked_by.clone(),
            scope: self.scope.clone(),
            notice_version: self.notice_version.clone(),
            notice_sha256: self.notice_sha256.clone(),
            separate_consent: self.separate_consent,
            ends_with: self.ends_with.as_str(),
            receipt: self
                .receipt
                .as_deref()
                .and_then(|r| serde_json::from_str(r).ok()),
            status: if self.revoked_at.is_some() {
                "revoked"
            } else if self.expires_at <= now {
                "expired"
            } else {
                "active"
            },
        }
    }
}

/// What a data subject sees of their consent.
#[derive(Debug, Serialize)]
pub struct ConsentView {
    pub id: String,
    pub subject: String,
    pub grantee_org: String,
    pub purpose: String,
    pub created_at: String,
    pub expires_at: String,
    pub revoked_at: Option<String>,
    pub revoked_by: Option<String>,
    pub scope: Option<Vec<String>>,
    pub notice_version: Option<String>,
    pub notice_sha256: Option<String>,
    pub separate_consent: bool,
    pub ends_with: &'static str,
    pub receipt: Option<Value>,
    pub status: &'static str,
}

const COLUMNS: &str = "id, subject_id, subject_type, grantee_org, purpose, created_at, expires_at, \
     revoked_at, scope, notice_version, notice_sha256, separate_consent, ends_with, revoked_by, receipt";

fn from_row(row: &sqlx::any::AnyRow) -> Result<ConsentRecord, sqlx::Error> {
    Ok(ConsentRecord {
        id: row.try_get("id")?,
        subject_id: row.try_get("subject_id")?,
        subject_type: row.try_get("subject_type")?,
        grantee_org: row.try_get("grantee_org")?,
        purpose: row.try_get("purpose")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        // A scope that does not parse covers nothing rather than everything.
        scope: row
            .try_get::<Option<String>, _>("scope")?
            .map(|s| serde_json::from_str(&s).unwrap_or_default()),
        notice_version: row.try_get("notice_version")?,
        notice_sha256: row.try_get("notice_sha256")?,
        separate_consent: row.try_get::<i64, _>("separate_consent")? != 0,
        ends_with: EndsWith::parse(row.try_get::<Option<String>, _>("ends_with")?.as_deref()),
        revoked_by: row.try_get("revoked_by")?,
        receipt: row.try_get("receipt")?,
    })
}

/// Inserts inside the caller's transaction (a deferred change, see `crate::audit::Change`):
/// the one way a consent is written, so that it commits with its audit record or not at all.
pub async fn insert_in(
    conn: &mut sqlx::AnyConnection,
    c: &ConsentRecord,
) -> Result<(), sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO consents ({COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8, $9, $10, $11, $12, NULL, $13)"
    )))
    .bind(&c.id)
    .bind(&c.subject_id)
    .bind(&c.subject_type)
    .bind(&c.grantee_org)
    .bind(&c.purpose)
    .bind(c.created_at)
    .bind(c.expires_at)
    .bind(c.scope.as_ref().map(|s| json!(s).to_string()))
    .bind(&c.notice_version)
    .bind(&c.notice_sha256)
    .bind(i64::from(c.separate_consent))
    .bind(c.ends_with.as_str())
    .bind(&c.receipt)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get(db: &Db, id: &str) -> Result<Option<ConsentRecord>, StorageError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM consents WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(db.pool())
    .await?;
    Ok(row.as_ref().map(from_row).transpose()?)
}

/// The subject's consents. A subject is its type and its id: a company and a person whose ids
/// are the same string are different subjects.
pub async fn list_for_subject(
    db: &Db,
    subject: &SubjectId,
) -> Result<Vec<ConsentRecord>, StorageError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM consents WHERE subject_id = $1 AND subject_type = $2 \
         ORDER BY created_at DESC, id"
    )))
    .bind(subject.as_str())
    .bind(subject.subject_type().as_str())
    .fetch_all(db.pool())
    .await?;
    Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
}

/// Revokes the subject's own consent, inside the caller's transaction; `false` if there is none
/// with that id for that subject (type and id). Revoking twice keeps the first time and who.
pub async fn revoke_in(
    conn: &mut sqlx::AnyConnection,
    subject: &SubjectId,
    id: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE consents SET revoked_by = CASE WHEN revoked_at IS NULL THEN $1 ELSE revoked_by END, \
         revoked_at = COALESCE(revoked_at, $2) \
         WHERE id = $3 AND subject_id = $4 AND subject_type = $5",
    )
    .bind(format!("subject:{}", subject.as_str()))
    .bind(now)
    .bind(id)
    .bind(subject.as_str())
    .bind(subject.subject_type().as_str())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// What a receipt's signature covers, before the canonical form: a consent receipt can never
/// be taken for anything else the same key signs (audit checkpoints sign another format).
pub const RECEIPT_DOMAIN: &[u8] = b"credgate-consent-receipt/v1\n";

/// The consent's canonical form: a JSON object with exactly these keys in byte order, no
/// whitespace, strings escaped as serde_json does (UTF-8, no `\u` escapes but for controls),
/// times as RFC 3339 UTC, `scope` a sorted array or null. Sorting is by `BTreeMap`, so it holds
/// whatever map order serde_json is built with.
pub fn canonical(c: &ConsentRecord, issuer: &str) -> String {
    let fields: BTreeMap<&str, Value> = BTreeMap::from([
        ("v", json!(1)),
        ("issuer", json!(issuer)),
        ("id", json!(c.id)),
        ("subject_id", json!(c.subject_id)),
        ("subject_type", json!(c.subject_type)),
        ("grantee_org", json!(c.grantee_org)),
        ("purpose", json!(c.purpose)),
        ("scope", json!(c.scope)),
        ("notice_version", json!(c.notice_version)),
        ("notice_sha256", json!(c.notice_sha256)),
        ("separate_consent", json!(c.separate_consent)),
        ("ends_with", json!(c.ends_with.as_str())),
        ("created_at", json!(micros_to_rfc3339(c.created_at))),
        ("expires_at", json!(micros_to_rfc3339(c.expires_at))),
    ]);
    serde_json::to_string(&fields).expect("a map of values serialises")
}

/// The signed receipt: `{"alg":"Ed25519","kid","payload","signature"}`, where `payload` is the
/// canonical form and `signature` the base64url (unpadded) Ed25519 signature over
/// `RECEIPT_DOMAIN || payload`.
pub fn sign_receipt(
    key: &ring::signature::Ed25519KeyPair,
    kid: &str,
    c: &ConsentRecord,
    issuer: &str,
) -> Value {
    let payload = canonical(c, issuer);
    let mut msg = RECEIPT_DOMAIN.to_vec();
    msg.extend_from_slice(payload.as_bytes());
    let sig = key.sign(&msg);
    json!({"alg": "Ed25519", "kid": kid, "payload": payload,
           "signature": URL_SAFE_NO_PAD.encode(sig.as_ref())})
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReceiptError {
    #[error("not a consent receipt")]
    Malformed,
    #[error("the signature does not verify with this key")]
    BadSignature,
}

/// Verifies a receipt with nothing but the gateway's public key (32 raw bytes): what anyone
/// holding the receipt can do offline. Returns the consent as signed.
pub fn verify_receipt(receipt: &Value, public_key: &[u8]) -> Result<Value, ReceiptError> {
    let (Some(payload), Some(sig), Some("Ed25519")) = (
        receipt["payload"].as_str(),
        receipt["signature"].as_str(),
        receipt["alg"].as_str(),
    ) else {
        return Err(ReceiptError::Malformed);
    };
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| ReceiptError::Malformed)?;
    let mut msg = RECEIPT_DOMAIN.to_vec();
    msg.extend_from_slice(payload.as_bytes());
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public_key)
        .verify(&msg, &sig)
        .map_err(|_| ReceiptError::BadSignature)?;
    serde_json::from_str(payload).map_err(|_| ReceiptError::Malformed)
}
