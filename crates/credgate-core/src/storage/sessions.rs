//! The `page_signins` and `page_sessions` tables: sign-ins under way and signed-in people of
//! the pages. Callers pass the SHA-256 of the cookie value (`id_hash`), never the value, so a
//! copy of the database (or a log of its statements) opens no session. Every replica reads the
//! same rows, so a browser may come back to any of them.

use sqlx::Row as _;

use super::{Db, StorageError};

/// A sign-in under way, as `/signin/{kind}` started it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signin {
    pub kind: String,
    pub issuer: String,
    pub audience: String,
    pub state: String,
    pub nonce: String,
    pub verifier: String,
    pub redirect_uri: String,
    pub next_path: String,
    pub created_at: i64,
}

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

/// Stores a sign-in under way, first dropping those older than `older_than` (unix us), so that
/// abandoned sign-ins cannot pile up; `false` (nothing stored) when `max` are already under way,
/// since anyone may start one and each is a row.
pub async fn insert_signin(
    db: &Db,
    id_hash: &str,
    s: &Signin,
    older_than: i64,
    max: i64,
) -> Result<bool, StorageError> {
    sqlx::query("DELETE FROM page_signins WHERE created_at < $1")
        .bind(older_than)
        .execute(db.pool())
        .await?;
    let open: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM page_signins")
        .fetch_one(db.pool())
        .await?;
    if open >= max {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO page_signins (id_hash, kind, issuer, audience, state, nonce, verifier, \
         redirect_uri, next_path, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(id_hash)
    .bind(&s.kind)
    .bind(&s.issuer)
    .bind(&s.audience)
    .bind(&s.state)
    .bind(&s.nonce)
    .bind(&s.verifier)
    .bind(&s.redirect_uri)
    .bind(&s.next_path)
    .bind(s.created_at)
    .execute(db.pool())
    .await?;
    Ok(true)
}

/// Takes a sign-in under way: returns it and deletes it in one step, so that two callbacks
/// racing with the same cookie cannot both finish it (the one whose DELETE removed the row
/// wins; `RETURNING` is portable across SQLite 3.35+ and PostgreSQL).
pub async fn take_signin(db: &Db, id_hash: &str) -> Result<Option<Signin>, StorageError> {
    let row = sqlx::query(
        "DELETE FROM page_signins WHERE id_hash = $1 RETURNING kind, issuer, audience, state, \
         nonce, verifier, redirect_uri, next_path, created_at",
    )
    .bind(id_hash)
    .fetch_optional(db.pool())
    .await?;
    Ok(row.map(|r| Signin {
        kind: r.get(0),
        issuer: r.get(1),
        audience: r.get(2),
        state: r.get(3),
        nonce: r.get(4),
        verifier: r.get(5),
        redirect_uri: r.get(6),
        next_path: r.get(7),
        created_at: r.get(8),
    }))
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
