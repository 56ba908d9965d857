//! The `clients` table: institutions that authenticate with client credentials.

use serde::Serialize;
use sqlx::Row;

use super::{Db, StorageError, now_micros};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ClientRecord {
    pub id: String,
    pub name: String,
    pub org: String,
    pub role: String,
    pub region: Option<String>,
    pub status: ClientStatus,
    pub created_at: i64,
    /// RFC 8705 `tls_client_auth`: the SHA-256 thumbprint (base64url) of the certificate this
    /// client authenticates with, instead of a secret. `None` for a client with a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_thumbprint: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ClientStatus {
    Active,
    Disabled,
}

impl ClientStatus {
    fn parse(s: &str) -> Self {
        // Anything but an explicit 'active' counts as disabled: fail closed.
        if s == "active" {
            Self::Active
        } else {
            Self::Disabled
        }
    }
}

pub struct NewClient<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub org: &'a str,
    pub role: &'a str,
    pub region: Option<&'a str>,
    pub secret_hash: &'a str,
    /// Set for a `tls_client_auth` client (then `secret_hash` is `NO_SECRET`).
    pub tls_thumbprint: Option<&'a str>,
}

/// The `secret_hash` of a client that authenticates with its certificate: not a PHC string,
/// so no secret ever verifies against it.
pub const NO_SECRET: &str = "!tls_client_auth";

const COLUMNS: &str = "id, name, org, role, region, status, created_at, tls_thumbprint";

fn from_row(row: &sqlx::any::AnyRow) -> Result<ClientRecord, sqlx::Error> {
    Ok(ClientRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        org: row.try_get("org")?,
        role: row.try_get("role")?,
        region: row.try_get("region")?,
        status: ClientStatus::parse(&row.try_get::<String, _>("status")?),
        created_at: row.try_get("created_at")?,
        tls_thumbprint: row.try_get("tls_thumbprint")?,
    })
}

pub async fn insert(db: &Db, c: NewClient<'_>) -> Result<ClientRecord, StorageError> {
    let now = now_micros();
    sqlx::query(
        "INSERT INTO clients (id, name, org, role, region, secret_hash, status, created_at, \
         tls_thumbprint) VALUES ($1, $2, $3, $4, $5, $6, 'active', $7, $8)",
    )
    .bind(c.id)
    .bind(c.name)
    .bind(c.org)
    .bind(c.role)
    .bind(c.region)
    .bind(c.secret_hash)
    .bind(now)
    .bind(c.tls_thumbprint)
    .execute(db.pool())
    .await?;
    Ok(ClientRecord {
        id: c.id.into(),
        name: c.name.into(),
        org: c.org.into(),
        role: c.role.into(),
        region: c.region.map(Into::into),
        status: ClientStatus::Active,
        created_at: now,
        tls_thumbprint: c.tls_thumbprint.map(Into::into),
    })
}

pub async fn get(db: &Db, id: &str) -> Result<Option<ClientRecord>, StorageError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM clients WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(db.pool())
    .await?;
    Ok(row.as_ref().map(from_row).transpose()?)
}

/// The record and its secret hash, for the token endpoint only.
pub async fn get_with_secret(
    db: &Db,
    id: &str,
) -> Result<Option<(ClientRecord, String)>, StorageError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS}, secret_hash FROM clients WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(db.pool())
    .await?;
    match row {
        None => Ok(None),
        Some(row) => Ok(Some((from_row(&row)?, row.try_get("secret_hash")?))),
    }
}

/// Returns whether a client with that id existed.
pub async fn disable(db: &Db, id: &str) -> Result<bool, StorageError> {
    let mut conn = db.pool().acquire().await?;
    Ok(disable_in(&mut conn, id).await?)
}

/// `disable` inside the caller's transaction (a deferred change of `/admin`).
pub async fn disable_in(conn: &mut sqlx::AnyConnection, id: &str) -> Result<bool, sqlx::Error> {
    let done =
        sqlx::query("UPDATE clients SET status = 'disabled', disabled_at = $1 WHERE id = $2")
            .bind(now_micros())
            .bind(id)
            .execute(conn)
            .await?;
    Ok(done.rows_affected() > 0)
}

/// Makes a disabled client active again (the CLI's `client enable`).
pub async fn enable(db: &Db, id: &str) -> Result<bool, StorageError> {
    let mut conn = db.pool().acquire().await?;
    Ok(enable_in(&mut conn, id).await?)
}

/// Makes a disabled client active again, inside the caller's transaction (a deferred change of
/// `/admin`). Returns whether a client with that id existed.
pub async fn enable_in(conn: &mut sqlx::AnyConnection, id: &str) -> Result<bool, sqlx::Error> {
    let done =
        sqlx::query("UPDATE clients SET status = 'active', disabled_at = NULL WHERE id = $1")
            .bind(id)
            .execute(conn)
            .await?;
    Ok(done.rows_affected() > 0)
}

/// The distinct roles of the org's clients (any status): a lockdown of the org must not reach a
/// staff role's client.
pub async fn roles_in_org(db: &Db, org: &str) -> Result<Vec<String>, StorageError> {
    Ok(
        sqlx::query_scalar("SELECT DISTINCT role FROM clients WHERE org = $1")
            .bind(org)
            .fetch_all(db.pool())
            .await?,
    )
}

pub async fn list(db: &Db) -> Result<Vec<ClientRecord>, StorageError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM clients ORDER BY created_at, id"
    )))
    .fetch_all(db.pool())
    .await?;
    Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
}

/// The client, and whether a lockdown covers it or its org, in one round trip: the per-request
/// check of every data request.
pub async fn get_with_lockdown(
    db: &Db,
    id: &str,
) -> Result<Option<(ClientRecord, bool)>, StorageError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS}, (SELECT COUNT(*) FROM lockdowns l WHERE l.lifted_at IS NULL \
         AND (l.client_id = c.id OR l.org = c.org)) AS locked FROM clients c WHERE c.id = $1"
    )))
    .bind(id)
    .fetch_optional(db.pool())
    .await?;
    match row {
        None => Ok(None),
        Some(row) => Ok(Some((
            from_row(&row)?,
            row.try_get::<i64, _>("locked")? > 0,
        ))),
    }
}

/// Replaces a client's secret hash (`credgate client rotate-secret`): the old secret fails from
/// the next token request on, since the token endpoint reads the hash on every attempt. Tokens
/// already issued stay valid until they expire. Returns whether a client with that id existed.
/// A `tls_client_auth` client is left alone (it has no secret to rotate): `false` as for none.
pub async fn set_secret(db: &Db, id: &str, secret_hash: &str) -> Result<bool, StorageError> {
    let done =
        sqlx::query("UPDATE clients SET secret_hash = $1 WHERE id = $2 AND tls_thumbprint IS NULL")
            .bind(secret_hash)
            .bind(id)
            .execute(db.pool())
            .await?;
    Ok(done.rows_affected() > 0)
}
