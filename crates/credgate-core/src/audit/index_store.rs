//! SQL of the subject index written behind the path (`audit::indexer`): each chain's progress,
//! one indexing step, the un-indexed tail a subject's search adds to the index's candidates,
//! and how far the index is complete in time. Every value is bound; nothing a caller sends is
//! spliced into SQL.

use sqlx::Row;

use crate::storage::{Backend, Db, StorageError};

/// One chain as the index knows it: its writer and the place in it through which every record
/// has its `audit_subjects` rows (0: none of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainProgress {
    pub writer_id: String,
    pub indexed_through: i64,
    /// When the progress last moved (0: never, or set by the migration).
    pub indexed_us: i64,
}

/// Every chain that has records in the log, with its progress (0 when the indexer has not
/// seen it yet). The writers are read by a skip over the `(writer_id, chain_seq)` index, one
/// seek per chain, so the cost does not grow with the log.
pub async fn chains(conn: &mut sqlx::AnyConnection) -> Result<Vec<ChainProgress>, StorageError> {
    let rows = sqlx::query(
        "WITH RECURSIVE w(id) AS ( \
           SELECT MIN(writer_id) FROM audit_log \
           UNION ALL \
           SELECT (SELECT MIN(writer_id) FROM audit_log WHERE writer_id > w.id) FROM w \
           WHERE w.id IS NOT NULL) \
         SELECT w.id AS writer_id, COALESCE(p.chain_seq, 0) AS done, \
                COALESCE(p.indexed_us, 0) AS indexed_us \
         FROM w LEFT JOIN audit_index_progress p ON p.writer_id = w.id \
         WHERE w.id IS NOT NULL ORDER BY w.id",
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(ChainProgress {
                writer_id: r.try_get("writer_id")?,
                indexed_through: r.try_get("done")?,
                indexed_us: r.try_get("indexed_us")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

/// What one indexing step did to a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing after the progress: the chain is indexed to its head.
    UpToDate,
    /// Records after `from` up to `to` were indexed and the progress moved to `to`.
    Indexed { from: i64, to: i64, records: i64 },
    /// Another process moved the progress first; this step's work was rolled back.
    Lost,
}

/// Indexes up to `max` records of `writer_id`'s chain after place `done` (the progress as the
/// caller read it) and moves the progress, atomically. Index rows are inserted with ON
/// CONFLICT DO NOTHING semantics, so rows left by a crash, or by another replica, are
/// harmless. The progress moves only if it still says `done` (an optimistic update): when two
/// processes index one chain at once, one of them commits and the other's step does nothing,
/// and the progress never skips a record neither indexed.
pub async fn index_step(
    db: &Db,
    writer_id: &str,
    done: i64,
    max: i64,
) -> Result<Step, StorageError> {
    let mut conn = db.pool().acquire().await?;
    // The last of the next `max` committed records (places may have gaps where an archive
    // removed records), read outside any transaction: a tick that finds nothing takes no
    // write lock. Every record up to it is committed, and stays so: within a chain records
    // commit in chain order, one batch at a time.
    let row = sqlx::query(
        "SELECT COUNT(*) AS n, MAX(chain_seq) AS upto FROM (SELECT chain_seq FROM audit_log \
         WHERE writer_id = $1 AND chain_seq > $2 ORDER BY chain_seq LIMIT $3) t",
    )
    .bind(writer_id)
    .bind(done)
    .bind(max)
    .fetch_one(&mut *conn)
    .await?;
    let (records, upto): (i64, Option<i64>) = (row.try_get("n")?, row.try_get("upto")?);
    let Some(upto) = upto else {
        return Ok(Step::UpToDate);
    };
    let moved = match db.backend() {
        // One statement: the progress table's triggers (migration 0080) insert the rows.
        Backend::Sqlite => move_progress(&mut conn, writer_id, done, upto).await?,
        Backend::Postgres => {
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            postgres_insert_rows(&mut tx, writer_id, done, upto).await?;
            let moved = move_progress(&mut tx, writer_id, done, upto).await?;
            if moved {
                tx.commit().await?;
            } else {
                tx.rollback().await?;
            }
            moved
        }
    };
    Ok(if moved {
        Step::Indexed {
            from: done,
            to: upto,
            records,
        }
    } else {
        Step::Lost
    })
}

/// Moves the chain's progress from `done` to `upto`; false when it no longer says `done`.
async fn move_progress(
    conn: &mut sqlx::AnyConnection,
    writer_id: &str,
    done: i64,
    upto: i64,
) -> Result<bool, sqlx::Error> {
    let moved = sqlx::query(
        "INSERT INTO audit_index_progress (writer_id, chain_seq, indexed_us) VALUES ($1, $2, $3) \
         ON CONFLICT (writer_id) DO UPDATE SET chain_seq = excluded.chain_seq, \
         indexed_us = excluded.indexed_us WHERE audit_index_progress.chain_seq = $4",
    )
    .bind(writer_id)
    .bind(upto)
    .bind(crate::storage::now_micros())
    .bind(done)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(moved > 0)
}

/// The rows of the chain's records `(done, upto]`, from each record's own `subjects` (JSON
/// text). No DISTINCT and no ORDER BY: sorting a step's rows (100 a listed record) cost more
/// than the insert. Rows go in the range's scan order, the same for every process, so two
/// replicas racing on one range wait on each other; should they still deadlock, PostgreSQL
/// aborts one step, which is retried.
const PG_ROWS: &str = "SELECT s.value, l.seq \
     FROM audit_log l, jsonb_array_elements_text(l.subjects::jsonb) AS s(value) \
     WHERE l.writer_id = $1 AND l.chain_seq > $2 AND l.chain_seq <= $3";

/// The index rows of the step on PostgreSQL (SQLite's are inserted by triggers on the
/// progress table, migration 0080). A plain INSERT first, behind a savepoint: ON CONFLICT DO NOTHING probes the
/// primary key once more for every row (measured: 490 -> 315 ms a step of 100,000 rows). Rows
/// above the progress exist only after a crash of a non-transactional past, a race with
/// another replica or a record naming a subject twice; then the step rolls back to the
/// savepoint and inserts with ON CONFLICT DO NOTHING.
async fn postgres_insert_rows(
    tx: &mut sqlx::AnyConnection,
    writer_id: &str,
    done: i64,
    upto: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("SAVEPOINT plain_insert")
        .execute(&mut *tx)
        .await?;
    let plain = format!("INSERT INTO audit_subjects (subject_id, seq) {PG_ROWS}");
    match run_insert(tx, &plain, writer_id, done, upto).await {
        Ok(()) => {
            sqlx::query("RELEASE SAVEPOINT plain_insert")
                .execute(&mut *tx)
                .await?;
            Ok(())
        }
        Err(sqlx::Error::Database(d)) if d.kind() == sqlx::error::ErrorKind::UniqueViolation => {
            sqlx::query("ROLLBACK TO SAVEPOINT plain_insert")
                .execute(&mut *tx)
                .await?;
            let tolerant = format!(
                "INSERT INTO audit_subjects (subject_id, seq) {PG_ROWS} ON CONFLICT DO NOTHING"
            );
            run_insert(tx, &tolerant, writer_id, done, upto).await
        }
        Err(e) => Err(e),
    }
}

async fn run_insert(
    tx: &mut sqlx::AnyConnection,
    sql: &str,
    writer_id: &str,
    done: i64,
    upto: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .bind(writer_id)
        .bind(done)
        .bind(upto)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// The `seq` of every record not yet indexed that names `subject` in its own `subjects` list:
/// each chain's records after its progress, compared exactly (the JSON is parsed here, no
/// pattern is built from the subject). With the index's candidates this makes a subject's
/// search exact whatever the indexer's lag: a record at or below a chain's progress (read
/// first; it only grows) has its rows, and any record above it is read here.
pub async fn unindexed_naming(db: &Db, subject: &str) -> Result<Vec<i64>, StorageError> {
    let mut conn = db.pool().acquire().await?;
    let mut out = Vec::new();
    for chain in chains(&mut conn).await? {
        let rows = sqlx::query(
            "SELECT seq, subjects FROM audit_log WHERE writer_id = $1 AND chain_seq > $2 \
             ORDER BY chain_seq",
        )
        .bind(&chain.writer_id)
        .bind(chain.indexed_through)
        .fetch_all(&mut *conn)
        .await?;
        for r in rows {
            let subjects: String = r.try_get("subjects")?;
            let named: Vec<String> = serde_json::from_str(&subjects).unwrap_or_default();
            if named.iter().any(|s| s == subject) {
                out.push(r.try_get("seq")?);
            }
        }
    }
    Ok(out)
}

/// ` UNION SELECT seq FROM audit_log WHERE seq IN (...)` for `seqs`, to join the index's
/// candidates inside one `seq IN (subquery)` (kept one subquery, so the planner still reads it
/// as a semi-join by the index), or nothing when there are none (the usual case). The values
/// are integers read from the log, never caller input.
pub fn union_seqs(seqs: &[i64]) -> String {
    if seqs.is_empty() {
        return String::new();
    }
    let list: Vec<String> = seqs.iter().map(i64::to_string).collect();
    format!(
        " UNION SELECT seq FROM audit_log WHERE seq IN ({})",
        list.join(", ")
    )
}

/// The time T, in microseconds, such that every record committed before T has its index rows:
/// for each chain, the `time_us` of its first record after its progress (a record is made
/// before it commits, and a chain's records commit in order, so every record of the chain
/// committed before that time is indexed), or the time this read began when the chain is
/// indexed to its head; the earliest of these. An idle, caught-up system says "now".
pub async fn indexed_through(db: &Db) -> Result<i64, StorageError> {
    let started = crate::storage::now_micros();
    let mut conn = db.pool().acquire().await?;
    let mut through = started;
    for chain in chains(&mut conn).await? {
        let first: Option<i64> = sqlx::query(
            "SELECT time_us FROM audit_log WHERE writer_id = $1 AND chain_seq > $2 \
             ORDER BY chain_seq LIMIT 1",
        )
        .bind(&chain.writer_id)
        .bind(chain.indexed_through)
        .fetch_optional(&mut *conn)
        .await?
        .map(|r| r.try_get("time_us"))
        .transpose()?;
        if let Some(t) = first {
            through = through.min(t);
        }
    }
    Ok(through)
}

/// One chain's progress as stored (0 when it has none), for verification: a record above it
/// may not have its index rows yet.
pub async fn progress_of(db: &Db, writer_id: &str) -> Result<i64, StorageError> {
    let row = sqlx::query("SELECT chain_seq FROM audit_index_progress WHERE writer_id = $1")
        .bind(writer_id)
        .fetch_optional(db.pool())
        .await?;
    Ok(row
        .map(|r| r.try_get("chain_seq"))
        .transpose()?
        .unwrap_or(0))
}

/// Moves a chain's progress to at least `chain_seq`, inside an archive's transaction that
/// removes the chain's records up to it (`audit::archive`): they leave the log, so nothing
/// below it is left to index. It also settles a race on PostgreSQL: an indexer step that read
/// those records before the archive committed finds the progress moved, and rolls back the
/// rows it wrote for them instead of leaving rows that name no record.
pub async fn archived_through(
    conn: &mut sqlx::AnyConnection,
    writer_id: &str,
    chain_seq: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_index_progress (writer_id, chain_seq, indexed_us) VALUES ($1, $2, $3) \
         ON CONFLICT (writer_id) DO UPDATE SET chain_seq = excluded.chain_seq, \
         indexed_us = excluded.indexed_us WHERE audit_index_progress.chain_seq < excluded.chain_seq",
    )
    .bind(writer_id)
    .bind(chain_seq)
    .bind(crate::storage::now_micros())
    .execute(&mut *conn)
    .await?;
    Ok(())
}
