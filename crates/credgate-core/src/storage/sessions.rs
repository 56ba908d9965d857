//! The `page_sessions` table: signed-in people of the pages (a sign-in under way is sealed in
//! its cookie, not stored: see `web::pages::session::signin`; `page_signins` is left unused).
//! Callers pass the SHA-256 of the cookie value (`id_hash`), never the value, so a
//! copy of the database (or a log of its statements) opens no session. Every replica reads the
//! same rows, so a browser may come back to any of them.

use sqlx::Row as _;

use super::{Db, StorageError};

/// A signed-in person (staff) or data subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub kind: String,
    pub issuer: String,
    pub who: String,
    pub subject_type: Option<String>,
    pub name: Option<String>,
    pub org: Option<String>,
    /// Space-separated credgate roles (staff).
    pub roles: Option<String>,
    pub created_at: i64,
    pub seen_at: i64,
    pub expires_at: i64,
}

/// Stores a new session, first dropping every session past its absolute end (`now`).
pub async fn insert_session(
    db: &Db,
    id_hash: &str,
    s: &Session,
    now: i64,
) -> Result<(), StorageError> {
    sqlx::query("DELETE FROM page_sessions WHERE expires_at <= $1")
        .bind(now)
        .execute(db.pool())
        .await?;
    sqlx::query(
        "INSERT INTO page_sessions (id_hash, kind, issuer, who, subject_type, name, org, roles, \
         created_at, seen_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(id_hash)
    .bind(&s.kind)
    .bind(&s.issuer)
    .bind(&s.who)
    .bind(&s.subject_type)
    .bind(&s.name)
    .bind(&s.org)
    .bind(&s.roles)
    .bind(s.created_at)
    .bind(s.seen_at)
    .bind(s.expires_at)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// The session behind a cookie, if it is still alive at `now` given the idle timeout of its
/// kind (`idle_us` picks it from the row's kind); a live one is marked seen at `now`, a dead
/// one is deleted.
pub async fn touch(
    db: &Db,
    id_hash: &str,
    now: i64,
    idle_us: impl Fn(&str) -> i64,
) -> Result<Option<Session>, StorageError> {
    let row = sqlx::query(
        "SELECT kind, issuer, who, subject_type, name, org, roles, created_at, seen_at, \
         expires_at FROM page_sessions WHERE id_hash = $1",
    )
    .bind(id_hash)
    .fetch_optional(db.pool())
    .await?;
    let Some(r) = row else { return Ok(None) };
    let mut s = Session {
        kind: r.get(0),
        issuer: r.get(1),
        who: r.get(2),
        subject_type: r.get(3),
        name: r.get(4),
        org: r.get(5),
        roles: r.get(6),
        created_at: r.get(7),
        seen_at: r.get(8),
        expires_at: r.get(9),
    };
    if now >= s.expires_at || now - s.seen_at > idle_us(&s.kind) {
        delete(db, id_hash).await?;
        return Ok(None);
    }
    sqlx::query("UPDATE page_sessions SET seen_at = $1 WHERE id_hash = $2 AND seen_at < $1")
        .bind(now)
        .bind(id_hash)
        .execute(db.pool())
        .await?;
    s.seen_at = now;
    Ok(Some(s))
}

/// Ends a session (sign-out, or a dead one found); `false` if there was none.
pub async fn delete(db: &Db, id_hash: &str) -> Result<bool, StorageError> {
    let done = sqlx::query("DELETE FROM page_sessions WHERE id_hash = $1")
        .bind(id_hash)
        .execute(db.pool())
        .await?;
    Ok(done.rows_affected() > 0)
}
