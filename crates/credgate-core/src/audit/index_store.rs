//! SQL of the subject index written behind the path (`audit::indexer`): each chain's progress,
//! one indexing step, the un-indexed tail a subject's search adds to the index's candidates,
//! and how far the index is complete in time. Every value is bound; nothing a caller sends is
//! spliced into SQL.

use sqlx::Row;

use crate::storage::{Backend, Db, StorageError};

/// One chain as the index knows it: its writer and the place in it through which every record
/// has its index rows (step rows, migration 0090; `audit_subjects` before it) (0: none of it).
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
    /// Records after `from` up to `to` were indexed and the progress moved to `to`; `at_head`
    /// when the step found no record after `to`'s that it left for the next.
    Indexed {
        from: i64,
        to: i64,
        records: i64,
        /// How many records the step read to choose them (at most its `scan`; on SQLite, at
        /// most one more than it took).
        scanned: i64,
        at_head: bool,
        /// The move carried rows the step grouped itself (SQLite, migration 0100; the
        /// database derives only if they fall short). False when the database derived them all:
        /// PostgreSQL, a chain's first progress, a step with a record whose `subjects` is odd.
        grouped: bool,
        /// How long the move took: on SQLite, how long the step held the write lock (its
        /// read and its grouping took none).
        locked: std::time::Duration,
    },
    /// Another process moved the progress first; this step did nothing.
    Lost,
}

/// Indexes `writer_id`'s chain after place `done` (the progress as the caller read it) and
/// moves the progress, atomically, within `budget`: each record costs one plus the subjects
/// it names, and a step takes the records whose cost before them is under the budget (at
/// least one) among the next `scan` records. Bounding names, not records, is what keeps a
/// step short: on SQLite it holds the one write lock, and a list record names 200 subjects
/// (grouped into a row a distinct subject, `audit_subject_steps`).
/// `scan` bounds the read that chooses them: every record read has its `subjects` parsed to
/// be costed, so reading `budget` records to take 20 list records parsed a hundred times
/// what the step wrote (the caller sizes it from the step before: `indexer::next_scan`).
/// The progress moves only if it still says `done` (an optimistic update): when two processes
/// index one chain at once, one of them commits and the other's step does nothing. The rows
/// go in the same statement: on SQLite grouped here and carried by the move (migration 0100,
/// [`super::step_rows`]), on PostgreSQL inserted by the progress table's trigger (0080).
pub async fn index_step(
    db: &Db,
    writer_id: &str,
    done: i64,
    budget: i64,
    scan: i64,
) -> Result<Step, StorageError> {
    let (budget, scan) = (budget.max(1), scan.max(1));
    let mut conn = db.pool().acquire().await?;
    // Read outside any transaction: a tick that finds nothing takes no write lock. Every
    // record up to `upto` is committed, and stays so: within a chain records commit in chain
    // order, one batch at a time. Places may have gaps where an archive removed records.
    let chosen = match db.backend() {
        Backend::Sqlite => choose_and_group(&mut conn, writer_id, done, budget, scan).await?,
        Backend::Postgres => choose(&mut conn, writer_id, done, budget, scan).await?,
    };
    let Some(c) = chosen else {
        return Ok(Step::UpToDate);
    };
    // The write lock in turn with this process's audit writer (`Db::write_turn`).
    let turn = db.write_turn().await;
    let moving = std::time::Instant::now();
    let moved = move_progress((&mut conn, db.backend()), writer_id, (done, c.upto), c.rows).await?;
    let locked = moving.elapsed();
    drop(turn);
    let Some(grouped) = moved else {
        return Ok(Step::Lost);
    };
    Ok(Step::Indexed {
        from: done,
        to: c.upto,
        records: c.records,
        scanned: c.scanned,
        at_head: c.records == c.scanned && c.scanned < scan,
        grouped,
        locked,
    })
}

/// The records a step takes: how many, the place of the last, how many were read to choose
/// them, and (SQLite) their rows as [`super::step_rows::Grouper`] made them.
struct Chosen {
    records: i64,
    upto: i64,
    scanned: i64,
    rows: Option<String>,
}

/// PostgreSQL: the records the step takes, costed in SQL; the trigger writes their rows.
async fn choose(
    conn: &mut sqlx::AnyConnection,
    writer_id: &str,
    done: i64,
    budget: i64,
    scan: i64,
) -> Result<Option<Chosen>, StorageError> {
    // A record costs one plus the subjects it names (0 when its `subjects` is no list).
    let row = sqlx::query(
        "SELECT COUNT(*) AS scanned, \
           SUM(CASE WHEN prior < $4 THEN 1 ELSE 0 END) AS n, \
           MAX(CASE WHEN prior < $4 THEN chain_seq END) AS upto \
         FROM (SELECT chain_seq, SUM(cost) OVER (ORDER BY chain_seq \
                 ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) - cost AS prior \
               FROM (SELECT chain_seq, \
                       1 + jsonb_array_length(credgate_subject_list(subjects)) AS cost \
                     FROM audit_log \
                     WHERE writer_id = $1 AND chain_seq > $2 ORDER BY chain_seq LIMIT $3) r) t",
    )
    .bind(writer_id)
    .bind(done)
    .bind(scan)
    .bind(budget)
    .fetch_one(&mut *conn)
    .await?;
    let scanned: i64 = row.try_get("scanned")?;
    let records: Option<i64> = row.try_get("n")?;
    let upto: Option<i64> = row.try_get("upto")?;
    Ok(records.zip(upto).map(|(records, upto)| Chosen {
        records,
        upto,
        scanned,
        rows: None,
    }))
}

/// On SQLite, a step takes no more records once their rows reach this many (the record that
/// crosses it is the last, so a step may pass it by one record's names; after a record whose
/// rows the database derives, each name counts as a row): the rows are what its move writes
/// inside the write lock, at 2-9 us a row, so this bounds the lock at about 4-18 ms however
/// distinct the names (every name of a step distinct wrote as many rows as its budget of
/// names: 40-180 ms at 20,000). Lists naming the same few hundred subjects stay far under it,
/// and their steps are bounded by names. The lock also holds the move's count check, which
/// reads every name of the step once (about 5 ms for 72,000 names).
pub const STEP_ROWS: usize = 2_000;

/// SQLite: reads the next `scan` records once, as a stream, takes those within the budget of
/// names and [`STEP_ROWS`], and groups their rows here (migration 0100 says why), before the
/// step takes the write lock. It stops reading at the first record past the budget.
async fn choose_and_group(
    conn: &mut sqlx::AnyConnection,
    writer_id: &str,
    done: i64,
    budget: i64,
    scan: i64,
) -> Result<Option<Chosen>, StorageError> {
    use futures_util::TryStreamExt;
    let mut read = sqlx::query(
        "SELECT chain_seq, CASE WHEN typeof(seq) = 'integer' THEN seq END AS seq, \
                CASE WHEN json_valid(subjects) THEN CAST(subjects AS BLOB) END AS subjects \
         FROM audit_log WHERE writer_id = $1 AND chain_seq > $2 ORDER BY chain_seq LIMIT $3",
    )
    .bind(writer_id)
    .bind(done)
    .bind(scan)
    .fetch(&mut *conn);
    let mut rows = super::step_rows::Grouper::default();
    let (mut scanned, mut records, mut cost, mut upto) = (0i64, 0i64, 0i64, None);
    while let Some(row) = read.try_next().await? {
        scanned += 1;
        if cost >= budget || rows.rows() >= STEP_ROWS {
            // One record past the step says it is not at the head and sizes the next read
            // (`indexer::next_scan` asks only whether it took fewer than it read): reading
            // the rest of `scan` would copy their `subjects` for nothing.
            break;
        }
        // Bytes, not text: a value `json_valid` passes may be a blob or not UTF-8 (planted),
        // which a text read refuses on every pass; as bytes it is only an odd record.
        let subjects: Option<Vec<u8>> = row.try_get("subjects")?;
        let names = rows.add(row.try_get("seq")?, subjects.as_deref());
        cost = cost.saturating_add(1).saturating_add(names);
        upto = Some(row.try_get::<i64, _>("chain_seq")?);
        records += 1;
    }
    Ok(upto.map(|upto| Chosen {
        records,
        upto,
        scanned,
        rows: rows.finish(),
    }))
}

/// Moves the chain's progress from `done` to `upto`: None when it no longer says `done`, else
/// whether the move carried the step's `rows` (SQLite; a first progress never does: the
/// database derives its rows, as it does whenever `rows` is None).
///
/// An UPDATE, and an INSERT only for a chain without progress, never one upsert: on SQLite
/// the conflict rule of the statement that fires a trigger replaces its triggers' own, and an
/// upsert's is ABORT, so the `INSERT OR IGNORE` of migration 0080's trigger aborted on an
/// index row already there (planted, or left by a lost race) and the chain's indexing stopped
/// for good at that record. A plain UPDATE, or an INSERT whose conflict clause is DO NOTHING,
/// leaves the trigger's rule alone.
async fn move_progress(
    (conn, backend): (&mut sqlx::AnyConnection, Backend),
    writer_id: &str,
    (done, upto): (i64, i64),
    rows: Option<String>,
) -> Result<Option<bool>, sqlx::Error> {
    let now = crate::storage::now_micros();
    // On SQLite `step_rows` is always set, NULL when the database is to derive the rows.
    let sql = match backend {
        Backend::Sqlite => {
            "UPDATE audit_index_progress SET chain_seq = $2, indexed_us = $3, step_rows = $5 \
             WHERE writer_id = $1 AND chain_seq = $4"
        }
        Backend::Postgres => {
            "UPDATE audit_index_progress SET chain_seq = $2, indexed_us = $3 \
             WHERE writer_id = $1 AND chain_seq = $4"
        }
    };
    let mut update = sqlx::query(sql)
        .bind(writer_id)
        .bind(upto)
        .bind(now)
        .bind(done);
    let carried = rows.is_some() && backend == Backend::Sqlite;
    if backend == Backend::Sqlite {
        update = update.bind(rows);
    }
    if update.execute(&mut *conn).await?.rows_affected() > 0 {
        return Ok(Some(carried));
    }
    if done != 0 {
        return Ok(None);
    }
    Ok((first_progress(conn, writer_id, upto, now).await? > 0).then_some(false))
}

/// A chain's first progress row; nothing when another process made it first (DO NOTHING:
/// see `move_progress` for why not an upsert).
async fn first_progress(
    conn: &mut sqlx::AnyConnection,
    writer_id: &str,
    upto: i64,
    now: i64,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "INSERT INTO audit_index_progress (writer_id, chain_seq, indexed_us) VALUES ($1, $2, $3) \
         ON CONFLICT (writer_id) DO NOTHING",
    )
    .bind(writer_id)
    .bind(upto)
    .bind(now)
    .execute(&mut *conn)
    .await?
    .rows_affected())
}

/// The writers of the log, by a skip over the `(writer_id, chain_seq)` index (one seek a
/// chain), as the CTE `w(id)`, for [`unindexed_union`]. Prefix a statement with it.
pub const WRITERS_CTE: &str = "WITH RECURSIVE w(id) AS ( \
       SELECT MIN(writer_id) FROM audit_log \
       UNION ALL \
       SELECT (SELECT MIN(writer_id) FROM audit_log WHERE writer_id > w.id) FROM w \
       WHERE w.id IS NOT NULL) ";

/// ` UNION SELECT seq ...` of every record above its chain's progress whose own `subjects`
/// names the subject bound at placeholder `p`, to join the index's candidates inside one
/// `seq IN (subquery)`. With them a subject's search is exact whatever the indexer's lag: a
/// record at or below its chain's progress has its rows (migration 0080 makes that a rule of
/// the database), any record above it is matched here. One statement, nothing spliced but
/// `p`: per chain (the writers of [`WRITERS_CTE`], which the statement must start with) a
/// range read of the `(writer_id, chain_seq)` index above the progress, matched in SQL
/// (malformed JSON matches nothing: `json_valid`, `credgate_subject_list`).
pub fn unindexed_union(backend: Backend, p: &str) -> String {
    match backend {
        Backend::Sqlite => format!(
            " UNION SELECT l.seq FROM (SELECT w.id, COALESCE((SELECT ip.chain_seq \
               FROM audit_index_progress ip WHERE ip.writer_id = w.id), 0) AS done \
               FROM w WHERE w.id IS NOT NULL) c \
             JOIN audit_log l ON l.writer_id = c.id AND l.chain_seq > c.done \
             WHERE EXISTS (SELECT 1 FROM json_each(CASE WHEN json_valid(l.subjects) \
               THEN l.subjects ELSE '[]' END) WHERE value = {p})"
        ),
        // The same in a function of migration 0080: written as a join, PostgreSQL's planner
        // guessed a third of the log above the progress and scanned all of it.
        Backend::Postgres => {
            format!(" UNION SELECT u.seq FROM credgate_unindexed_naming({p}) AS u(seq)")
        }
    }
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
    // Not an upsert: see `move_progress`. The row first, then the move: on PostgreSQL an
    // INSERT that meets a first step's uncommitted row waits and does nothing, taking no lock,
    // while an UPDATE after it (a new snapshot) sees that row and locks it, so the indexer's
    // next step waits for this archive and finds the progress moved. The other order let that
    // step move the progress over records this archive then removed (a review's F1, reproduced
    // with the 0080 trigger).
    let now = crate::storage::now_micros();
    first_progress(conn, writer_id, chain_seq, now).await?;
    sqlx::query(
        "UPDATE audit_index_progress SET chain_seq = $2, indexed_us = $3 \
         WHERE writer_id = $1 AND chain_seq < $2",
    )
    .bind(writer_id)
    .bind(chain_seq)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Which way a subject's walk goes from its cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walk {
    /// Newest first, `seq` below this.
    Below(i64),
    /// Oldest first, `seq` above this.
    Above(i64),
}

/// What the step rows (`audit_subject_steps`, migration 0090) say of a subject near a cursor:
/// every `seq` they hold strictly between the cursor and `cut`, as a JSON array to bind
/// (`candidates_sql`). Beyond `cut` (smaller when walking `Below`, greater `Above`) rows were
/// left unread: a page the caller builds holds what lies between the cursor and `cut`, and
/// when it is short of its limit the caller asks again with more rows (`rows` doubled). `None`:
/// every row was read, the candidates are all there are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepCandidates {
    pub seqs: Vec<i64>,
    pub cut: Option<i64>,
}

impl StepCandidates {
    /// The candidates as the JSON array `candidates_sql` reads.
    pub fn json(&self) -> String {
        serde_json::to_string(&self.seqs).unwrap_or_else(|_| "[]".into())
    }

    /// The value that bounds the page's `seq` (exclusive) on the far side from the cursor:
    /// `cut`, or the end of the range when every row was read.
    pub fn bound(&self, walk: Walk) -> i64 {
        match (walk, self.cut) {
            (_, Some(c)) => c,
            (Walk::Below(_), None) => i64::MIN,
            (Walk::Above(_), None) => i64::MAX,
        }
    }

    /// Both subjects' candidates (the value as typed and as reduced, `Bounds::subject_as_sent`),
    /// cut at the nearer of the two cuts, where both are complete.
    pub fn merge(self, other: StepCandidates, walk: Walk) -> StepCandidates {
        let cut = match (self.cut, other.cut, walk) {
            (None, c, _) | (c, None, _) => c,
            (Some(a), Some(b), Walk::Below(_)) => Some(a.max(b)),
            (Some(a), Some(b), Walk::Above(_)) => Some(a.min(b)),
        };
        let seqs = self.seqs.into_iter().chain(other.seqs).collect();
        nearest(seqs, walk, cut, usize::MAX)
    }
}

/// How many consecutive `seq`s one step row may cover: migration 0090 groups a step's names by
/// `seq / 256`, so a row's `last_seq - first_seq` is under this.
pub const STEP_SPAN: i64 = 256;

/// The subject's `seq`s from step rows nearest the cursor: at most `need` of them, read from at
/// most `rows` rows in the walk's order (newest first by `last_seq`: a row not read holds only
/// `seq`s at or below the last one read; oldest first by `first_seq`: at or above it). The
/// candidates are complete strictly between the cursor and `cut`; when more than `need` were
/// read, the cut moves to the first one left out, so the bound JSON holds `need` at most.
/// A row's span is under [`STEP_SPAN`], so the rows that straddle the cursor are within it of
/// the cursor and the read is one index range from there, not a scan of every row newer (or
/// older) than the cursor. The caller asks again with more (`rows`, `need` doubled) when its
/// page comes out short of a cut. A malformed `seqs` (planted: the indexer writes only arrays
/// of integers) is skipped here and reported by verification.
pub async fn step_candidates(
    conn: &mut sqlx::AnyConnection,
    subject: &str,
    walk: Walk,
    (rows, need): (i64, i64),
) -> Result<StepCandidates, StorageError> {
    let (rows, need) = (
        rows.max(1),
        usize::try_from(need.max(1)).unwrap_or(usize::MAX),
    );
    let (sql, cursor, reach) = match walk {
        Walk::Below(c) => (
            "SELECT last_seq AS k, seqs FROM audit_subject_steps WHERE subject_id = $1 \
             AND last_seq < $3 AND first_seq < $2 ORDER BY last_seq DESC LIMIT $4",
            c,
            c.saturating_add(STEP_SPAN),
        ),
        Walk::Above(c) => (
            "SELECT first_seq AS k, seqs FROM audit_subject_steps WHERE subject_id = $1 \
             AND first_seq > $3 AND last_seq > $2 ORDER BY first_seq ASC LIMIT $4",
            c,
            c.saturating_sub(STEP_SPAN),
        ),
    };
    let found = sqlx::query(sql)
        .bind(subject)
        .bind(cursor)
        .bind(reach)
        .bind(rows)
        .fetch_all(&mut *conn)
        .await?;
    let cut = if found.len() as i64 == rows {
        found.last().map(|r| r.try_get::<i64, _>("k")).transpose()?
    } else {
        None
    };
    let mut seqs = Vec::new();
    for row in &found {
        let text: String = row.try_get("seqs")?;
        if let Ok(list) = serde_json::from_str::<Vec<i64>>(&text) {
            seqs.extend(list);
        }
    }
    Ok(nearest(seqs, walk, cut, need))
}

/// The `need` `seq`s nearest the cursor among `seqs` that lie strictly between it and `cut`,
/// and the cut that bounds them: the next one beyond them when more were found.
fn nearest(mut seqs: Vec<i64>, walk: Walk, cut: Option<i64>, need: usize) -> StepCandidates {
    let within = |s: &i64| match walk {
        Walk::Below(c) => *s < c && cut.is_none_or(|k| *s > k),
        Walk::Above(c) => *s > c && cut.is_none_or(|k| *s < k),
    };
    seqs.retain(within);
    seqs.sort_unstable();
    seqs.dedup();
    if let Walk::Below(_) = walk {
        seqs.reverse();
    }
    let cut = match seqs.get(need) {
        Some(beyond) => Some(*beyond),
        None => cut,
    };
    seqs.truncate(need);
    seqs.sort_unstable();
    StepCandidates { seqs, cut }
}

/// ` UNION SELECT ...` of the `seq`s in the JSON array bound at placeholder `p`
/// (`StepCandidates::json`), to join a subject's candidates inside `seq IN (subquery)`.
pub fn candidates_sql(backend: Backend, p: &str) -> String {
    match backend {
        Backend::Sqlite => format!(" UNION SELECT c.value FROM json_each({p}) c"),
        Backend::Postgres => {
            format!(" UNION SELECT c.v::bigint FROM jsonb_array_elements_text({p}::jsonb) c(v)")
        }
    }
}

/// A read transaction whose statements all see one snapshot of the database: a subject's
/// search reads the step rows, then the log with the records above each chain's progress;
/// an indexer step committed between the two would move records from the second read's
/// tail into step rows the first did not see. SQLite (WAL) keeps a read transaction on the
/// snapshot of its first read; PostgreSQL needs REPEATABLE READ for that (READ COMMITTED
/// takes a snapshot a statement).
pub async fn snapshot(db: &Db) -> Result<sqlx::Transaction<'static, sqlx::Any>, StorageError> {
    let mut tx = db.pool().begin().await?;
    if db.backend() == Backend::Postgres {
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .execute(&mut *tx)
            .await?;
    }
    Ok(tx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_keeps_what_lies_between_cursor_and_cut_and_moves_the_cut_to_what_it_drops() {
        let seqs = vec![3, 9, 5, 12, 7, 7, 1, 20];
        // Newest first below 12, rows read down to 4: 5, 7, 9 are complete.
        let c = nearest(seqs.clone(), Walk::Below(12), Some(4), 10);
        assert_eq!(
            c,
            StepCandidates {
                seqs: vec![5, 7, 9],
                cut: Some(4)
            }
        );
        // Two wanted: 9 and 7; the cut moves to 5 (left for the next read).
        let c = nearest(seqs.clone(), Walk::Below(12), Some(4), 2);
        assert_eq!(
            c,
            StepCandidates {
                seqs: vec![7, 9],
                cut: Some(5)
            }
        );
        // Every row read: no cut unless some were dropped.
        let c = nearest(seqs.clone(), Walk::Below(100), None, 10);
        assert_eq!(c.cut, None);
        assert_eq!(c.seqs, vec![1, 3, 5, 7, 9, 12, 20]);
        // Oldest first above 3, rows read up to 12: 5, 7, 9; two wanted: 5, 7, cut at 9.
        let c = nearest(seqs.clone(), Walk::Above(3), Some(12), 2);
        assert_eq!(
            c,
            StepCandidates {
                seqs: vec![5, 7],
                cut: Some(9)
            }
        );
        let c = nearest(seqs, Walk::Above(3), None, 1);
        assert_eq!(
            c,
            StepCandidates {
                seqs: vec![5],
                cut: Some(7)
            }
        );
    }
}
