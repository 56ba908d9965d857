//! The `complaints` table, and the once-per-deadline alert claim complaints and requests share.

use sqlx::{AnyConnection, Row};

use super::{Db, StorageError};
use crate::{
    domain::SubjectId,
    workflows::complaints::{Complaint, Status},
};

const COLUMNS: &str = "id, subject_id, subject_type, against_org, category, description, status, \
     outcome, answer, due_at, created_at, updated_at";

fn from_row(r: &sqlx::any::AnyRow) -> Result<Complaint, sqlx::Error> {
    let status: String = r.try_get("status")?;
    Ok(Complaint {
        id: r.try_get("id")?,
        subject_id: r.try_get("subject_id")?,
        subject_type: r.try_get("subject_type")?,
        against_org: r.try_get("against_org")?,
        category: r.try_get("category")?,
        description: r.try_get("description")?,
        status: Status::parse(&status)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown status {status:?}").into()))?,
        outcome: r.try_get("outcome")?,
        answer: r.try_get("answer")?,
        due_at: r.try_get("due_at")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

async fn select(db: &Db, filter: &str, binds: &[&str]) -> Result<Vec<Complaint>, StorageError> {
    let sql = format!("SELECT {COLUMNS} FROM complaints {filter}");
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for b in binds {
        q = q.bind(*b);
    }
    let rows = q.fetch_all(db.pool()).await?;
    Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
}

pub async fn get(db: &Db, id: &str) -> Result<Option<Complaint>, StorageError> {
    Ok(select(db, "WHERE id = $1", &[id]).await?.pop())
}

/// A subject's complaints, newest first. Own means the same id and the same type.
pub async fn list_for_subject(
    db: &Db,
    subject: &SubjectId,
) -> Result<Vec<Complaint>, StorageError> {
    let filter = "WHERE subject_id = $1 AND subject_type = $2 ORDER BY created_at DESC";
    let kind = subject.subject_type().as_str();
    select(db, filter, &[subject.as_str(), kind]).await
}

/// Every complaint, oldest first (the handlers' queue).
pub async fn list_all(db: &Db) -> Result<Vec<Complaint>, StorageError> {
    select(db, "ORDER BY created_at", &[]).await
}

/// Stores a new complaint inside the caller's transaction (its history row is the caller's).
pub async fn insert_in(conn: &mut AnyConnection, c: &Complaint) -> Result<(), StorageError> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO complaints ({COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, NULL, $8, $9, $9)"
    )))
    .bind(&c.id)
    .bind(&c.subject_id)
    .bind(&c.subject_type)
    .bind(&c.against_org)
    .bind(&c.category)
    .bind(&c.description)
    .bind(c.status.as_str())
    .bind(c.due_at)
    .bind(c.created_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// A decision's outcome and the answer the subject reads, after the guarded move succeeded in
/// the same transaction.
pub async fn decide_in(
    conn: &mut AnyConnection,
    id: &str,
    outcome: Status,
    answer: Option<&str>,
) -> Result<(), StorageError> {
    sqlx::query("UPDATE complaints SET outcome = $1, answer = COALESCE($2, answer) WHERE id = $3")
        .bind(outcome.as_str())
        .bind(answer)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Open complaints past their handling deadline whose deadline is not yet alerted: (id, due).
pub async fn overdue_unalerted(db: &Db, now: i64) -> Result<Vec<(String, i64)>, StorageError> {
    let rows = sqlx::query(
        "SELECT id, due_at FROM complaints WHERE status IN ('submitted', 'investigating') \
         AND due_at < $1 AND alerted_due_at <> due_at",
    )
    .bind(now)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("id")?, r.try_get("due_at")?)))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

/// The tables whose deadlines are alerted once per deadline. A closed set: the name goes into
/// SQL text.
#[derive(Debug, Clone, Copy)]
pub enum Alerted {
    Complaints,
    Requests,
}

/// One item's passed deadline, whose alert one replica raises.
pub struct DeadlineClaim<'a> {
    pub table: Alerted,
    pub id: &'a str,
    pub due: i64,
}

impl DeadlineClaim<'_> {
    fn table(&self) -> &'static str {
        match self.table {
            Alerted::Complaints => "complaints",
            Alerted::Requests => "requests",
        }
    }

    /// Takes the alert of this deadline; `false` if another replica (or pass) already did.
    pub async fn take(&self, db: &Db) -> Result<bool, StorageError> {
        let done = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {} SET alerted_due_at = $1 WHERE id = $2 AND alerted_due_at <> $1",
            self.table()
        )))
        .bind(self.due)
        .bind(self.id)
        .execute(db.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives the alert back (it could not be raised), so that a later pass raises it.
    pub async fn give_back(&self, db: &Db) -> Result<(), StorageError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {} SET alerted_due_at = 0 WHERE id = $1 AND alerted_due_at = $2",
            self.table()
        )))
        .bind(self.id)
        .bind(self.due)
        .execute(db.pool())
        .await?;
        Ok(())
    }
}
