//! Aggregates for the staff console's dashboard: counts only, never a record's content.

use sqlx::Row as _;

use super::{Db, StorageError};

/// Audit records per decision (`allow`, `deny`, `error`) since `from_us`, staff actions
/// (kind `admin`) left out unless `staff_actions`, as `/admin/audit` leaves them out for
/// everyone but the auditor.
pub async fn decisions_since(
    db: &Db,
    from_us: i64,
    staff_actions: bool,
) -> Result<Vec<(String, i64)>, StorageError> {
    let sql = if staff_actions {
        "SELECT decision, COUNT(*) FROM audit_log WHERE time_us >= $1 GROUP BY decision ORDER BY decision"
    } else {
        "SELECT decision, COUNT(*) FROM audit_log WHERE time_us >= $1 AND kind <> 'admin' \
         GROUP BY decision ORDER BY decision"
    };
    let rows = sqlx::query(sql).bind(from_us).fetch_all(db.pool()).await?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1)))
        .collect())
}
